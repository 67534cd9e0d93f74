"""Pipeline parts on their own: the build queue (server slots, the plan's per-account limit, first come first served,
cancel) and the budget that keeps a flood of app output out of the event store."""

from __future__ import annotations

import asyncio
import time

from runix.pipeline.events import LineBudget
from runix.pipeline.worker import BuildJob, BuildQueue


def test_queue_honours_server_and_plan_limits_and_cancels() -> None:
    async def scenario() -> None:
        running: set[str] = set()
        peak: dict[str, int] = {}
        order: list[str] = []
        release = asyncio.Event()

        async def build(deployment_id: str) -> None:
            order.append(deployment_id)
            running.add(deployment_id)
            account = deployment_id.split("-")[0]
            peak[account] = max(peak.get(account, 0), sum(1 for d in running if d.startswith(account)))
            peak["all"] = max(peak.get("all", 0), len(running))
            try:
                await release.wait()
            finally:
                running.discard(deployment_id)

        queue = BuildQueue(build, max_parallel=3)
        await queue.start()
        for i in range(3):
            queue.submit(BuildJob(f"hobby-{i}", "hobby", 1))
        for i in range(4):
            queue.submit(BuildJob(f"pro-{i}", "pro", 3))
        await asyncio.sleep(0.05)
        assert running == {"hobby-0", "pro-0", "pro-1"}
        queue.cancel("hobby-1")  # still waiting: dropped
        queue.cancel("pro-0")  # running: its task is canceled and a slot frees
        await asyncio.sleep(0.05)
        assert "pro-0" not in running and "pro-2" in running and queue.is_queued("pro-3")
        release.set()
        for _ in range(100):
            if not any(queue.is_queued(d) for d in order + ["pro-3", "hobby-2"]):
                break
            await asyncio.sleep(0.01)
        assert "hobby-1" not in order
        assert order.index("hobby-0") < order.index("hobby-2")
        assert peak["hobby"] == 1 and peak["pro"] <= 3 and peak["all"] <= 3
        assert await queue.stop() == []

    asyncio.run(scenario())


def test_line_budget_keeps_a_second_worth_of_lines_and_reports_the_rest() -> None:
    budget = LineBudget(per_second=200)
    while time.monotonic() % 1 > 0.5:  # start early in a second so the burst stays inside it
        time.sleep(0.01)
    kept = [budget.admit("dpl_a")[0] for _ in range(250)]
    assert kept.count(True) == 200 and kept[-1] is False
    assert budget.admit("dpl_b") == (True, 0)  # each deployment has its own budget
    time.sleep(1.0 - time.monotonic() % 1 + 0.01)
    assert budget.admit("dpl_a") == (True, 50)
    assert budget.admit("dpl_a") == (True, 0)


def test_runtime_stops_apps_caught_mid_start_at_once(tmp_path) -> None:  # noqa: ANN001
    """Apps still starting when the server stops (e.g. right after a restart) are ended, without waiting."""
    import os

    import uvloop

    from runix.pipeline.runtime import AppSpec, AppState
    from runix.pipeline.runtime.local import LocalRuntime

    (tmp_path / "app").mkdir()
    command = "echo starting; sleep 0.3; exec python3 -m http.server $PORT --bind 127.0.0.1"

    async def scenario() -> None:
        runtime = LocalRuntime(on_log=lambda *_: None, on_port=lambda *_: None)
        starts = []
        for i in range(6):
            spec = AppSpec(f"dpl_{i}", tmp_path, tmp_path / "app", command, {"PATH": "/usr/bin:/bin"})
            starts.append(asyncio.create_task(runtime.start(spec)))
            await asyncio.sleep(0.08)
        states = {runtime.status(f"dpl_{i}") for i in range(6)}
        pids = [app.proc.pid for app in runtime._apps.values() if app.proc]
        started = time.monotonic()
        await runtime.stop_all()
        assert time.monotonic() - started < 2.0, states
        assert runtime.running() == [] and AppState.STARTING in states
        for pid in pids:
            try:
                os.kill(pid, 0)
                raise AssertionError(f"process {pid} survived")
            except ProcessLookupError:
                pass
        await asyncio.gather(*starts, return_exceptions=True)

    for _ in range(3):
        uvloop.run(scenario())
