"""`runix deploy` of examples/static from a clean shell, against the same deployment made with curl from a shell.

Each side deploys a copy of examples/static to production on the same server, in the same run, and is timed from
spawn until it exits with the app answering through the router:
- CLI shell: `url=$(runix deploy --prod DIR) && curl -sf "$url"`, in a fresh bash (token from RUNIX_TOKEN, no
  saved credentials; the folder was linked to its project by a first deploy, as after any first deploy), its
  stderr on a terminal as in a person's shell (colour, progress).
- curl shell (the baseline): `tar -czf` the folder, `curl -F` it to POST /deployments, `curl -N` the deployment's
  `events?follow=true` stream until its `end` event says READY, then `curl` the URL.
- httpx in this warm process (secondary): the same steps with no process start-up at all.

Rounds are interleaved (the order rotates each round); prints the median times and, for each pair, the median of
the per-round ratios. Target: CLI shell / curl shell under 1.3x.

    .venv/bin/python bench/cli_deploy.py [--runs 9]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pty
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import RUNIX, running_server  # noqa: E402

CLOSED_API = "http://127.0.0.1:9"  # the discard port: nothing listens there

CLI_SHELL = """set -euo pipefail
url=$("$RUNIX" deploy --prod "$FOLDER")
curl -sfS -o /dev/null "$url"
"""

# What a person would type to deploy through the API: pack, upload, follow the log to its end, fetch the app.
CURL_SHELL = """set -euo pipefail
archive=$(mktemp --suffix=.tar.gz)
trap 'rm -f "$archive"' EXIT
tar -czf "$archive" --exclude=./.runix -C "$FOLDER" .
auth="Authorization: Bearer $RUNIX_TOKEN"
deployment=$(curl -sfS -H "$auth" -F "project=$PROJECT" -F target=production \\
  -F "source=@$archive;type=application/gzip" "$RUNIX_API_URL/deployments")
read -r id url < <(jq -r '.id + " " + .url' <<<"$deployment")
curl -sfSN -H "$auth" "$RUNIX_API_URL/deployments/$id/events?follow=true" | grep -q '^data: {"status": "READY"}'
curl -sfS -o /dev/null "$url"
"""


def run_shell(script: str, env: dict[str, str]) -> float:
    """Runs `script` in bash with stderr on a terminal (a pseudo-terminal), as in a person's shell."""
    controller, terminal = pty.openpty()
    shown = bytearray()
    reader = threading.Thread(target=_drain, args=(controller, shown), daemon=True)
    reader.start()
    started = time.perf_counter()
    result = subprocess.run(["bash", "-c", script], env=env, stdout=subprocess.PIPE, stderr=terminal)
    elapsed = time.perf_counter() - started
    os.close(terminal)
    reader.join(timeout=5)
    os.close(controller)
    if result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}:\n{result.stdout!r}\n{shown.decode(errors='replace')}")
    return elapsed


def _drain(fd: int, into: bytearray) -> None:
    try:
        while chunk := os.read(fd, 65536):
            into += chunk
    except OSError:  # the terminal side closed
        pass


def deploy_in_process(api: httpx.Client, router: httpx.Client, folder: Path, project: str) -> float:
    """The curl steps with httpx in this already-running process: the cost of the API and the build alone."""
    started = time.perf_counter()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(folder, arcname=".", filter=lambda info: None if "/.runix" in info.name else info)
    r = api.post("/deployments", data={"project": project, "target": "production"},
                 files={"source": ("source.tar.gz", buffer.getvalue(), "application/gzip")})
    assert r.status_code == 201, r.text
    deployment = r.json()
    status = None
    with api.stream("GET", f"/deployments/{deployment['id']}/events", params={"follow": "true"}) as events:
        for line in events.iter_lines():
            if line.startswith("data: {\"status\""):
                status = json.loads(line.removeprefix("data: "))["status"]
    assert status == "READY", (deployment, status)
    # Names under .localhost need no DNS for curl; here the router is asked directly, with the app's Host.
    assert router.get("/", headers={"Host": urlsplit(deployment["url"]).netloc}).status_code == 200
    return time.perf_counter() - started


