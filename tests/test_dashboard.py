"""The dashboard in a real browser (Playwright driving Chromium) against a real `runix server`.

One server, one local GitHub OAuth server and one browser serve the whole module. Each page is screenshotted at
desktop (1280x800) and phone (390x844) width into test-artifacts/screenshots/. Every form seen on any page is
collected, and the last test checks each maps to a registered dashboard action whose API endpoint exists.
"""

from __future__ import annotations

import io
import json
import mailbox
import os
import re
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from runix.dashboard import ACTIONS
from tests.dns_server import LoopbackDns
from tests.fake_github import FakeGitHub, GitHubUser
from tests.fake_payments import FakePayments
from tests.support import ROOT, RUNIX, RunixServer, missing_service, read_code, running_server

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SHOTS = ROOT / "test-artifacts" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
MAX_UPLOAD = 2 * 1024 * 1024  # small, so that the tests can upload past it
SEEN_FORMS: set[tuple[str, str]] = set()  # (method, path) of every form on every page the tests opened


@pytest.fixture(scope="module")
def github() -> Iterator[FakeGitHub]:
    with FakeGitHub() as fake:
        yield fake


@pytest.fixture(scope="module")
def dns() -> Iterator[LoopbackDns]:
    server = LoopbackDns().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def payments() -> Iterator[FakePayments]:
    with FakePayments() as provider:
        yield provider


