"""The deployer: drives each deployment through queue -> build -> release -> run -> route, and keeps apps served.

It owns the build queue, the runtime, the router and the event store, and is what `ctx.deployer` points at while the
server runs. Status changes are compare-and-set updates (runix.statuses.transition), so a cancel from the API and
a finishing build never both win.

Which apps run: the production deployment of each project stays warm, and so does the previous one (the rollback
target) for `rollback_warm_seconds` after it was replaced; older production deployments sleep as soon as a promote
makes them older, and every other READY deployment sleeps after `idle_timeout` without traffic. The router wakes a
sleeping one on its next request. After a restart, warm ones start at once and the rest wake on demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import or_, select, update

from runix.context import Runix
from runix.db.models import Account, Deployment, Domain, Project, utcnow
from runix.errors import Conflict, NotFound
from runix.names import host_label
from runix.pipeline import release as releases
from runix.pipeline.build import BuildFailed, BuildInterrupted, ProjectBuildSettings, Release, ReleaseDamaged
from runix.pipeline.cells import CellLimits, CellPool
from runix.pipeline.disk import MB, DiskQuota
from runix.pipeline.events import BuildLogCap, EventStore, LineBudget, LogLimits, make_hub
from runix.pipeline.router import Router, Upstream, make_router
from runix.pipeline.runtime import Address, AppFailed, AppSpec, Runtime, make_runtime
from runix.pipeline.worker import BuildJob, BuildQueue
from runix.plans import get_plan
from runix.settings import Settings
from runix.statuses import IN_PROGRESS, transition
from runix.usage import disk_quotas_mb, disk_used

log = structlog.get_logger("runix.deployer")

DRAIN_SECONDS = 10.0
WARM_START_PARALLEL = 4


@dataclass(frozen=True)
class _Job:
    deployment_id: str
    project_id: str
    account_id: str
    target: str
    archive: Any
    settings: ProjectBuildSettings
    env: dict[str, str]
    host_label: str
    plan: str
    disk: DiskQuota


def app_limits(plan_name: str) -> CellLimits:
    """What one app of an account on this plan may use, all its processes together."""
    plan = get_plan(plan_name)
    return CellLimits(memory_mb=plan.app_memory_mb, max_processes=plan.app_max_processes,
                      cpu_weight=plan.app_cpu_weight, tmp_mb=plan.app_tmp_mb)


def build_limits(plan_name: str) -> CellLimits:
    """What one build of an account on this plan may use (its /tmp is counted in its memory)."""
    plan = get_plan(plan_name)
    return CellLimits(memory_mb=plan.build_memory_mb, max_processes=plan.build_max_processes,
                      cpu_weight=plan.app_cpu_weight, tmp_mb=min(1024, plan.build_memory_mb // 4))


STOP_SIGNAL_GRACE_SECONDS = 15.0  # the API's graceful shutdown (10 s) and a margin
SWEEP_SECONDS = 600.0  # how often unused sources and caches are looked for
SOURCE_GRACE_SECONDS = 600.0


def disk_quota(settings: Settings, s: Any, account_id: str, plan_name: str) -> DiskQuota:
    """What a build of this account may still put on disk: the rest of its quota for sources and releases, and its
    build-cache quota."""
    disk_mb, cache_mb = disk_quotas_mb(settings, plan_name)
    room = disk_mb * MB - disk_used(s, account_id)
    return DiskQuota(release_bytes=max(0, room), cache_bytes=cache_mb * MB)


class Deployer:
    def __init__(self, ctx: Runix, *, router: Router | None = None, runtime: Runtime | None = None,
                 events: EventStore | None = None):
        settings = ctx.settings
        self.ctx = ctx
        self.settings = settings
        self.host = "127.0.0.1"
        self.events = events or EventStore(ctx.db, make_hub(settings.redis_url), limits=LogLimits(
            runtime_lines=settings.runtime_log_lines, queue_lines=settings.event_queue_lines,
            queue_bytes=settings.event_queue_bytes))
        self.line_budget = LineBudget()
        self.router: Router = router or make_router(
            settings.router, settings.host, settings.router_port, waker=self.wake,
            wake_timeout=settings.health_timeout, state_dir=ctx.layout.root / "caddy",
            https_port=settings.router_https_port, trusted_proxies=settings.trusted_proxies.split(","))
        # One pool of cells (uid, cgroup, network namespace) for this process's builds and apps.
        self.cells: CellPool | None = ctx.cells
        self.runtime: Runtime = runtime or make_runtime(
            settings.runtime, on_log=self._app_log, on_port=self._app_port,
            health_timeout=settings.health_timeout, sandbox_enabled=settings.sandbox, cells=self.cells,
            host=self.host)
        self.queue = BuildQueue(self._pipeline, max_parallel=settings.max_parallel_builds)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        self._promote_lock = asyncio.Lock()
        self._forgotten: set[str] = set()  # deleted: never woken again
        self._active_since: dict[str, float] = {}  # monotonic time an app was (re)started, for idle sleep
        self._route_seq = 0
        self._route_applied = 0
        self._tasks: list[asyncio.Task] = []
        self._spawned: set[asyncio.Task] = set()  # the loop keeps only weak references to tasks
        self._stopping = False
        self._stop_begun = asyncio.Event()

    # Starting and stopping with the server
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        await self.events.start()
        await self.queue.start()
        await self.router.start()
        self.ctx.route_listeners.append(self.routes_changed)
        queued, warm = await asyncio.to_thread(self._recover_rows)
        await self.refresh_routes()
        for job in queued:
            self.queue.submit(job)
        self._tasks.append(asyncio.create_task(self._start_warm(warm), name="runix-warm-start"))
        self._tasks.append(asyncio.create_task(self._idle_loop(), name="runix-idle"))

    async def stop(self) -> None:
        """Builds in progress go back to QUEUED (they run again on the next start); apps stop, and come back then."""
        self._stopping = True
        self._stop_begun.set()
        with contextlib.suppress(ValueError):
            self.ctx.route_listeners.remove(self.routes_changed)
        for task in self._tasks:
            task.cancel()
        # Each part gets a bounded time, so one that hangs cannot keep the server from stopping.
        await self._stop_part("background tasks", asyncio.gather(*self._tasks, return_exceptions=True), 5)
        await self._stop_part("build queue", self._stop_builds(), 15)
        await self._stop_part("router", self.router.stop(), 5)
        await self._stop_part("apps", self.runtime.stop_all(), 10)
        await self._stop_part("event store", self.events.stop(), 5)

    async def _stop_builds(self) -> None:
        """Cancels the builds; each goes back to QUEUED. A build canceled before its pipeline reached its own handler
        (between claiming the row and entering the try) is moved back here, so none is left BUILDING to end in ERROR
        on the next start."""
        for deployment_id in await self.queue.stop():
            if await self._requeue(deployment_id):
                log.warning("build moved back to the queue by the stop", deployment_id=deployment_id)

    async def _requeue(self, deployment_id: str) -> bool:
        """A build the stop interrupted goes back to QUEUED and what it had made goes; one that settled meanwhile (a
        READY app) is left as it is. Returns whether it was put back."""
        if not await asyncio.shield(self._move(deployment_id, IN_PROGRESS, "QUEUED", build_started_at=None)):
            return False
        await asyncio.shield(self._discard(deployment_id))
        return True

    async def _stop_follows(self) -> bool:
        """Whether the server stops within its graceful-shutdown time: after a signal to its process group, the
        stop itself begins only once the API's connections are closed."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_SIGNAL_GRACE_SECONDS):
                await self._stop_begun.wait()
        return self._stopping

    @staticmethod
    async def _stop_part(name: str, stopping: Awaitable[Any], timeout: float) -> None:
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                await stopping
        except TimeoutError:
            log.warning("stopping took too long; going on", part=name, seconds=timeout)
        except Exception:
            log.exception("stopping failed", part=name)
        else:
            if time.monotonic() - started > 1.0:
                log.warning("stopping was slow", part=name, seconds=round(time.monotonic() - started, 1))

    def _recover_rows(self) -> tuple[list[BuildJob], list[str]]:
        """After a restart: queued deployments are queued again; those the server died building end in ERROR."""
        with self.ctx.db.session() as s:
            interrupted = s.scalars(select(Deployment.id).where(Deployment.status.in_(IN_PROGRESS))).all()
            for deployment_id in interrupted:
                transition(s, deployment_id, IN_PROGRESS, "ERROR", finished_at=utcnow(),
                                              error="Interrupted by a server restart: deploy again")
                self._system(deployment_id, "Interrupted by a server restart")
                releases.remove_release(self.ctx.layout, deployment_id)  # whatever the build had made of it
            rows = s.execute(select(Deployment.id, Deployment.account_id, Account.plan)
                             .join(Account, Account.id == Deployment.account_id)
                             .where(Deployment.status == "QUEUED").order_by(Deployment.id)).all()
            queued = [BuildJob(r.id, r.account_id, get_plan(r.plan).concurrent_builds) for r in rows]
            return queued, sorted(self._warm_ids(s))

    async def _start_warm(self, deployment_ids: list[str]) -> None:
        gate = asyncio.Semaphore(WARM_START_PARALLEL)

        async def one(deployment_id: str) -> None:
            async with gate:
                await self.wake(deployment_id)

        await asyncio.gather(*(one(d) for d in deployment_ids), return_exceptions=True)

    # Called by the API (from worker threads or the event loop)
    def enqueue(self, deployment_id: str, account_id: str, concurrent_builds: int) -> None:
        self.queue.submit(BuildJob(deployment_id, account_id, concurrent_builds))

    def cancel(self, deployment_id: str) -> None:
        self.queue.cancel(deployment_id)
        self._call(self.events.settled(deployment_id, "CANCELED"))

    def forget(self, deployment_id: str) -> None:
        """Stops a deployment about to be deleted, and removes its release. Refuses (409) the project's production
        deployment, even one a promote made production after the caller checked (see `_mark_forgotten`)."""
        self._ask(self._mark_forgotten(deployment_id))
        self.queue.cancel(deployment_id)
        self._call(self._retire(deployment_id, remove=True), wait=True)

    def stop_project(self, project_id: str) -> None:
        """A project being deleted: its builds stop, its apps and releases go, and so do its build caches."""
        with self.ctx.db.sessions() as s:
            ids = s.scalars(select(Deployment.id).where(Deployment.project_id == project_id)).all()
            account_id = s.scalar(select(Project.account_id).where(Project.id == project_id))
        self._forgotten.update(ids)
        for deployment_id in ids:
            self.queue.cancel(deployment_id)

        async def retire_all() -> None:
            await asyncio.gather(*(self._retire(d, remove=True) for d in ids), return_exceptions=True)
            if account_id is not None:
                await asyncio.to_thread(releases.remove_caches, self.ctx.layout, account_id, project_id)

        self._call(retire_all(), wait=True)

    async def promote(self, deployment_id: str) -> None:
        """Makes a READY deployment the production one: it is woken if asleep and healthy before the routes swap."""
        row = await self._promotable(deployment_id)  # an early answer; what counts is the check under the lock
        if await self.wake(deployment_id) is None:
            raise Conflict("The deployment could not be started: see its events")
        async with self._promote_lock:
            # Checked again here, in the transaction that swaps production (`_set_production`), because the deployment
            # may have been deleted while it was woken; a delete takes this lock too (`_mark_forgotten`).
            promoted = deployment_id not in self._forgotten and await asyncio.to_thread(
                self._set_production, row.project_id, deployment_id, "READY")
            if promoted:
                await self.refresh_routes()
        if not promoted:
            await self._promotable(deployment_id)  # says why: gone, or no longer READY
            raise Conflict("The deployment is being deleted, so it cannot be promoted")
        self._system(deployment_id, "Promoted to production")
        self._spawn(self._sleep_superseded(row.project_id))

    async def _promotable(self, deployment_id: str) -> Deployment:
        row = await asyncio.to_thread(self._deployment, deployment_id)
        if row is None:
            raise NotFound(f"Deployment '{deployment_id}' not found")
        if row.status != "READY":
            raise Conflict(f"Only a READY deployment can be promoted; this one is {row.status}")
        return row

    async def _mark_forgotten(self, deployment_id: str) -> None:
        """Marks a deployment as being deleted, unless it is production. Under the promote lock, so a promote at the
        same time either swaps production first (and the delete is refused here) or sees it marked (and refuses)."""
        async with self._promote_lock:
            if await asyncio.to_thread(self._is_production, deployment_id):
                raise Conflict("This deployment has just become the project's production deployment: promote "
                               "another one before deleting it")
            self._forgotten.add(deployment_id)

    def routes_changed(self) -> None:
        """A route listener: something changed which host serves which deployment (domain verified, project gone)."""
        if self._on_loop():
            self._spawn(self.refresh_routes())
        else:
            seq = self._next_route_seq()
            table = self._route_table()
            self._call_soon(self._apply_routes, seq, table)

    # The pipeline of one deployment
    async def _pipeline(self, deployment_id: str) -> None:
        job = await asyncio.to_thread(self._load_job, deployment_id)
        if job is None or not await self._move(deployment_id, ("QUEUED",), "BUILDING", build_started_at=utcnow()):
            return
        self._system(deployment_id, "Build started")
        started = time.monotonic()
        try:
            # Counted from what is stored: a build resumed after a restart goes on from its first run's lines.
            cap = BuildLogCap(self.settings.build_log_max_lines, self.settings.build_log_max_bytes,
                              await asyncio.to_thread(self.events.stored_build_log, deployment_id))
            release = await releases.build_release(
                self.ctx.layout, self.settings, deployment_id, job.archive, job.settings, job.env,
                lambda stream, line: self._build_log(cap, deployment_id, stream, line),
                # One account's builds never read what another's wrote to a cache; each project has its own.
                cache_scope=f"{job.account_id}/{job.project_id}",
                cells=self.cells, limits=build_limits(job.plan), disk=job.disk)
            if not await self._move(deployment_id, ("BUILDING",), "DEPLOYING", build_finished_at=utcnow(),
                                    build_kind=release.kind, start_command=release.start_command,
                                    meta={"release_bytes": release.size_bytes}):
                await self._discard(deployment_id)
                return
            self._system(deployment_id, f"Build finished in {time.monotonic() - started:.1f}s; starting the app")
            await self._run(self._spec(release, job.env, job.plan))
            await self._go_live(job)
        except BuildFailed as exc:
            stopped = self._stopping
            if not stopped and isinstance(exc, BuildInterrupted):
                try:
                    stopped = await self._stop_follows()
                except asyncio.CancelledError:  # the stop came, and cancels its builds
                    await self._interrupted(deployment_id)
                    raise
            if stopped:  # its processes were ended by the stop itself: it builds again on the next start
                await self._interrupted(deployment_id)
                return
            await self._fail(deployment_id, ("BUILDING",), exc.message)
        except AppFailed as exc:
            await self._fail(deployment_id, ("DEPLOYING",), exc.describe())
        except asyncio.CancelledError:
            await self._interrupted(deployment_id)
            raise
        except Exception as exc:
            log.exception("deployment failed", deployment_id=deployment_id)
            await self._fail(deployment_id, IN_PROGRESS, f"Runix could not finish this deployment: {exc}")

    async def _go_live(self, job: _Job) -> None:
        """Routes the healthy app (and makes it production when it is one) before anyone can see READY."""
        deployment_id = job.deployment_id

        def make_live() -> tuple[bool, dict[str, str]]:
            promoted = (job.target == "production" and deployment_id not in self._forgotten
                        and self._set_production(job.project_id, deployment_id, "DEPLOYING", only_if_newer=True))
            return promoted, self._route_table([deployment_id])

        async with self._promote_lock:
            seq = self._next_route_seq()
            promoted, table = await asyncio.to_thread(make_live)
            self._apply_routes(seq, table)
        if not await self._move(deployment_id, ("DEPLOYING",), "READY", ready_at=utcnow()):
            await self._retire(deployment_id, remove=False)
            await self.refresh_routes()
            return
        url = self.ctx.app_url(job.host_label)
        self._system(deployment_id, f"Ready at {url}" + (" (production)" if promoted else ""))
        await self.events.settled(deployment_id, "READY")
        if promoted:  # not awaited: draining the older apps must not hold this build's slot
            self._spawn(self._sleep_superseded(job.project_id))

    async def _run(self, spec: AppSpec) -> None:
        async with self._lock(spec.deployment_id):
            await self.runtime.start(spec)
            self._active_since[spec.deployment_id] = time.monotonic()

    async def _fail(self, deployment_id: str, from_statuses: tuple[str, ...], reason: str) -> None:
        self._system(deployment_id, f"Deployment failed: {reason}", stream="stderr")
        await self.events.flush()
        await self._discard(deployment_id)
        if await self._move(deployment_id, from_statuses, "ERROR", error=reason, finished_at=utcnow()):
            await self.events.settled(deployment_id, "ERROR")

    async def _interrupted(self, deployment_id: str) -> None:
        """A build task was canceled: by the user (already CANCELED) or by the server stopping (queued again)."""
        try:
            if self._stopping:
                await self._requeue(deployment_id)
            else:
                await asyncio.shield(self._discard(deployment_id))
                self._system(deployment_id, "Canceled")
                await asyncio.shield(self._move(deployment_id, IN_PROGRESS, "CANCELED", finished_at=utcnow(),
                                                error="Canceled before it was ready"))
                await asyncio.shield(self.events.settled(deployment_id, "CANCELED"))
        except Exception:  # the stop's sweep (`_stop_builds`) or the next start puts the row right
            log.exception("a canceled build could not be put back", deployment_id=deployment_id)

    async def _discard(self, deployment_id: str) -> None:
        """Stops whatever a failed or canceled deployment had started and removes its release."""
        self.router.set_upstream(deployment_id, None)
        await self.runtime.remove(deployment_id)
        await asyncio.to_thread(releases.remove_release, self.ctx.layout, deployment_id)

    async def _retire(self, deployment_id: str, *, remove: bool) -> None:
        """Takes a deployment out of service: no new requests, in-flight ones finish (up to a limit), then it stops."""
        async with self._lock(deployment_id):
            self.router.set_upstream(deployment_id, None)
            await self.router.drained(deployment_id, DRAIN_SECONDS)
            await self.runtime.stop(deployment_id)
            self._active_since.pop(deployment_id, None)
        if remove:
            self.line_budget.forget(deployment_id)
            self.events.forget(deployment_id)
            await self.runtime.remove(deployment_id)
            await asyncio.to_thread(releases.remove_release, self.ctx.layout, deployment_id)
            self._locks.pop(deployment_id, None)

    # Waking and sleeping
    async def wake(self, deployment_id: str) -> Upstream | None:
        """Where the deployment answers, starting it first if it sleeps (the router's waker)."""
        if deployment_id in self._forgotten or self._stopping:
            return None
        address = self.runtime.address(deployment_id)
        if address is None:
            async with self._lock(deployment_id):
                address = self.runtime.address(deployment_id)
                if address is None:
                    spec = await asyncio.to_thread(self._spec_for_ready, deployment_id)
                    if spec is None:
                        return None
                    try:
                        address = await self.runtime.start(spec)
                    except AppFailed as exc:
                        self._system(deployment_id, f"Could not start: {exc.describe()}", stream="stderr")
                        return None
                    self._active_since[deployment_id] = time.monotonic()
        upstream = Upstream(*address)
        self.router.set_upstream(deployment_id, upstream)
        return upstream

    async def _idle_loop(self) -> None:
        interval = max(0.5, min(self.settings.idle_timeout / 4, 30.0))
        swept = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sleep_idle()
                if time.monotonic() - swept >= SWEEP_SECONDS:
                    swept = time.monotonic()
                    await asyncio.to_thread(self.sweep_disk)
            except Exception:
                log.exception("idle check failed")

    def sweep_disk(self, min_age: float = SOURCE_GRACE_SECONDS) -> None:
        """Deletes what no deployment or project needs any more: source archives of deleted deployments (once
        `min_age` old, so one just stored for a deployment being created is spared), and build caches of deleted
        projects (deleted through another server process, or while this one was down)."""
        layout = self.ctx.layout
        with self.ctx.db.sessions() as s:
            used = set(s.scalars(select(Deployment.source_sha256).distinct()).all())
            projects = set(s.scalars(select(Project.id)).all())
        now = time.time()
        for archive in layout.sources.glob("*/*.tar.gz"):
            with contextlib.suppress(OSError):
                if archive.name.removesuffix(".tar.gz") not in used and now - archive.stat().st_mtime >= min_age:
                    archive.unlink()
        for folder in layout.cache.glob("*/*/*"):
            if folder.is_dir() and not folder.is_symlink() and folder.name.startswith("prj_") \
                    and folder.name not in projects:
                releases.remove_caches(layout, folder.parent.name, folder.name)

    async def sleep_idle(self) -> None:
        """Stops every app that is neither warm nor building and has had no request for `idle_timeout`."""
        running = [d for d in self.runtime.running() if not self.queue.is_queued(d)]
        if not running:
            return
        warm = await asyncio.to_thread(self._warm_of, running)
        now = time.monotonic()
        for deployment_id in running:
            if deployment_id in warm or self.router.inflight(deployment_id):
                continue
            seen = max(self.router.last_request_at(deployment_id) or 0.0, self._active_since.get(deployment_id, 0.0))
            if now - seen >= self.settings.idle_timeout:
                await self._retire(deployment_id, remove=False)
                self._system(deployment_id, f"Asleep after {self.settings.idle_timeout:g}s without requests; "
                                            "the next request wakes it")

    async def _sleep_superseded(self, project_id: str) -> None:
        """After a promote: earlier production deployments of the project, but for the previous one (the rollback
        target), sleep now rather than after `idle_timeout`, so redeploys never pile up running apps."""
        running = [d for d in self.runtime.running() if not self.queue.is_queued(d)]
        for deployment_id in await asyncio.to_thread(self._superseded, project_id, running):
            if self.router.inflight(deployment_id):
                continue  # busy: the idle check puts it to sleep once its requests are done
            await self._retire(deployment_id, remove=False)
            self._system(deployment_id, "Asleep: newer production deployments replaced it (the one before the current "
                                        "stays running for instant rollback); the next request wakes it")

    def _superseded(self, project_id: str, running: list[str]) -> list[str]:
        with self.ctx.db.sessions() as s:
            rows = s.execute(select(Deployment.id, Deployment.meta).where(
                Deployment.project_id == project_id, Deployment.id.in_(running))).all()
            was_production = [r.id for r in rows if (r.meta or {}).get("promoted_at") is not None]
            warm = self._warm_ids(s, was_production) if was_production else set()
        return [d for d in was_production if d not in warm]

    # Routes
    async def refresh_routes(self) -> None:
        """Rebuilds the router's whole table from the database and swaps it in at once."""
        seq = self._next_route_seq()
        table = await asyncio.to_thread(self._route_table)
        self._apply_routes(seq, table)

    def _next_route_seq(self) -> int:
        self._route_seq += 1
        return self._route_seq

    def _apply_routes(self, seq: int, table: dict[str, str]) -> None:
        if seq < self._route_applied:  # a newer table is already in
            return
        self._route_applied = seq
        self.router.set_routes(table)

    def _route_table(self, include: list[str] | None = None) -> dict[str, str]:
        """`<slug>-<short id>.<apps domain>` for every live deployment; `<slug>.<apps domain>` and each verified
        domain for the production one."""
        domain = self.settings.apps_domain.lower()
        table: dict[str, str] = {}
        with self.ctx.db.sessions() as s:
            live = or_(Deployment.status == "READY", Deployment.id.in_(include or []),
                       Deployment.id == Project.production_deployment_id)
            rows = s.execute(select(Deployment.id, Project.slug, Project.production_deployment_id)
                             .join(Project, Project.id == Deployment.project_id).where(live)).all()
            for row in rows:
                table[f"{host_label(row.slug, row.id)}.{domain}"] = row.id
                if row.production_deployment_id == row.id:
                    table[f"{row.slug}.{domain}"] = row.id
            productions = {row.id for row in rows if row.production_deployment_id == row.id}
            for name, production_id in s.execute(
                    select(Domain.name, Project.production_deployment_id).join(Project, Project.id == Domain.project_id)
                    .where(Domain.verified.is_(True))):
                if production_id in productions:
                    table[name.lower()] = production_id
        return table

    # Database helpers (run in threads)
    def _deployment(self, deployment_id: str) -> Deployment | None:
        with self.ctx.db.sessions() as s:
            return s.get(Deployment, deployment_id)

    def _load_job(self, deployment_id: str) -> _Job | None:
        with self.ctx.db.sessions() as s:
            deployment = s.get(Deployment, deployment_id)
            if deployment is None or deployment.status != "QUEUED" or not deployment.source_sha256:
                return None
            project = s.get(Project, deployment.project_id)
            assert project is not None
            plan = self._plan_of(s, deployment)
            return _Job(deployment_id, project.id, deployment.account_id, deployment.target,
                        self.ctx.layout.source_archive(deployment.source_sha256),
                        ProjectBuildSettings.from_project(project), self.ctx.vault.open_env(deployment.env_encrypted),
                        host_label(project.slug, deployment.id), plan,
                        disk_quota(self.settings, s, deployment.account_id, plan))

    def _spec_for_ready(self, deployment_id: str) -> AppSpec | None:
        with self.ctx.db.sessions() as s:
            deployment = s.get(Deployment, deployment_id)
            if deployment is None or deployment.status != "READY":
                return None
            env = self.ctx.vault.open_env(deployment.env_encrypted)
            plan = self._plan_of(s, deployment)
        try:
            release = releases.load_release(self.ctx.layout, deployment_id)
        except ReleaseDamaged as exc:
            log.warning("release record unusable", deployment_id=deployment_id, error=str(exc))
            self._system(deployment_id, "Its release is missing or damaged: deploy again", stream="stderr")
            return None
        return self._spec(release, env, plan)

    @staticmethod
    def _plan_of(s: Any, deployment: Deployment) -> str:
        account = s.get(Account, deployment.account_id)
        return account.plan if account is not None else "hobby"

    @staticmethod
    def _spec(release: Release, env: dict[str, str], plan: str) -> AppSpec:
        path = ":".join([*release.env_path, releases.SYSTEM_PATH])
        return AppSpec(release.deployment_id, release.path, release.app_dir, release.start_command,
                       {**release.env, **env, "PATH": path}, limits=app_limits(plan))

    async def _move(self, deployment_id: str, from_statuses: tuple[str, ...], to_status: str, **fields: Any) -> bool:
        def move() -> bool:
            with self.ctx.db.session() as s:
                return transition(s, deployment_id, from_statuses, to_status, **fields)

        # A write that has begun is waited for even when the task is canceled meanwhile, so whoever cancels it (the
        # stop's sweep, a user's cancel) sees the row as the write left it, never a write that lands afterwards.
        writing = asyncio.ensure_future(asyncio.to_thread(move))
        try:
            return await asyncio.shield(writing)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await writing
            raise

    def _set_production(self, project_id: str, deployment_id: str, status: str, only_if_newer: bool = False) -> bool:
        """Points the project's production URLs at the deployment if it is still in `status`; with `only_if_newer`,
        not over a newer one (two production builds finishing out of order)."""
        with self.ctx.db.session() as s:
            # A compare-and-set on the deployment's row (a no-op write where its status is still `status`) in the
            # transaction that swaps production: PostgreSQL holds the row, SQLite the database, until commit, so the
            # deployment cannot change state or be deleted between this check and production pointing at it.
            held = s.execute(update(Deployment).values(status=Deployment.status).where(
                Deployment.id == deployment_id, Deployment.project_id == project_id, Deployment.status == status))
            if not held.rowcount:
                return False
            project = s.get(Project, project_id)
            deployment = s.get(Deployment, deployment_id)
            if project is None or deployment is None:
                return False
            current = project.production_deployment_id
            if only_if_newer and current is not None and current > deployment_id:
                return False
            project.production_deployment_id = deployment_id
            deployment.meta = {**(deployment.meta or {}), "promoted_at": time.time()}
            return True

    def _is_production(self, deployment_id: str) -> bool:
        with self.ctx.db.sessions() as s:
            return s.scalar(select(Project.id).join(Deployment, Deployment.project_id == Project.id)
                            .where(Deployment.id == deployment_id, Project.production_deployment_id == deployment_id)
                            ) is not None

    def _warm_ids(self, s: Any, among: Iterable[str] | None = None) -> set[str]:
        """Production deployments and their rollback targets (the READY one promoted most recently before)."""
        stmt = select(Deployment.id, Deployment.project_id, Deployment.meta, Project.production_deployment_id) \
            .join(Project, Project.id == Deployment.project_id).where(Deployment.status == "READY")
        if among is not None:
            projects = select(Deployment.project_id).where(Deployment.id.in_(list(among)))
            stmt = stmt.where(Deployment.project_id.in_(projects))
        warm: set[str] = set()
        previous: dict[str, tuple[float, str]] = {}
        replaced_at: dict[str, float] = {}  # when the current production deployment took over from the previous
        now = time.time()
        for row in s.execute(stmt):
            promoted_at = (row.meta or {}).get("promoted_at")
            if row.id == row.production_deployment_id:
                warm.add(row.id)
                replaced_at[row.project_id] = promoted_at or now
            elif promoted_at is not None and promoted_at > previous.get(row.project_id, (0.0, ""))[0]:
                previous[row.project_id] = (promoted_at, row.id)
        # The rollback target stays warm only for `rollback_warm_seconds` after it was replaced.
        window = self.settings.rollback_warm_seconds
        return warm | {deployment_id for project_id, (_, deployment_id) in previous.items()
                       if now - replaced_at.get(project_id, now) < window}

    def _warm_of(self, deployment_ids: list[str]) -> set[str]:
        with self.ctx.db.sessions() as s:
            return self._warm_ids(s, deployment_ids)

    # Output of apps and of the pipeline
    def _app_log(self, deployment_id: str, stream: str, line: str) -> None:
        if stream == "system":
            self._system(deployment_id, line)
            return
        keep, dropped = self.line_budget.admit(deployment_id)
        if dropped:
            # A runtime line itself, so it goes with the ring: one a second of a flooding app would otherwise pile
            # up forever as system events.
            self.events.emit(deployment_id, "runtime", f"{dropped} lines of output were left out (more than "
                                                       f"{self.line_budget.per_second} a second)", "stderr")
        if keep:
            self.events.emit(deployment_id, "runtime", line, stream)

    def _build_log(self, cap: BuildLogCap, deployment_id: str, stream: str, line: str) -> None:
        keep, note = cap.admit(line)
        if keep:
            self.events.emit(deployment_id, "build", line, stream)
        elif note:
            self._system(deployment_id, note, stream="stderr")

    def _app_port(self, deployment_id: str, address: Address | None) -> None:
        self.router.set_upstream(deployment_id, Upstream(*address) if address else None)
        if address:
            self._active_since[deployment_id] = time.monotonic()

    def _system(self, deployment_id: str, text: str, stream: str = "stdout") -> None:
        self.events.emit(deployment_id, "system", text, stream)

    # Plumbing
    def _lock(self, deployment_id: str) -> asyncio.Lock:
        return self._locks.setdefault(deployment_id, asyncio.Lock())

    def _on_loop(self) -> bool:
        return threading.get_ident() == self._loop_thread

    def _call_soon(self, fn: Any, *args: Any) -> None:
        assert self._loop is not None
        if self._on_loop():
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Runs a coroutine as a task held until it is done (one held by nobody can be collected mid-way)."""
        task = asyncio.ensure_future(coro)
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)
        task.add_done_callback(_log_failure)

    def _ask(self, coro: Coroutine[Any, Any, Any], timeout: float = 60.0) -> Any:
        """Runs a coroutine on the deployer's loop from another thread and returns its result (or raises its error)."""
        assert self._loop is not None and not self._on_loop()
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _call(self, coro: Coroutine[Any, Any, Any], *, wait: bool = False, timeout: float = 60.0) -> None:
        """Runs a coroutine on the deployer's loop from any thread; with `wait`, blocks (off the loop) until done.
        Its failure is logged, never swallowed: the caller (an API request that already changed the database) has
        nothing better to do with it."""
        assert self._loop is not None
        if self._on_loop():
            self._spawn(coro)
            return
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        future.add_done_callback(_log_failure)
        if wait:
            try:
                future.result(timeout)
            except TimeoutError:
                log.warning("background work goes on past its wait", seconds=timeout)
            except Exception:  # noqa: S110 - logged by the callback
                pass


def _log_failure(done: Any) -> None:
    """Done callback of background work: its exception goes to the log with its traceback."""
    if done.cancelled():
        return
    exc = done.exception()
    if exc is not None:
        log.error("background work failed", exc_info=exc)
