"""`runix login`, `runix logout`, `runix whoami`, `runix tokens`."""

from __future__ import annotations

import os
import socket
import sys
import time
from typing import Annotated

import typer

from runix.cli import credentials, output
from runix.cli.common import confirm, connect
from runix.cli.options import JsonOption
from runix.cli.output import CliError

tokens_app = typer.Typer(help="Your API tokens: list them, revoke one.", no_args_is_help=True)

CODE_TRIES_AT_A_TERMINAL = 3


def _token_name() -> str:
    return f"runix CLI on {socket.gethostname()}"[:100]


def login(
    email: Annotated[str | None, typer.Option(help="Sign in as this address (asked for when omitted).")] = None,
    token: Annotated[str | None, typer.Option(
        help="Store this token instead of signing in (a CLI token from the dashboard or `POST /auth/cli-token`).")]
    = None,
    web: Annotated[bool, typer.Option("--web", help="Approve the sign-in in the browser (device code).")] = False,
    api_url: Annotated[str | None, typer.Option(
        help="The Runix API to sign in to [env: RUNIX_API_URL; default http://127.0.0.1:8000].")] = None,
) -> None:
    """Sign in and store a CLI token in ~/.config/runix/credentials.json (mode 0600).

    By default Runix mails you a 6-digit code and asks for it here.
    """
    url = credentials.api_url(api_url)
    if token:
        value, token_id, address = token, None, connect(api_url=url, token=token).user()["email"]
    elif web:
        created = _login_by_browser(url)
        value, token_id = created["token"], created.get("id")
        address = connect(api_url=url, token=value).user()["email"]
    else:
        created, address = _login_by_email(url, email)
        value, token_id = created["token"], created.get("id")
    path = credentials.save(url, value, token_id=token_id, email=address)
    output.success(f"Logged in as {address} on {url}. Token saved in {path}")
    if os.environ.get("RUNIX_TOKEN"):
        output.warn("RUNIX_TOKEN is set in this shell and overrides the saved token: unset it to use this login.")


def _ask(label: str) -> str:
    """A prompt at a terminal; from a pipe, one line of stdin (so scripts and tests can feed the answers)."""
    if output.is_tty(sys.stdin):
        return typer.prompt(label, err=True).strip()
    sys.stderr.write(f"{label}: ")
    line = sys.stdin.readline()
    sys.stderr.write("\n")
    if not line.strip():
        raise CliError(f"No {label.lower()} given: stdin is empty.")
    return line.strip()


def _login_by_email(url: str, email: str | None) -> tuple[dict, str]:
    from runix.client import RunixAPIError

    client = connect(login=False, api_url=url)
    email = (email or _ask("Email")).strip()
    client.request_email_code(email)
    output.info(f"We mailed a 6-digit code to {email}. It is valid for 10 minutes.")
    tries = CODE_TRIES_AT_A_TERMINAL if output.is_tty(sys.stdin) else 1
    for attempt in range(1, tries + 1):
        code = _ask("Code")
        try:
            session = client.verify_email_code(email, code)
            break
        except RunixAPIError as exc:
            if exc.status != 401:
                raise
            if attempt == tries:
                raise CliError(f"{exc.message.split('.')[0]}. Run `runix login` to get a new code.") from exc
            output.error("That code is wrong or has expired. Try again.")
    with connect(api_url=url, token=session["token"]) as signed_in:
        created = signed_in.create_cli_token(_token_name())
        signed_in.logout()  # the short-lived session token did its job: the CLI token replaces it
    return dict(created), session["user"]["email"]


def _login_by_browser(url: str) -> dict:
    from runix.client import RunixAPIError

    client = connect(login=False, api_url=url)
    grant = client.start_device_login(_token_name())
    output.message(f"Open {grant['verification_uri_complete']} and confirm the code {grant['user_code']}.",
                   "bold")
    if output.is_tty(sys.stdout) and not os.environ.get("RUNIX_NO_BROWSER"):
        import webbrowser

        webbrowser.open(grant["verification_uri_complete"])
    interval = max(1, int(grant.get("interval") or 5))
    deadline = time.monotonic() + int(grant.get("expires_in") or 900)
    output.info("Waiting for you to approve in the browser...")
    while time.monotonic() < deadline:
        time.sleep(interval)
        try:
            return dict(client.poll_device_login(grant["device_code"]))
        except RunixAPIError as exc:
            if exc.code == "authorization_pending":
                continue
            if exc.code == "slow_down":
                interval += 5
                continue
            if exc.code == "access_denied":
                raise CliError("The sign-in was denied in the browser. Nothing was stored.") from exc
            if exc.code == "expired_token":
                break
            raise
    raise CliError("The code expired before it was approved. Run `runix login --web` again.")


def logout() -> None:
    """Revoke the stored token on the server and delete it from this machine."""
    from runix.client import RunixAPIError, RunixConnectionError

    saved = credentials.current()
    if saved is None:
        output.info("You are not logged in: nothing to do.")
        return
    path = credentials.credentials_path()
    try:
        connect().logout()
    except RunixConnectionError as exc:
        raise CliError(f"Could not reach {exc.api_url} to revoke the token, so nothing was changed. Try again "
                       f"when it answers, or delete {path} to forget the token without revoking it.") from exc
    except RunixAPIError as exc:
        if exc.status != 401:
            raise
    removed = credentials.remove()
    output.success("Logged out: the token is revoked" + (f" and {path} is deleted." if removed else "."))
    if os.environ.get("RUNIX_TOKEN"):
        output.warn("RUNIX_TOKEN is still set in this shell (and now revoked): unset it.")


def whoami(as_json: JsonOption = False) -> None:
    """Show the account you are signed in as."""
    client = connect()
    user = client.user()
    if as_json:
        output.emit_json({**user, "api_url": client.api_url})
        return
    output.out(user["email"])
    output.info(f"{user['plan'].title()} plan on {client.api_url}")


@tokens_app.command("ls")
def tokens_ls(as_json: JsonOption = False) -> None:
    """List your active tokens (never their values)."""
    tokens = connect().list_tokens()
    if as_json:
        output.emit_json(tokens)
        return
    current = (credentials.current() or credentials.Credentials("", "")).token_id
    output.table(["ID", "NAME", "KIND", "CREATED", "EXPIRES"],
                 [[t["id"] + (" (this CLI)" if t["id"] == current else ""), t["name"], t["kind"],
                   output.ago(t["created_at"]), t["expires_at"] or "never"] for t in tokens],
                 empty="No active tokens.")


@tokens_app.command("rm")
def tokens_rm(
    token_id: Annotated[str, typer.Argument(metavar="TOKEN_ID", help="The token's id (tok_…): see `runix tokens ls`.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do it without asking (when it is this CLI's token).")]
    = False,
    as_json: JsonOption = False,
) -> None:
    """Revoke a token: anything using it gets 401 from then on."""
    saved = credentials.current()
    if saved and saved.token_id == token_id:
        confirm(f"{token_id} is the token this CLI uses. Revoke it and log out?", yes, "revoke this CLI's token")
    revoked = connect().revoke_token(token_id)
    if saved and saved.token_id == token_id:
        credentials.remove()
    if as_json:
        output.emit_json(revoked)
    else:
        output.success(f"Revoked {revoked['name']} ({revoked['id']}).")
