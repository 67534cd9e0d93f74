"""`runix projects ls|add|rm|inspect` and `runix billing`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from runix.cli import output
from runix.cli.common import confirm, connect, project_ref, unlink_project
from runix.cli.options import JsonOption, LimitOption, YesOption

projects_app = typer.Typer(help="Create, list, inspect and delete projects.", no_args_is_help=True)

SettingOption = Annotated[str | None, typer.Option(help="Build setting (default: detected from the source).")]


@projects_app.command("ls")
def projects_ls(limit: LimitOption = 50, as_json: JsonOption = False) -> None:
    """List your projects, newest first."""
    projects = connect().list_projects(limit=limit)
    if as_json:
        output.emit_json(projects)
        return
    output.table(["NAME", "ID", "URL", "PRODUCTION", "UPDATED"],
                 [[p["name"], p["id"], (p["urls"] or [""])[0], p["production_deployment_id"] or "-",
                   output.ago(p["updated_at"])] for p in projects],
                 empty="No projects yet: `runix deploy` in your app's folder creates one.")


@projects_app.command("add")
def projects_add(
    name: Annotated[str, typer.Argument(
        metavar="NAME", help="Lower-case letters, digits and dashes; it becomes the host name.")],
    framework: SettingOption = None,
    install_command: SettingOption = None,
    build_command: SettingOption = None,
    start_command: SettingOption = None,
    root_directory: SettingOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a project (`runix deploy` also creates one on first deploy)."""
    project = connect().create_project(name, framework=framework, install_command=install_command,
                                       build_command=build_command, start_command=start_command,
                                       root_directory=root_directory)
    if as_json:
        output.emit_json(project)
        return
    output.success(f"Created project {project['name']} ({project['id']}).")
    output.info(f"Deploy to it with `runix deploy --project {project['name']}`; it will answer at "
                f"{(project['urls'] or ['its URL'])[0]}")


@projects_app.command("inspect")
def projects_inspect(
    name: Annotated[str | None, typer.Argument(
        metavar="NAME", help="Name or id. Default: this folder's project.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Show a project's settings, URLs and production deployment."""
    client = connect()
    project = client.get_project(project_ref(name, client.api_url))
    if as_json:
        output.emit_json(project)
        return
    output.fields([("Name", project["name"]), ("ID", project["id"]), ("URLs", " ".join(project["urls"])),
                   ("Production", project["production_deployment_id"] or "none yet"),
                   ("Framework", project["framework"] or "auto"),
                   ("Install", project["install_command"] or "auto"), ("Build", project["build_command"] or "auto"),
                   ("Start", project["start_command"] or "auto"), ("Root", project["root_directory"] or "."),
                   ("Created", project["created_at"]), ("Updated", project["updated_at"])])


@projects_app.command("rm")
def projects_rm(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Name or id of the project to delete.")],
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Delete a project: stops all its deployments and frees its domains. This cannot be undone."""
    client = connect()
    project = client.get_project(name)
    confirm(f"Delete project {project['name']} with all its deployments, env vars and domains?", yes,
            f"delete project {project['name']}")
    deleted = client.delete_project(project["id"])
    unlink_project(Path.cwd(), project["id"])
    if as_json:
        output.emit_json(deleted)
    else:
        output.success(f"Deleted project {deleted['name']}.")


def billing(
    plan: Annotated[str | None, typer.Option("--plan", help="Switch your account to this plan (hobby, pro, "
                                             "enterprise); asks first.")] = None,
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Your plan, its limits and how much of them you use; --plan changes plan."""
    client = connect()
    if plan:
        confirm(f"Switch your account to the {plan} plan? Its price applies from now on.", yes,
                f"change plan to {plan}")
        summary = client.change_plan(plan)
        if not as_json:
            output.success(f"Your account is on the {summary['plan']} plan now.")
    else:
        summary = client.billing()
    if as_json:
        output.emit_json(summary)
        return
    plan = next((p for p in summary["plans"] if p.get("name") == summary["plan"]), {})
    price = plan.get("price_per_month_usd")
    output.out(f"Plan: {plan.get('title', summary['plan'])}" + (f" (${price}/month)" if price is not None else ""))
    usage_for = {"requests_per_minute": "requests_this_minute", "deploys_per_hour": "deploys_this_hour",
                 "projects": "projects", "domains_per_project": None, "env_vars_per_project": None,
                 "concurrent_builds": None}
    rows = []
    for limit_name, limit in summary["limits"].items():
        used_key = usage_for.get(limit_name, limit_name)
        used = summary["usage"].get(used_key) if used_key else None
        rows.append([limit_name.replace("_", " "), "-" if used is None else used,
                     "unlimited" if limit is None else limit])
    for key, value in summary["usage"].items():
        if key not in usage_for.values():
            rows.append([key.replace("_", " "), value, "-"])
    output.table(["", "USED", "LIMIT"], rows)