@pytest.fixture(scope="module")
def dash(tmp_path_factory: pytest.TempPathFactory, github: FakeGitHub, dns: LoopbackDns,
         payments: FakePayments) -> Iterator[RunixServer]:
    with running_server(tmp_path_factory.mktemp("dashboard"), RUNIX_RATE_LIMIT_PER_MINUTE="100000",
                        RUNIX_MAX_UPLOAD_BYTES=str(MAX_UPLOAD),
                        RUNIX_HEALTH_TIMEOUT="30", RUNIX_DEVICE_POLL_INTERVAL="1", RUNIX_DNS_RESOLVER=dns.address,
                        **github.env(), **payments.env()) as server:
        payments.webhook_url = f"{server.url}/billing/webhook"
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        missing_service("Chromium", f"{CHROMIUM} not found (make test installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Alice:
    """A person signed in to the dashboard in her own browser context, with an API client on the same account. She
    answers the browser's confirmation dialogs with `accept_dialogs`; `dialogs` keeps what they asked."""

    def __init__(self, page, email: str, api: httpx.Client):
        self.page = page
        self.email = email
        self.api = api
        self.accept_dialogs = True
        self.dialogs: list[str] = []
        page.on("dialog", self._answer)

    def _answer(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.accept() if self.accept_dialogs else dialog.dismiss()


@pytest.fixture(scope="module")
def alice(browser, dash: RunixServer) -> Iterator[Alice]:
    context = browser.new_context(viewport=DESKTOP, base_url=dash.url)
    page = context.new_page()
    page.set_default_timeout(15_000)
    email = f"alice-{uuid.uuid4().hex[:8]}@example.com"
    sign_in_by_email(page, dash, email)
    api = dash.sign_in(email).client
    yield Alice(page, email, api)
    context.close()


def sign_in_by_email(page, server: RunixServer, email: str, shots: bool = True, start: str = "/dashboard") -> None:
    """Opens `start` signed out, signs in with the mailed code, and ends back on `start`."""
    page.goto(start)
    assert urlsplit(page.url).path == "/dashboard/login"
    if shots:
        shoot(page, "sign-in")
    page.fill("input[name=email]", email)
    page.click("text=Email me a sign-in code")
    page.wait_for_url(re.compile(r"/dashboard/login/code"))
    if shots:
        shoot(page, "sign-in-code")
    page.fill("input[name=code]", read_code(server.maildir, email))
    page.click("button:has-text('Sign in')")
    page.wait_for_url(re.compile(re.escape(start) + "$"))


def shoot(page, name: str) -> None:
    """Screenshots the page at desktop and phone width, and notes every form on it."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for form in page.eval_on_selector_all("form", "fs => fs.map(f => [f.method, new URL(f.action).pathname])"):
        SEEN_FORMS.add((form[0].upper(), form[1]))
    page.screenshot(path=str(SHOTS / f"{name}-desktop.png"), full_page=True)
    page.set_viewport_size(PHONE)
    page.screenshot(path=str(SHOTS / f"{name}-phone.png"), full_page=True)
    page.set_viewport_size(DESKTOP)


def flash_text(page) -> str:
    return page.inner_text(".flash")


def tar_folder(folder: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
    return buf.getvalue()


def deploy_static(api: httpx.Client, project: str) -> str:
    r = api.post("/deployments", data={"project": project, "target": "production"},
                 files={"source": ("static.tar.gz", tar_folder(ROOT / "examples" / "static"), "application/gzip")})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def wait_status(api: httpx.Client, deployment_id: str, status: str = "READY", timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = api.get(f"/deployments/{deployment_id}").json()["status"]
        if current == status:
            return
        assert current not in ("ERROR", "CANCELED"), current
        time.sleep(0.2)
    raise AssertionError(f"{deployment_id} did not reach {status}")


# Sign-in ------------------------------------------------------------------------------------------------------------


def test_email_sign_in_starts_a_cookie_session(alice: Alice) -> None:
    page = alice.page
    assert page.inner_text(".who") == alice.email
    cookie = next(c for c in page.context.cookies() if c["name"] == "runix_session")
    assert cookie["value"].startswith("rnx_s_") and cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    assert not cookie["secure"]  # plain http here; https (or X-Forwarded-Proto: https) makes it Secure
    shoot(page, "projects-empty")
    assert "No projects yet" in page.inner_text("main")


def test_sign_in_with_github(browser, dash: RunixServer, github: FakeGitHub) -> None:
    github.current_user = GitHubUser(id=4242, login="octo-runix", email=f"octo-{uuid.uuid4().hex[:6]}@example.com",
                                     name="Octo Runix")
    context = browser.new_context(viewport=DESKTOP, base_url=dash.url)
    page = context.new_page()
    page.goto("/dashboard/tokens")  # a deep link: after sign-in the browser comes back here
    page.click("#github-sign-in")
    page.wait_for_url(re.compile(r"/dashboard/tokens$"))
    assert page.inner_text(".who") == "octo-runix"
    assert "GitHub sign-in" in page.inner_text("main")
    assert {"GET /login/oauth/authorize", "POST /login/oauth/access_token", "GET /api/v3/user",
            "GET /api/v3/user/emails"} <= set(github.requests)
    # An unverified primary email is refused with a clear page.
    context.clear_cookies()
    github.current_user = GitHubUser(id=4343, login="unverified", email="nobody@example.com", email_verified=False)
    page.goto("/dashboard/login")
    page.click("#github-sign-in")
    assert "no verified primary email" in page.inner_text("#error-message")
    shoot(page, "github-unverified")
    context.close()


def test_sign_in_with_the_mailed_link(browser, dash: RunixServer) -> None:
    email = f"linky-{uuid.uuid4().hex[:6]}@example.com"
    assert httpx.post(f"{dash.url}/auth/email", json={"email": email}).status_code == 200
    read_code(dash.maildir, email)  # waits for the mail
    box = mailbox.Maildir(dash.maildir, create=False)
    body = next(m for m in box if m["To"] == email).get_payload(decode=True).decode()
    link = re.search(r"(http\S+/dashboard/login/link\?token=\S+)", body).group(1)
    context = browser.new_context(viewport=DESKTOP, base_url=dash.url)
    page = context.new_page()
    page.goto(link)
    assert "runix_session" not in {c["name"] for c in context.cookies()}  # opening the link alone signs nobody in
    page.click("button:has-text('Continue')")
    page.wait_for_url(re.compile(r"/dashboard$"))
    assert page.inner_text(".who") == email
    context.clear_cookies()
    page.goto(link)  # used up
    page.click("button:has-text('Continue')")
    assert "wrong, used or expired" in flash_text(page)
    assert "runix_session" not in {c["name"] for c in context.cookies()}
    context.close()


# Projects and deployments -------------------------------------------------------------------------------------------


def test_create_project_deploy_and_roll_back(alice: Alice) -> None:
    page = alice.page
    page.goto("/dashboard")
    page.fill("input[name=name]", "shop")
    page.click("text=Create project")
    page.wait_for_url(re.compile(r"/dashboard/projects/shop$"))
    assert "No deployments yet" in page.inner_text("main")
    shoot(page, "project-empty")

    first = deploy_static(alice.api, "shop")
    page.reload()
    # The status updates live on the page (htmx polls the table while a deployment is on its way).
    page.wait_for_selector(f"#row-{first} [data-status=READY]", timeout=60_000)
    page.wait_for_function("!document.querySelector('#project-urls').innerText.includes('nothing in production')")
    shoot(page, "project-deployments")

    page.click(f"#row-{first} a.mono")
    page.wait_for_url(re.compile(rf"/deployments/{first}$"))
    assert "READY" in page.inner_text("#deployment-status")
    assert page.inner_text("#log").strip()
    shoot(page, "deployment")

    # A second deployment with a build that takes a moment, watched from its own page: the status and the build
    # log stream in without a reload.
    slow_build = "echo phase-$((1)) && sleep 2 && echo phase-$((2))"  # the echoed command holds neither marker
    r = alice.api.patch("/projects/shop", json={"build_command": slow_build})
    assert r.status_code == 200, r.text
    second = deploy_static(alice.api, "shop")
    page.goto(f"/dashboard/projects/shop/deployments/{second}")
    assert page.get_attribute("#deployment-status [data-status]", "data-status") in ("QUEUED", "BUILDING")
    page.evaluate("window.stillTheSamePage = true")
    page.wait_for_selector("#log :text('phase-1')", timeout=30_000)
    assert "phase-2" not in page.inner_text("#log")
    page.wait_for_selector("#log :text('phase-2')", timeout=30_000)
    page.wait_for_selector("#deployment-status [data-status=READY]", timeout=60_000)
    assert page.evaluate("window.stillTheSamePage") is True
    log = page.inner_text("#log")
    assert log.index("phase-1") < log.index("phase-2") and log.count("phase-1") == 1
    wait_status(alice.api, second)
    alice.api.patch("/projects/shop", json={"build_command": None})
    assert alice.api.get("/projects/shop").json()["production_deployment_id"] == second

    # Roll back to the first from the deployments list.
    page.goto("/dashboard/projects/shop")
    page.click(f"#row-{first} [data-action=rollback]")
    page.wait_for_url(re.compile(r"/dashboard/projects/shop$"))
    assert "now serves production" in flash_text(page)
    assert alice.api.get("/projects/shop").json()["production_deployment_id"] == first
    assert "Production" in page.inner_text(f"#row-{first}")
    shoot(page, "project-rolled-back")


def upload_through_the_form(page, archive: bytes, name: str = "static.tar.gz", target: str = "production") -> None:
    page.set_input_files("#deploy-form input[name=source]",
                         {"name": name, "mimeType": "application/gzip", "buffer": archive})
    page.select_option("#deploy-form select[name=target]", target)
    page.click("#deploy-form button[type=submit]")


def test_deploy_by_uploading_an_archive_in_the_browser(alice: Alice, dash: RunixServer) -> None:
    page = alice.page
    page.goto("/dashboard/projects/shop")
    shoot(page, "project-deploy-form")
    # Not an archive: the same rule the API applies, said on the page, and nothing is deployed.
    before = len(alice.api.get("/deployments", params={"project": "shop"}).json())
    upload_through_the_form(page, b"just some notes, not a gzip file\n", name="notes.tar.gz")
    page.wait_for_url(re.compile(r"/dashboard/projects/shop$"))
    assert "gzip" in flash_text(page).lower()
    assert len(alice.api.get("/deployments", params={"project": "shop"}).json()) == before
    shoot(page, "project-deploy-refused")
    # Larger than a JSON body may be (1 MiB) but within the upload limit: it reaches the archive check.
    upload_through_the_form(page, os.urandom(MAX_UPLOAD // 2 + 300_000), name="big.tar.gz")
    page.wait_for_url(re.compile(r"/dashboard/projects/shop$"))
    assert "big.tar.gz was not deployed" in flash_text(page) and "gzip" in flash_text(page)
    # Past the upload limit: the page says so before sending it.
    upload_through_the_form(page, os.urandom(MAX_UPLOAD + 1), name="huge.tar.gz")
    assert "the largest archive accepted is 2 MiB" in page.inner_text("#deploy-problem")
    assert urlsplit(page.url).path == "/dashboard/projects/shop"
    assert len(alice.api.get("/deployments", params={"project": "shop"}).json()) == before

    upload_through_the_form(page, tar_folder(ROOT / "examples" / "static"), target="preview")
    page.wait_for_url(re.compile(r"/dashboard/projects/shop/deployments/dpl_\w+$"))
    deployment_id = urlsplit(page.url).path.rsplit("/", 1)[1]
    assert "Uploaded static.tar.gz" in flash_text(page)
    page.wait_for_selector("#deployment-status [data-status=READY]", timeout=60_000)
    assert page.inner_text("#log").strip()
    made = alice.api.get(f"/deployments/{deployment_id}").json()
    assert made["status"] == "READY" and made["target"] == "preview" and not made["is_production"]
    served = httpx.get(f"http://127.0.0.1:{dash.router_port}/", headers={"Host": urlsplit(made["url"]).netloc})
    assert served.status_code == 200 and "Hello from Runix" in served.text
    shoot(page, "deployment-uploaded")

    # The list filters like GET /deployments (status, target) and pages back with its cursor.
    page.goto("/dashboard/projects/shop")
    page.select_option("#deployment-filters select[name=target]", "preview")
    page.click("#deployment-filters button")
    page.wait_for_url(re.compile(r"target=preview"))
    shown = page.eval_on_selector_all("#deployments tbody tr", "rows => rows.map(r => r.id)")
    assert shown == [f"row-{deployment_id}"]
    page.goto(f"/dashboard/projects/shop?cursor={deployment_id}")
    shown = page.eval_on_selector_all("#deployments tbody tr", "rows => rows.map(r => r.id)")
    assert shown and f"row-{deployment_id}" not in shown
    response = page.goto("/dashboard/projects/shop?status=SLEEPY")
    assert response is not None and response.status == 400
    assert "status must be one of" in page.inner_text("#error-message")
    assert page.inner_text(".who") == alice.email  # an error page keeps the navigation of the signed-in person


def test_delete_a_deployment_and_production_is_refused(alice: Alice) -> None:
    page = alice.page
    listed = alice.api.get("/deployments", params={"project": "shop"}).json()
    production = alice.api.get("/projects/shop").json()["production_deployment_id"]
    spare = next(d["id"] for d in listed if d["status"] == "READY" and d["id"] != production)
    page.goto(f"/dashboard/projects/shop/deployments/{production}")
    assert "serves production" in page.inner_text("#delete-deployment")
    assert page.locator("#delete-deployment button").count() == 0

    # The page was opened while the deployment was not production; meanwhile it is promoted: the delete is refused.
    page.goto(f"/dashboard/projects/shop/deployments/{spare}")
    assert alice.api.post(f"/deployments/{spare}/promote").status_code == 200
    page.click("#delete-deployment summary")
    shoot(page, "deployment-delete-confirm")
    page.click("#delete-deployment button:has-text('Yes, delete')")
    assert "production deployment" in flash_text(page)
    assert alice.api.get(f"/deployments/{spare}").status_code == 200
    shoot(page, "deployment-delete-refused")

    # Back to the previous production; now the spare one goes, with its release and logs.
    assert alice.api.post(f"/deployments/{production}/promote").status_code == 200
    page.goto(f"/dashboard/projects/shop/deployments/{spare}")
    page.click("#delete-deployment summary")
    page.click("#delete-deployment button:has-text('Yes, delete')")
    page.wait_for_url(re.compile(r"/dashboard/projects/shop$"))
    assert f"Deleted deployment {spare}" in flash_text(page)
    assert page.locator(f"#row-{spare}").count() == 0
    assert alice.api.get(f"/deployments/{spare}").status_code == 404


def test_cancel_under_another_projects_path_is_refused(alice: Alice, dash: RunixServer) -> None:
    """Like promote and delete, cancel acts only on a deployment of the project its path names."""
    assert alice.api.post("/projects", json={"name": "slow", "build_command": "sleep 30"}).status_code == 201
    r = alice.api.post("/deployments", data={"project": "slow", "target": "preview"},
                       files={"source": ("app.tar.gz", tar_folder(ROOT / "examples" / "static"), "application/gzip")})
    assert r.status_code == 201, r.text
    building = r.json()["id"]
    alice.page.goto("/dashboard/billing")
    csrf = alice.page.locator("input[name=csrf]").first.get_attribute("value")
    cookies = {c["name"]: c["value"] for c in alice.page.context.cookies()}
    r = httpx.post(f"{dash.url}/dashboard/projects/shop/deployments/{building}/cancel", data={"csrf": csrf},
                   cookies=cookies, headers={"Referer": f"{dash.url}/dashboard/projects/shop"})
    assert r.status_code == 303 and r.headers["location"] == "/dashboard/projects/shop"
    assert alice.api.get(f"/deployments/{building}").json()["status"] in ("QUEUED", "BUILDING")
    assert alice.api.post(f"/deployments/{building}/cancel").status_code == 200
    assert alice.api.delete("/projects/slow").status_code == 200  # the later tests count alice's projects


def test_live_log_ignores_an_after_that_is_no_number(alice: Alice, dash: RunixServer) -> None:
    deployment_id = alice.api.get("/deployments", params={"project": "shop"}).json()[0]["id"]
    cookies = {c["name"]: c["value"] for c in alice.page.context.cookies()}
    r = httpx.get(f"{dash.url}/dashboard/projects/shop/deployments/{deployment_id}/live", params={"after": "\u00b2"},
                  cookies=cookies)
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]


def test_deploy_limit_is_a_readable_message(browser, dash: RunixServer) -> None:
    """A Hobby account that used its 5 deployments this hour (through the API, canceled at once) uploads once more in
    the browser: the page says what the limit is and when it can deploy again."""
    carol = dash.sign_in()
    assert carol.client.post("/projects", json={"name": "busy"}).status_code == 201
    archive = tar_folder(ROOT / "examples" / "static")
    for _ in range(5):
        r = carol.client.post("/deployments", data={"project": "busy", "target": "preview"},
                              files={"source": ("app.tar.gz", archive, "application/gzip")})
        assert r.status_code == 201, r.text
        carol.client.post(f"/deployments/{r.json()['id']}/cancel")
    context = browser.new_context(viewport=DESKTOP, base_url=dash.url)
    context.add_cookies([{"name": "runix_session", "value": carol.token, "url": dash.url}])
    page = context.new_page()
    page.goto("/dashboard/projects/busy")
    upload_through_the_form(page, archive)
    page.wait_for_url(re.compile(r"/dashboard/projects/busy$"))
    message = flash_text(page)
    assert "Deploy limit reached" in message and "5 deployments per hour" in message and "minutes" in message
    assert len(carol.client.get("/deployments").json()) == 5
    shoot(page, "project-deploy-limit")
    context.close()


def test_env_vars_sensitive_values_are_masked(alice: Alice) -> None:
    page = alice.page
    page.goto("/dashboard/projects/shop/env")
    assert "No env vars yet" in page.inner_text("main")
    page.fill("#add-env input[name=key]", "STRIPE_KEY")
    page.fill("#add-env input[name=value]", "sk_live_very_secret")
    page.check("#add-env input[name=sensitive]")
    page.click("text=Add variable")
    page.fill("#add-env input[name=key]", "GREETING")
    page.fill("#add-env input[name=value]", "hello")
    page.uncheck("#add-env input[name=targets][value=development]")
    page.click("text=Add variable")
    assert "Added GREETING" in flash_text(page)
    assert "sk_live_very_secret" not in page.content()
    assert page.inner_text("#env-STRIPE_KEY .env-value") == "••••••••"
    assert page.inner_text("#env-GREETING .env-value") == "hello"
    assert "production, preview" in page.inner_text("#env-GREETING")
    shoot(page, "project-env")
    # Edit the plain one, then delete it.
    page.click("#env-GREETING summary")
    page.fill("#env-GREETING input[name=value]", "bonjour")
    page.click("#env-GREETING button:has-text('Save')")
    assert page.inner_text("#env-GREETING .env-value") == "bonjour"
    alice.accept_dialogs = False  # asked to confirm, she changes her mind: nothing is deleted
    page.click("#env-GREETING button:has-text('Delete')")
    assert alice.dialogs[-1].startswith("Delete GREETING?")
    page.wait_for_timeout(300)  # time for a form that was wrongly sent to arrive
    assert page.locator("#env-GREETING").count() == 1 and len(alice.api.get("/projects/shop/env").json()) == 2
    alice.accept_dialogs = True
    page.click("#env-GREETING button:has-text('Delete')")
    assert "Deleted GREETING" in flash_text(page)
    listed = alice.api.get("/projects/shop/env").json()
    assert [(v["key"], v.get("value", "(absent)"), v["type"]) for v in listed] == [
        ("STRIPE_KEY", "(absent)", "sensitive")]  # the API leaves a sensitive value out
    # A bad key comes back as a clear error on the same page.
    page.fill("#add-env input[name=key]", "1BAD")
    page.click("text=Add variable")
    assert "not a valid variable name" in flash_text(page)


def test_domains_show_the_txt_record_and_verify(alice: Alice, dash: RunixServer, dns: LoopbackDns) -> None:
    page = alice.page
    page.goto("/dashboard/projects/shop/domains")
    name = f"shop-{uuid.uuid4().hex[:6]}.example.com"
    page.fill("input[name=domain]", name)
    page.click("text=Add domain")
    record = alice.api.get("/projects/shop/domains").json()[0]["verification"]
    row = page.locator(f"[id='domain-{name}']")
    assert record["name"] in row.inner_text() and record["value"] in row.inner_text()
    assert "Waiting for DNS" in row.inner_text()
    shoot(page, "project-domains")
    row.locator("button:has-text('Verify')").click()
    assert "Domain not verified" in flash_text(page)
    # Once the record exists, Verify succeeds and the domain serves production through the router.
    dns.records.set(record["name"], record["value"])
    row.locator("button:has-text('Verify')").click()
    assert "is verified" in flash_text(page) and "Verified" in row.inner_text()
    assert f"http://{name}:" in page.inner_text("#project-urls")
    served = httpx.get(f"http://127.0.0.1:{dash.router_port}/", headers={"Host": name})
    assert served.status_code == 200 and "Hello from Runix" in served.text
    shoot(page, "project-domains-verified")
    page.locator(f"[id='domain-{name}'] button:has-text('Remove')").click()
    assert f"Removed {name}" in flash_text(page)
    assert alice.api.get("/projects/shop/domains").json() == []


def test_settings_change_build_commands(alice: Alice) -> None:
    page = alice.page
    page.goto("/dashboard/projects/shop/settings")
    page.fill("input[name=build_command]", "echo built")
    page.select_option("select[name=framework]", "static")
    page.click("text=Save settings")
    assert "Settings saved" in flash_text(page)
    saved = alice.api.get("/projects/shop").json()
    assert saved["build_command"] == "echo built" and saved["framework"] == "static"
    assert page.input_value("select[name=framework]") == "static"
    shoot(page, "project-settings")


def test_deep_link_to_another_accounts_deployment_is_not_found(alice: Alice, dash: RunixServer) -> None:
    page = alice.page
    response = page.goto("/dashboard/projects/nope/deployments/dpl_missing")
    assert response is not None and response.status == 404
    assert "not found" in page.inner_text("#error-message")
    shoot(page, "not-found")


# Account ------------------------------------------------------------------------------------------------------------


def test_tokens_create_shown_once_and_revoke(alice: Alice, dash: RunixServer) -> None:
    page = alice.page
    page.goto("/dashboard/tokens")
    page.fill("input[name=name]", "laptop")
    page.click("text=Create token")
    value = page.input_value("#new-token-value")
    assert value.startswith("rnx_c_")
    shoot(page, "tokens-created")
    headers = {"Authorization": f"Bearer {value}"}
    assert httpx.get(f"{dash.url}/user", headers=headers).json()["email"] == alice.email
    page.goto("/dashboard/tokens")
    assert value not in page.content()  # shown once
    me = alice.api.get("/user").json()  # the account card shows what GET /user answers
    assert me["email"] in page.inner_text("#account") and me["id"] in page.inner_text("#account")
    shoot(page, "tokens")
    page.locator("tr", has_text="laptop").locator("button:has-text('Revoke')").click()
    assert "Revoked" in flash_text(page)
    assert httpx.get(f"{dash.url}/user", headers=headers).status_code == 401


def test_billing_meters_and_plan_change_paid_at_checkout(alice: Alice, payments: FakePayments) -> None:
    page = alice.page
    page.goto("/dashboard/billing")
    assert page.inner_text("#current-plan") == "Hobby"
    assert "1 / 10" in page.inner_text("#meter-projects")
    shoot(page, "billing")
    page.click("#plan-pro button")  # to the provider's payment page, and back once paid
    assert "20.00 USD / month" in page.inner_text("#amount")
    assert alice.api.get("/billing").json()["plan"] == "hobby"  # nothing changes before the payment
    page.click("#pay")
    page.wait_for_selector("#paid-note")
    assert page.inner_text("#current-plan") == "Pro"
    assert "1 / 100" in page.inner_text("#meter-projects")
    assert alice.api.get("/billing").json()["plan"] == "pro"
    assert [s["status"] for s in payments.subscriptions.values()
            if s["metadata"]["account_id"] == alice.api.get("/user").json()["id"]] == ["active"]
    alice.accept_dialogs = False  # a move down is asked first; she changes her mind and nothing changes
    page.click("#plan-hobby button")
    assert alice.dialogs[-1].startswith("Switch to the Hobby plan ($0/month)?")
    assert page.inner_text("#current-plan") == "Pro" and alice.api.get("/billing").json()["plan"] == "pro"
    alice.accept_dialogs = True


def test_cli_device_login_approved_in_the_browser(alice: Alice, dash: RunixServer) -> None:
    started = httpx.post(f"{dash.url}/auth/device", json={"client_name": "runix CLI on laptop", "interval": 1}).json()
    page = alice.page
    page.goto(started["verification_uri_complete"])
    assert page.inner_text("#device-code") == started["user_code"]
    shoot(page, "device-approve")
    poll = {"device_code": started["device_code"], "grant_type": "urn:ietf:params:oauth:grant-type:device_code"}
    assert httpx.post(f"{dash.url}/auth/device/token", data=poll).json()["error"] == "authorization_pending"
    page.click("button:has-text('Approve')")
    assert "Approved" in page.inner_text("#device-result")
    shoot(page, "device-approved")
    time.sleep(1)
    token = httpx.post(f"{dash.url}/auth/device/token", data=poll).json()["access_token"]
    me = httpx.get(f"{dash.url}/user", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200 and me.json()["email"] == alice.email
    # Someone signed out opens the link the CLI printed: they sign in, then land on the approval page.
    started = httpx.post(f"{dash.url}/auth/device", json={"interval": 1}).json()
    other = page.context.browser.new_context(viewport=DESKTOP, base_url=dash.url)
    fresh = other.new_page()
    sign_in_by_email(fresh, dash, f"bob-{uuid.uuid4().hex[:6]}@example.com", shots=False,
                     start=urlsplit(started["verification_uri_complete"]).path + "?user_code=" + started["user_code"])
    assert fresh.inner_text("#device-code") == started["user_code"]
    fresh.click("button:has-text('Deny')")
    assert "Denied" in fresh.inner_text("#device-result")
    other.close()
    poll = {"device_code": started["device_code"], "grant_type": "urn:ietf:params:oauth:grant-type:device_code"}
    assert httpx.post(f"{dash.url}/auth/device/token", data=poll).json()["error"] == "access_denied"
    # Entering a code by hand: an unknown one is a clear message.
    page.goto("/dashboard/device")
    shoot(page, "device-enter")
    page.fill("input[name=user_code]", "BBBB-CCCC")
    page.click("text=Continue")
    assert "unknown or has expired" in page.inner_text("#device-problem")


def test_runix_login_web_approved_in_the_browser(alice: Alice, dash: RunixServer, tmp_path: Path) -> None:
    """The real CLI, `runix login --web`, as a subprocess: it prints a code, the browser approves it, and the CLI
    stores a CLI token that works."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNIX_")}
    env.update(XDG_CONFIG_HOME=str(tmp_path), RUNIX_API_URL=dash.url, RUNIX_NO_BROWSER="1", COLUMNS="300")
    cli = subprocess.Popen([RUNIX, "login", "--web"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:
        user_code = None
        assert cli.stderr is not None
        for line in cli.stderr:
            found = re.search(r"\b([B-Z]{4}-[B-Z]{4})\b", line)
            if found:
                user_code = found.group(1)
                break
        assert user_code, "runix login --web printed no code"
        page = alice.page
        page.goto(f"/dashboard/device?user_code={user_code}")
        page.click("button:has-text('Approve')")
        assert "Approved" in page.inner_text("#device-result")
        cli.wait(timeout=30)
    finally:
        if cli.poll() is None:
            cli.kill()
    assert cli.returncode == 0
    saved = json.loads((tmp_path / "runix" / "credentials.json").read_text())
    assert saved["token"].startswith("rnx_c_")
    me = httpx.get(f"{dash.url}/user", headers={"Authorization": f"Bearer {saved['token']}"})
    assert me.json()["email"] == alice.email


def test_forms_need_a_csrf_token(alice: Alice, dash: RunixServer) -> None:
    cookies = {c["name"]: c["value"] for c in alice.page.context.cookies()}
    r = httpx.post(f"{dash.url}/dashboard/billing/plan", data={"plan": "enterprise", "csrf": "forged"},
                   cookies=cookies, headers={"Referer": f"{dash.url}/dashboard/billing"})
    assert r.status_code == 303
    assert alice.api.get("/billing").json()["plan"] == "pro"


def test_sign_out_revokes_the_session(alice: Alice, dash: RunixServer) -> None:
    page = alice.page
    session = next(c["value"] for c in page.context.cookies() if c["name"] == "runix_session")
    page.goto("/dashboard")
    shoot(page, "projects")
    page.click("nav >> text=Deployments")
    assert page.locator("table.deployments tbody tr").count() >= 1  # her deployments, of every project
    shoot(page, "deployments")
    # Projects page back by cursor, as GET /projects does: past the only project, none is left.
    page.goto(f"/dashboard?cursor={alice.api.get('/projects/shop').json()['id']}")
    assert "No more projects" in page.inner_text("main") and page.locator(".project-item").count() == 0
    page.goto("/dashboard")
    page.click("text=Sign out")
    page.wait_for_url(re.compile(r"/dashboard/login"))
    assert httpx.get(f"{dash.url}/user", headers={"Authorization": f"Bearer {session}"}).status_code == 401
    page.goto("/dashboard/billing")
    assert urlsplit(page.url).path == "/dashboard/login"


# API operations that are no person's action in a browser, so the dashboard need not offer them.
NOT_USER_ACTIONS = {
    "GET /healthz",  # liveness probe for load balancers and monitors
    "GET /metrics",  # Prometheus scrape
    "POST /auth/device",  # the CLI starts a device login; the person approves it (POST /auth/device/approve)
    "POST /auth/device/token",  # the CLI polls for its token
    "GET /auth/github",  # already browser steps: the sign-in page links here and GitHub returns to the callback
    "GET /auth/github/callback",
    "POST /billing/webhook",  # the payment provider's, signed
    "PUT /billing/accounts/{account}/plan",  # the operator's: `runix billing --account EMAIL --plan PLAN`
}


def test_every_dashboard_action_has_an_api_endpoint(dash: RunixServer) -> None:
    """Lists each thing the dashboard lets a person do with the API endpoint doing the same, and checks that endpoint
    exists; every form the browser saw must be one of those actions; and every API operation a person uses (all but
    NOT_USER_ACTIONS) must have a dashboard action."""
    paths = httpx.get(f"{dash.url}/openapi.json").json()["paths"]
    operations = {f"{method.upper()} {path}" for path, ops in paths.items() for method in ops}
    table = []
    for a in ACTIONS:
        assert a.api in operations, f"{a.method} {a.path} uses {a.api}, which the API lacks"
        table.append(f"{a.method} {a.path} -> {a.api}")
    print("\n".join(table))
    assert not NOT_USER_ACTIONS - operations, "the allow-list names an endpoint the API no longer has"
    missing = operations - NOT_USER_ACTIONS - {a.api for a in ACTIONS}
    assert not missing, f"API operations with no dashboard action: {sorted(missing)}"
    patterns = [(a.method, re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", a.path) + "$")) for a in ACTIONS]
    posts = {f for f in SEEN_FORMS if f[0] == "POST"}
    assert len(posts) >= 14, posts  # the browser tests above opened pages with most of the forms
    for method, path in posts:
        assert any(m == method and p.match(path) for m, p in patterns), f"form {method} {path} is no known action"
    assert ("POST", "/dashboard/deployments") in posts
    # GET forms only navigate: the device page's code entry, or a page's filters.
    for method, path in {f for f in SEEN_FORMS if f[0] == "GET"} - {("GET", "/dashboard/device")}:
        assert any(m == method and p.match(path) for m, p in patterns), f"form {method} {path} is no known page"
