"""`runix domains ls|add|verify|rm`: custom domains of a project."""

from __future__ import annotations

from typing import Annotated

import typer

from runix.cli import output
from runix.cli.common import confirm, connect, project_ref
from runix.cli.options import JsonOption, ProjectOption, YesOption
from runix.cli.output import CliError

domains_app = typer.Typer(help="Custom domains: attach, verify with a DNS TXT record, detach.", no_args_is_help=True)

DomainArgument = Annotated[str, typer.Argument(metavar="DOMAIN", help="A host name such as www.example.com.")]


def _record(domain: dict) -> str:
    record = domain["verification"]
    return f"{record['type']}  {record['name']}  {record['value']}"


@domains_app.command("ls")
def domains_ls(project: ProjectOption = None, as_json: JsonOption = False) -> None:
    """List the project's domains and whether they are verified."""
    client = connect()
    domains = client.list_domains(project_ref(project, client.api_url))
    if as_json:
        output.emit_json(domains)
        return
    output.table(["DOMAIN", "VERIFIED", "TXT RECORD", "ADDED"],
                 [[d["name"], "yes" if d["verified"] else "no",
                   "" if d["verified"] else f"{d['verification']['name']} = {d['verification']['value']}",
                   output.ago(d["created_at"])] for d in domains],
                 empty="No domains: add one with `runix domains add www.example.com`.")


@domains_app.command("add")
def domains_add(name: DomainArgument, project: ProjectOption = None, as_json: JsonOption = False) -> None:
    """Attach a domain and print the DNS TXT record that proves you own it."""
    client = connect()
    domain = client.add_domain(project_ref(project, client.api_url), name)
    if as_json:
        output.emit_json(domain)
        return
    output.success(f"Added {domain['name']}. Create this DNS record to verify it:")
    output.out(_record(domain))
    output.info(f"Then run `runix domains verify {domain['name']}`. Once verified it serves the production "
                "deployment (point its A/CNAME record at this Runix server).")


@domains_app.command("verify")
def domains_verify(name: DomainArgument, project: ProjectOption = None, as_json: JsonOption = False) -> None:
    """Look up the TXT record; a verified domain serves the production deployment."""
    from runix.client import RunixAPIError

    client = connect()
    try:
        domain = client.verify_domain(project_ref(project, client.api_url), name)
    except RunixAPIError as exc:
        if exc.status == 400 and isinstance(exc.details, dict) and "verification" in exc.details:
            raise CliError(f"{name} is not verified yet: the TXT record was not found. Create it, wait for DNS, "
                           f"and run this again:\n{_record(exc.details)}") from exc
        raise
    if as_json:
        output.emit_json(domain)
    else:
        output.success(f"{domain['name']} is verified and serves the production deployment.")


@domains_app.command("rm")
def domains_rm(name: DomainArgument, project: ProjectOption = None, yes: YesOption = False,
               as_json: JsonOption = False) -> None:
    """Detach a domain from the project."""
    client = connect()
    ref = project_ref(project, client.api_url)
    confirm(f"Detach {name}? It stops serving the project at once.", yes, f"detach {name}")
    domain = client.remove_domain(ref, name)
    output.result(domain, as_json, f"Detached {domain['name']}.")
