"""The dashboard's projects page without a browser: each project with its newest deployment (read for the whole
page at once, not project by project)."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import httpx

from runix.client import RunixClient
from tests.support import ROOT, Account, RunixServer, running_server, tar_folder


def settled(sdk: RunixClient, project: str) -> str:
    deployment = sdk.create_deployment(project, io.BytesIO(tar_folder(ROOT / "examples" / "static")), "production")
    log = sdk.follow_events(deployment["id"])
    for _ in log:
        pass
    return log.status or ""


def test_each_project_shows_its_newest_deployment(server: RunixServer, account: Account) -> None:
    with RunixClient(server.url, account.token) as sdk:
        for name in ("older-then-broken", "only-ready", "never-deployed"):
            sdk.create_project(name)
        assert settled(sdk, "older-then-broken") == "READY"
        sdk.update_project("older-then-broken", build_command="exit 3")
        assert settled(sdk, "older-then-broken") == "ERROR"
        assert settled(sdk, "only-ready") == "READY"

    page = httpx.get(f"{server.url}/dashboard", cookies={"runix_session": account.token}, timeout=30)
    assert page.status_code == 200
    shown = {}
    for item in re.findall(r'<li class="card project-item">(.*?)</li>', page.text, re.S):
        name = re.search(r'class="project-link"[^>]*>([^<]+)<', item).group(1)  # type: ignore[union-attr]
        status = re.search(r'class="status [^"]*">(\w+)<', item)
        shown[name] = status.group(1) if status else ("none" if "No deployments yet" in item else "?")
    assert shown == {"older-then-broken": "ERROR", "only-ready": "READY", "never-deployed": "none"}


def test_deployments_of_every_project_on_one_page(server: RunixServer, account: Account) -> None:
    with RunixClient(server.url, account.token) as sdk:
        for name in ("first-app", "second-app"):
            sdk.create_project(name)
        assert settled(sdk, "first-app") == "READY"
        sdk.update_project("second-app", build_command="exit 3")
        assert settled(sdk, "second-app") == "ERROR"
        newest_first = [(d["id"], d["project"], d["status"]) for d in sdk.list_deployments()]

    def rows(query: str = "") -> list[tuple[str, str, str]]:
        page = httpx.get(f"{server.url}/dashboard/deployments{query}", cookies={"runix_session": account.token},
                         timeout=30)
        assert page.status_code == 200
        return [(deployment_id, project, status) for project, deployment_id, _, status in re.findall(
            r'<a class="mono" href="/dashboard/projects/([^/"]+)/deployments/(dpl_\w+)">\2</a>.*?'
            r'<a href="/dashboard/projects/(\1)">\1</a>.*?data-status="(\w+)"', page.text, re.S)]

    assert rows() == newest_first and len(newest_first) == 2
    assert rows("?status=ERROR") == [d for d in newest_first if d[2] == "ERROR"]
    assert 'aria-current="page">Deployments<' in httpx.get(
        f"{server.url}/dashboard/deployments", cookies={"runix_session": account.token}).text


def test_an_oversize_upload_without_javascript_returns_to_the_form_with_the_reason(tmp_path: Path) -> None:
    """The browser's own size check needs JavaScript; without it the server's limit answers, with the form's page
    and the reason (not the API's JSON)."""
    with running_server(tmp_path, RUNIX_MAX_UPLOAD_BYTES="100000") as server:
        account = server.sign_in()
        assert account.client.post("/projects", json={"name": "big"}).status_code == 201
        form_page = f"{server.url}/dashboard/projects/big"
        with httpx.Client(cookies={"runix_session": account.token}, timeout=30) as browser:
            r = browser.post(f"{server.url}/dashboard/deployments", headers={"Referer": form_page},
                             data={"project": "big", "target": "production"},
                             files={"source": ("site.tar.gz", os.urandom(2 << 20), "application/gzip")})
            assert r.status_code == 303 and r.headers["location"].endswith("/dashboard/projects/big"), r.text
            shown = browser.get(form_page)
        assert "over 98 KiB, the largest accepted: nothing was deployed" in shown.text, shown.text
        assert account.client.get("/deployments", params={"project": "big"}).json() == []
