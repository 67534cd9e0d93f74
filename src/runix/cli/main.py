"""The `runix` command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="runix",
    help="Runix: deploy a folder, get a live URL. Manage projects, deployments, env vars and domains.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    """Runix: deploy a folder, get a live URL."""
    if version:
        from runix import __version__

        typer.echo(f"runix {__version__}")
        raise typer.Exit()


@app.command(rich_help_panel="Platform")
def server(
    data_dir: Annotated[Path | None, typer.Option(help="Where Runix keeps its data [env: RUNIX_DATA_DIR]")] = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on [env: RUNIX_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="API and dashboard port [env: RUNIX_PORT]")] = None,
    router_port: Annotated[int | None, typer.Option(help="Port apps are served on [env: RUNIX_ROUTER_PORT]")] = None,
) -> None:
    """Start the Runix platform: API, dashboard, build worker, runtime and router.

    Every other setting comes from RUNIX_* environment variables: RUNIX_DATABASE_URL (PostgreSQL),
    RUNIX_REDIS_URL, RUNIX_SMTP_URL, RUNIX_SECRET_KEY, RUNIX_APPS_DOMAIN, RUNIX_DNS_RESOLVER, ...
    """
    from runix.server import serve
    from runix.settings import Settings

    overrides = {k: v for k, v in {"data_dir": data_dir, "host": host, "port": port,
                                   "router_port": router_port}.items() if v is not None}
    serve(Settings(**overrides))


if __name__ == "__main__":
    app()
