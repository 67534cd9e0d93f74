"""Time to READY on Runix against the same steps done by hand, measured in one run on one machine.

- examples/flask with a warm cache: upload until the production URL answers 200 through the router, against the bare
  steps (extract the archive, `uv venv` + `uv pip install -r requirements.txt` into a fresh virtualenv with the same
  uv cache, start `python app.py`, first 200). Target: at most 1.5x.
- examples/static: the platform's time to READY (target: under 1 s) and its ratio to the bare steps (extract, start
  `python3 -m http.server`, first 200).
- rollback: from the promote call until the production URL serves the older version (target: under 1 s).

Each figure is the median of `--runs` runs, the two sides interleaved.

    .venv/bin/python bench/deploy.py [--runs 5]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import RunixServer, free_port, running_server  # noqa: E402

POLL_SECONDS = 0.005
IDLE_SECONDS = 2
STATIC_SERVER = ["sh", "-c", 'exec python3 -m http.server "$PORT" --bind 127.0.0.1']
UV = shutil.which("uv", path=str(Path(sys.executable).parent)) or "uv"


def tar_folder(folder: Path, replace: dict[str, bytes] | None = None) -> bytes:
    """The folder as a .tar.gz, with the files named in `replace` given other contents."""
    replace = replace or {}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            name = str(path.relative_to(folder))
            if "__pycache__" in path.parts or "node_modules" in path.parts:
                continue
            if name in replace:
                info = tar.gettarinfo(path, arcname=name)
                info.size = len(replace[name])
                tar.addfile(info, io.BytesIO(replace[name]))
            else:
                tar.add(path, arcname=name, recursive=False)
    return buffer.getvalue()


def wait_for_200(client: httpx.Client, host: str | None = None, expect: bytes | None = None,
                 timeout: float = 60.0) -> None:
    deadline = time.perf_counter() + timeout
    headers = {"Host": host} if host else {}
    while time.perf_counter() < deadline:
        try:
            r = client.get("/", headers=headers)
            if r.status_code == 200 and (expect is None or expect in r.content):
                return
        except httpx.HTTPError:
            pass
        time.sleep(POLL_SECONDS)
    raise TimeoutError("no 200 in time")


class Platform:
    def __init__(self, server: RunixServer):
        self.account = server.sign_in()
        self.api = self.account.client
        self.router = httpx.Client(base_url=f"http://127.0.0.1:{server.router_port}", timeout=60)
        server.set_plan(self.account, "enterprise")  # as the operator does: no deploy limit in the way

    def project(self, name: str) -> str:
        assert self.api.post("/projects", json={"name": name}).status_code == 201
        return name

    def deploy(self, project: str, archive: bytes, label: str | None = None) -> tuple[float, dict]:
        """Seconds from the upload until the production URL answers 200, and the deployment."""
        started = time.perf_counter()
        r = self.api.post("/deployments", data={"project": project},
                          files={"source": ("source.tar.gz", archive, "application/gzip")})
        assert r.status_code == 201, r.text
        deployment_id = r.json()["id"]
        # Follow the events (as `runix deploy` does) rather than poll: polling would load the server it measures.
        with self.api.stream("GET", f"/deployments/{deployment_id}/events", params={"follow": "true"}) as events:
            for line in events.iter_lines():
                if line == "event: end":
                    break
        deployment = self.api.get(f"/deployments/{deployment_id}").json()
        assert deployment["status"] == "READY", deployment
        wait_for_200(self.router, f"{project}.localhost")
        total = time.perf_counter() - started
        if label:
            stamp = {k: datetime.fromisoformat(deployment[k]).timestamp()
                     for k in ("created_at", "build_started_at", "build_finished_at", "ready_at")}
            phase(f"{label} Runix: queued", stamp["build_started_at"] - stamp["created_at"])
            phase(f"{label} Runix: build (extract + install)", stamp["build_finished_at"] - stamp["build_started_at"])
            phase(f"{label} Runix: start until healthy and routed", stamp["ready_at"] - stamp["build_finished_at"])
        return total, deployment

    def wake_after_sleep(self, project: str, archive: bytes) -> float:
        """Seconds from the first request to a preview deployment that went to sleep until its answer."""
        r = self.api.post("/deployments", data={"project": project, "target": "preview"},
                          files={"source": ("source.tar.gz", archive, "application/gzip")})
        deployment_id = r.json()["id"]
        while "Asleep after" not in str(self.api.get(f"/deployments/{deployment_id}/events").json()):
            time.sleep(0.2)
        host = urlsplit(self.api.get(f"/deployments/{deployment_id}").json()["url"]).hostname
        started = time.perf_counter()
        assert self.router.get("/", headers={"Host": host}).status_code == 200
        return time.perf_counter() - started

    def rollback(self, project: str, deployment_id: str, expect: bytes) -> float:
        started = time.perf_counter()
        assert self.api.post(f"/deployments/{deployment_id}/promote").status_code == 200
        wait_for_200(self.router, f"{project}.localhost", expect)
        return time.perf_counter() - started


PHASES: dict[str, list[float]] = {}


def phase(name: str, seconds: float) -> None:
    PHASES.setdefault(name, []).append(seconds)


def by_hand(archive: bytes, workdir: Path, install: Callable[[Path], None] | None, start: list[str],
            label: str) -> float:
    """Seconds for the bare steps: extract, install (if any), start the app, first 200."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    started = time.perf_counter()
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        tar.extractall(workdir / "app", filter="data")
    if install:
        install(workdir)
    phase(f"{label} by hand: extract + install", time.perf_counter() - started)
    port = free_port()
    # The PATH the platform gives apps (a shim on the host PATH, e.g. pyenv's, would make the hand side slower).
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1",
           "PATH": f"{workdir / '.venv' / 'bin'}:/usr/local/bin:/usr/bin:/bin"}
    proc = subprocess.Popen(start, cwd=workdir / "app", env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            wait_for_200(client)
        total = time.perf_counter() - started
        phase(f"{label} by hand: start until 200", total - PHASES[f"{label} by hand: extract + install"][-1])
        return total
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()


def uv_install(cache: Path) -> Callable[[Path], None]:
    def install(workdir: Path) -> None:
        env = {**os.environ, "UV_CACHE_DIR": str(cache), "UV_PYTHON_DOWNLOADS": "never"}
        venv = workdir / ".venv"
        subprocess.run([UV, "venv", "--quiet", "--python", "/usr/bin/python3", str(venv)], env=env, check=True)
        subprocess.run([UV, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), "-r",
                        str(workdir / "app" / "requirements.txt")], env=env, check=True)

    return install


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    flask_archive = tar_folder(ROOT / "examples" / "flask")
    static_archive = tar_folder(ROOT / "examples" / "static")
    with (tempfile.TemporaryDirectory(prefix="runix-bench-") as tmp,
          running_server(Path(tmp), RUNIX_IDLE_TIMEOUT=str(IDLE_SECONDS)) as server):
        platform = Platform(server)
        cache = server.data_dir / "cache" / "uv"
        flask = platform.project("bench-flask")
        static = platform.project("bench-static")
        platform.deploy(flask, flask_archive)  # fills the shared uv cache: the runs below are warm
        hand_dir = Path(tmp) / "by-hand"
        results: dict[str, list[float]] = {k: [] for k in ("flask", "flask_hand", "static", "static_hand")}
        for _ in range(runs):
            results["flask"].append(platform.deploy(flask, flask_archive, "flask")[0])
            results["flask_hand"].append(by_hand(flask_archive, hand_dir, uv_install(cache), ["python", "app.py"],
                                                 "flask"))
            results["static"].append(platform.deploy(static, static_archive, "static")[0])
            results["static_hand"].append(by_hand(static_archive, hand_dir, None, STATIC_SERVER, "static"))
        rollbacks = []
        old = platform.deploy(static, tar_folder(ROOT / "examples" / "static", {"index.html": b"<p>old</p>"}))[1]
        new = platform.deploy(static, tar_folder(ROOT / "examples" / "static", {"index.html": b"<p>new</p>"}))[1]
        for _ in range(runs):
            rollbacks.append(platform.rollback(static, old["id"], b"old"))
            platform.rollback(static, new["id"], b"new")
        median = {k: statistics.median(v) for k, v in results.items()}
        rollback = statistics.median(rollbacks)
        wakes = [platform.wake_after_sleep(flask, flask_archive) for _ in range(3)]

    flask_ratio = median["flask"] / median["flask_hand"]
    static_ratio = median["static"] / median["static_hand"]
    print(f"examples/flask, warm cache: Runix {median['flask']:.3f} s to READY and serving, by hand "
          f"{median['flask_hand']:.3f} s -> {flask_ratio:.2f}x (target <= 1.5x)")
    print(f"examples/static: Runix {median['static']:.3f} s to READY and serving (target < 1 s), by hand "
          f"{median['static_hand']:.3f} s -> {static_ratio:.2f}x")
    print(f"rollback (promote until the production URL serves the older deployment): {rollback * 1000:.0f} ms "
          "(target < 1 s)")
    print(f"wake of a sleeping examples/flask deployment (first request until its answer): "
          f"{statistics.median(wakes) * 1000:.0f} ms (median of {len(wakes)})")
    print(f"(median of {runs} runs; where the time goes, medians:)")
    for name, values in sorted(PHASES.items()):
        print(f"  {name}: {statistics.median(values) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
