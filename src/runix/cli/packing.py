"""Packs a folder into the .tar.gz that `runix deploy` uploads.

`.gitignore` and `.runixignore` are honoured the way git does (gitwildmatch patterns via `pathspec`), in the folder
and in any subfolder; `.runixignore` is read after `.gitignore`, so it can re-include (`!pattern`) what git ignores.
`.git`, `node_modules`, `.venv` and `.runix` are never uploaded: the build installs dependencies itself.
"""

from __future__ import annotations

import os
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

ALWAYS_SKIPPED = frozenset({".git", "node_modules", ".venv", ".runix"})
IGNORE_FILES = (".gitignore", ".runixignore")


@dataclass
class Archive:
    file: IO[bytes]
    files: int
    bytes: int

    def close(self) -> None:
        self.file.close()


def _ignore_specs(folder: Path, prefix: str) -> list[tuple[str, Any]]:
    lines: list[str] = []
    for name in IGNORE_FILES:
        try:
            lines += (folder / name).read_text(errors="replace").splitlines()
        except OSError:
            continue
    if not lines:
        return []
    import pathspec

    return [(prefix, pathspec.GitIgnoreSpec.from_lines(lines))]


def _ignored(specs: list[tuple[str, Any]], rel: str, is_dir: bool) -> bool:
    verdict = None
    for prefix, spec in specs:  # outer folders first, so a deeper ignore file has the last word
        result = spec.check_file(rel[len(prefix):] + ("/" if is_dir else ""))
        if result.include is not None:
            verdict = result.include
    return bool(verdict)


def files_to_upload(root: Path) -> Iterator[tuple[Path, str]]:
    """(path, name in the archive) of every file, folder and link to upload, in a stable order."""

    def visit(folder: Path, prefix: str, specs: list[tuple[str, Any]]) -> Iterator[tuple[Path, str]]:
        specs = specs + _ignore_specs(folder, prefix)
        with os.scandir(folder) as entries:
            listing = sorted(entries, key=lambda e: e.name)
        for entry in listing:
            if entry.name in ALWAYS_SKIPPED:
                continue
            rel = prefix + entry.name
            is_dir = entry.is_dir(follow_symlinks=False)
            if _ignored(specs, rel, is_dir):
                continue
            yield Path(entry.path), rel
            if is_dir:
                yield from visit(Path(entry.path), rel + "/", specs)

    yield from visit(root, "", [])


def pack(root: Path) -> Archive:
    """A .tar.gz of the folder's files (in a temporary file, so big apps are not held in memory)."""
    handle = tempfile.TemporaryFile()  # noqa: SIM115 - the caller uploads it, then closes it
    count = 0
    with tarfile.open(fileobj=handle, mode="w:gz", compresslevel=6) as tar:
        for path, name in files_to_upload(root):
            tar.add(path, arcname=name, recursive=False)
            count += path.is_symlink() or not path.is_dir()
    size = handle.tell()
    handle.seek(0)
    return Archive(file=handle, files=count, bytes=size)
