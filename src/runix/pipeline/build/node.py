"""Node apps: package.json, installed by npm into node_modules inside the release."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runix.pipeline.build.plan import BuildFailed, BuildPlan

ENTRY_FILES = ("server.js", "index.js", "app.js", "main.js")


def applies(app_dir: Path) -> bool:
    return (app_dir / "package.json").is_file()


def package(app_dir: Path) -> dict[str, Any]:
    if not applies(app_dir):
        return {}
    try:
        data = json.loads((app_dir / "package.json").read_text(errors="replace"))
    except json.JSONDecodeError as exc:
        raise BuildFailed(f"package.json is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BuildFailed("package.json must hold a JSON object")
    return data


def scripts(app_dir: Path) -> dict[str, str]:
    found = package(app_dir).get("scripts")
    return {k: v for k, v in found.items() if isinstance(v, str)} if isinstance(found, dict) else {}


def install_command(app_dir: Path) -> str:
    locked = (app_dir / "package-lock.json").is_file() or (app_dir / "npm-shrinkwrap.json").is_file()
    return "npm ci" if locked else "npm install"


def build_command(app_dir: Path) -> str | None:
    return "npm run build" if "build" in scripts(app_dir) else None


def start_command(app_dir: Path) -> str | None:
    # The start script runs directly (node_modules/.bin is on PATH), without an npm process in between.
    start = scripts(app_dir).get("start")
    if start:
        return start
    main = package(app_dir).get("main")
    if isinstance(main, str) and (app_dir / main).is_file():
        return f"node {main}"
    for entry in ENTRY_FILES:
        if (app_dir / entry).is_file():
            return f"node {entry}"
    return None


def plan(app_dir: Path) -> BuildPlan:
    has_dependencies = applies(app_dir)
    return BuildPlan(
        kind="node",
        install_command=install_command(app_dir) if has_dependencies else None,
        build_command=build_command(app_dir),
        start_command=start_command(app_dir) or "",
        dependencies="node" if has_dependencies else None,
        reason="package.json",
    )
