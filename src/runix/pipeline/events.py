"""Deployment events: build and runtime log lines, kept in the DeploymentEvent table and fanned out live.

Lines are emitted from anywhere (the event loop or a thread) and written in small batches by one flusher task, so a
chatty build never makes the API wait on the database. Once a batch has ids, every live follower gets it through a
hub: in-process queues by default, Redis pub/sub when `RUNIX_REDIS_URL` is set (followers on another server process
see the lines too). A status marker published after the last line tells followers the deployment settled.

What a tenant can print is bounded, in the database and in memory (docs/security.md):
- a build's log is capped in lines and bytes (`BuildLogCap`): past it, one "Build log truncated" event, and the build
  goes on;
- runtime lines are a ring per deployment: the flusher deletes the oldest, in batches, in the transaction that inserts
  the new ones (build and system events are never deleted). Ids only grow, so a reader paging with `since` never sees
  a line twice nor skips one that is still stored;
- the queue of lines waiting for the flusher is bounded; what does not fit is dropped, counted and said in the log;
- each live follower's queue is bounded; one that falls behind reads on from the database instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog
from sqlalchemy import LargeBinary, cast, delete, func, select

from runix.db.models import Deployment, DeploymentEvent
from runix.db.session import Database
from runix.statuses import SETTLED

log = structlog.get_logger("runix.events")

MAX_LINE = 8192
KEEPALIVE_SECONDS = 15.0
TRUNCATED = "Build log truncated:"
FOLLOWER_QUEUE = 10_000  # messages a live follower may lag behind before it reads on from the database
DROP_REPORT_SECONDS = 60.0  # lines the full queue dropped are said at most this often per deployment


def stored_text(text: str) -> str:
    """A line as it is stored: without its line end, at most MAX_LINE characters."""
    return text.rstrip("\r\n")[:MAX_LINE]


@dataclass(frozen=True)
class Event:
    id: int
    deployment_id: str
    created_at: float
    type: str  # build, runtime, system
    stream: str  # stdout, stderr
    text: str

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "created_at": iso(self.created_at), "type": self.type, "stream": self.stream,
                "text": self.text}

    @classmethod
    def from_row(cls, row: DeploymentEvent) -> Event:
        return cls(row.id, row.deployment_id, row.created_at, row.type, row.stream, row.text)


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


class Hub(Protocol):
    """Live fan-out of messages per deployment: `{"event": {...}}` or `{"status": "READY"}`."""

    async def publish(self, deployment_id: str, message: dict[str, Any]) -> None: ...

    def subscribe(self, deployment_id: str) -> contextlib.AbstractAsyncContextManager[asyncio.Queue]: ...

    async def close(self) -> None: ...


def offer(queue: asyncio.Queue, message: dict[str, Any]) -> None:
    """Puts a message in a follower's bounded queue. A follower that lets it fill (a client that stopped reading)
    loses what it holds for one `{"gap": True}`, and reads on from the database: memory stays bounded, and since
    every published line is stored first, it misses nothing that is still stored."""
    try:
        queue.put_nowait(message)
    except asyncio.QueueFull:
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait({"gap": True})


class LocalHub:
    def __init__(self, queue_size: int = FOLLOWER_QUEUE) -> None:
        self._queues: dict[str, set[asyncio.Queue]] = {}
        self.queue_size = queue_size

    async def publish(self, deployment_id: str, message: dict[str, Any]) -> None:
        for queue in self._queues.get(deployment_id, ()):
            offer(queue, message)

    @contextlib.asynccontextmanager
    async def subscribe(self, deployment_id: str) -> AsyncIterator[asyncio.Queue]:
        queue: asyncio.Queue = asyncio.Queue(self.queue_size)
        self._queues.setdefault(deployment_id, set()).add(queue)
        try:
            yield queue
        finally:
            queues = self._queues.get(deployment_id, set())
            queues.discard(queue)
            if not queues:
                self._queues.pop(deployment_id, None)

    async def close(self) -> None:
        self._queues.clear()


class RedisHub:
    """Pub/sub through Redis, one channel per deployment, so several server processes share followers."""

    def __init__(self, url: str):
        import redis.asyncio as redis

        self._redis = redis.Redis.from_url(url if "://" in url else f"redis://{url}")

    @staticmethod
    def _channel(deployment_id: str) -> str:
        return f"runix:deployment-events:{deployment_id}"

    async def publish(self, deployment_id: str, message: dict[str, Any]) -> None:
        await self._redis.publish(self._channel(deployment_id), json.dumps(message))

    @contextlib.asynccontextmanager
    async def subscribe(self, deployment_id: str) -> AsyncIterator[asyncio.Queue]:
        queue: asyncio.Queue = asyncio.Queue(FOLLOWER_QUEUE)
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(self._channel(deployment_id))

        async def pump() -> None:
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    offer(queue, json.loads(message["data"]))

        task = asyncio.create_task(pump())
        try:
            yield queue
        finally:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            with contextlib.suppress(Exception):
                await pubsub.unsubscribe()
                await pubsub.aclose()

    async def close(self) -> None:
        await self._redis.aclose()


def make_hub(redis_url: str | None) -> Hub:
    return RedisHub(redis_url) if redis_url else LocalHub()


class LineBudget:
    """Keeps at most `per_second` lines a second of each deployment's app output, so an app that logs every request
    under heavy traffic cannot flood the database; what was dropped is counted and reported."""

    def __init__(self, per_second: int = 200):
        self.per_second = per_second
        self._windows: dict[str, tuple[int, int, int]] = {}  # deployment id -> (second, kept, dropped)

    def admit(self, deployment_id: str) -> tuple[bool, int]:
        """Whether to keep this line, and how many lines of an earlier second were dropped (to report once)."""
        second = int(time.monotonic())
        window, kept, dropped = self._windows.get(deployment_id, (second, 0, 0))
        report = 0
        if window != second:
            report, kept, dropped = dropped, 0, 0
        keep = kept < self.per_second
        self._windows[deployment_id] = (second, kept + keep, dropped + (not keep))
        return keep, report

    def forget(self, deployment_id: str) -> None:
        self._windows.pop(deployment_id, None)


@dataclass(frozen=True)
class StoredBuildLog:
    """What a deployment's build log already holds (a build resumed after a restart goes on from there)."""

    lines: int = 0
    size: int = 0  # bytes of UTF-8
    truncated: bool = False