def python_start() -> float:
    """A fresh `python -c pass`: the floor under any Python program started from a shell."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - started


def cli_start(env: dict[str, str]) -> float:
    """`runix deploy` against an API that refuses the connection: the CLI's own cost (start-up, imports, packing,
    the error, exit) with no server work in it."""
    started = time.perf_counter()
    result = subprocess.run([RUNIX, "deploy", "--prod", env["FOLDER"]], env={**env, "RUNIX_API_URL": CLOSED_API},
                            capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    assert result.returncode == 1 and "Could not reach" in result.stderr, result.stderr
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    for tool in ("bash", "curl", "tar", "jq"):
        if not shutil.which(tool):
            raise SystemExit(f"bench/cli_deploy.py needs {tool} on PATH")
    # An installed runix runs from byte-compiled modules (pip compiles them); this editable checkout may not have
    # them (PYTHONDONTWRITEBYTECODE), and compiling on every start would be counted against the CLI.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "src" / "runix")], check=True)
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_server(Path(tmp), RUNIX_RATE_LIMIT_PER_MINUTE="100000") as server,
    ):
        account = server.sign_in()
        api = account.client
        server.set_plan(account, "enterprise")
        token = api.post("/auth/cli-token", json={"name": "bench"}).json()["token"]
        folders = {}
        for name in ("bench-cli", "bench-curl", "bench-httpx"):
            assert api.post("/projects", json={"name": name}).status_code == 201
            folders[name] = Path(tmp) / name
            shutil.copytree(ROOT / "examples" / "static", folders[name])
        config = Path(tmp) / "config"
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNIX_")}
        env = {k: v for k, v in env.items() if k != "NO_COLOR"}  # colour on, as at a terminal
        env.update({"RUNIX_API_URL": server.url, "RUNIX_TOKEN": token, "RUNIX": RUNIX, "TERM": "xterm-256color",
                    "HOME": str(config), "XDG_CONFIG_HOME": str(config)})
        cli_env = {**env, "FOLDER": str(folders["bench-cli"])}
        curl_env = {**env, "FOLDER": str(folders["bench-curl"]), "PROJECT": "bench-curl"}
        # Warm-up; the CLI links its folder to its project, as it does on a first deploy.
        subprocess.run([RUNIX, "deploy", "--prod", "--yes", "--project", "bench-cli", str(folders["bench-cli"])],
                       env=env, check=True, capture_output=True)
        run_shell(CURL_SHELL, curl_env)
        router = httpx.Client(base_url=f"http://127.0.0.1:{server.router_port}", timeout=30)
        deploy_in_process(api, router, folders["bench-httpx"], "bench-httpx")

        sides: dict[str, Callable[[], float]] = {
            "cli": lambda: run_shell(CLI_SHELL, cli_env),
            "curl": lambda: run_shell(CURL_SHELL, curl_env),
            "httpx": lambda: deploy_in_process(api, router, folders["bench-httpx"], "bench-httpx"),
        }
        times: dict[str, list[float]] = {name: [] for name in sides}
        bare, cli_alone = [], []
        order = list(sides)
        for _ in range(args.runs):
            for name in order:
                times[name].append(sides[name]())
            order = order[1:] + order[:1]
            bare.append(python_start())
            cli_alone.append(cli_start(cli_env))
        router.close()

    def ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))

    ms = {name: statistics.median(t) * 1000 for name, t in times.items()}
    print(f"Deploy examples/static to production until its URL answers; {args.runs} interleaved rounds, medians "
          f"(load average {os.getloadavg()[0]:.1f}):")
    print(f"  CLI shell:   `runix deploy --prod` + curl the URL           {ms['cli']:6.0f} ms")
    print(f"  curl shell:  tar + curl POST + curl -N events + curl URL  {ms['curl']:6.0f} ms   (baseline)")
    print(f"  httpx, in this warm process (no start-up):                {ms['httpx']:6.0f} ms   (secondary)")
    scale = {"bare": statistics.median(bare) * 1000, "alone": statistics.median(cli_alone) * 1000}
    print(f"  for scale: a fresh `python -c pass`                        {scale['bare']:6.0f} ms")
    print(f"             `runix deploy` to a closed port (CLI cost alone) {scale['alone']:6.0f} ms")
    print(f"  ratio CLI shell / curl shell:          {ratio('cli', 'curl'):.2f}x   (target < 1.3x)")
    print(f"  ratio CLI shell / httpx warm process:  {ratio('cli', 'httpx'):.2f}x   (secondary)")
    print(f"  ratio curl shell / httpx warm process: {ratio('curl', 'httpx'):.2f}x   (secondary)")


if __name__ == "__main__":
    main()
