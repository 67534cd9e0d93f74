"""The API's two figures, each as a ratio to a baseline measured in the same run.

1. Throughput of an authenticated `GET /projects/{name}` (token check, rate limit, one project) as a ratio to
   `GET /healthz` (no auth, no database). Target: at least 0.35.
2. p50 latency of `GET /projects` (first page) for an account with 10,000 projects as a ratio to one with 100.
   Target: at most 1.5 (a page must not slow down as the data grows).

`runix server` runs as a process of its own on SQLite; wrk (one thread, 32 connections) is the load generator.
The server's CPU time per request is printed beside each throughput: it is steadier when the machine is shared.
The projects are seeded straight into the database (seeding is not what is measured). Rounds are interleaved so a
noisy neighbour hits both sides.

    .venv/bin/python bench/api.py [--seconds 3] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

import httpx
from sqlalchemy import insert

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _util import PYTHON, background, free_port, wrk  # noqa: E402

from runix.db.models import Account, Project, utcnow  # noqa: E402
from runix.db.session import Database  # noqa: E402
from runix.ids import new_id  # noqa: E402
from tests.support import read_code  # noqa: E402


def sign_in(url: str, maildir: Path, email: str) -> str:
    """A session token for `email`, on the Enterprise plan (the server makes it an admin, so its own move up
    applies at once)."""
    httpx.post(f"{url}/auth/email", json={"email": email}, timeout=10).raise_for_status()
    code = read_code(maildir, email)
    r = httpx.post(f"{url}/auth/email/verify", json={"email": email, "code": code}, timeout=10)
    r.raise_for_status()
    token = r.json()["token"]
    r = httpx.put(f"{url}/billing/plan", json={"plan": "enterprise"}, headers={"Authorization": f"Bearer {token}"})
    r.raise_for_status()
    return token


def seed_projects(db: Database, token_owner_email: str, count: int, prefix: str) -> None:
    with db.session() as s:
        account_id = s.query(Account.id).filter(Account.email == token_owner_email).scalar()
        now = utcnow()
        rows = [
            {
                "id": new_id("prj"),
                "account_id": account_id,
                "name": f"{prefix}-{i}",
                "slug": f"{prefix}-{i}",
                "created_at": now,
                "updated_at": now,
            }
            for i in range(count)
        ]
        s.execute(insert(Project), rows)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(url: str, pid: int, seconds: float, headers: list[str]) -> tuple[float, float]:
    """(requests per second, server CPU microseconds per request) of one wrk run."""
    before = cpu_seconds(pid)
    result = wrk(url, connections=32, seconds=seconds, headers=headers)
    assert result.errors == 0, result
    used = cpu_seconds(pid) - before
    return result.requests_per_second, used * 1e6 / (result.requests_per_second * round(seconds))


def email_of(url: str, token: str) -> str:
    return httpx.get(f"{url}/user", headers={"Authorization": f"Bearer {token}"}).json()["email"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per figure")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="runix-bench-api-") as tmp:
        data = Path(tmp) / "data"
        emails = [f"bench-{uuid.uuid4().hex[:8]}@example.com" for _ in range(2)]
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {
            "RUNIX_DATA_DIR": str(data),
            "RUNIX_PORT": str(port),
            "RUNIX_ROUTER_PORT": str(free_port()),
            "RUNIX_LOG_LEVEL": "warning",
            "RUNIX_RATE_LIMIT_PER_MINUTE": str(10**9),
            "RUNIX_ADMIN_EMAILS": ",".join(emails),
        }
        runix = str(Path(PYTHON).parent / "runix")
        with background([runix, "server"], port=port, env=env, log=Path(tmp) / "server.log") as server:
            big, small = (sign_in(url, data / "mail", email) for email in emails)
            db = Database(f"sqlite:///{data / 'runix.db'}")
            seed_projects(db, email_of(url, big), 10_000, "big")
            seed_projects(db, email_of(url, small), 100, "small")
            db.dispose()
            one = httpx.get(f"{url}/projects/big-42", headers={"Authorization": f"Bearer {big}"})
            assert one.status_code == 200, one.text
            pages = [httpx.get(f"{url}/projects", headers={"Authorization": f"Bearer {t}"}) for t in (big, small)]
            assert all(len(p.json()) == 20 and 'rel="next"' in p.headers["link"] for p in pages)

            throughput = []
            for _ in range(args.rounds):
                health = measured(f"{url}/healthz", server.pid, args.seconds, [])
                project = measured(f"{url}/projects/big-42", server.pid, args.seconds, [f"Authorization: Bearer {big}"])
                throughput.append((health, project))

            latency = []
            for _ in range(args.rounds):
                large = wrk(
                    f"{url}/projects", connections=2, seconds=args.seconds, headers=[f"Authorization: Bearer {big}"]
                )
                few = wrk(
                    f"{url}/projects", connections=2, seconds=args.seconds, headers=[f"Authorization: Bearer {small}"]
                )
                assert large.errors == 0 and few.errors == 0, (large, few)
                latency.append((large.p50_ms, few.p50_ms))

    for (health_rps, health_cpu), (project_rps, project_cpu) in throughput:
        print(f"  GET /healthz {health_rps:6.0f} req/s ({health_cpu:4.0f} us CPU/req)   "
              f"GET /projects/{{name}} {project_rps:6.0f} req/s ({project_cpu:4.0f} us CPU/req)")
    ratio = statistics.median(p[0] / h[0] for h, p in throughput)
    print(f"throughput of authenticated GET /projects/{{name}} / GET /healthz: {ratio:.2f}  (target >= 0.35)")
    # Less sensitive to other load on the machine than throughput: the server's own CPU time per request.
    ratio = statistics.median(h[1] / p[1] for h, p in throughput)
    print(f"  same, as server CPU time per request (GET /healthz / GET /projects/{{name}}): {ratio:.2f}")
    for large_ms, few_ms in latency:
        print(f"  GET /projects p50: 10,000 projects {large_ms:6.2f} ms   100 projects {few_ms:6.2f} ms")
    ratio = statistics.median(large / few for large, few in latency)
    print(f"p50 latency of GET /projects, 10,000 projects / 100 projects: {ratio:.2f}  (target <= 1.5)")


if __name__ == "__main__":
    main()
