"""The `runix` command line (Typer app in runix.cli.main)."""

from __future__ import annotations

import gc
import sys


def run() -> None:
    """The `runix` executable. `runix deploy` with plain arguments skips Typer (and the Pydantic it loads to check
    parameters), and defers modules it never uses (runix.cli.deferred): that is most of a deploy's start-up time.
    Everything else goes through the Typer app."""
    # Importing creates many objects and no garbage cycles worth collecting; runix.cli.common.connect freezes what
    # the imports made and turns the collector back on.
    gc.disable()
    if sys.argv[1:2] == ["deploy"]:
        from runix.cli import deferred

        deferred.install()
    from runix.cli import output
    from runix.cli.deploy import parse_fast, run_deploy

    fast = parse_fast(sys.argv[1:])
    if fast is not None:
        output.guarded(lambda: run_deploy(**fast))
        return
    gc.enable()  # every other command, `runix server` included, runs with the collector on
    from runix.cli.main import app

    app()
