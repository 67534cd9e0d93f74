"""The `runix` command line (Typer app in runix.cli.main)."""

from __future__ import annotations

import gc
import sys


def run() -> None:
    """The `runix` executable. `runix deploy` with plain arguments skips Typer (and the Pydantic it loads to check
    parameters): that is most of a deploy's start-up time. Everything else goes through the Typer app."""
    # Importing creates many objects and no garbage cycles worth collecting; runix.cli.common.connect turns the
    # collector back on once the imports are done.
    gc.disable()
    from runix.cli import output
    from runix.cli.deploy import parse_fast, run_deploy

    fast = parse_fast(sys.argv[1:])
    if fast is not None:
        output.guarded(lambda: run_deploy(**fast))
        return
    from runix.cli.main import app

    app()
