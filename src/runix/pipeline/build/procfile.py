"""Apps that say how to start themselves in a Procfile `web:` line (dependencies are still installed by language)."""

from __future__ import annotations

from pathlib import Path


def web_command(app_dir: Path) -> str | None:
    """The command of the Procfile's `web:` process, or None when there is no Procfile or no such line."""
    procfile = app_dir / "Procfile"
    if not procfile.is_file():
        return None
    for line in procfile.read_text(errors="replace").splitlines():
        name, sep, command = line.partition(":")
        if sep and name.strip() == "web" and command.strip():
            return command.strip()
    return None
