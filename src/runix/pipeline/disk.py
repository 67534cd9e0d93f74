"""What tenants' files take on disk, and the build caches kept within a quota.

Every tree measured here may be written by a tenant, so nothing is followed: entries are lstat'ed, links count as
themselves, and a tree that changes under the walk is measured as far as it can be. Sizes are blocks on disk, so a
sparse file counts what it really takes."""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

MB = 1024 * 1024


@dataclass(frozen=True)
class DiskQuota:
    """What one build may put on disk: its release (what is left of the plan's disk quota for sources and releases)
    and the account's build caches (least recently used ones go once past it)."""

    release_bytes: int
    cache_bytes: int

    def describe(self) -> str:
        return f"{self.release_bytes // MB} MB left of your plan's disk quota for sources and releases"


def tree_bytes(root: Path) -> int:
    """Disk blocks under `root` (itself included), in bytes; 0 when it is gone."""
    total = 0
    with contextlib.suppress(OSError):
        total += os.lstat(root).st_blocks * 512
    for dirpath, dirnames, filenames in os.walk(root):  # os.walk does not follow links to folders
        for name in (*dirnames, *filenames):
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


def touch(folder: Path) -> None:
    """Marks a cache as just used (its mtime is the least-recently-used order)."""
    with contextlib.suppress(OSError):
        os.utime(folder, follow_symlinks=False)


def evict_least_recently_used(folders: list[Path], quota_bytes: int) -> int:
    """Deletes whole folders, least recently used first, until the rest fit in `quota_bytes`; what the rest take.
    Called only while no build of the account runs (under its cache lock), so no process writes to them."""
    sized = []
    for folder in folders:
        with contextlib.suppress(OSError):
            sized.append((os.lstat(folder).st_mtime, folder, tree_bytes(folder)))
    sized.sort(key=lambda entry: entry[0])
    total = sum(size for _, _, size in sized)
    for _, folder, size in sized:
        if total <= quota_bytes:
            break
        shutil.rmtree(folder, ignore_errors=True)  # rmtree does not follow links (fd-based on Linux)
        total -= size
    return total
