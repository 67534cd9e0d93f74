"""The event store's bounds on their own, on a real database (SQLite and PostgreSQL): the build log cap, the runtime
ring, the bounded queue of lines waiting to be stored, and a follower that falls behind. The same bounds are attacked
end to end by tests/security/test_log_flood.py."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from runix.db.models import Account, Deployment, DeploymentEvent, Project
from runix.db.session import Database
from runix.pipeline.events import TRUNCATED, BuildLogCap, EventStore, LocalHub, LogLimits, StoredBuildLog
from runix.settings import Settings
from tests.support import drop_postgres_database, fresh_postgres_database


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path / 'events.db'}" if request.param == "sqlite" else fresh_postgres_database()
    database = Database(Settings(database_url=url).sqlalchemy_url)
    database.migrate()
    with database.session() as s:
        s.add(Account(id="acc_1", email="a@example.com"))
        s.flush()  # no relationships between the models, so the order of inserts is ours to give
        s.add(Project(id="prj_1", account_id="acc_1", name="p", slug="p"))
        s.flush()
        for deployment_id in ("dpl_a", "dpl_b"):
            s.add(Deployment(id=deployment_id, project_id="prj_1", account_id="acc_1", target="production",
                             status="BUILDING"))
    yield database
    database.dispose()
    if request.param == "postgresql":
        drop_postgres_database(url)


def rows(db: Database, deployment_id: str, type_: str | None = None) -> list[DeploymentEvent]:
    with db.sessions() as s:
        stmt = select(DeploymentEvent).where(DeploymentEvent.deployment_id == deployment_id)
        if type_:
            stmt = stmt.where(DeploymentEvent.type == type_)
        return list(s.scalars(stmt.order_by(DeploymentEvent.id)))


def test_build_log_cap_counts_lines_and_bytes_and_notes_once() -> None:
    cap = BuildLogCap(max_lines=3, max_bytes=1000)
    assert [cap.admit(f"line {i}") for i in range(3)] == [(True, None)] * 3
    keep, note = cap.admit("line 3")
    assert not keep and note and note.startswith(TRUNCATED) and "3 lines" in note and "(the build goes on)" in note
    assert cap.admit("line 4") == (False, None)

    by_size = BuildLogCap(max_lines=100, max_bytes=10)
    assert by_size.admit("é" * 5) == (True, None)  # 10 bytes of UTF-8
    keep, note = by_size.admit("x")
    assert not keep and note and "MB" in note
    # A build resumed after a restart goes on from what is stored, and never notes twice.
    assert BuildLogCap(10, 1000, StoredBuildLog(lines=10, size=50)).admit("more")[1] is not None
    assert BuildLogCap(10, 1000, StoredBuildLog(lines=10, size=50, truncated=True)).admit("more") == (False, None)


def test_runtime_lines_are_a_ring_trimmed_in_batches_and_other_events_stay(db: Database) -> None:
    async def scenario() -> None:
        store = EventStore(db, LocalHub(), limits=LogLimits(runtime_lines=50))
        await store.start()
        store.emit("dpl_a", "build", "built")
        store.emit("dpl_a", "system", "Ready")
        seen: list[int] = []
        for i in range(400):
            store.emit("dpl_a", "runtime", f"line {i}")
            if i % 7 == 0:
                await store.flush()
                runtime = rows(db, "dpl_a", "runtime")
                assert len(runtime) <= 50
                seen.append(len(runtime))
        store.emit("dpl_b", "runtime", "neighbour")
        await store.flush()
        runtime = [r.text for r in rows(db, "dpl_a", "runtime")]
        assert runtime[-1] == "line 399" and runtime == [f"line {i}" for i in range(400 - len(runtime), 400)]
        assert 45 <= len(runtime) <= 50 and min(seen[10:]) >= 45  # trimmed to 45 every 5 lines, not per line
        assert [r.text for r in rows(db, "dpl_a", "build")] == ["built"]
        assert [r.text for r in rows(db, "dpl_a", "system")] == ["Ready"]
        assert [r.text for r in rows(db, "dpl_b")] == ["neighbour"]

        # A new store (a restarted server) counts what is stored and keeps the ring.
        await store.stop()
        again = EventStore(db, LocalHub(), limits=LogLimits(runtime_lines=50))
        await again.start()
        for i in range(20):
            again.emit("dpl_a", "runtime", f"after {i}")
        await again.flush()
        assert 45 <= len(rows(db, "dpl_a", "runtime")) <= 50
        await again.stop()

    asyncio.run(scenario())


def test_a_reader_paging_by_id_sees_no_line_twice_while_the_ring_deletes(db: Database) -> None:
    async def scenario() -> None:
        store = EventStore(db, LocalHub(), limits=LogLimits(runtime_lines=30))
        await store.start()
        last, texts = 0, []
        for i in range(300):
            store.emit("dpl_a", "runtime", f"line {i}")
            if i % 10 == 9:
                await store.flush()
                page = store.list("dpl_a", last, 1000)
                texts += [e.text for e in page]
                last = page[-1].id if page else last
        assert texts == [f"line {i}" for i in range(300)]  # read faster than the ring turns: nothing missed
        await store.stop()

    asyncio.run(scenario())


def test_the_queue_is_bounded_and_says_once_what_it_dropped(db: Database) -> None:
    async def scenario() -> None:
        store = EventStore(db, LocalHub(), limits=LogLimits(queue_lines=100, queue_bytes=1_000_000))
        await store.start()
        for i in range(5000):  # all at once: the flusher gets no turn in between
            store.emit("dpl_a", "build", f"line {i}")
        store.emit("dpl_a", "system", "Runix's own line still fits")
        for i in range(50):
            store.emit("dpl_b", "build", f"b {i}")
        await store.flush()
        assert len(rows(db, "dpl_a", "build")) == 100
        notes = [r.text for r in rows(db, "dpl_a", "system")]
        assert notes == ["Runix's own line still fits",
                         "4900 log lines were left out: they came faster than the server could store them"]
        assert [r.text for r in rows(db, "dpl_b", "system")] == [
            "50 log lines were left out: they came faster than the server could store them"]
        # More drops within the minute are counted, not said again at once.
        for i in range(150):
            store.emit("dpl_a", "build", f"again {i}")
        await store.flush()
        assert len(rows(db, "dpl_a", "system")) == 2 and store._dropped == {"dpl_a": 50}

        big = EventStore(db, LocalHub(), limits=LogLimits(queue_lines=1000, queue_bytes=10_000))
        await big.start()
        for _ in range(10):
            big.emit("dpl_b", "runtime", "x" * 4000)  # the characters count too
        await big.flush()
        assert len(rows(db, "dpl_b", "runtime")) == 2
        await big.stop()
        await store.stop()

    asyncio.run(scenario())


def test_a_follower_that_falls_behind_reads_on_from_the_database(db: Database) -> None:
    async def scenario() -> None:
        hub = LocalHub(queue_size=5)
        store = EventStore(db, hub)
        await store.start()
        store.emit("dpl_a", "build", "first")
        await store.flush()
        follower = store.follow("dpl_a", None, keepalive=5)
        assert (await anext(follower)).text == "first"  # subscribed, and the backlog read
        for i in range(50):  # 50 published to a queue of 5 that nobody reads meanwhile
            store.emit("dpl_a", "build", f"line {i}")
            await store.flush()
        (queue,) = hub._queues["dpl_a"]
        assert queue.qsize() <= 5 and queue._queue[0] == {"gap": True}  # type: ignore[attr-defined]
        texts: list[str] = []
        while len(texts) < 50:
            texts.append((await anext(follower)).text)
        assert texts == [f"line {i}" for i in range(50)]
        with db.session() as s:
            s.get(Deployment, "dpl_a").status = "READY"
        await store.settled("dpl_a", "READY")
        assert await anext(follower) == "READY"
        await follower.aclose()
        await store.stop()

    asyncio.run(scenario())
