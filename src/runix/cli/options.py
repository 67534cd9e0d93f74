"""Options several commands share."""

from __future__ import annotations

from typing import Annotated

import typer

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do it without asking for confirmation.")]
ProjectOption = Annotated[str | None, typer.Option(
    "--project", "-p", help="Project name or id. Default: the project this folder deploys to (.runix/project.json).")]
LimitOption = Annotated[int, typer.Option("--limit", "-n", min=1, help="Show at most this many.")]
