"""`runix deploy` of examples/static from a clean shell, against the same deployment made directly through the API.

Both sides deploy the same folder to production on the same server in the same run, interleaved, until the app
answers through the router:
- CLI: a fresh `runix deploy --prod` subprocess (new config dir, token from RUNIX_TOKEN), timed from spawn until it
  has printed the URL and the URL answers 200.
- API: in this (already warm) process with httpx: tar the folder, POST /deployments, poll GET /deployments/{id}
  every 50 ms until READY, GET the URL through the router.
- The same API steps as a script run in a fresh Python process (what doing it by hand from a shell costs).

Prints the medians and the ratios (target: CLI under 1.3x the API in this process).

    .venv/bin/python bench/cli_deploy.py [--runs 7]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import RUNIX, running_server  # noqa: E402

POLL_SECONDS = 0.05


def fetch_through_router(router: httpx.Client, url: str) -> None:
    host = urlsplit(url).hostname
    response = router.get("/", headers={"Host": host})
    assert response.status_code == 200, (url, response.status_code, response.text[:200])


def deploy_through_api(api: httpx.Client, router: httpx.Client, folder: Path, project: str) -> float:
    started = time.perf_counter()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            if ".runix" not in path.relative_to(folder).parts:
                tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
    r = api.post(
        "/deployments",
        data={"project": project, "target": "production"},
        files={"source": ("source.tar.gz", buffer.getvalue(), "application/gzip")},
    )
    assert r.status_code == 201, r.text
    deployment = r.json()
    while deployment["status"] not in ("READY", "ERROR", "CANCELED"):
        time.sleep(POLL_SECONDS)
        deployment = api.get(f"/deployments/{deployment['id']}").json()
    assert deployment["status"] == "READY", deployment
    fetch_through_router(router, deployment["url"])
    return time.perf_counter() - started


SCRIPT = """
import io, sys, tarfile, time
from pathlib import Path
from urllib.parse import urlsplit
import httpx
api_url, token, project, folder, router_port, poll = sys.argv[1:]
folder = Path(folder)
buffer = io.BytesIO()
with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
    for path in sorted(folder.rglob("*")):
        if ".runix" not in path.relative_to(folder).parts:
            tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
with httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as api:
    r = api.post("/deployments", data={"project": project, "target": "production"},
                 files={"source": ("source.tar.gz", buffer.getvalue(), "application/gzip")})
    deployment = r.json()
    while deployment["status"] not in ("READY", "ERROR", "CANCELED"):
        time.sleep(float(poll))
        deployment = api.get(f"/deployments/{deployment['id']}").json()
assert deployment["status"] == "READY", deployment
host = urlsplit(deployment["url"]).hostname
assert httpx.get(f"http://127.0.0.1:{router_port}/", headers={"Host": host}).status_code == 200
"""


def deploy_with_script(env: dict[str, str], server_url: str, router_port: int, folder: Path, project: str) -> float:
    """The same steps as deploy_through_api, written as a script and run in a fresh Python process."""
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-c",
            SCRIPT,
            server_url,
            env["RUNIX_TOKEN"],
            project,
            str(folder),
            str(router_port),
            str(POLL_SECONDS),
        ],
        check=True,
        env=env,
    )
    return time.perf_counter() - started


def python_start(code: str) -> float:
    """A fresh Python process that runs `code` and exits: the floor under any Python client started from a shell."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - started


def deploy_with_cli(env: dict[str, str], router: httpx.Client, folder: Path) -> float:
    config = Path(tempfile.mkdtemp(prefix="runix-bench-config-"))
    shell = {**env, "XDG_CONFIG_HOME": str(config), "HOME": str(config)}
    started = time.perf_counter()
    proc = subprocess.Popen(
        [RUNIX, "deploy", "--prod", str(folder)], env=shell, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        raise AssertionError(f"runix deploy printed no URL: {url!r}\n{proc.communicate()[1]}")
    fetch_through_router(router, url)
    elapsed = time.perf_counter() - started
    proc.communicate(timeout=30)
    assert proc.returncode == 0
    shutil.rmtree(config, ignore_errors=True)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_server(Path(tmp), RUNIX_RATE_LIMIT_PER_MINUTE="100000") as server,
    ):
        account = server.sign_in()
        api = account.client
        assert api.put("/billing/plan", json={"plan": "enterprise"}).status_code == 200
        token = api.post("/auth/cli-token", json={"name": "bench"}).json()["token"]
        for name in ("bench-cli", "bench-api"):
            assert api.post("/projects", json={"name": name}).status_code == 201
        folders = {}
        for name in ("bench-cli", "bench-api"):
            folders[name] = Path(tmp) / name
            shutil.copytree(ROOT / "examples" / "static", folders[name])
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNIX_")}
        env.update({"RUNIX_API_URL": server.url, "RUNIX_TOKEN": token, "NO_COLOR": "1"})
        router = httpx.Client(base_url=f"http://127.0.0.1:{server.router_port}", timeout=30)
        # Warm-up (and the CLI links its folder to its project, as it does on a first deploy).
        subprocess.run(
            [RUNIX, "deploy", "--prod", "--project", "bench-cli", str(folders["bench-cli"])],
            env={**env, "XDG_CONFIG_HOME": tmp, "HOME": tmp},
            check=True,
            capture_output=True,
        )
        deploy_through_api(api, router, folders["bench-api"], "bench-api")
        cli_times, api_times, script_times, bare_times, httpx_times = [], [], [], [], []
        for _ in range(args.runs):
            bare_times.append(python_start("pass"))
            httpx_times.append(python_start("import httpx"))
            api_times.append(deploy_through_api(api, router, folders["bench-api"], "bench-api"))
            cli_times.append(deploy_with_cli(env, router, folders["bench-cli"]))
            script_times.append(
                deploy_with_script(env, server.url, server.router_port, folders["bench-api"], "bench-api")
            )
        router.close()
    cli, direct, script, bare, with_httpx = (statistics.median(t) for t in (
        cli_times, api_times, script_times, bare_times, httpx_times))
    print(f"runix deploy --prod examples/static until the URL answers, {args.runs} runs each (median):")
    print(f"  API with httpx, in this warm process:        {direct * 1000:6.0f} ms")
    print(f"  API with httpx, a script in a fresh process: {script * 1000:6.0f} ms")
    print(f"  runix deploy, a fresh process:               {cli * 1000:6.0f} ms")
    print(f"  (a fresh `python -c pass`: {bare * 1000:.0f} ms; `python -c 'import httpx'`: {with_httpx * 1000:.0f} ms)")
    print(f"  ratio CLI / API in this process: {cli / direct:.2f}x (target < 1.3x)")
    print(f"  ratio CLI / API script:          {cli / script:.2f}x")
    print(f"  CLI time above the warm API, less a bare Python start: {(cli - direct - bare) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
