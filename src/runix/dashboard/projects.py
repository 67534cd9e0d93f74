"""Dashboard pages of projects: list and create, deployments (live status and build log), env vars, domains,
settings."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from anyio import from_thread
from fastapi import Request
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.types import Scope

from runix.dashboard.web import Call, action, back, filesize, page, redirect
from runix.db.models import Deployment, Project
from runix.errors import BadRequest, Conflict, NotFound, RateLimited, ValidationFailed
from runix.pipeline.build import FRAMEWORKS
from runix.pipeline.events import Event
from runix.plans import get_plan
from runix.schemas import EnvVarCreate, EnvVarUpdate, ProjectCreate, ProjectUpdate
from runix.services import deployments, domains, env, projects
from runix.statuses import ACTIVE, STATUSES

DEPLOYMENTS_PER_PAGE = 50
PROJECTS_PER_PAGE = 60
LOG_LINES_PER_POLL = 2000


def _model(model: Any, data: dict[str, Any]) -> Any:
    """Validates form fields with the API's own request body models (same rules, same messages)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "form"
        raise ValidationFailed(f"{where}: {first.get('msg', 'invalid')}") from exc


def _project_context(c: Call, tab: str) -> dict[str, Any]:
    project = projects.get(c.db, c.me, c.params["name"])
    return {"project": project, "public": projects.public(c.ctx, c.db, project), "tab": tab, "title": project.name}


# Projects -----------------------------------------------------------------------------------------------------------


@page("", api=("GET /projects", "GET /deployments"))
def projects_page(c: Call) -> Response:
    cursor = c.request.query_params.get("cursor", "")[:64] or None
    found = projects.list_public(c.ctx, c.me, PROJECTS_PER_PAGE, cursor)
    latest = deployments.latest_of(c.ctx, c.db, c.me, [p.id for p in found.items])
    return c.render("projects.html", title="Projects", paged=cursor is not None, more=found.next_cursor,
                    projects=[(p, latest.get(p.id)) for p in found.items])


@action("/projects", api="POST /projects")
def create_project(c: Call) -> Response:
    body = _model(ProjectCreate, {"name": c.field("name"), **_settings_fields(c)})
    project = projects.create(c.ctx, c.db, c.me, body)
    return redirect(c.request, f"/dashboard/projects/{project.name}", f"Created project {project.name}.")


def _settings_fields(c: Call) -> dict[str, str | None]:
    return {f: c.field(f) or None for f in projects.SETTINGS_FIELDS if c.form is not None and f in c.form}


# Deployments --------------------------------------------------------------------------------------------------------


@page("/projects/{name}", api=("GET /projects/{project}", "GET /deployments"))
def project_page(c: Call) -> Response:
    context = _project_context(c, "deployments")
    return c.render("project_deployments.html", **context, **_deployments_context(c, context["project"]),
                    max_upload_bytes=c.ctx.settings.max_upload_bytes,
                    max_upload_label=filesize(c.ctx.settings.max_upload_bytes))


@action("/deployments", api="POST /deployments")
def deploy_upload(c: Call) -> Response:
    """The deploy form: the same fields as POST /deployments (project, target, source) and the same service, so the
    same archive rules and plan limits apply."""
    upload = c.form.get("source") if c.form is not None else None
    if not isinstance(upload, UploadFile) or not upload.filename:
        raise ValidationFailed("Choose a .tar.gz archive of your app's folder to deploy")
    try:
        row = deployments.create(c.ctx, c.db, c.me, c.field("project"), c.field("target") or None, upload.file)
    except RateLimited as exc:
        raise RateLimited(_deploy_limit_message(c, exc.retry_after), retry_after=exc.retry_after) from exc
    except BadRequest as exc:  # the archive broke a rule: say which file, then the rule as the API words it
        raise BadRequest(f"{upload.filename} was not deployed. {exc.message}") from exc
    project = projects.get(c.db, c.me, row.project_id)
    return redirect(c.request, f"/dashboard/projects/{project.name}/deployments/{row.id}",
                    f"Uploaded {upload.filename} ({filesize(row.source_bytes)}). Its {row.target} build has started: "
                    "the log follows below.")


def upload_too_large(max_upload_bytes: int) -> Callable[[Scope], Response]:
    """The deploy form's answer to an archive over the size limit (runix.api.middleware.BodyLimit stops it before the
    form is read): back to the form with the reason, as the browser's own check says it when JavaScript runs."""
    def answer(scope: Scope) -> Response:
        return back(Request(scope), "/dashboard", f"The archive is over {filesize(max_upload_bytes)}, the largest "
                    "accepted: nothing was deployed. Leave out dependency and build folders.")

    return answer


def _deploy_limit_message(c: Call, retry_after: int) -> str:
    plan = get_plan(c.me.plan)
    wait = f"{math.ceil(retry_after / 60)} minutes" if retry_after >= 90 else f"{retry_after} seconds"
    return (f"Deploy limit reached: the {plan.title} plan allows {plan.deploys_per_hour} deployments per hour. "
            f"You can deploy again in about {wait}, or choose a larger plan on the Billing page.")


