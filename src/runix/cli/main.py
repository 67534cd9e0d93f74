"""The `runix` command: sign in, deploy, and manage projects, env vars, domains and tokens through the API.

Start-up time matters (a deploy is often a second): modules here import only Typer and small helpers; Rich, the SDK
(and with it httpx) and the server are imported inside the commands that need them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from runix.cli import auth, deployments, domains, env, output, projects


class RunixTyper(typer.Typer):
    """Turns failures a person can act on into one line on stderr and exit status 1 (2 for usage)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return output.guarded(lambda: super(RunixTyper, self).__call__(*args, **kwargs))


def _print_version(value: bool) -> None:
    if value:
        from runix import __version__

        typer.echo(f"runix {__version__}")
        raise typer.Exit()


app = RunixTyper(
    name="runix",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,  # locals can hold tokens
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", is_eager=True,
                                          callback=_print_version)] = False,
) -> None:
    """Runix: deploy a folder, get a live URL.

    Sign in with [bold]runix login[/bold], then [bold]runix deploy[/bold] in your app's folder.

    Environment:
    RUNIX_API_URL: the API (default: the one you logged in to, else http://127.0.0.1:8000)
    RUNIX_TOKEN: a token to use instead of the saved one
    RUNIX_RATE_LIMIT_WAIT: seconds a read may wait out rate limits (default 120)
    NO_COLOR: no colour
    """


ACCOUNT, DEPLOY, MANAGE = "Account", "Deploy", "Manage"
app.command(rich_help_panel=ACCOUNT)(auth.login)
app.command(rich_help_panel=ACCOUNT)(auth.logout)
app.command(rich_help_panel=ACCOUNT)(auth.whoami)
app.command(rich_help_panel=ACCOUNT)(projects.billing)
app.add_typer(auth.tokens_app, name="tokens", rich_help_panel=ACCOUNT)
app.command(rich_help_panel=DEPLOY)(deployments.deploy)
app.command(rich_help_panel=DEPLOY)(deployments.logs)
app.command(rich_help_panel=DEPLOY)(deployments.promote)
app.command(rich_help_panel=DEPLOY)(deployments.rollback)
app.command(rich_help_panel=DEPLOY)(deployments.cancel)
app.command(rich_help_panel=DEPLOY)(deployments.rm)
app.add_typer(deployments.deployments_app, name="deployments", rich_help_panel=DEPLOY)
app.add_typer(projects.projects_app, name="projects", rich_help_panel=MANAGE)
app.add_typer(env.env_app, name="env", rich_help_panel=MANAGE)
app.add_typer(domains.domains_app, name="domains", rich_help_panel=MANAGE)


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
