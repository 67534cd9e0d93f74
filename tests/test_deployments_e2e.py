"""Deployments end to end: a real `runix server`, real uploads, real builds, apps answering through the real router.

One server serves the whole module (the examples are built once); the restart test runs last because it restarts it.
"""

from __future__ import annotations

import io
import json
import os
import signal
import tarfile
import threading
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from tests.dns_server import LoopbackDns, dns  # noqa: F401 - the fixture
from tests.support import ROOT, Account, RunixServer, running_server, tar_folder, wait_until

EXAMPLES = ROOT / "examples"
SETTLED = {"READY", "ERROR", "CANCELED"}
HEALTH_TIMEOUT = 6
IDLE_TIMEOUT = 3
ROLLBACK_WARM_SECONDS = 6

# A server from Python's standard library (no dependencies to install): answers its version and GREETING, and
# exits on /crash (to see the runtime restart it).
STDLIB_APP = """
import http.server, os

VERSION = {version!r}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path == "/crash":
            os._exit(3)
        body = f"{{VERSION}} {{os.environ.get('GREETING', '-')}}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


print("starting", VERSION, flush=True)
http.server.ThreadingHTTPServer((os.environ["HOST"], int(os.environ["PORT"])), Handler).serve_forever()
"""


def tarball(files: dict[str, str | bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def stdlib_app(version: str, **extra: str) -> bytes:
    return tarball({"Procfile": "web: python3 server.py\n", "server.py": STDLIB_APP.format(version=version), **extra})


def upload(account: Account, project: str, archive: bytes, target: str = "production") -> httpx.Response:
    return account.client.post("/deployments", data={"project": project, "target": target},
                               files={"source": ("app.tar.gz", archive, "application/gzip")})


def wait_settled(account: Account, deployment_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = account.client.get(f"/deployments/{deployment_id}").json()
        if body["status"] in SETTLED:
            return body
        time.sleep(0.05)
    raise AssertionError(f"{deployment_id} did not settle in {timeout}s: {body}")


def deploy(account: Account, project: str, archive: bytes, target: str = "production") -> dict:
    r = upload(account, project, archive, target)
    assert r.status_code == 201, r.text
    return wait_settled(account, r.json()["id"])


def host_of(url: str) -> str:
    return url.split("//", 1)[1].rsplit(":", 1)[0]


def new_project(account: Account, name: str, **settings: str) -> None:
    r = account.client.post("/projects", json={"name": name, **settings})
    assert r.status_code == 201, r.text


def events_text(account: Account, deployment_id: str) -> str:
    return "\n".join(e["text"] for e in account.client.get(f"/deployments/{deployment_id}/events").json())


def wait_for_event(account: Account, deployment_id: str, text: str, within: float) -> None:
    deadline = time.monotonic() + within
    while text not in events_text(account, deployment_id):
        assert time.monotonic() < deadline, f"no event saying {text!r} within {within}s"
        time.sleep(0.2)


class Router:
    def __init__(self, server: RunixServer):
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{server.router_port}", timeout=30)

    def get(self, host: str, path: str = "/") -> httpx.Response:
        return self.client.get(path, headers={"Host": host})


@pytest.fixture(scope="module")
def deploy_server(tmp_path_factory: pytest.TempPathFactory, dns: LoopbackDns) -> Iterator[RunixServer]:  # noqa: F811
    env = {"RUNIX_DNS_RESOLVER": dns.address, "RUNIX_RATE_LIMIT_PER_MINUTE": "100000",
           "RUNIX_HEALTH_TIMEOUT": str(HEALTH_TIMEOUT), "RUNIX_IDLE_TIMEOUT": str(IDLE_TIMEOUT),
           "RUNIX_ROLLBACK_WARM_SECONDS": str(ROLLBACK_WARM_SECONDS), "RUNIX_MAX_SOURCE_FILES": "300",
           "RUNIX_MAX_UPLOAD_BYTES": str(2 * 1024 * 1024), "RUNIX_MAX_UNPACKED_BYTES": str(20 * 1024 * 1024)}
    with running_server(tmp_path_factory.mktemp("deploys"), **env) as server:
        yield server


@pytest.fixture(scope="module")
def router(deploy_server: RunixServer) -> Router:
    return Router(deploy_server)


@pytest.fixture
def user(deploy_server: RunixServer) -> Account:
    return deploy_server.sign_in()


@pytest.fixture(scope="module")
def examples(deploy_server: RunixServer) -> dict[str, dict]:
    """Every example deployed once, to production of its own project, in one Pro account (3 builds at once)."""
    owner = deploy_server.sign_in()
    deploy_server.set_plan(owner, "pro")
    started = {}
    for name in sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir()):
        new_project(owner, f"ex-{name}")
        r = owner.client.post(f"/projects/ex-{name}/env",
                              json={"key": "GREETING", "value": f"hi from {name}", "targets": ["production"]})
        assert r.status_code == 201, r.text
        r = upload(owner, f"ex-{name}", tar_folder(EXAMPLES / name))
        assert r.status_code == 201, r.text
        started[name] = r.json()["id"]
    return {name: wait_settled(owner, deployment_id, timeout=180) | {"owner": owner}
            for name, deployment_id in started.items()}


def test_each_example_deploys_and_answers_through_the_router(examples: dict[str, dict], router: Router) -> None:
    assert set(examples) >= {"static", "flask", "fastapi", "express", "procfile"}
    for name, deployment in examples.items():
        assert deployment["status"] == "READY", (name, deployment["error"])
        assert deployment["is_production"] and deployment["ready_at"]
        own = router.get(host_of(deployment["url"]))
        production = router.get(f"ex-{name}.localhost")
        assert own.status_code == production.status_code == 200, (name, own.text)
        assert own.text == production.text


def test_build_caches_are_kept_per_account(examples: dict[str, dict], deploy_server: RunixServer) -> None:
    """A build can write to its download cache, so another account's build must never read that cache."""
    owner_id = examples["flask"]["owner"].client.get("/user").json()["id"]
    for tool, example in (("uv", "flask"), ("npm", "express")):
        tool_cache = deploy_server.data_dir / "cache" / tool
        assert (tool_cache / owner_id).is_dir() and any((tool_cache / owner_id).iterdir()), (tool, example)
        assert {p.name for p in tool_cache.iterdir() if p.name.startswith("usr_")} == {owner_id}


def test_env_var_of_the_project_is_visible_to_the_app(examples: dict[str, dict], router: Router) -> None:
    for name in ("flask", "express"):
        r = router.get(f"ex-{name}.localhost", "/env")
        assert r.status_code == 200 and r.json()["GREETING"] == f"hi from {name}", r.text


def test_unknown_host_gets_the_router_404(router: Router) -> None:
    r = router.get("nothing-here.localhost")
    assert r.status_code == 404 and "Runix" in r.text


def test_broken_app_ends_in_error_with_its_log_and_production_keeps_serving(user: Account, router: Router) -> None:
    new_project(user, "shaky")
    good = deploy(user, "shaky", stdlib_app("v1"))
    assert good["status"] == "READY", good

    crashing = deploy(user, "shaky", tarball({"Procfile": "web: python3 -c 'import sys; print(\"boom: no db\"); "
                                                          "sys.exit(4)'\n"}))
    assert crashing["status"] == "ERROR"
    assert "exited with code 4" in crashing["error"] and "boom: no db" in crashing["error"]

    silent = deploy(user, "shaky", tarball({"Procfile": "web: echo listening nowhere; sleep 600\n"}))
    assert silent["status"] == "ERROR"
    assert f"within {HEALTH_TIMEOUT}s" in silent["error"] and "listening nowhere" in silent["error"]

    assert user.client.patch("/projects/shaky", json={"build_command": "echo compiling; exit 3"}).status_code == 200
    failed_build = deploy(user, "shaky", stdlib_app("v2"))
    assert failed_build["status"] == "ERROR" and "exited with code 3" in failed_build["error"]
    assert "compiling" in events_text(user, failed_build["id"])

    assert router.get("shaky.localhost").text == "v1 -"
    assert user.client.get("/projects/shaky").json()["production_deployment_id"] == good["id"]


def _bad_archives() -> dict[str, bytes]:
    def raw_tar(add) -> bytes:  # noqa: ANN001
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            add(tar)
        return buf.getvalue()

    def entry(tar: tarfile.TarFile, name: str, kind: bytes = tarfile.REGTYPE, link: str = "", data: bytes = b""):
        info = tarfile.TarInfo(name)
        info.type, info.linkname, info.size = kind, link, len(data)
        tar.addfile(info, io.BytesIO(data) if data else None)

    import os

    return {
        "not a tar.gz": b"this is not an archive",
        "absolute path": raw_tar(lambda t: entry(t, "/etc/evil", data=b"x")),
        "parent path": raw_tar(lambda t: entry(t, "../evil", data=b"x")),
        "link outside": raw_tar(lambda t: entry(t, "escape", tarfile.SYMTYPE, "../../etc/passwd")),
        "device file": raw_tar(lambda t: entry(t, "dev", tarfile.CHRTYPE)),
        "too many files": raw_tar(lambda t: [entry(t, f"f{i}.txt", data=b"x") for i in range(301)]),
        "too big unpacked": tarball({"zeros.bin": b"\0" * (21 * 1024 * 1024)}),
        "too big compressed": tarball({"noise.bin": os.urandom(3 * 1024 * 1024)}),
    }


def test_each_kind_of_bad_archive_gets_its_400_and_costs_no_deploy(user: Account) -> None:
    new_project(user, "bad-archives")
    messages = {}
    for kind, archive in _bad_archives().items():
        r = upload(user, "bad-archives", archive)
        assert r.status_code == 400, (kind, r.status_code, r.text)
        body = r.json()
        assert body["code"] in ("BAD_REQUEST", "INVALID_SOURCE") and body["error"], (kind, body)
        messages[kind] = body["error"]
    assert len(set(messages.values())) == len(messages), messages  # each rule says what it is
    good = tarball({"index.html": "hi"})
    assert upload(user, "no-such-project", good).status_code == 404
    assert upload(user, "bad-archives", good, target="staging").json()["code"] == "VALIDATION_ERROR"
    no_file = user.client.post("/deployments", data={"project": "bad-archives"})
    assert no_file.status_code == 400 and no_file.json()["code"] == "VALIDATION_ERROR"
    assert user.client.get("/deployments", params={"project": "bad-archives"}).json() == []
    assert user.client.get("/billing").json()["usage"]["deploys_this_hour"] == 0


def test_sixth_deploy_in_an_hour_on_hobby_gets_429_with_retry_after(user: Account) -> None:
    new_project(user, "busy")
    archive = tarball({"index.html": "<p>hi</p>"})
    ids = [upload(user, "busy", archive).json()["id"] for _ in range(5)]
    r = upload(user, "busy", archive)
    assert r.status_code == 429, r.text
    assert r.json()["code"] == "RATE_LIMITED" and 0 < int(r.headers["Retry-After"]) <= 3600
    assert all(wait_settled(user, d)["status"] == "READY" for d in ids)
    listed = user.client.get("/deployments", params={"project": "busy", "limit": 2})
    assert len(listed.json()) == 2 and 'rel="next"' in listed.headers["Link"]


def test_rollback_restores_the_previous_version_quickly(user: Account, router: Router) -> None:
    new_project(user, "flip")
    v1 = deploy(user, "flip", stdlib_app("v1"))
    deploy(user, "flip", stdlib_app("v2"))
    assert router.get("flip.localhost").text == "v2 -"
    assert router.get(host_of(v1["url"])).text == "v1 -"  # every deployment keeps its own URL

    started = time.monotonic()
    r = user.client.post(f"/deployments/{v1['id']}/promote")
    assert r.status_code == 200 and r.json()["is_production"], r.text
    while router.get("flip.localhost").text != "v1 -":
        assert time.monotonic() - started < 1.0
    assert user.client.get("/projects/flip").json()["production_deployment_id"] == v1["id"]
    assert user.client.delete(f"/deployments/{v1['id']}").status_code == 409  # production cannot be deleted


def test_redeploy_and_rollback_under_steady_traffic_lose_no_request(user: Account, deploy_server: RunixServer) -> None:
    deploy_server.set_plan(user, "pro")
    new_project(user, "steady")
    v1 = deploy(user, "steady", stdlib_app("v1"))
    answers: list[str] = []  # every request's outcome, in order (list.append is atomic across threads)
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{deploy_server.router_port}", timeout=10) as client:
            while not stop.is_set():
                try:
                    r = client.get("/", headers={"Host": "steady.localhost"})
                    answers.append(f"{r.status_code} {r.text}")
                except httpx.HTTPError as exc:
                    answers.append(f"error {type(exc).__name__}")

    def keeps_serving(version: str) -> None:
        """Waits until traffic has gone on past the switch: 20 answers from `version` after this moment."""
        since = len(answers)
        wait_until(lambda: answers[since:].count(f"200 {version} -") >= 20, 30, f"20 answers from {version}")

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        keeps_serving("v1")
        v2 = deploy(user, "steady", stdlib_app("v2"))
        keeps_serving("v2")
        assert user.client.post(f"/deployments/{v1['id']}/promote").status_code == 200
        keeps_serving("v1")
        assert user.client.post(f"/deployments/{v2['id']}/promote").status_code == 200
        keeps_serving("v2")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert set(answers) == {"200 v1 -", "200 v2 -"}, Counter(answers)


def test_events_follow_over_sse_until_ready_and_resume_from_last_event_id(user: Account) -> None:
    new_project(user, "chatty")
    deployment_id = upload(user, "chatty", stdlib_app("v1")).json()["id"]
    seen: list[dict] = []
    end = None
    with user.client.stream("GET", f"/deployments/{deployment_id}/events", params={"follow": "true"}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                if kind == "end":
                    end = json.loads(line[6:])
                    break
                seen.append(json.loads(line[6:]))
    assert end == {"status": "READY"}
    assert {e["type"] for e in seen} >= {"build", "system"}
    assert any("Detected a procfile app" in e["text"] for e in seen)
    assert any(e["text"] == "starting v1" and e["type"] == "runtime" for e in seen)
    ids = [e["id"] for e in seen]
    assert ids == sorted(ids) and seen[0]["created_at"].endswith("Z")

    later = user.client.get(f"/deployments/{deployment_id}/events", headers={"Last-Event-ID": str(ids[2])}).json()
    assert [e["id"] for e in later][: len(ids) - 3] == ids[3:]
    # A Last-Event-ID that only looks like a number (a superscript two) is ignored, not a 500.
    odd = user.client.get(f"/deployments/{deployment_id}/events", headers={"Last-Event-ID": "\xb2".encode("latin-1")})
    assert odd.status_code == 200 and [e["id"] for e in odd.json()][: len(ids)] == ids


def test_cancel_a_build_then_cancel_again_is_409(user: Account) -> None:
    new_project(user, "slow", build_command="echo compiling slowly; sleep 60")
    deployment_id = upload(user, "slow", stdlib_app("v1")).json()["id"]
    deadline = time.monotonic() + 30
    while "compiling slowly" not in events_text(user, deployment_id):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    r = user.client.post(f"/deployments/{deployment_id}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "CANCELED", r.text
    assert user.client.post(f"/deployments/{deployment_id}/cancel").status_code == 409
    assert user.client.post(f"/deployments/{deployment_id}/promote").status_code == 409
    time.sleep(0.3)
    assert wait_settled(user, deployment_id)["status"] == "CANCELED"


def test_another_account_gets_404_for_every_deployment_endpoint(examples: dict[str, dict],
                                                                deploy_server: RunixServer) -> None:
    stranger = deploy_server.sign_in()
    deployment_id = examples["static"]["id"]
    for method, path in (("GET", ""), ("GET", "/events"), ("POST", "/cancel"), ("POST", "/promote"), ("DELETE", "")):
        r = stranger.client.request(method, f"/deployments/{deployment_id}{path}")
        assert r.status_code == 404 and r.json()["code"] == "NOT_FOUND", (method, path, r.text)
    assert stranger.client.get("/deployments").json() == []


def test_preview_sleeps_when_idle_wakes_on_request_and_restarts_after_a_crash(user: Account, router: Router) -> None:
    new_project(user, "naps")
    production = deploy(user, "naps", stdlib_app("v1"))
    preview = deploy(user, "naps", stdlib_app("v2"), target="preview")
    assert not preview["is_production"]
    host = host_of(preview["url"])
    assert router.get(host).text == "v2 -"

    wait_for_event(user, preview["id"], "Asleep after", within=IDLE_TIMEOUT * 4)  # the idle preview sleeps
    assert router.get(host).text == "v2 -"  # held by the router until the app woke up
    assert "Asleep after" not in events_text(user, production["id"])  # production stays warm

    assert router.get("naps.localhost", "/crash").status_code == 502  # the app died mid-request
    deadline = time.monotonic() + 10
    while (r := router.get("naps.localhost")).status_code != 200:
        assert time.monotonic() < deadline, r.text
        time.sleep(0.1)
    assert r.text == "v1 -"
    assert "exited with code 3" in events_text(user, production["id"])


def test_only_the_previous_production_deployment_stays_running_and_only_for_a_while(
        user: Account, router: Router) -> None:
    new_project(user, "redeploys")
    v1 = deploy(user, "redeploys", stdlib_app("v1"))
    v2 = deploy(user, "redeploys", stdlib_app("v2"))
    v3 = deploy(user, "redeploys", stdlib_app("v3"))
    # v3 is production, v2 the rollback target, v1 goes to sleep at once (not after the idle timeout).
    wait_for_event(user, v1["id"], "Asleep: newer production deployments replaced it", within=IDLE_TIMEOUT)
    assert "Asleep" not in events_text(user, v2["id"])
    assert router.get(host_of(v2["url"])).text == "v2 -"
    assert router.get(host_of(v1["url"])).text == "v1 -"  # asleep, it wakes on request
    # Past its rollback window, v2 sleeps when idle like any other; production never does.
    wait_for_event(user, v2["id"], "Asleep after", within=ROLLBACK_WARM_SECONDS + IDLE_TIMEOUT * 4)
    assert "Asleep" not in events_text(user, v3["id"])
    assert user.client.post(f"/deployments/{v2['id']}/promote").status_code == 200  # a rollback wakes it
    assert router.get("redeploys.localhost").text == "v2 -"


def test_delete_a_deployment_stops_it_and_frees_its_url(user: Account, router: Router) -> None:
    new_project(user, "gone")
    deploy(user, "gone", stdlib_app("v1"))
    preview = deploy(user, "gone", stdlib_app("v2"), target="preview")
    r = user.client.delete(f"/deployments/{preview['id']}")
    assert r.status_code == 200 and r.json()["id"] == preview["id"]
    assert user.client.get(f"/deployments/{preview['id']}").status_code == 404
    assert router.get(host_of(preview["url"])).status_code == 404
    assert router.get("gone.localhost").text == "v1 -"


def test_verified_domain_serves_production_and_a_deleted_project_stops_serving(user: Account, router: Router,
                                                                               dns: LoopbackDns) -> None:  # noqa: F811
    new_project(user, "branded")
    v1 = deploy(user, "branded", stdlib_app("v1"))
    domain = f"www.{user.email.split('@')[0]}.example.com"
    check = user.client.post("/projects/branded/domains", json={"name": domain}).json()["verification"]
    assert router.get(domain).status_code == 404  # not verified yet: not routed
    dns.records.set(check["name"], check["value"])
    assert user.client.post(f"/projects/branded/domains/{domain}/verify").json()["verified"] is True
    assert router.get(domain).text == "v1 -"
    deploy(user, "branded", stdlib_app("v2"))
    assert router.get(domain).text == "v2 -"
    assert user.client.post(f"/deployments/{v1['id']}/promote").status_code == 200
    assert router.get(domain).text == "v1 -"

    assert user.client.delete("/projects/branded").status_code == 200
    for host in (domain, "branded.localhost", host_of(v1["url"])):
        assert router.get(host).status_code == 404, host
    assert user.client.get(f"/deployments/{v1['id']}").status_code == 404


def wait_status(account: Account, deployment_id: str, status: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while account.client.get(f"/deployments/{deployment_id}").json()["status"] != status:
        assert time.monotonic() < deadline, f"{deployment_id} never reached {status}"
        time.sleep(0.05)


def test_zz_server_restart_brings_ready_apps_back_and_resumes_or_fails_builds(
        examples: dict[str, dict], user: Account, deploy_server: RunixServer, router: Router) -> None:
    deploy_server.set_plan(user, "pro")
    new_project(user, "phoenix")
    production = deploy(user, "phoenix", stdlib_app("v1"))
    preview = deploy(user, "phoenix", stdlib_app("v2"), target="preview")
    new_project(user, "resumed", build_command="sleep 3; echo built")
    resumed = upload(user, "resumed", stdlib_app("r1")).json()["id"]
    wait_status(user, resumed, "BUILDING")

    deploy_server.restart()  # a clean stop: apps stop, the build in progress goes back to the queue
    assert router.get("phoenix.localhost").text == "v1 -"
    assert router.get(host_of(preview["url"])).text == "v2 -"
    assert router.get("ex-flask.localhost", "/env").json()["GREETING"] == "hi from flask"
    user = deploy_server.sign_in(user.email)
    assert user.client.get(f"/deployments/{production['id']}").json()["status"] == "READY"
    settled = wait_settled(user, resumed)
    assert settled["status"] == "READY", settled["error"]
    assert events_text(user, resumed).count("Build started") == 2
    assert router.get("resumed.localhost").text == "r1 -"

    new_project(user, "crashed", build_command="sleep 60")
    crashed = upload(user, "crashed", stdlib_app("c1")).json()["id"]
    wait_status(user, crashed, "BUILDING")
    assert deploy_server.proc is not None
    os.killpg(deploy_server.proc.pid, signal.SIGKILL)  # the server dies mid-build
    deploy_server.proc.wait()
    deploy_server.stop()
    deploy_server.start()
    user = deploy_server.sign_in(user.email)
    died = user.client.get(f"/deployments/{crashed}").json()
    assert died["status"] == "ERROR" and "interrupted by a server restart" in died["error"].lower()
    assert router.get("phoenix.localhost").text == "v1 -"
