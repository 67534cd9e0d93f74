"""`runix env ls|add|rm|pull`: a project's environment variables."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from runix.cli import output
from runix.cli.common import confirm, connect, project_ref
from runix.cli.options import JsonOption, ProjectOption, YesOption
from runix.cli.output import CliError

env_app = typer.Typer(help="Environment variables of a project. Changes apply to the next deployment.",
                      no_args_is_help=True)

TARGETS = ("production", "preview", "development")
TargetOption = Annotated[list[str] | None, typer.Option(
    "--target", "-t", help="production, preview or development; repeat for several. Default: all three.")]


def _targets(values: list[str] | None) -> list[str] | None:
    for value in values or []:
        if value not in TARGETS:
            raise CliError(f"Unknown target '{value}': use production, preview or development.", exit_code=2)
    return list(dict.fromkeys(values)) if values else None


@env_app.command("ls")
def env_ls(project: ProjectOption = None, target: TargetOption = None, as_json: JsonOption = False) -> None:
    """List the variables (values of sensitive ones are never shown)."""
    client = connect()
    wanted = _targets(target)
    variables = [v for v in client.list_env(project_ref(project, client.api_url))
                 if not wanted or set(wanted) & set(v["targets"])]
    if as_json:
        output.emit_json(variables)
        return
    output.table(["KEY", "VALUE", "TARGETS", "TYPE", "UPDATED"],
                 [[v["key"], v.get("value", "(sensitive)"), ", ".join(v["targets"]),
                   v["type"], output.ago(v["updated_at"])] for v in variables],
                 empty="No environment variables.")


@env_app.command("add")
def env_add(
    key: Annotated[str, typer.Argument(metavar="KEY", help="Letters, digits and _, not starting with a digit.")],
    value: Annotated[str | None, typer.Argument(
        metavar="VALUE",
        help="The value. Omit it to type it at a hidden prompt or pipe it on stdin (keeps it out of shell history)."
    )] = None,
    target: TargetOption = None,
    sensitive: Annotated[bool, typer.Option("--sensitive", help="Write-only: the value can never be read back.")]
    = False,
    project: ProjectOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add a variable for some targets (all three by default)."""
    targets = _targets(target)
    client = connect()
    ref = project_ref(project, client.api_url)
    if value is None:
        if output.is_tty(sys.stdin):
            value = typer.prompt(f"Value of {key}", hide_input=True, err=True)
        else:
            value = sys.stdin.read()
            value = value[:-1] if value.endswith("\n") else value
    created = client.add_env(ref, key, value, targets, sensitive=sensitive)
    if as_json:
        output.emit_json(created)
        return
    output.success(f"Added {created['key']} ({created['type']}) for {', '.join(created['targets'])}.")
    output.info("It applies to the next deployment: run `runix deploy` to use it.")


@env_app.command("rm")
def env_rm(
    key: Annotated[str, typer.Argument(metavar="KEY", help="The variable's name.")],
    target: Annotated[list[str] | None, typer.Option(
        "--target", "-t", help="Remove only the variable set for these targets. Default: every one named KEY.")]
    = None,
    project: ProjectOption = None,
    as_json: JsonOption = False,
) -> None:
    """Remove a variable."""
    wanted = _targets(target)
    client = connect()
    ref = project_ref(project, client.api_url)
    matches = [v for v in client.list_env(ref)
               if v["key"] == key and (not wanted or set(wanted) & set(v["targets"]))]
    if not matches:
        raise CliError(f"No variable {key}" + (f" for {', '.join(wanted)}" if wanted else "") + " on this project.")
    removed = [client.remove_env(ref, v["id"]) for v in matches]
    if as_json:
        output.emit_json(removed)
        return
    for v in removed:
        output.success(f"Removed {v['key']} from {', '.join(v['targets'])}.")


def _dotenv_value(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("$", "\\$")
    return f'"{escaped}"'


@env_app.command("pull")
def env_pull(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="Where to write.")] = Path(".env"),
    target: Annotated[str, typer.Option("--target", "-t", help="Which target's values.")] = "development",
    project: ProjectOption = None,
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Write the variables of the development target to a .env file, for running the app locally.

    Sensitive values cannot be read back, so they are left out (and named).
    """
    _targets([target])
    client = connect()
    variables = [v for v in client.list_env(project_ref(project, client.api_url)) if target in v["targets"]]
    # The API leaves a sensitive variable's value out (the key is absent): those are the ones skipped.
    written = sorted((v for v in variables if "value" in v), key=lambda v: v["key"])
    skipped = sorted(v["key"] for v in variables if "value" not in v)
    text = (f"# Written by `runix env pull` ({target} target). Sensitive variables are not included.\n"
            + "".join(f"{v['key']}={_dotenv_value(v['value'])}\n" for v in written))
    if file.exists() and file.read_text(errors="replace") != text:
        confirm(f"{file} exists. Overwrite it?", yes, f"overwrite {file}")
    fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds secrets
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    if as_json:
        output.emit_json({"file": str(file), "target": target, "written": [v["key"] for v in written],
                          "skipped_sensitive": skipped})
        return
    output.success(f"Wrote {len(written)} variable{'s' * (len(written) != 1)} to {file}.")
    if skipped:
        output.warn(f"Skipped sensitive variables (their values cannot be read back): {', '.join(skipped)}")