def _deployments_context(c: Call, project: Project | None) -> dict[str, Any]:
    """A page of the project's deployments (every project's without one), filtered like GET /deployments by the
    query's status and target, older pages reached with its cursor (the service checks all three: a bad value is a
    400 page)."""
    query = {k: c.request.query_params.get(k, "")[:64] for k in ("status", "target", "cursor")}
    found = deployments.list_page(c.db, c.me, project.id if project else None, query["status"] or None,
                                  query["target"] or None, DEPLOYMENTS_PER_PAGE, query["cursor"] or None)
    rows = deployments.public_list(c.ctx, c.db, found.items)
    filters = {k: v for k, v in query.items() if v and k != "cursor"}
    return {"deployments": rows, "live": any(d.status in ACTIVE for d in rows), "filters": filters,
            "statuses": STATUSES, "targets": deployments.TARGETS,
            "query": urlencode({k: v for k, v in query.items() if v}),
            "older": urlencode(filters | {"cursor": found.next_cursor}) if found.next_cursor else None}


@page("/deployments", api=("GET /deployments",))
def all_deployments_page(c: Call) -> Response:
    """Every project's deployments, newest first; refreshed every 2 s while one is on its way."""
    return c.render("deployments.html", title="Deployments", **_deployments_context(c, None))


@page("/projects/{name}/deployments-table")
def deployments_table(c: Call) -> Response:
    """The deployments list alone, polled by htmx every second while a deployment is on its way."""
    project = projects.get(c.db, c.me, c.params["name"])
    return c.render("_deployments_table.html", project=project, public=projects.public(c.ctx, c.db, project),
                    refresh_head=True, **_deployments_context(c, project))


@page("/projects/{name}/deployments/{deployment_id}",
      api=("GET /deployments/{deployment_id}", "GET /deployments/{deployment_id}/events"))
def deployment_page(c: Call) -> Response:
    context = _project_context(c, "deployments")
    deployment = _deployment_of(c, context["project"])
    lines = _events(c, deployment.id, 0)
    return c.render("deployment.html", **context, d=deployment, lines=lines,
                    after=lines[-1].id if lines else 0, live=deployment.status in ACTIVE)


@page("/projects/{name}/deployments/{deployment_id}/live")
def deployment_live(c: Call) -> Response:
    """New log lines after `after` and the current status, polled by htmx every second until the deployment
    settles (the response then stops carrying the polling trigger)."""
    project = projects.get(c.db, c.me, c.params["name"])
    deployment = _deployment_of(c, project)
    raw_after = c.request.query_params.get("after", "")
    after = int(raw_after) if raw_after.isdecimal() else 0  # isdigit() also passes "²", which int() refuses
    lines = _events(c, deployment.id, after)
    return c.render("_deployment_live.html", project=project, public=projects.public(c.ctx, c.db, project),
                    d=deployment, lines=lines,
                    after=lines[-1].id if lines else after, live=deployment.status in ACTIVE)


def _deployment_of(c: Call, project: Project) -> Any:
    return deployments.public(c.ctx, c.db, _deployment_row(c, project), project)


def _deployment_row(c: Call, project: Project) -> Deployment:
    """The deployment in the path, which must belong to the project in the path (a mismatched deep link is 404)."""
    row = deployments.get(c.db, c.me, c.params["deployment_id"])
    if row.project_id != project.id:
        raise NotFound(f"Deployment '{row.id}' not found in project {project.name}")
    return row


def _events(c: Call, deployment_id: str, after: int) -> list[Event]:
    """The log lines after `after`, read like GET /deployments/{id}/events does."""
    return deployments.event_store(c.ctx).list(deployment_id, after or None, LOG_LINES_PER_POLL)


@action("/projects/{name}/deployments/{deployment_id}/promote", api="POST /deployments/{deployment_id}/promote")
def promote(c: Call) -> Response:
    project = projects.get(c.db, c.me, c.params["name"])
    deployment = _deployment_row(c, project)
    if c.ctx.deployer is None:
        raise Conflict("The deploy pipeline is not running on this server")
    from_thread.run(c.ctx.deployer.promote, deployment.id)  # handlers run in a worker thread of the event loop
    return redirect(c.request, f"/dashboard/projects/{project.name}",
                    f"Deployment {deployment.id} now serves production.")


@action("/projects/{name}/deployments/{deployment_id}/cancel", api="POST /deployments/{deployment_id}/cancel")
def cancel(c: Call) -> Response:
    project = projects.get(c.db, c.me, c.params["name"])
    deployment = deployments.cancel(c.ctx, c.db, c.me, _deployment_row(c, project).id)
    return redirect(c.request, f"/dashboard/projects/{project.name}/deployments/{deployment.id}",
                    "Deployment canceled.")


@action("/projects/{name}/deployments/{deployment_id}/delete", api="DELETE /deployments/{deployment_id}")
def delete_deployment(c: Call) -> Response:
    project = projects.get(c.db, c.me, c.params["name"])
    deployment = deployments.delete(c.ctx, c.db, c.me, _deployment_row(c, project).id)
    return redirect(c.request, f"/dashboard/projects/{project.name}",
                    f"Deleted deployment {deployment.id} with its release and logs.")


