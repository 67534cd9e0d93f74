"""What `runix deploy` does (the Typer command is runix.cli.deployments.deploy)."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from runix.cli import output
from runix.cli.common import confirm, connect, default_project_name, link_project, linked_project
from runix.cli.output import CliError

if TYPE_CHECKING:
    from runix.client import Project, RunixClient


def run_deploy(path: Path, project: str | None, prod: bool, yes: bool, as_json: bool) -> None:
    """Pack the folder, upload it, stream the build log, print the URL; CliError (exit 1) if it fails."""
    started = time.monotonic()
    folder = path.resolve()
    if not folder.is_dir():
        raise CliError(f"{path} is not a folder.", exit_code=2)
    client = connect()
    ref, name = _project_for(client, folder, project, yes)

    from runix.cli import packing
    from runix.client import RunixAPIError

    source = packing.list_source(folder)
    target = "production" if prod else "preview"
    files = f"{source.files} file" + ("s" if source.files != 1 else "")
    output.info(f"Uploading {files} ({output.size(source.bytes)}) to {name}, {target}...")
    try:
        # Packed while it is sent: the progress bar counts the folder's bytes as they go into the archive.
        with output.upload_progress("Uploading", source.bytes) as advance:
            deployment = client.create_deployment(ref, packing.stream(source, on_packed=advance), target)
    except packing.PackError as exc:
        raise CliError(f"Could not pack {folder} ({exc}); nothing was deployed.") from exc
    except KeyboardInterrupt:
        output.warn("Stopped during the upload: nothing was deployed, unless the upload had just finished "
                    f"(`runix deployments ls --project {name}` shows it then).")
        raise SystemExit(130) from None
    except RunixAPIError as exc:
        if exc.status == 404 and project is None:
            raise CliError(f"This folder is linked to project {name}, which no longer exists. Deploy with "
                           "--project NAME (it links the folder again).") from exc
        raise
    output.info(f"Building {deployment['id']}: {deployment['url']}")
    # The production URLs are fetched while the build runs, so they cost no time at the end.
    production_urls = _meanwhile(lambda: client.get_project(deployment["project_id"])["urls"]) if prod else None
    log = client.follow_events(deployment["id"])
    try:
        for event in log:
            output.log_line(event, sys.stderr)
    except KeyboardInterrupt:
        output.warn(f"Stopped following; the deployment goes on. See it with `runix logs {deployment['id']} -f`.")
        raise SystemExit(130) from None
    # The stream's end says how it settled; the full record is fetched only when it is needed, and waited for when
    # the stream ended without saying (a proxy or a server restart cut it).
    if log.status is None:
        final = client.wait_until_settled(deployment["id"])
    else:
        final = deployment if log.status == "READY" and not as_json else client.get_deployment(deployment["id"])
    status = log.status if final is deployment else final["status"]
    if as_json:
        output.emit_json(final)
    if status != "READY":
        raise CliError(f"Deployment {final['id']} ended {status}: {final.get('error') or 'no reason given'}. "
                       f"Its log: `runix logs {final['id']}`.")
    if not as_json:
        output.success(f"Ready in {time.monotonic() - started:.1f}s")
        output.out(final["url"])
        production = production_urls() if production_urls else None
        if production:
            output.info(f"Production: {' '.join(production)}")


def _meanwhile(fetch: Callable[[], list[str]]) -> Callable[[], list[str] | None]:
    """Runs `fetch` (an API read) on a thread; the function returned waits for its answer (None if it failed)."""
    import threading

    from runix.client import RunixAPIError

    answer: list[list[str]] = []

    def run() -> None:
        with contextlib.suppress(RunixAPIError):
            answer.append(fetch())

    thread = threading.Thread(target=run, name="runix-fetch", daemon=True)
    thread.start()

    def wait() -> list[str] | None:
        thread.join()
        return answer[0] if answer else None

    return wait


def _project_for(client: RunixClient, folder: Path, option: str | None, yes: bool) -> tuple[str, str]:
    """(id or name, name) of the project to deploy to; creates it (after asking) and links the folder."""
    from runix.client import RunixAPIError

    link = linked_project(folder, client.api_url)
    if option is None and link:
        return link["id"], link["name"]
    name = option or default_project_name(folder)
    try:
        project: Project = client.get_project(name)
    except RunixAPIError as exc:
        if exc.status != 404:
            raise
        confirm(f"Create project {name} and deploy {folder} to it?", yes, f"create project {name}")
        project = client.create_project(name)
        output.success(f"Created project {project['name']}.")
    link_project(folder, project, client.api_url)
    return project["id"], project["name"]

