"""Build: detect what kind of app an upload is and how to install, build and start it.

Detection order: the project's settings and the app's runix.json, a Procfile `web:` line, Python (requirements.txt or
pyproject.toml), Node (package.json), a static index.html. Settings override what is detected, one field at a time.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from runix.pipeline.build import node, procfile, python, static
from runix.pipeline.build.plan import (
    BuildFailed,
    BuildInterrupted,
    BuildPlan,
    ProjectBuildSettings,
    Release,
    ReleaseDamaged,
)

__all__ = ["BuildFailed", "BuildInterrupted", "BuildPlan", "ProjectBuildSettings", "Release", "ReleaseDamaged",
           "detect", "KINDS"]

KINDS = ("static", "python", "node", "procfile")
# Framework names a project may set, and the kind of build each one means.
FRAMEWORKS = {
    "static": "static",
    "python": "python",
    "flask": "python",
    "fastapi": "python",
    "django": "python",
    "node": "node",
    "express": "node",
    "procfile": "procfile",
}
CONFIG_FILE = "runix.json"
CONFIG_KEYS = {
    "framework": "framework",
    "installCommand": "install_command",
    "buildCommand": "build_command",
    "startCommand": "start_command",
}
NOTHING_TO_DEPLOY = (
    "Nothing to deploy: Runix found no Procfile with a 'web:' line, requirements.txt or pyproject.toml, package.json "
    "or index.html in the app folder. Add one of them, or set a start command in the project settings."
)


def read_config(app_dir: Path) -> ProjectBuildSettings:
    """The app's own runix.json (camelCase or snake_case keys), or empty settings when there is none."""
    path = app_dir / CONFIG_FILE
    if not path.is_file():
        return ProjectBuildSettings()
    try:
        data = json.loads(path.read_text(errors="replace"))
    except json.JSONDecodeError as exc:
        raise BuildFailed(f"{CONFIG_FILE} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BuildFailed(f"{CONFIG_FILE} must hold a JSON object")
    values = {}
    for key, value in data.items():
        field = CONFIG_KEYS.get(key, key if key in CONFIG_KEYS.values() else None)
        if field is None:
            continue
        if value is not None and not isinstance(value, str):
            raise BuildFailed(f"{CONFIG_FILE}: '{key}' must be a string")
        values[field] = value or None
    return ProjectBuildSettings(**values)


def _merge(project: ProjectBuildSettings, config: ProjectBuildSettings) -> ProjectBuildSettings:
    """Project settings win over runix.json, field by field."""
    return ProjectBuildSettings(
        **{name: getattr(project, name) or getattr(config, name) for name in ProjectBuildSettings.__dataclass_fields__}
    )


def _kind(app_dir: Path, framework: str | None, web: str | None, start: str | None) -> tuple[str, str]:
    if framework:
        kind = FRAMEWORKS.get(framework.strip().lower())
        if kind is None:
            raise BuildFailed(f"Unknown framework '{framework}'; Runix knows {', '.join(sorted(FRAMEWORKS))}")
        return kind, f"framework '{framework}'"
    if web:
        return "procfile", "Procfile"
    if python.applies(app_dir):
        return "python", python.plan(app_dir).reason
    if node.applies(app_dir):
        return "node", "package.json"
    if static.applies(app_dir):
        return "static", "index.html"
    if start:
        return "procfile", "start command"
    raise BuildFailed(NOTHING_TO_DEPLOY)


def _base_plan(app_dir: Path, kind: str) -> BuildPlan:
    """What Runix would do for this kind of app before any setting overrides it."""
    if kind == "python":
        return python.plan(app_dir)
    if kind == "node":
        return node.plan(app_dir)
    if kind == "static":
        return static.plan(app_dir)
    # A Procfile app still gets its dependencies installed by the language it is written in.
    if python.applies(app_dir):
        return replace(python.plan(app_dir), kind="procfile", start_command="")
    if node.applies(app_dir):
        return replace(node.plan(app_dir), kind="procfile", start_command="")
    return BuildPlan(kind="procfile", install_command=None, build_command=None, start_command="")


def _missing_start(kind: str) -> str:
    hints = {
        "python": "add a Procfile with a 'web:' line, an app.py or main.py that starts the server, or a start command",
        "node": "add a \"start\" script to package.json, a server.js or index.js, or a start command",
        "static": "set a start command",
        "procfile": "add a 'web:' line to the Procfile or set a start command",
    }
    return f"Runix cannot tell how to start this {kind} app: {hints[kind]} (it must listen on $PORT)"


def detect(app_dir: Path, project_settings: ProjectBuildSettings) -> BuildPlan:
    """The build plan for the app in `app_dir`; raises BuildFailed when there is nothing Runix can deploy."""
    settings = _merge(project_settings, read_config(app_dir))
    web = procfile.web_command(app_dir)
    kind, reason = _kind(app_dir, settings.framework, web, settings.start_command)
    plan = _base_plan(app_dir, kind)
    start = settings.start_command or web or plan.start_command
    if not start:
        raise BuildFailed(_missing_start(kind))
    return replace(
        plan,
        kind=kind,
        install_command=settings.install_command or plan.install_command,
        build_command=settings.build_command or plan.build_command,
        start_command=start,
        reason=reason,
    )
