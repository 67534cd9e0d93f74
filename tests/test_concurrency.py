"""Races: many requests at once against a real `runix server`, on SQLite and on PostgreSQL.

A check-then-write that is not atomic lets simultaneous requests all pass the check; these tests fire the requests
together (threads released by one barrier) and count what got through.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator

import httpx
import pytest

from runix.plans import get_plan
from tests.api_support import error
from tests.support import Account, RunixServer, drop_postgres_database, fresh_postgres_database, running_server

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="module", params=BACKENDS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunixServer]:
    """One server per database backend; SQLite is the default, PostgreSQL gets a fresh database of its own."""
    env = {"RUNIX_RATE_LIMIT_PER_MINUTE": "100000"}
    url = fresh_postgres_database() if request.param == "postgresql" else None
    if url:
        env["RUNIX_DATABASE_URL"] = url
    try:
        with running_server(tmp_path_factory.mktemp(f"runix-race-{request.param}"), **env) as s:
            yield s
    finally:
        if url:
            drop_postgres_database(url)


def all_at_once(count: int, call: Callable[[int], httpx.Response]) -> list[httpx.Response]:
    """`call(i)` for i in range(count), each on its own thread, all released together."""
    barrier = threading.Barrier(count)
    responses: list[httpx.Response | None] = [None] * count
    failures: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            responses[i] = call(i)
        except BaseException as exc:  # noqa: BLE001 - reported by the caller's assertion
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures
    return [r for r in responses if r is not None]


@contextlib.contextmanager
def clients_of(server: RunixServer, account: Account, count: int) -> Iterator[list[httpx.Client]]:
    """A client per thread, connected beforehand, so the requests leave together rather than as each connects."""
    clients = [httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {account.token}"}, timeout=60)
               for _ in range(count)]
    try:
        for client in clients:
            assert client.get("/user").status_code == 200
        yield clients
    finally:
        for client in clients:
            client.close()


def unique_domain() -> str:
    return f"www.{uuid.uuid4().hex[:10]}.example.com"


def test_concurrent_domain_adds_stop_exactly_at_the_plan_limit(server: RunixServer) -> None:
    account = server.sign_in()  # a new account is on Hobby
    limit = get_plan("hobby").domains_per_project
    assert limit is not None and limit >= 2
    attempts = 12
    with clients_of(server, account, attempts) as clients:
        for round_ in range(3):  # several rounds: one lucky interleaving must not pass for atomicity
            project = f"race-{round_}"
            assert account.client.post("/projects", json={"name": project}).status_code == 201
            r = account.client.post(f"/projects/{project}/domains", json={"name": unique_domain()})
            assert r.status_code == 201, r.text  # near the limit: one slot short of it
            names = [unique_domain() for _ in range(attempts)]
            responses = all_at_once(attempts, lambda i, p=project, n=names: clients[i].post(
                f"/projects/{p}/domains", json={"name": n[i]}))

            statuses = Counter(r.status_code for r in responses)
            assert statuses == {201: limit - 1, 403: attempts - limit + 1}, [(r.status_code, r.text) for r in responses]
            for r in responses:
                if r.status_code != 201:
                    error(r, 403, "FORBIDDEN")
            listed = {d["name"] for d in account.client.get(f"/projects/{project}/domains").json()}
            assert len(listed) == limit and {r.json()["name"] for r in responses if r.status_code == 201} <= listed