class BuildLogCap:
    """Keeps at most `max_lines` lines and `max_bytes` bytes of one deployment's build log. The first line past
    either gets one note to store instead; every later line is dropped. The build itself is not stopped."""

    def __init__(self, max_lines: int, max_bytes: int, stored: StoredBuildLog | None = None):
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        stored = stored or StoredBuildLog()
        self.lines, self.size, self.truncated = stored.lines, stored.size, stored.truncated

    def admit(self, text: str) -> tuple[bool, str | None]:
        """Whether to keep this line, and the truncation note to store once (when this line is the first dropped)."""
        if not self.truncated:
            size = len(stored_text(text).encode())
            if self.lines < self.max_lines and self.size + size <= self.max_bytes:
                self.lines += 1
                self.size += size
                return True, None
            self.truncated = True
            limit = (f"{self.max_lines} lines" if self.lines >= self.max_lines
                     else f"{self.max_bytes / 1_000_000:g} MB")
            return False, f"{TRUNCATED} it reached the limit of {limit}, so later build output is not kept (the " \
                          "build goes on)"
        return False, None


@dataclass(frozen=True)
class LogLimits:
    """Bounds of the event store (RUNIX_RUNTIME_LOG_LINES, RUNIX_EVENT_QUEUE_LINES, RUNIX_EVENT_QUEUE_BYTES)."""

    runtime_lines: int = 5000  # runtime lines kept per deployment
    queue_lines: int = 20_000  # build and runtime lines waiting for the flusher
    queue_bytes: int = 16 * 1024 * 1024  # their characters

    @property
    def runtime_trim_to(self) -> int:
        """How many runtime lines a trim keeps: a tenth fewer than the ring holds, so that it deletes in batches
        (one DELETE every ring/10 lines) rather than one row per line, and never holds more than the ring."""
        return max(1, self.runtime_lines - self.runtime_lines // 10)


@dataclass
class _Pending:
    deployment_id: str
    created_at: float
    type: str
    stream: str
    text: str


class EventStore:
    def __init__(self, db: Database, hub: Hub, *, batch_interval: float = 0.01, limits: LogLimits | None = None):
        self.db = db
        self.hub = hub
        self.batch_interval = batch_interval
        self.limits = limits or LogLimits()
        self._pending: list[_Pending] = []
        self._pending_chars = 0
        self._lock = threading.Lock()
        self._dropped: dict[str, int] = {}  # deployment id -> lines the full queue refused, not yet said
        self._reported_at: dict[str, float] = {}  # deployment id -> monotonic time its last drop note was queued
        # Runtime rows stored per deployment, counted once from the database and then kept up to date, so the ring
        # costs no query until a trim is due. Held while a batch is written (the flusher, and stop()'s last batch).
        self._runtime_rows: dict[str, int] = {}
        self._ring_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._flushed: asyncio.Condition | None = None
        self._task: asyncio.Task | None = None
        # Lines emitted and lines stored+published so far: flush() waits for the second to reach the first. (Counting
        # batches instead would let a batch already being written satisfy a flush that its lines are not in.)
        self._emitted = 0
        self._done = 0

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._flushed = asyncio.Condition()
        self._task = asyncio.create_task(self._run(), name="runix-events")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._write_batch()
        await self.hub.close()

    # Writing
    def emit(self, deployment_id: str, type_: str, text: str, stream: str = "stdout") -> None:
        """Records one line (thread-safe, never blocks): it is stored and sent to followers within milliseconds.
        When the queue is full (the database is slower than the output) the line is dropped and counted instead."""
        line = _Pending(deployment_id, time.time(), type_, stream, stored_text(text))
        # System lines are Runix's own and few (steps, restarts with backoff): they get twice the room, so that a
        # flood of output cannot crowd out the line that says what happened.
        room = 2 if type_ == "system" else 1
        with self._lock:
            if (len(self._pending) >= self.limits.queue_lines * room
                    or self._pending_chars + len(line.text) > self.limits.queue_bytes * room):
                self._dropped[deployment_id] = self._dropped.get(deployment_id, 0) + 1
                return
            self._pending.append(line)
            self._pending_chars += len(line.text)
            self._emitted += 1
        self._poke()

    def forget(self, deployment_id: str) -> None:
        """Drops what is kept in memory about a deleted deployment."""
        with self._lock:
            self._dropped.pop(deployment_id, None)
            self._reported_at.pop(deployment_id, None)
        with self._ring_lock:
            self._runtime_rows.pop(deployment_id, None)

    def _poke(self) -> None:
        if self._loop is None or self._wake is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._wake.set()
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)

    async def flush(self) -> None:
        """Waits until every line emitted so far is stored and published."""
        if self._flushed is None:
            return
        with self._lock:
            target = self._emitted
        if self._done >= target:
            return
        self._poke()
        async with self._flushed:
            await self._flushed.wait_for(lambda: self._done >= target)

    async def settled(self, deployment_id: str, status: str) -> None:
        """Tells live followers the deployment reached a final status (after its last line was published)."""
        await self.flush()
        await self._publish(deployment_id, {"status": status})

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            # Dropped lines not yet said (the last note was recent) are said once their minute is up, even when
            # nothing else comes.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DROP_REPORT_SECONDS if self._dropped else None):
                    await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self.batch_interval)  # let a burst of lines gather into one insert
            await self._write_batch()

    async def _write_batch(self) -> None:
        with self._lock:
            batch, self._pending, self._pending_chars = self._pending, [], 0
            notes = self._drop_notes()
            batch += notes
            self._emitted += len(notes)  # counted like emitted lines, so flush() stays exact
        if batch:
            try:
                events = await asyncio.to_thread(self._insert, batch)
            except Exception:
                log.exception("could not store deployment events", count=len(batch))
                events = []
            for event in events:
                await self._publish(event.deployment_id, {"event": event.public()})
        self._done += len(batch)
        if self._flushed is not None:
            async with self._flushed:
                self._flushed.notify_all()

    def _drop_notes(self) -> list[_Pending]:
        """One note per deployment whose lines the full queue dropped, at most one a minute each (under the lock)."""
        if not self._dropped:
            return []
        now = time.monotonic()
        self._reported_at = {d: t for d, t in self._reported_at.items() if now - t < DROP_REPORT_SECONDS}
        notes = []
        for deployment_id in [d for d in self._dropped if d not in self._reported_at]:
            count = self._dropped.pop(deployment_id)
            self._reported_at[deployment_id] = now
            notes.append(_Pending(deployment_id, time.time(), "system", "stderr",
                                  f"{count} log lines were left out: they came faster than the server could "
                                  "store them"))
        return notes

    async def _publish(self, deployment_id: str, message: dict[str, Any]) -> None:
        try:
            await self.hub.publish(deployment_id, message)
        except Exception:  # a follower losing a line must never stop a build
            log.exception("could not publish a deployment event")

    def _insert(self, batch: list[_Pending]) -> list[Event]:
        try:
            return self._insert_rows(batch)
        except Exception:
            # Most likely a deployment deleted while it still logged: keep the lines of the others.
            kept = []
            for p in batch:
                with contextlib.suppress(Exception):
                    kept += self._insert_rows([p])
            return kept

    def _insert_rows(self, batch: list[_Pending]) -> list[Event]:
        """Stores the lines in one transaction (all or none) and returns them with their ids."""
        rows = [DeploymentEvent(deployment_id=p.deployment_id, created_at=p.created_at, type=p.type,
                                stream=p.stream, text=p.text) for p in batch]
        with self._ring_lock:
            with self.db.session() as s:
                s.add_all(rows)
                s.flush()
                events = [Event.from_row(r) for r in rows]
                counts = self._trim_runtime(s, batch)
            self._runtime_rows.update(counts)  # after the commit: a batch rolled back changes no count
        return events  # all published, the trimmed ones too: a live follower sees every line

    def _trim_runtime(self, s: Any, batch: list[_Pending]) -> dict[str, int]:
        """Deletes the oldest runtime lines of each deployment of the batch that now holds more than the ring, down to
        `runtime_trim_to` (one DELETE for many rows); returns the runtime rows each then holds."""
        added: dict[str, int] = {}
        for p in batch:
            if p.type == "runtime":
                added[p.deployment_id] = added.get(p.deployment_id, 0) + 1
        counts = {}
        for deployment_id, n in added.items():
            runtime = (DeploymentEvent.deployment_id == deployment_id, DeploymentEvent.type == "runtime")
            stored = select(func.count()).select_from(DeploymentEvent).where(*runtime)
            known = self._runtime_rows.get(deployment_id)
            count = known + n if known is not None else s.scalar(stored)  # the count includes this batch
            if count > self.limits.runtime_lines:
                keep = self.limits.runtime_trim_to
                oldest_kept = s.scalar(select(DeploymentEvent.id).where(*runtime).order_by(DeploymentEvent.id.desc())
                                       .offset(keep - 1).limit(1))
                if oldest_kept is None:  # fewer stored than counted (rows deleted under us): count them again
                    count = s.scalar(stored)
                else:
                    s.execute(delete(DeploymentEvent).where(*runtime, DeploymentEvent.id < oldest_kept),
                              execution_options={"synchronize_session": False})
                    count = keep
            counts[deployment_id] = count
        return counts

    # Reading
    def stored_build_log(self, deployment_id: str) -> StoredBuildLog:
        """What the deployment's build log holds already: lines, UTF-8 bytes, and whether it was truncated."""
        text = DeploymentEvent.text
        with self.db.sessions() as s:
            # Bytes, not characters, as BuildLogCap counts them (PostgreSQL's length() counts characters).
            size = func.octet_length(text) if self.db.engine.dialect.name == "postgresql" else \
                func.length(cast(text, LargeBinary))
            lines, total = s.execute(select(func.count(), func.coalesce(func.sum(size), 0)).where(
                DeploymentEvent.deployment_id == deployment_id, DeploymentEvent.type == "build")).one()
            truncated = s.scalar(select(DeploymentEvent.id).where(
                DeploymentEvent.deployment_id == deployment_id, DeploymentEvent.type == "system",
                text.startswith(TRUNCATED)).limit(1)) is not None
        return StoredBuildLog(lines, int(total), truncated)

    def list(self, deployment_id: str, since: int | None = None, limit: int = 1000) -> list[Event]:
        with self.db.sessions() as s:
            return _read(s, deployment_id, since, limit)

    async def follow(self, deployment_id: str, since: int | None = None,
                     keepalive: float = KEEPALIVE_SECONDS) -> AsyncIterator[Event | str | None]:
        """Yields stored events after `since`, then live ones, then the final status (a str) once the deployment
        settles. Yields None now and then while nothing happens, so the caller can send a keep-alive."""
        last = since or 0
        async with self.hub.subscribe(deployment_id) as queue:
            backlog, status = await asyncio.to_thread(self._backlog, deployment_id, since)
            if status in SETTLED:  # lines this process still holds would otherwise be missed
                await self.flush()
                backlog = await asyncio.to_thread(self.list, deployment_id, since, 100_000)
            for event in backlog:
                last = event.id
                yield event
            if status is None or status in SETTLED:
                if status:
                    yield status
                return
            while True:
                try:
                    async with asyncio.timeout(keepalive):
                        message = await queue.get()
                except TimeoutError:
                    message = None
                if message is None or "gap" in message:
                    # Nothing for a while (a message may have been lost), or this follower fell behind and its
                    # queue was emptied: read on from the database after the last line it had.
                    status = await asyncio.to_thread(self._status, deployment_id)
                    settled = status is None or status in SETTLED  # settled, or deleted
                    if settled:
                        await self.flush()
                    if settled or message is not None:
                        for event in await asyncio.to_thread(self.list, deployment_id, last, 100_000):
                            last = event.id
                            yield event
                    if settled:
                        if status:
                            yield status
                        return
                    if message is None:
                        yield None
                    continue
                if "event" in message and message["event"]["id"] > last:
                    data = message["event"]
                    last = data["id"]
                    yield Event(data["id"], deployment_id, _epoch(data["created_at"]), data["type"], data["stream"],
                                data["text"])
                elif message.get("status") in SETTLED:
                    yield message["status"]
                    return

    def _backlog(self, deployment_id: str, since: int | None) -> tuple[list[Event], str | None]:
        """The stored events and the status; no events once settled (the caller flushes first, then reads them)."""
        with self.db.sessions() as s:
            status = s.scalar(select(Deployment.status).where(Deployment.id == deployment_id))
            return ([] if status in SETTLED else _read(s, deployment_id, since, 100_000)), status

    def _status(self, deployment_id: str) -> str | None:
        with self.db.sessions() as s:
            return s.scalar(select(Deployment.status).where(Deployment.id == deployment_id))


def _read(s: Any, deployment_id: str, since: int | None, limit: int) -> list[Event]:
    stmt = select(DeploymentEvent).where(DeploymentEvent.deployment_id == deployment_id)
    if since:
        stmt = stmt.where(DeploymentEvent.id > since)
    return [Event.from_row(r) for r in s.scalars(stmt.order_by(DeploymentEvent.id).limit(limit))]


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()

