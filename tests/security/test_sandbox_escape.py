"""Attacks from inside an app or a build against the host, the server and other tenants (the tenant-isolation
threat model, docs/security.md): each deploys the hostile app (hostile_app.py) on a real `runix server` and asserts
that the attack fails while the app itself still serves."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

from runix.pipeline.cells import DEFAULT_UID_BASE
from tests.support import Account, RunixServer, running_server
from tests.test_deployments_e2e import Router, deploy, events_text, new_project, tarball, upload, wait_settled

HOSTILE_APP = (Path(__file__).parent / "hostile_app.py").read_text()
SECRET_KEY = Fernet.generate_key().decode()
GITHUB_SECRET = "gh-secret-" + os.urandom(8).hex()


def hostile(**extra: str | bytes) -> bytes:
    return tarball({"Procfile": "web: python3 server.py\n", "server.py": HOSTILE_APP, **extra})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunixServer]:
    with running_server(tmp_path_factory.mktemp("hostile"), RUNIX_SECRET_KEY=SECRET_KEY,
                        RUNIX_GITHUB_CLIENT_ID="runix-test", RUNIX_GITHUB_CLIENT_SECRET=GITHUB_SECRET,
                        RUNIX_RATE_LIMIT_PER_MINUTE="100000", RUNIX_HEALTH_TIMEOUT="20") as s:
        yield s


@pytest.fixture(scope="module")
def router(server: RunixServer) -> Router:
    return Router(server)


@pytest.fixture(scope="module")
def attacker(server: RunixServer) -> Account:
    return server.sign_in()


@pytest.fixture(scope="module")
def hostile_app(attacker: Account, router: Router) -> str:
    """The attacker's app, deployed to production: its host name on the router."""
    new_project(attacker, "hostile", build_command="id -u > build-uid.txt")
    assert deploy(attacker, "hostile", hostile())["status"] == "READY"
    return "hostile.localhost"


