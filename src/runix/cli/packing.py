"""Packs a folder into the .tar.gz that `runix deploy` uploads, as a stream: the archive is made while it is sent.

`.gitignore` and `.runixignore` are honoured the way git does (gitwildmatch patterns via `pathspec`), in the folder
and in any subfolder; `.runixignore` is read after `.gitignore`, so it can re-include (`!pattern`) what git ignores.
`.git`, `node_modules`, `.venv` and `.runix` are never uploaded: the build installs dependencies itself.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

ALWAYS_SKIPPED = frozenset({".git", "node_modules", ".venv", ".runix"})
IGNORE_FILES = (".gitignore", ".runixignore")
CHUNK_BYTES = 64 * 1024
INLINE_BYTES = 1024 * 1024


class Source:
    """What will be uploaded: (path, name in the archive) of each entry, the count of files and their total size.
    (A plain class: a NamedTuple compiles code when defined, ~1 ms of every deploy's start.)"""

    __slots__ = ("entries", "files", "bytes")

    def __init__(self, entries: list[tuple[Path, str]], files: int, size: int):
        self.entries = entries
        self.files = files
        self.bytes = size


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


def list_source(root: Path) -> Source:
    entries = list(files_to_upload(root))
    files = size = 0
    for path, _ in entries:
        info = path.lstat()
        if not stat.S_ISDIR(info.st_mode):
            files += 1
            size += info.st_size if stat.S_ISREG(info.st_mode) else 0
    return Source(entries, files, size)


class PackError(Exception):
    """A file of the folder could not be packed (it vanished, or cannot be read)."""


def stream(source: Source, on_packed: Callable[[int], None] | None = None) -> Iterator[bytes]:
    """The .tar.gz of `source`, in chunks as it is made. A thread packs into a pipe while the caller sends what is
    ready, so the archive is never held in memory or on disk, and compressing overlaps the upload; a folder under
    INLINE_BYTES is packed at once in memory instead (starting a thread costs more than it saves). `on_packed(n)` is
    called as n more bytes of file content are packed. A file that cannot be packed raises PackError, once the
    chunks before it were yielded."""
    if source.bytes <= INLINE_BYTES:
        buffer = io.BytesIO()
        _pack(source, buffer, on_packed)
        yield buffer.getvalue()
        return
    read_fd, write_fd = os.pipe()
    reader, writer = os.fdopen(read_fd, "rb"), os.fdopen(write_fd, "wb")
    failure: list[BaseException] = []

    def pack() -> None:
        try:
            with writer:
                _pack(source, writer, on_packed)
        except BrokenPipeError:
            pass  # the reader stopped (the upload failed): nothing left to do
        except BaseException as exc:  # noqa: BLE001 - raised again by the reading side, never lost
            failure.append(exc)

    packer = threading.Thread(target=pack, name="runix-pack", daemon=True)
    packer.start()
    with reader:
        while chunk := reader.read1(CHUNK_BYTES):
            yield chunk
    packer.join()
    if failure:
        raise failure[0]


def _pack(source: Source, out: IO[bytes], on_packed: Callable[[int], None] | None) -> None:
    try:
        with (gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0) as zipped,
              tarfile.open(fileobj=zipped, mode="w|") as tar):
            for path, name in source.entries:
                info = tar.gettarinfo(path, arcname=name)
                if info.isreg():
                    with path.open("rb") as file:
                        tar.addfile(info, _Counted(file, on_packed))
                else:
                    tar.addfile(info)
    except BrokenPipeError:
        raise
    except (OSError, tarfile.TarError) as exc:
        reason = f"{exc.filename or ''}: {exc.strerror}" if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PackError(reason) from exc


class _Counted:
    """A file whose reads are counted (for the upload's progress bar)."""

    def __init__(self, file: IO[bytes], on_read: Callable[[int], None] | None):
        self.file = file
        self.on_read = on_read

    def read(self, size: int = -1) -> bytes:
        data = self.file.read(size)
        if self.on_read and data:
            self.on_read(len(data))
        return data
