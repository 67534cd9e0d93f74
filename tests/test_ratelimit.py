"""Rate limits: 200 concurrent requests against a limit of 100 admit exactly 100, in memory (one server) and in Redis
shared by two server processes; 429s carry Retry-After and the X-RateLimit-* headers; plans change the limit."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from runix.errors import RateLimited
from runix.ratelimit import RateLimiter
from tests.support import RunixServer, require_redis, running_server

LIMIT = 100  # the Hobby plan's requests per minute


def redis_db_url() -> str:
    """A Redis database number of these tests' own (keys are per account, so runs never share a budget)."""
    return require_redis().rsplit("/", 1)[0] + "/13"


async def burst(urls: list[str], token: str) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(urls), max_keepalive_connections=len(urls))
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, limits=limits, timeout=30) as client:
        return await asyncio.gather(*(client.get(url) for url in urls))


def check_burst(responses: list[httpx.Response]) -> list[httpx.Response]:
    """Exactly LIMIT are admitted; every response carries the headers; the 429s say when to retry."""
    admitted = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert len(admitted) == LIMIT and len(refused) == len(responses) - LIMIT, [r.status_code for r in responses]
    now = time.time()
    for r in responses:
        assert r.headers["X-RateLimit-Limit"] == str(LIMIT)
        assert 0 <= int(r.headers["X-RateLimit-Remaining"]) < LIMIT
        assert now - 5 < int(r.headers["X-RateLimit-Reset"]) <= now + 65
    for r in refused:
        assert r.json()["code"] == "RATE_LIMITED" and "100 per minute" in r.json()["error"]
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        assert r.headers["X-RateLimit-Remaining"] == "0"
    return admitted


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunixServer]:
    """A server with the plans' own limits (the shared one lifts them)."""
    with running_server(tmp_path_factory.mktemp("runix-ratelimit")) as server:
        yield server


def test_memory_limit_admits_exactly_the_limit(limited: RunixServer) -> None:
    alice, bob = limited.sign_in(), limited.sign_in()
    responses = asyncio.run(burst([f"{limited.url}/user"] * 200, alice.token))
    admitted = check_burst(responses)
    # The count and the stats are read under one lock: each admitted request saw its own remaining count.
    assert sorted(int(r.headers["X-RateLimit-Remaining"]) for r in admitted) == list(range(LIMIT))
    assert alice.client.get("/projects").status_code == 429
    assert bob.client.get("/user").status_code == 200  # each account has its own budget
    assert bob.client.get("/user").headers["X-RateLimit-Remaining"] == str(LIMIT - 2)


def test_changing_plan_changes_the_request_limit(limited: RunixServer) -> None:
    carol = limited.sign_in()
    assert carol.client.get("/user").headers["X-RateLimit-Limit"] == "100"
    limited.set_plan(carol, "pro")
    r = carol.client.get("/user")
    assert r.headers["X-RateLimit-Limit"] == "1000"
    assert carol.client.get("/billing").json()["limits"]["requests_per_minute"] == 1000


@pytest.mark.redis
def test_redis_limit_is_shared_by_two_server_processes(tmp_path: Path) -> None:
    redis_url = redis_db_url()
    with running_server(tmp_path, RUNIX_REDIS_URL=redis_url) as first:
        second = RunixServer(data_dir=first.data_dir, env={"RUNIX_REDIS_URL": redis_url}).start()
        try:
            account = first.sign_in()
            urls = [f"{server.url}/user" for _ in range(100) for server in (first, second)]
            check_burst(asyncio.run(burst(urls, account.token)))
            for server in (first, second):
                r = httpx.get(f"{server.url}/user", headers={"Authorization": f"Bearer {account.token}"})
                assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        finally:
            second.stop()


@pytest.mark.parametrize("backend", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
def test_limiter_is_exact_under_threads(backend: str) -> None:
    limiter = RateLimiter(redis_db_url() if backend == "redis" else None)
    key = uuid.uuid4().hex

    def hit(_: int) -> bool:
        try:
            limiter.hit("test", key, LIMIT, "minute", "requests")
            return True
        except RateLimited as exc:
            assert exc.retry_after >= 1 and exc.headers["X-RateLimit-Remaining"] == "0"
            return False

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(hit, range(300)))
    assert results.count(True) == LIMIT
    assert limiter.peek("test", key, LIMIT, "minute").remaining == 0
