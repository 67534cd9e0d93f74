"""What every command shares: the API client, error messages, confirmation, and the folder's linked project."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runix.cli import credentials, output
from runix.cli.output import CliError

if TYPE_CHECKING:
    from runix.client import Project, RunixClient

LINK_DIR = ".runix"
LINK_FILE = "project.json"


def connect(*, login: bool = True, api_url: str | None = None, token: str | None = None) -> RunixClient:
    """A client for the API; with `login`, one that carries the saved (or RUNIX_TOKEN) token."""
    from runix.client import RunixClient

    if login and token is None:
        saved = credentials.current()
        if saved is None:
            raise CliError(f"You are not logged in to {credentials.api_url()}. Run `runix login` (or set RUNIX_TOKEN).")
        api_url, token = api_url or saved.api_url, saved.token
    api_url = api_url or credentials.api_url()
    return RunixClient(api_url, token, max_rate_limit_wait=_rate_limit_wait(),
                       on_rate_limit=lambda s: output.warn(f"Rate limited by the API: retrying in {s}s"))


def _rate_limit_wait() -> float:
    """Seconds a read may wait in total for rate limits before giving up (RUNIX_RATE_LIMIT_WAIT, default 120)."""
    try:
        return float(os.environ.get("RUNIX_RATE_LIMIT_WAIT", "120"))
    except ValueError:
        return 120.0


def explain(exc: Exception) -> str:
    """The message for an API failure, saying what the person can do about it."""
    from runix.client import RunixConnectionError

    if isinstance(exc, RunixConnectionError):
        return (f"Could not reach the Runix API at {exc.api_url}: {exc.reason}. "
                "Check the URL (RUNIX_API_URL, or `runix login --api-url`).")
    status = getattr(exc, "status", None)
    message = getattr(exc, "message", str(exc))
    if status == 401:
        return f"Your token has expired or was revoked ({message.rstrip('.')}). Run `runix login` to sign in again."
    if status == 429:
        after = getattr(exc, "retry_after", None)
        if "retry in" in message.lower():
            return f"Rate limited by the Runix API: {message}"
        return f"Rate limited by the Runix API: {message.rstrip('.')}. Retry in {after or 60} seconds."
    return message


def confirm(question: str, yes: bool, action: str) -> None:
    """Asks at a terminal; `--yes` skips the question; with no terminal and no `--yes`, refuses (exit 1)."""
    if yes:
        return
    if not output.is_tty(sys.stdin):
        raise CliError(f"Refusing to {action} without confirmation: there is no terminal to ask at. "
                       "Pass --yes to confirm.")
    import typer

    if not typer.confirm(question, default=False, err=True):
        raise CliError("Cancelled: nothing was changed.")


def link_path(folder: Path) -> Path:
    return folder / LINK_DIR / LINK_FILE


def linked_project(folder: Path, api_url: str) -> dict[str, Any] | None:
    """The project `folder` deploys to, if it was deployed before against this API."""
    try:
        link = json.loads(link_path(folder).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(link, dict) or not link.get("id") or link.get("api_url", api_url) != api_url:
        return None
    return link


def link_project(folder: Path, project: Project, api_url: str) -> None:
    path = link_path(folder)
    link = {"id": project["id"], "name": project["name"], "api_url": api_url}
    if linked_project(folder, api_url) == link:
        return
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(link, indent=2) + "\n")
    readme = path.parent / "README.txt"
    if not readme.exists():
        readme.write_text("This folder is linked to a Runix project: `runix deploy` and other commands use it.\n"
                          "runix deploy never uploads this .runix folder.\n")


def unlink_project(folder: Path, project_id: str) -> None:
    path = link_path(folder)
    try:
        if json.loads(path.read_text()).get("id") == project_id:
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def project_ref(option: str | None, api_url: str, folder: Path | None = None) -> str:
    """The project a command is about: --project, else the current folder's linked project (usage error if none)."""
    if option:
        return option
    link = linked_project(folder or Path.cwd(), api_url)
    if link:
        return link["id"]
    raise CliError("No project given: pass --project NAME, or run this in a folder you deployed "
                   "(it remembers its project in .runix/project.json).", exit_code=2)


def default_project_name(folder: Path) -> str:
    """A DNS-label-safe project name from the folder's name."""
    name = re.sub(r"[^a-z0-9]+", "-", folder.name.lower()).strip("-")[:48].strip("-")
    return name or "app"