# Env vars -----------------------------------------------------------------------------------------------------------


def _targets(c: Call) -> list[str]:
    assert c.form is not None
    return [t for t in c.form.getlist("targets") if isinstance(t, str)]


@page("/projects/{name}/env", api=("GET /projects/{project}/env",))
def env_page(c: Call) -> Response:
    context = _project_context(c, "env")
    _, rows = env.list_for(c.db, c.me, context["project"].id)
    return c.render("project_env.html", **context, env=[env.public(c.ctx, v) for v in rows],
                    targets=env.TARGET_ORDER)


@action("/projects/{name}/env", api="POST /projects/{project}/env")
def add_env(c: Call) -> Response:
    body = _model(EnvVarCreate, {"key": c.field("key"), "value": c.form.get("value", "") if c.form else "",
                                 "targets": _targets(c) or list(env.TARGET_ORDER),
                                 "type": "sensitive" if c.field("sensitive") else "plain"})
    var = env.create(c.ctx, c.db, c.me, c.params["name"], body)
    return redirect(c.request, f"/dashboard/projects/{c.params['name']}/env",
                    f"Added {var.key}. It applies to the next deployment.")


@action("/projects/{name}/env/{env_id}", api="PATCH /projects/{project}/env/{env_id}")
def edit_env(c: Call) -> Response:
    changes: dict[str, Any] = {"key": c.field("key") or None, "targets": _targets(c) or None}
    value = c.form.get("value") if c.form else None
    if isinstance(value, str) and value != "":  # blank keeps the current (possibly hidden) value
        changes["value"] = value
    if c.field("sensitive"):
        changes["type"] = "sensitive"
    body = _model(EnvVarUpdate, {k: v for k, v in changes.items() if v is not None})
    var = env.update(c.ctx, c.db, c.me, c.params["name"], c.params["env_id"], body)
    return redirect(c.request, f"/dashboard/projects/{c.params['name']}/env", f"Saved {var.key}.")


@action("/projects/{name}/env/{env_id}/delete", api="DELETE /projects/{project}/env/{env_id}")
def delete_env(c: Call) -> Response:
    var = env.delete(c.db, c.me, c.params["name"], c.params["env_id"])
    return redirect(c.request, f"/dashboard/projects/{c.params['name']}/env", f"Deleted {var.key}.")


# Domains ------------------------------------------------------------------------------------------------------------


@page("/projects/{name}/domains", api=("GET /projects/{project}/domains",))
def domains_page(c: Call) -> Response:
    context = _project_context(c, "domains")
    rows = domains.list_for(c.db, c.me, context["project"].id)
    return c.render("project_domains.html", **context, domains=[domains.public(d) for d in rows])


@action("/projects/{name}/domains", api="POST /projects/{project}/domains")
def add_domain(c: Call) -> Response:
    domain = domains.add(c.ctx, c.db, c.me, c.params["name"], c.field("domain"))
    return redirect(c.request, f"/dashboard/projects/{c.params['name']}/domains",
                    f"Added {domain.name}. Create the TXT record below, then verify.")


@action("/projects/{name}/domains/{domain}/verify", api="POST /projects/{project}/domains/{name}/verify")
def verify_domain(c: Call) -> Response:
    domain = domains.verify(c.ctx, c.db, c.me, c.params["name"], c.params["domain"])
    return redirect(c.request, f"/dashboard/projects/{c.params['name']}/domains",
                    f"{domain.name} is verified and serves production.")


@action("/projects/{name}/domains/{domain}/delete", api="DELETE /projects/{project}/domains/{name}")
def remove_domain(c: Call) -> Response:
    domain = domains.remove(c.ctx, c.db, c.me, c.params["name"], c.params["domain"])
    return redirect(c.request, f"/dashboard/projects/{c.params['name']}/domains", f"Removed {domain.name}.")


# Settings -----------------------------------------------------------------------------------------------------------


@page("/projects/{name}/settings", api=("GET /projects/{project}",))
def settings_page(c: Call) -> Response:
    context = _project_context(c, "settings")
    current = context["project"].framework
    frameworks = sorted(FRAMEWORKS) + ([current] if current and current not in FRAMEWORKS else [])
    return c.render("project_settings.html", **context, frameworks=frameworks)


@action("/projects/{name}/settings", api="PATCH /projects/{project}")
def save_settings(c: Call) -> Response:
    body = _model(ProjectUpdate, {"name": c.field("new_name") or None, **_settings_fields(c)})
    project = projects.update(c.ctx, c.db, c.me, c.params["name"], body)
    return redirect(c.request, f"/dashboard/projects/{project.name}/settings", "Settings saved.")


@action("/projects/{name}/delete", api="DELETE /projects/{project}")
def delete_project(c: Call) -> Response:
    if c.field("confirm") != c.params["name"]:
        raise BadRequest(f"Type the project's name ({c.params['name']}) to confirm deleting it")
    project = projects.delete(c.ctx, c.db, c.me, c.params["name"])
    return redirect(c.request, "/dashboard", f"Deleted project {project.name}.")