def probe(router: Router, host: str, endpoint: str, **params: str) -> dict:
    r = router.client.get(endpoint, params=params, headers={"Host": host}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture
def host_listener() -> Iterator[int]:
    """A service of the host's on every address (as PostgreSQL or Redis may be): no sandbox may reach it."""
    with socket.create_server(("0.0.0.0", 0)) as listener:
        listener.settimeout(0.2)
        yield listener.getsockname()[1]


def host_addresses() -> list[str]:
    """The host's own IPv4 addresses other than loopback (eth0 and the like)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # nothing is sent: the kernel only picks the source address
            return [s.getsockname()[0]]
        except OSError:
            return []


def test_the_app_runs_as_an_unprivileged_uid_of_its_own_and_its_build_did_too(router: Router,
                                                                               hostile_app: str) -> None:
    me = probe(router, hostile_app, "/whoami")
    assert me["uid"] >= DEFAULT_UID_BASE and me["gid"] >= DEFAULT_UID_BASE, me
    build_uid = int(me["build_uid"]["data"])
    assert build_uid >= DEFAULT_UID_BASE and build_uid != me["uid"]


def test_nothing_of_the_servers_environment_reaches_the_sandbox(router: Router, hostile_app: str) -> None:
    me = probe(router, hostile_app, "/whoami")
    assert not [k for k in me["env"] if k.startswith("RUNIX_")], me["env"]
    for pid, environ in me["environs"].items():  # pid 1 is bwrap, the sandbox's init: root's, and empty of secrets
        text = environ.get("data", "")
        assert SECRET_KEY not in text and GITHUB_SECRET not in text and "RUNIX_" not in text, (pid, text)
    assert SECRET_KEY not in str(me["env"]) and GITHUB_SECRET not in str(me["env"])


def test_the_data_dir_is_out_of_reach_and_private_on_the_host(router: Router, hostile_app: str,
                                                               server: RunixServer) -> None:
    for path in (server.data_dir / "secret.key", server.data_dir / "runix.db", server.data_dir / "records"):
        assert not probe(router, hostile_app, "/read", path=str(path))["ok"]
    assert (server.data_dir.stat().st_mode & 0o777) == 0o700
    assert (server.data_dir / "runix.db").stat().st_mode & 0o077 == 0
    key_file = server.data_dir / "secret.key"
    assert not key_file.exists() or key_file.stat().st_mode & 0o077 == 0


def test_no_host_service_the_api_or_another_app_is_reachable(router: Router, hostile_app: str, attacker: Account,
                                                             server: RunixServer, host_listener: int) -> None:
    new_project(attacker, "neighbour")
    assert deploy(attacker, "neighbour", hostile(), )["status"] == "READY"
    neighbour = probe(router, "neighbour.localhost", "/whoami")
    me = probe(router, hostile_app, "/whoami")
    assert me["address"] != neighbour["address"]
    api_port = server.port
    targets = [f"127.0.0.1:{api_port}", f"127.0.0.1:{server.router_port}", "127.0.0.1:5432", "127.0.0.1:6379",
               f"{me['gateway']}:{host_listener}", f"{me['gateway']}:{api_port}", f"{me['gateway']}:22",
               f"{neighbour['address']}:8000", f"{neighbour['gateway']}:{host_listener}",
               *(f"{address}:{host_listener}" for address in host_addresses())]
    results = probe(router, hostile_app, "/connect", to=",".join(targets))
    assert all(outcome != "connected" for outcome in results.values()), results
    # The listener does answer: from the host itself (so the refusals above are the sandbox's, not a dead port).
    with socket.create_connection(("127.0.0.1", host_listener), timeout=2):
        pass
    # And the neighbour still serves, through the router only.
    assert router.get("neighbour.localhost").json() == {"app": "hostile"}


def test_processes_and_tmp_are_bounded_and_the_app_keeps_serving(router: Router, hostile_app: str) -> None:
    started = probe(router, hostile_app, "/fork", n="400")["started"]
    assert 0 < started < 128, started  # the Hobby plan's 128 processes, all of the app's together
    filled = probe(router, hostile_app, "/fill-tmp")
    assert filled["error"] is not None and filled["written"] <= 64 << 20, filled
    assert router.get(hostile_app).json() == {"app": "hostile"}


def test_an_app_over_its_memory_limit_is_killed_restarted_and_says_why(router: Router, attacker: Account,
                                                                      hostile_app: str) -> None:
    new_project(attacker, "glutton")
    glutton = deploy(attacker, "glutton", hostile())
    with pytest.raises(httpx.HTTPError):  # the kernel kills it mid-request: the router answers 502 or drops
        r = router.client.get("/eat-memory", params={"mb": "900"}, headers={"Host": "glutton.localhost"})
        r.raise_for_status()
    deadline = time.monotonic() + 60
    while "out of memory: 512 MB limit" not in events_text(attacker, glutton["id"]):
        assert time.monotonic() < deadline, events_text(attacker, glutton["id"])
        time.sleep(0.1)
    assert router.get(hostile_app).json() == {"app": "hostile"}  # the others never noticed
    deadline = time.monotonic() + 60
    while True:  # restarted with backoff, and serving again
        r = router.get("glutton.localhost")
        if r.status_code == 200:
            break
        assert time.monotonic() < deadline, r.text
        time.sleep(0.1)


def test_a_client_cannot_spoof_its_address_to_the_app(router: Router, hostile_app: str) -> None:
    spoofed = [("X-Forwarded-For", "6.6.6.6"), ("x-forwarded-for", "7.7.7.7"), ("X-REAL-IP", "6.6.6.6"),
               ("Forwarded", "for=6.6.6.6;proto=https"), ("X-Forwarded-Proto", "https"),
               ("X-Forwarded-Host", "bank.example"), ("Host", hostile_app)]
    r = router.client.get("/headers", headers=httpx.Headers(spoofed))
    seen = r.json()
    assert seen["x-forwarded-for"] == ["127.0.0.1"] and seen["x-real-ip"] == ["127.0.0.1"], seen
    assert seen["forwarded"] == ["for=127.0.0.1;proto=http"], seen
    assert seen["x-forwarded-proto"] == ["http"] and seen["x-forwarded-host"] == [hostile_app], seen


def test_no_user_namespace_can_be_made_in_an_app_or_a_build(server: RunixServer, router: Router,
                                                            hostile_app: str) -> None:
    tried = probe(router, hostile_app, "/userns")
    assert tried["unshare"] == -1 and tried["errno"] == 1, tried  # EPERM, from the seccomp filter
    assert tried["tool"] != 0 and tried["tool_output"] != "0\n", tried
    builder = server.sign_in()  # an account of its own: the attacker's deploys this hour are spent
    new_project(builder, "userns-build", build_command="unshare --user --map-root-user id -u")
    settled = wait_settled(builder, upload(builder, "userns-build", hostile()).json()["id"])
    assert settled["status"] == "ERROR" and "Operation not permitted" in events_text(builder, settled["id"])
    assert probe(router, hostile_app, "/") == {"app": "hostile"}


def test_a_build_over_its_memory_limit_ends_in_error_with_the_reason(attacker: Account) -> None:
    new_project(attacker, "greedy-build", build_command="python3 -c 'bytearray(3000 << 20)'")
    r = upload(attacker, "greedy-build", hostile())
    assert r.status_code == 201, r.text
    settled = wait_settled(attacker, r.json()["id"])
    assert settled["status"] == "ERROR" and "out of memory: 2048 MB limit" in settled["error"], settled


def test_a_planted_release_record_is_never_followed_or_trusted(tmp_path: Path, attacker: Account, router: Router,
                                                              server: RunixServer) -> None:
    """The build leaves release.json as a link to a host file and as a forged record naming the data dir; the
    server neither writes through the link nor reads the forgery, before or after a restart."""
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched\n")
    data = str(server.data_dir)
    forged = json.dumps({"deployment_id": "x", "path": data, "app_dir": data, "kind": "procfile",
                         "start_command": f"cat {data}/secret.key; exec python3 server.py"})
    plant = (f"ln -s {victim} ../release.json && ln -s {victim} release.json && "
             f"mkdir -p ../records && echo '{forged}' > ../forged.json")
    new_project(attacker, "planter", build_command=plant)
    deployment = deploy(attacker, "planter", hostile(APP_NAME="planter"))
    assert deployment["status"] == "READY", deployment
    server.restart()
    attacker = server.sign_in(attacker.email)
    assert router.get("planter.localhost").json() == {"app": "hostile"}
    assert victim.read_text() == "untouched\n"
    assert SECRET_KEY not in events_text(attacker, deployment["id"])


def test_no_tenant_process_outlives_a_killed_server(tmp_path: Path) -> None:
    with running_server(tmp_path) as doomed:
        account = doomed.sign_in()
        new_project(account, "survivor")
        marker = "survivor-" + os.urandom(4).hex()
        archive = tarball({"Procfile": f"web: python3 server.py {marker}\n", "server.py": HOSTILE_APP})
        assert deploy(account, "survivor", archive)["status"] == "READY"
        assert processes_with(marker)
        assert doomed.proc is not None
        os.killpg(doomed.proc.pid, 9)
        doomed.proc.wait()
        deadline = time.monotonic() + 10
        while processes_with(marker):
            assert time.monotonic() < deadline, processes_with(marker)
            time.sleep(0.05)


def processes_with(token: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if token in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found
