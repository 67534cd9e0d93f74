"""The event store's bounds on their own: the build log cap."""

from __future__ import annotations

from runix.pipeline.events import TRUNCATED, BuildLogCap, StoredBuildLog


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
