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


# How `runix billing` names a limit, the usage figure beside it, and its unit.
LIMIT_ROWS: dict[str, tuple[str, str | None, str]] = {
    "requests_per_minute": ("API requests per minute", "requests_this_minute", ""),
    "deploys_per_hour": ("deploys per hour", "deploys_this_hour", ""),
    "projects": ("projects", "projects", ""),
    "domains_per_project": ("domains per project", None, ""),
    "env_vars_per_project": ("env vars per project", None, ""),
    "concurrent_builds": ("builds at once", None, ""),
    "app_memory_mb": ("memory per app (swap included)", None, " MB"),
    "app_max_processes": ("processes per app", None, ""),
    "app_cpu_weight": ("CPU share per app (100 = default)", None, ""),
    "app_tmp_mb": ("/tmp per app (counts as memory)", None, " MB"),
    "build_memory_mb": ("memory per build", None, " MB"),
    "build_max_processes": ("processes per build", None, ""),
    "disk_mb": ("disk: sources and releases", "disk_mb", " MB"),
    "build_cache_mb": ("disk: build caches", "build_cache_mb", " MB"),
}


def billing(
    plan: Annotated[str | None, typer.Option("--plan", help="Switch your account to this plan (hobby, pro, "
                                             "enterprise); asks first. Moving up opens the payment page, unless "
                                             "you are an admin.")] = None,
    account: Annotated[str | None, typer.Option("--account", help="Admins: the account (email or id) whose plan "
                                                "--plan sets, without payment.")] = None,
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Your plan, its limits and how much of them you use; --plan changes plan."""
    from runix.client import RunixAPIError

    client = connect()
    if account:
        if not plan:
            raise output.CliError("--account needs --plan: `runix billing --account EMAIL --plan PLAN`")
        confirm(f"Move {account} to the {plan} plan?", yes, f"change the plan of {account}")
        changed = client.set_account_plan(account, plan)
        output.result(changed, as_json, f"{account} is on the {changed['plan']} plan now.")
        return
    if plan:
        confirm(f"Switch your account to the {plan} plan? Its price applies from now on.", yes,
                f"change plan to {plan}")
        try:
            summary = client.change_plan(plan)
        except RunixAPIError as exc:
            if exc.code != "PAYMENT_REQUIRED":
                raise
            checkout = client.checkout(plan)  # raises, saying why, when the server takes no payments
            if as_json:
                output.emit_json(checkout)
                return
            output.out(f"Pay for the {plan} plan here: {checkout['url']}")
            output.out("Your plan changes once the payment goes through; `runix billing` shows it.")
            return
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
    rows = []
    for limit_name, limit in summary["limits"].items():
        label, used_key, unit = LIMIT_ROWS.get(limit_name, (limit_name.replace("_", " "), limit_name, ""))
        used = summary["usage"].get(used_key) if used_key else None
        rows.append([label, "-" if used is None else f"{used}{unit}",
                     "unlimited" if limit is None else f"{limit}{unit}"])
    shown = {key for _, key, _ in LIMIT_ROWS.values()}
    for key, value in summary["usage"].items():
        if key not in shown and key not in summary["limits"]:
            rows.append([key.replace("_", " "), value, "-"])
    output.table(["", "USED", "LIMIT"], rows)
