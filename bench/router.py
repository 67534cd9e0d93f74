"""Throughput and latency through the Runix router, as a ratio to the same app hit directly, beside nginx.

One FastAPI app under uvicorn (one worker) is measured with wrk at 50 connections three ways in the same run:
directly, through the router (in a process of its own, as `runix server` would give it a core of its own), and through
nginx as a reverse proxy with upstream keep-alive. The rounds are interleaved so a noisy neighbour hits all three.

    .venv/bin/python bench/router.py [--seconds 5] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import PYTHON, REPO, WrkResult, background, free_port, wrk  # noqa: E402

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


def summarize(results: list[WrkResult]) -> WrkResult:
    return WrkResult(
        statistics.mean(r.requests_per_second for r in results),
        statistics.mean(r.p50_ms for r in results),
        statistics.mean(r.p99_ms for r in results),
        sum(r.errors for r in results),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the three measurements")
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="runix-bench-router-") as tmp_name:
        tmp = Path(tmp_name)
        folder, app = app_folder(tmp)
        app_port, router_port, nginx_port = free_port(), free_port(), free_port()
        uvicorn = [PYTHON, "-m", "uvicorn", app, "--port", str(app_port), "--log-level", "warning", "--no-access-log"]
        router = [
            PYTHON,
            "-m",
            "runix.pipeline.router.embedded",
            "--port",
            str(router_port),
            "--route",
            f"{HOST}=127.0.0.1:{app_port}",
        ]
        nginx = ["nginx", "-c", str(nginx_conf(tmp, nginx_port, app_port)), "-p", str(tmp), "-g", "daemon off;"]
        with (
            background(uvicorn, port=app_port, cwd=folder, log=tmp / "app.log"),
            background(router, port=router_port, log=tmp / "router.log"),
            background(nginx, port=nginx_port, log=tmp / "nginx.log"),
        ):
            targets = {
                "direct": f"http://127.0.0.1:{app_port}/",
                "router": f"http://127.0.0.1:{router_port}/",
                "nginx": f"http://127.0.0.1:{nginx_port}/",
            }
            headers = [f"Host: {HOST}"]
            for url in targets.values():  # warm up: imports, pools, JIT-free but caches all the same
                wrk(url, connections=args.connections, seconds=1, headers=headers)
            runs: dict[str, list[WrkResult]] = {name: [] for name in targets}
            for _ in range(args.rounds):
                for name, url in targets.items():
                    runs[name].append(wrk(url, connections=args.connections, seconds=args.seconds, headers=headers))

    results = {name: summarize(found) for name, found in runs.items()}
    direct = results["direct"]
    print(
        f"app: {app} under uvicorn (1 worker); wrk 1 thread, {args.connections} connections, "
        f"{args.rounds} x {args.seconds:.0f} s each, interleaved"
    )
    print(f"{'':8} {'req/s':>9} {'ratio':>7} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for name, result in results.items():
        ratio = result.requests_per_second / direct.requests_per_second
        print(
            f"{name:8} {result.requests_per_second:9.0f} {ratio:6.2f}x {result.p50_ms:8.2f} {result.p99_ms:8.2f} "
            f"{result.errors:7d}"
        )
    router_result, nginx_result = results["router"], results["nginx"]
    router_ratio = router_result.requests_per_second / direct.requests_per_second
    added_p99 = router_result.p99_ms - direct.p99_ms
    print(
        f"router throughput: {router_ratio:.2f}x direct (target >= 0.80x; nginx "
        f"{nginx_result.requests_per_second / direct.requests_per_second:.2f}x)"
    )
    nginx_added_p99 = nginx_result.p99_ms - direct.p99_ms
    print(f"router added p99 latency: {added_p99:+.2f} ms (target < 2 ms; nginx {nginx_added_p99:+.2f} ms)")


if __name__ == "__main__":
    main()
