"""What a build produces and consumes: the plan detected for an app, its settings, and the release it makes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RELEASE_FILE = "release.json"
# Detected start commands listen here: loopback unless the runtime sets HOST (a container needs 0.0.0.0).
LISTEN_HOST = "${HOST:-127.0.0.1}"


class BuildFailed(Exception):
    """A build could not produce a release; `message` says why, in words the user can act on."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class ProjectBuildSettings:
    """The build settings a project may set (each one overrides what Runix detects)."""

    framework: str | None = None
    install_command: str | None = None
    build_command: str | None = None
    start_command: str | None = None
    root_directory: str | None = None

    @classmethod
    def from_project(cls, project: Any) -> ProjectBuildSettings:
        return cls(**{name: getattr(project, name, None) or None for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class BuildPlan:
    kind: str  # "static" | "python" | "node" | "procfile"
    install_command: str | None
    build_command: str | None
    start_command: str  # a shell command; the app listens on $PORT
    # Which installer prepares the release: "python" (a virtualenv by uv), "node" (node_modules by npm) or None.
    dependencies: str | None = None
    # What the detection was based on, for the build log (e.g. "requirements.txt").
    reason: str = ""


@dataclass(frozen=True)
class Release:
    deployment_id: str
    path: Path  # the release folder, read-only once built
    app_dir: Path  # where the app's files are and its start command runs
    kind: str
    start_command: str
    env_path: list[str] = field(default_factory=list)  # folders to put first on PATH, e.g. <release>/.venv/bin
    env: dict[str, str] = field(default_factory=dict)  # variables the runtime sets for the app (not the user's)

    def to_json(self) -> dict[str, Any]:
        return {
            "deployment_id": self.deployment_id,
            "path": str(self.path),
            "app_dir": str(self.app_dir),
            "kind": self.kind,
            "start_command": self.start_command,
            "env_path": list(self.env_path),
            "env": dict(self.env),
        }

    @classmethod
    def load(cls, release_dir: Path) -> Release:
        data = json.loads((release_dir / RELEASE_FILE).read_text())
        return cls(
            deployment_id=data["deployment_id"],
            path=Path(data["path"]),
            app_dir=Path(data["app_dir"]),
            kind=data["kind"],
            start_command=data["start_command"],
            env_path=list(data.get("env_path", [])),
            env=dict(data.get("env", {})),
        )
