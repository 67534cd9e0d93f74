"""A tenant flooding its logs (attack 5 of the threat model, docs/security.md): a build that prints without end, an
app that logs as fast as it can. Against a real `runix server` with small caps: what is stored stays bounded, the
build still ends READY, the app keeps serving, the API keeps answering, and a reader paging the log by event id
neither misses nor repeats a line while the oldest are deleted."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from tests.security import test_sandbox_escape
from tests.security.test_sandbox_escape import HOSTILE_APP
from tests.support import Account, RunixServer, running_server
from tests.test_deployments_e2e import Router, deploy, new_project, tarball, upload, wait_settled, wait_status

BUILD_LINES = 300  # RUNIX_BUILD_LOG_MAX_LINES
BUILD_BYTES = 100_000  # RUNIX_BUILD_LOG_MAX_BYTES
RING = 300  # RUNIX_RUNTIME_LOG_LINES
TRUNCATED = "Build log truncated:"
# Seconds between two pages within which a reader finds every line still stored: the ring trims to 270 of its 300
# lines, which takes 1.35 s at the 200 lines a second an app may log.
KEPT_UP = 1.0

# Its only output is the flood (no "listening" line), so every line the budget leaves out is a numbered one.
FLOOD_APP = HOSTILE_APP.replace('print("hostile app listening", flush=True)', "").replace(
    '''if __name__ == "__main__":''', '''def flood():
    i = 0
    while True:  # as fast as the pipe takes it, a thousand lines a write
        sys.stdout.write("".join(f"flood {n}\\n" for n in range(i, i + 1000)))
        i += 1000


if __name__ == "__main__":
    import threading

    threading.Thread(target=flood, daemon=True).start()''')


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunixServer]:
    with running_server(tmp_path_factory.mktemp("flood"), RUNIX_RATE_LIMIT_PER_MINUTE="100000",
                        RUNIX_HEALTH_TIMEOUT="20", RUNIX_BUILD_LOG_MAX_LINES=str(BUILD_LINES),
                        RUNIX_BUILD_LOG_MAX_BYTES=str(BUILD_BYTES), RUNIX_RUNTIME_LOG_LINES=str(RING)) as s:
        yield s


# The attacks' own module-wide account and router fixtures, here on this module's server.
attacker, router = test_sandbox_escape.attacker, test_sandbox_escape.router


def hostile(app: str = HOSTILE_APP) -> bytes:
    return tarball({"Procfile": "web: python3 server.py\n", "server.py": app})


def events(account: Account, deployment_id: str, since: int | None = None) -> list[dict]:
    params = {"limit": 10000, **({"since": since} if since else {})}
    r = account.client.get(f"/deployments/{deployment_id}/events", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def of_type(found: list[dict], type_: str) -> list[dict]:
    return [e for e in found if e["type"] == type_]


def truncations(found: list[dict]) -> list[dict]:
    return [e for e in found if e["text"].startswith(TRUNCATED)]


def test_a_build_that_prints_200k_lines_ends_ready_with_its_log_capped(attacker: Account, router: Router) -> None:
    new_project(attacker, "loud-build", build_command="python3 -c \"[print('build line', i) for i in range(200000)]\"")
    deployment = deploy(attacker, "loud-build", hostile())
    assert deployment["status"] == "READY", deployment
    found = events(attacker, deployment["id"])
    build = of_type(found, "build")
    assert len(build) == BUILD_LINES
    printed = [e["text"] for e in build if e["text"].startswith("build line")]
    assert printed == [f"build line {i}" for i in range(len(printed))]  # the first lines, in order
    (note,) = truncations(found)
    assert note["type"] == "system" and "(the build goes on)" in note["text"] and f"{BUILD_LINES} lines" in note["text"]
    assert any(e["text"].startswith("Build finished") for e in found)
    assert router.get("loud-build.localhost").json() == {"app": "hostile"}


def test_a_build_of_long_lines_is_capped_in_bytes(attacker: Account) -> None:
    new_project(attacker, "wide-build", build_command="python3 -c \"[print('x' * 8000) for i in range(100)]\"")
    deployment = deploy(attacker, "wide-build", hostile())
    assert deployment["status"] == "READY", deployment
    found = events(attacker, deployment["id"])
    kept = sum(len(e["text"].encode()) for e in of_type(found, "build"))
    assert BUILD_BYTES - 8000 < kept <= BUILD_BYTES  # every line that fitted, and not the one that did not
    (note,) = truncations(found)
    assert f"{BUILD_BYTES / 1_000_000:g} MB" in note["text"], note


def test_an_app_flooding_its_log_keeps_a_ring_of_lines_and_everything_keeps_answering(
        attacker: Account, router: Router) -> None:
    new_project(attacker, "flood")
    deployment = deploy(attacker, "flood", hostile(FLOOD_APP))
    assert deployment["status"] == "READY", deployment
    deployment_id = deployment["id"]
    last, read, slowest = 0, [], 0.0
    lagging: set[int] = set()  # first flood lines of pages read too late to find every line before still stored
    previous = time.monotonic()
    deadline = time.monotonic() + 90
    while len(of_type(read, "runtime")) < 4 * RING:  # read as `runix logs` pages: by event id, while it turns
        assert time.monotonic() < deadline, f"only {len(read)} events read"
        started = time.monotonic()
        page = events(attacker, deployment_id, since=last)
        ids = [e["id"] for e in page]
        assert ids == sorted(set(ids)) and all(i > last for i in ids), "a line came twice or out of order"
        flood = [e["id"] for e in page if e["text"].startswith("flood ")]
        if flood and time.monotonic() - previous > KEPT_UP:
            lagging.add(flood[0])
        previous = started
        read += page
        last = ids[-1] if ids else last
        started = time.monotonic()
        r = attacker.client.get(f"/deployments/{deployment_id}")
        slowest = max(slowest, time.monotonic() - started)
        assert r.status_code == 200 and r.json()["status"] == "READY"
        stored = events(attacker, deployment_id)
        assert len(of_type(stored, "runtime")) <= RING
        time.sleep(0.2)  # a reader polling five times a second
    assert slowest < 2.0, f"the API took {slowest:.1f}s to answer during the flood"
    assert router.get("flood.localhost").json() == {"app": "hostile"}

    # The reader missed no line that was stored: between two lines it read, every one that the per-second budget
    # did not leave out (and say so) was there. Only a page read later than the ring takes to turn may start after a
    # gap (the lines before it are gone): a loaded machine can stall the reader that long.
    numbers, left_out, checked = [], 0, 0
    for event in of_type(read, "runtime"):
        if match := re.fullmatch(r"flood (\d+)", event["text"]):
            number = int(match.group(1))
            if numbers and not (event["id"] in lagging and number - numbers[-1] - 1 != left_out):
                assert number - numbers[-1] - 1 == left_out, (numbers[-1], number, left_out)
                checked += 1
            numbers.append(number)
            left_out = 0
        elif match := re.fullmatch(r"(\d+) lines of output were left out .*", event["text"]):
            left_out += int(match.group(1))
    assert len(numbers) >= 3 * RING and checked >= 2 * RING, (len(numbers), checked, len(lagging))

    # The database holds the newest lines only; the build's and Runix's own events are all still there.
    stored = events(attacker, deployment_id)
    runtime = of_type(stored, "runtime")
    assert len(runtime) <= RING and runtime[0]["id"] > read[0]["id"]
    assert any(e["text"] == "Build started" for e in of_type(stored, "system"))
    assert any(e["text"].startswith("Ready at") for e in of_type(stored, "system"))
    assert of_type(stored, "build") == of_type(read, "build")

    # It can be stopped like any other: deleting the project ends the flood.
    assert attacker.client.delete("/projects/flood").status_code == 200


def test_zz_the_build_log_cap_holds_across_a_restart_that_resumes_the_build(attacker: Account,
                                                                            server: RunixServer) -> None:
    """Last in the module: the restart ends every signed-in client."""
    new_project(attacker, "resumed-loud", build_command="python3 -c \"[print('run line', i) for i in range(200)]\"; "
                                                        "sleep 6")
    r = upload(attacker, "resumed-loud", hostile())
    assert r.status_code == 201, r.text
    deployment_id = r.json()["id"]
    deadline = time.monotonic() + 60
    while len([e for e in events(attacker, deployment_id) if e["text"].startswith("run line")]) < 200:
        assert time.monotonic() < deadline, events(attacker, deployment_id)
        time.sleep(0.1)
    wait_status(attacker, deployment_id, "BUILDING")
    server.restart()  # a clean stop: the build goes back to the queue and runs again, printing 200 lines more
    attacker = server.sign_in(attacker.email)
    settled = wait_settled(attacker, deployment_id)
    assert settled["status"] == "READY", settled
    found = events(attacker, deployment_id)
    assert [e["text"] for e in found].count("Build started") == 2
    assert len(of_type(found, "build")) == BUILD_LINES and len(truncations(found)) == 1
