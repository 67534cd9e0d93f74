"""Races: many requests at once against a real `runix server`, on SQLite and on PostgreSQL.

A check-then-write that is not atomic lets simultaneous requests all pass the check; these tests fire the requests
together (threads released by one barrier) and count what got through.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator

import httpx
import pytest

from runix.plans import get_plan
from tests.api_support import error
from tests.support import Account, RunixServer, drop_postgres_database, fresh_postgres_database, running_server
from tests.test_deployments_e2e import stdlib_app, upload, wait_settled

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


def test_concurrent_project_creates_stop_exactly_at_the_plan_limit(server: RunixServer) -> None:
    account = server.sign_in()
    limit = get_plan("hobby").projects
    assert limit is not None
    for i in range(limit - 1):
        assert account.client.post("/projects", json={"name": f"p{i}"}).status_code == 201
    attempts = 8
    with clients_of(server, account, attempts) as clients:
        responses = all_at_once(attempts, lambda i: clients[i].post("/projects", json={"name": f"late{i}"}))
    assert Counter(r.status_code for r in responses) == {201: 1, 403: attempts - 1}, [r.text for r in responses]
    for r in responses:
        if r.status_code != 201:
            error(r, 403, "FORBIDDEN")
    assert len(account.client.get("/projects", params={"limit": 100}).json()) == limit


def test_promote_racing_a_delete_or_a_cancel_never_leaves_production_on_a_deployment_that_is_not_ready(
        server: RunixServer) -> None:
    account = server.sign_in()
    server.set_plan(account, "pro")  # 3 builds at once
    assert account.client.post("/projects", json={"name": "flip"}).status_code == 201
    r = upload(account, "flip", stdlib_app("v1"))
    assert r.status_code == 201, r.text
    versions = {r.json()["id"]: "v1"}
    previews = []
    for i in range(4):
        r = upload(account, "flip", stdlib_app(f"p{i}"), target="preview")
        assert r.status_code == 201, r.text
        previews.append(r.json()["id"])
        versions[r.json()["id"]] = f"p{i}"
    for deployment_id in versions:
        assert wait_settled(account, deployment_id)["status"] == "READY"
    router = httpx.Client(base_url=f"http://127.0.0.1:{server.router_port}", timeout=30)  # closed below

    def production_is_ready() -> str:
        production = account.client.get("/projects/flip").json()["production_deployment_id"]
        r = account.client.get(f"/deployments/{production}")
        assert r.status_code == 200 and r.json()["status"] == "READY", r.text
        assert router.get("/", headers={"Host": "flip.localhost"}).text == f"{versions[production]} -"
        return production

    outcomes: Counter[tuple[int, int]] = Counter()
    with clients_of(server, account, 2) as clients, router:
        expected = production_is_ready()
        for preview in previews:  # each promoted and deleted at the same moment: one of the two wins
            promoted, deleted = all_at_once(2, lambda i, d=preview: (
                clients[0].post(f"/deployments/{d}/promote") if i == 0 else clients[1].delete(f"/deployments/{d}")))
            outcomes[promoted.status_code, deleted.status_code] += 1
            assert (promoted.status_code, deleted.status_code) in {(200, 409), (404, 200), (409, 200)}, (
                promoted.text, deleted.text)
            expected = preview if promoted.status_code == 200 else expected
            assert production_is_ready() == expected

        # A build canceled while it is promoted: the promote is refused and production stays where it was.
        assert account.client.patch("/projects/flip", json={"build_command": "sleep 60"}).status_code == 200
        building = upload(account, "flip", stdlib_app("never")).json()["id"]
        deadline = time.monotonic() + 60
        while account.client.get(f"/deployments/{building}").json()["status"] == "QUEUED":
            assert time.monotonic() < deadline, "the build never started"
            time.sleep(0.05)
        promoted, canceled = all_at_once(2, lambda i: (
            clients[0].post(f"/deployments/{building}/promote") if i == 0
            else clients[1].post(f"/deployments/{building}/cancel")))
        error(promoted, 409, "CONFLICT")
        assert canceled.status_code == 200 and canceled.json()["status"] == "CANCELED", canceled.text
        assert production_is_ready() == expected
    print(f"promote/delete outcomes ({server.env.get('RUNIX_DATABASE_URL', 'sqlite')[:10]}): {dict(outcomes)}")
