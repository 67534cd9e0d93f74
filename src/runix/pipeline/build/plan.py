"""What a build produces and consumes: the plan detected for an app, its settings, and the release it makes."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Detected start commands listen here: loopback unless the runtime sets HOST (a container needs 0.0.0.0).
LISTEN_HOST = "${HOST:-127.0.0.1}"


class BuildFailed(Exception):
    """A build could not produce a release; `message` says why, in words the user can act on."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BuildInterrupted(BuildFailed):
    """A build step ended by a signal Runix did not send (SIGTERM, SIGINT, SIGHUP): most often the server's own stop
    (a signal to its whole process group can reach a build that is just being started)."""


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


class ReleaseDamaged(ValueError):
    """A release record that is missing, unreadable, or names paths outside its release."""


@dataclass(frozen=True)
class Release:
    """What runs for a deployment: the server's own record, kept in a folder no sandbox can see or write
    (layout.release_record), never in the release folder the build wrote."""

    deployment_id: str
    path: Path  # the release folder, read-only once built
    app_dir: Path  # where the app's files are and its start command runs
    kind: str
    start_command: str
    env_path: list[str] = field(default_factory=list)  # folders to put first on PATH, e.g. <release>/.venv/bin
    env: dict[str, str] = field(default_factory=dict)  # variables the runtime sets for the app (not the user's)
    size_bytes: int = 0  # what the release folder takes on disk

    def to_json(self) -> dict[str, Any]:
        """Paths relative to the release folder: the record says nothing the layout does not."""
        return {
            "deployment_id": self.deployment_id,
            "app_dir": str(self.app_dir.relative_to(self.path)),
            "kind": self.kind,
            "start_command": self.start_command,
            "env_path": [str(Path(p).relative_to(self.path)) for p in self.env_path],
            "env": dict(self.env),
            "size_bytes": self.size_bytes,
        }

    def save(self, record: Path) -> None:
        """Writes the record atomically: a new file (O_EXCL, O_NOFOLLOW) renamed over the old one."""
        record.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        staged = record.with_name(f".{record.name}.{os.getpid()}.new")
        with contextlib.suppress(FileNotFoundError):
            staged.unlink()
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self.to_json(), f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(staged, record)

    @classmethod
    def load(cls, record: Path, release_dir: Path) -> Release:
        """The release of `release_dir` as its record says; raises ReleaseDamaged when the record is missing or
        names anything outside the release (it is checked against the folder as it is now)."""
        try:
            fd = os.open(record, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with os.fdopen(fd) as f:
                data = json.load(f)
            deployment_id, kind, start = data["deployment_id"], data["kind"], data["start_command"]
            app_dir = _inside(release_dir, data["app_dir"])
            env_path = [str(_inside(release_dir, p)) for p in data.get("env_path", [])]
            env = {str(k): str(v) for k, v in dict(data.get("env", {})).items()}
            size_bytes = int(data.get("size_bytes", 0))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ReleaseDamaged(f"release record {record.name}: {exc}") from exc
        if deployment_id != release_dir.name or not isinstance(start, str) or not isinstance(kind, str):
            raise ReleaseDamaged(f"release record {record.name} is not the record of {release_dir.name}")
        return cls(deployment_id=deployment_id, path=release_dir, app_dir=app_dir, kind=kind, start_command=start,
                   env_path=env_path, env=env, size_bytes=size_bytes)


def _inside(release_dir: Path, relative: str) -> Path:
    """`relative` under `release_dir`, refused when it (or a link on the way) leads outside."""
    if not isinstance(relative, str) or Path(relative).is_absolute() or ".." in Path(relative).parts:
        raise ValueError(f"{relative!r} is not a path inside the release")
    path = release_dir / relative
    if not path.resolve().is_relative_to(release_dir.resolve()):
        raise ValueError(f"{relative!r} leads outside the release")
    return path
