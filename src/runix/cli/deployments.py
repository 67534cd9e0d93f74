"""`runix deploy`, `runix deployments ls|inspect`, `runix logs`, `runix promote|rollback|cancel|rm`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from runix.cli import output
from runix.cli.common import confirm, connect, linked_project, project_ref
from runix.cli.options import JsonOption, LimitOption, ProjectOption, YesOption
from runix.cli.output import CliError

if TYPE_CHECKING:
    from runix.client import Deployment, RunixClient

deployments_app = typer.Typer(help="List and inspect deployments.", no_args_is_help=True)

DeploymentArgument = Annotated[str, typer.Argument(metavar="DEPLOYMENT", help="The deployment's id (dpl_…).")]


def deploy(
    path: Annotated[Path, typer.Argument(metavar="PATH", help="The folder to deploy.",
                                         show_default="the current folder")] = Path("."),
    project: Annotated[str | None, typer.Option(
        "--project", "-p", help="Deploy to this project (created if missing). Default: the folder's linked "
        "project, else one named after the folder.")] = None,
    prod: Annotated[bool, typer.Option("--prod", help="Deploy to production (default: a preview).")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Create the project without asking.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the finished deployment as JSON.")] = False,
) -> None:
    """Deploy a folder: pack it, upload it, stream the build log and print the URL.

    Files ignored by .gitignore or .runixignore are not uploaded, nor .git, node_modules, .venv and .runix.
    The folder remembers its project in .runix/project.json. Exits 1 if the deployment fails.
    """
    from runix.cli.deploy import run_deploy

    run_deploy(path, project, prod, yes, as_json)


def _production_marker(deployment: Deployment) -> str:
    return "production (current)" if deployment.get("is_production") else deployment.get("target", "")


@deployments_app.command("ls")
def deployments_ls(
    project: Annotated[str | None, typer.Option(
        "--project", "-p", help="Only this project's. Default: the folder's linked project, else all.")] = None,
    status: Annotated[str | None, typer.Option(help="QUEUED, BUILDING, DEPLOYING, READY, ERROR or CANCELED.")]
    = None,
    target: Annotated[str | None, typer.Option(help="production or preview.")] = None,
    limit: LimitOption = 20,
    as_json: JsonOption = False,
) -> None:
    """List deployments, newest first."""
    client = connect()
    if project is None:
        link = linked_project(Path.cwd(), client.api_url)
        project = link["id"] if link else None
    deployments = client.list_deployments(project=project, status=status.upper() if status else None,
                                          target=target, limit=limit)
    if as_json:
        output.emit_json(deployments)
        return
    output.table(["ID", "PROJECT", "STATUS", "TARGET", "URL", "CREATED"],
                 [[d["id"], d.get("project", ""), output.status(d["status"]), _production_marker(d), d["url"],
                   output.ago(d["created_at"])] for d in deployments],
                 empty="No deployments yet: run `runix deploy`.")


@deployments_app.command("inspect")
def deployments_inspect(deployment: DeploymentArgument, as_json: JsonOption = False) -> None:
    """Show one deployment: status, URL, timings, and why it failed."""
    found = connect().get_deployment(deployment)
    if as_json:
        output.emit_json(found)
        return
    output.fields([("ID", found["id"]), ("Project", found.get("project", found["project_id"])),
                   ("Status", output.status(found["status"])), ("Target", _production_marker(found)),
                   ("URL", found["url"]), ("Kind", found.get("build_kind") or ""),
                   ("Created", found["created_at"]), ("Ready", found.get("ready_at") or ""),
                   ("Error", found.get("error") or "")])


def logs(
    deployment: DeploymentArgument,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep streaming until the deployment settles.")]
    = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON event per line.")] = False,
) -> None:
    """Print a deployment's build and runtime log."""
    client = connect()
    events = client.follow_events(deployment) if follow else client.deployment_events(deployment)
    try:
        for event in events:
            if as_json:
                output.out(json.dumps(event))
            else:
                output.log_line(event)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def promote(deployment: DeploymentArgument, yes: YesOption = False, as_json: JsonOption = False) -> None:
    """Make a READY deployment the production one, without rebuilding."""
    client = connect()
    found = client.get_deployment(deployment)
    confirm(f"Make {found['id']} the production deployment of {found.get('project', found['project_id'])}?", yes,
            "promote to production")
    _promote(client, found, as_json, "Promoted")


def _promote(client: RunixClient, deployment: Deployment, as_json: bool, verb: str) -> None:
    promoted = client.promote_deployment(deployment["id"])
    if as_json:
        output.emit_json(promoted)
        return
    project = client.get_project(promoted["project_id"])
    output.success(f"{verb}: {project['name']} production now serves {promoted['id']}.")
    output.out(" ".join(project["urls"]) or promoted["url"])


def rollback(
    deployment: Annotated[str | None, typer.Argument(
        metavar="DEPLOYMENT", help="Roll back to this deployment. Default: the previous production one.")] = None,
    project: ProjectOption = None,
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Point production back at an earlier deployment, at once and without rebuilding."""
    client = connect()
    if deployment:
        chosen = client.get_deployment(deployment)
    else:
        current = client.get_project(project_ref(project, client.api_url))
        candidates = client.list_deployments(project=current["id"], status="READY", target="production", limit=50)
        chosen = next((d for d in candidates if d["id"] != current["production_deployment_id"]), None)
        if chosen is None:
            raise CliError(f"{current['name']} has no earlier READY production deployment to roll back to.")
    confirm(f"Roll {chosen.get('project', chosen['project_id'])} production back to {chosen['id']} "
            f"(deployed {output.ago(chosen['created_at'])})?", yes, "roll back production")
    _promote(client, chosen, as_json, "Rolled back")


def cancel(deployment: DeploymentArgument, as_json: JsonOption = False) -> None:
    """Stop a deployment that is still queued or building."""
    canceled = connect().cancel_deployment(deployment)
    if as_json:
        output.emit_json(canceled)
    else:
        output.success(f"Canceled {canceled['id']}.")


def rm(deployment: DeploymentArgument, yes: YesOption = False, as_json: JsonOption = False) -> None:
    """Delete a deployment: stops it and removes its release and logs (not the current production one)."""
    client = connect()
    found = client.get_deployment(deployment)
    confirm(f"Delete deployment {found['id']} of {found.get('project', found['project_id'])}? Its URL stops "
            "answering.", yes, f"delete {found['id']}")
    removed = client.delete_deployment(found["id"])
    if as_json:
        output.emit_json(removed)
    else:
        output.success(f"Deleted {removed['id']}.")
