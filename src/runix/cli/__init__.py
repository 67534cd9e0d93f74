"""The `runix` command line (Typer app in runix.cli.main)."""

from __future__ import annotations


def run() -> None:
    """The `runix` executable: every command goes through the Typer app."""
    from runix.cli.main import app

    app()
