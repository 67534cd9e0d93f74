"""Static sites: a folder with index.html, served as files."""

from __future__ import annotations

from pathlib import Path

from runix.pipeline.build.plan import LISTEN_HOST, BuildPlan

# The standard library's file server: nothing to install, up in tens of milliseconds.
SERVE = f'python3 -m http.server "$PORT" --bind "{LISTEN_HOST}"'


def applies(app_dir: Path) -> bool:
    return (app_dir / "index.html").is_file()


def plan(app_dir: Path) -> BuildPlan:
    return BuildPlan(kind="static", install_command=None, build_command=None, start_command=SERVE, reason="index.html")
