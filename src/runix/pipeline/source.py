"""Source: an uploaded .tar.gz is untrusted. Validate every entry, then keep it content-addressed by SHA-256.

Rules (each rejection is a 400 that names the rule): a gzip-compressed tar; no absolute paths; no `..`; links stay
inside the app folder (resolved through the archive's own symlinks, as the kernel would); no device or FIFO files;
at most `max_files` entries, `max_compressed_bytes` compressed and `max_unpacked_bytes` unpacked. The unpacked size
is checked twice: the sizes the entries declare, and the bytes actually produced while decompressing (a gzip bomb).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import posixpath
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from runix.errors import BadRequest
from runix.layout import Layout

CHUNK = 1024 * 1024
# Tar headers and padding on top of the file data: a legitimate archive never needs more than this per entry.
TAR_OVERHEAD_PER_ENTRY = 3 * 512
MAX_LINK_HOPS = 40


class SourceRejected(BadRequest):
    """The upload broke a rule: the message says which, `rule` names it for programs (also in the body's details)."""

    def __init__(self, message: str, *, rule: str):
        super().__init__(message, details={"rule": rule})
        self.rule = rule


def _too_large_unpacked(limit: int) -> SourceRejected:
    return SourceRejected(f"Archive unpacks to more than {limit} bytes", rule="too_large_unpacked")


def _too_large_compressed(limit: int) -> SourceRejected:
    return SourceRejected(f"Archive is larger than {limit} bytes compressed", rule="too_large_compressed")


def _link_outside(name: str) -> SourceRejected:
    return SourceRejected(f"Archive entry '{name}' links outside the app folder", rule="link_outside")


@dataclass(frozen=True)
class SourceLimits:
    max_compressed_bytes: int
    max_unpacked_bytes: int
    max_files: int

    @classmethod
    def from_settings(cls, settings) -> SourceLimits:
        return cls(
            max_compressed_bytes=settings.max_upload_bytes,
            max_unpacked_bytes=settings.max_unpacked_bytes,
            max_files=settings.max_source_files,
        )

    @property
    def max_stream_bytes(self) -> int:
        """The most decompressed bytes an archive within the limits can produce (data plus tar headers)."""
        return self.max_unpacked_bytes + (self.max_files + 2) * TAR_OVERHEAD_PER_ENTRY + 64 * 1024


@dataclass(frozen=True)
class StoredSource:
    sha256: str
    size_bytes: int
    path: Path


class _BoundedReader:
    """A read-only file object over decompressed bytes that refuses to produce more than `limit` bytes."""

    def __init__(self, raw: BinaryIO, limit: int, unpacked_limit: int):
        self.raw = raw
        self.limit = limit
        self.unpacked_limit = unpacked_limit
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self.limit - self.count + 1
        data = self.raw.read(min(size, self.limit - self.count + 1))
        self.count += len(data)
        if self.count > self.limit:
            raise _too_large_unpacked(self.unpacked_limit)
        return data


@contextmanager
def _open_tar(archive: Path, limits: SourceLimits) -> Iterator[tarfile.TarFile]:
    with open(archive, "rb") as raw:
        if raw.read(2) != b"\x1f\x8b":
            raise SourceRejected("Source is not a gzip-compressed tar archive (.tar.gz)", rule="not_tar_gz")
        raw.seek(0)
        with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
            bounded = _BoundedReader(unzipped, limits.max_stream_bytes, limits.max_unpacked_bytes)
            try:
                with tarfile.open(fileobj=bounded, mode="r|") as tar:  # type: ignore[call-overload]
                    yield tar
            except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
                raise SourceRejected(f"Source is not a valid .tar.gz archive ({exc})", rule="not_tar_gz") from exc


def _entry_name(member: tarfile.TarInfo) -> str:
    name = member.name
    if name.startswith("/") or posixpath.isabs(name):
        raise SourceRejected(f"Archive entry '{name}' has an absolute path", rule="absolute_path")
    parts = name.split("/")
    if ".." in parts:
        raise SourceRejected(f"Archive entry '{name}' leaves the app folder", rule="leaves_folder")
    normalized = posixpath.normpath(name)
    return "" if normalized == "." else normalized


def _resolve(path: str, symlinks: dict[str, str]) -> list[str] | None:
    """Where `path` (relative to the app folder) really leads, following the archive's symlinks; None if outside."""
    pending = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    hops = 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            if not resolved:
                return None
            resolved.pop()
            continue
        candidate = "/".join([*resolved, part])
        target = symlinks.get(candidate)
        if target is None:
            resolved.append(part)
            continue
        hops += 1
        if hops > MAX_LINK_HOPS or target.startswith("/"):
            return None
        pending = [p for p in target.split("/") if p not in ("", ".")] + pending
    return resolved


def _check_archive(archive: Path, limits: SourceLimits) -> None:
    """Reads the whole archive once and raises SourceRejected for the first rule it breaks."""
    entries = 0
    declared_bytes = 0
    seen: set[str] = set()
    symlinks: dict[str, str] = {}
    hardlinks: dict[str, str] = {}
    with _open_tar(archive, limits) as tar:
        for member in tar:
            entries += 1
            if entries > limits.max_files:
                raise SourceRejected(f"Archive has more than {limits.max_files} files", rule="too_many_files")
            name = _entry_name(member)
            if member.ischr() or member.isblk() or member.isfifo():
                raise SourceRejected(f"Archive entry '{member.name}' is a device or FIFO file", rule="special_file")
            if member.isreg():
                declared_bytes += member.size
                if declared_bytes > limits.max_unpacked_bytes:
                    raise _too_large_unpacked(limits.max_unpacked_bytes)
            if not member.isdir():
                if name in seen:
                    raise SourceRejected(f"Archive entry '{member.name}' appears more than once",
                                         rule="duplicate_entry")
                seen.add(name)
            if member.issym():
                if posixpath.isabs(member.linkname):
                    raise _link_outside(member.name)
                symlinks[name] = member.linkname
            elif member.islnk():
                hardlinks[name] = member.linkname
    if entries == 0:
        raise SourceRejected("Archive is empty", rule="empty")
    for name, target in symlinks.items():
        if _resolve(posixpath.join(posixpath.dirname(name), target), symlinks) is None:
            raise _link_outside(name)
    for name, target in hardlinks.items():
        if posixpath.isabs(target) or _resolve(target, symlinks) is None:
            raise _link_outside(name)
    for name in seen:
        if _resolve(posixpath.dirname(name), symlinks) is None:
            raise SourceRejected(f"Archive entry '{name}' leaves the app folder through a link", rule="link_outside")


def validate(archive: Path, limits: SourceLimits) -> None:
    """Raises SourceRejected unless the archive at `archive` follows every rule."""
    if archive.stat().st_size > limits.max_compressed_bytes:
        raise _too_large_compressed(limits.max_compressed_bytes)
    _check_archive(archive, limits)


def store_upload(layout: Layout, stream: BinaryIO, limits: SourceLimits) -> StoredSource:
    """Streams an upload to disk while hashing it, validates it, and keeps it at `layout.source_archive(sha256)`."""
    layout.sources.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    fd, temp_name = tempfile.mkstemp(dir=layout.sources, prefix=".upload-", suffix=".tar.gz")
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(CHUNK):
                size += len(chunk)
                if size > limits.max_compressed_bytes:
                    raise _too_large_compressed(limits.max_compressed_bytes)
                digest.update(chunk)
                out.write(chunk)
        if size == 0:
            raise SourceRejected("Source is empty: upload a .tar.gz of the app folder", rule="empty")
        _check_archive(temp, limits)
        sha256 = digest.hexdigest()
        final = layout.source_archive(sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            temp.unlink()
            os.utime(final)  # fresh again: the sweep of unused sources spares it until its deployment is stored
        else:
            temp.chmod(0o444)
            os.replace(temp, final)
        return StoredSource(sha256=sha256, size_bytes=size, path=final)
    finally:
        temp.unlink(missing_ok=True)


# Folders that are rebuilt on every deploy (or private) and never belong in an upload.
PACK_SKIP = frozenset({".git", "node_modules", ".venv", "__pycache__", ".runix"})


def pack_directory(folder: Path, out: BinaryIO) -> None:
    """Writes `folder` as a .tar.gz to `out`, the way an upload should look (dependency folders left out)."""
    folder = Path(folder)

    def skip(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        return None if PACK_SKIP.intersection(Path(info.name).parts) else info

    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for child in sorted(folder.iterdir()):
            tar.add(child, arcname=child.name, filter=skip)


def extract(archive: Path, dest: Path, limits: SourceLimits) -> None:
    """Unpacks a validated archive into `dest`, checking every rule again; nothing is ever written outside `dest`."""
    validate(archive, limits)
    dest.mkdir(parents=True, exist_ok=True)
    with _open_tar(archive, limits) as tar:
        for member in tar:
            try:
                # The `data` filter is a second, independent guard: it refuses anything resolving outside `dest`
                # on disk, drops owners and unsafe mode bits.
                tar.extract(member, dest, filter="data")
            except tarfile.FilterError as exc:
                message = f"Archive entry '{member.name}' is not allowed ({exc})"
                raise SourceRejected(message, rule="not_allowed") from exc
