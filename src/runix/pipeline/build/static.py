"""Static sites: a folder with index.html, served as files."""

from __future__ import annotations

from pathlib import Path

from runix.pipeline.build.plan import BuildPlan

# Runix's own file server (static_server.py, put on the release's PATH): standard library only, up in milliseconds.
SERVE = "runix-static"
SERVER_SOURCE = Path(__file__).with_name("static_server.py")


def applies(app_dir: Path) -> bool:
    return (app_dir / "index.html").is_file()


def plan(app_dir: Path) -> BuildPlan:
    return BuildPlan(kind="static", install_command=None, build_command=None, start_command=SERVE, reason="index.html")
