"""Source: every rule an uploaded archive must follow, with crafted archives, and content-addressed storage."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from runix.errors import BadRequest
from runix.layout import Layout
from runix.pipeline.source import SourceLimits, SourceRejected, extract, pack_directory, store_upload

LIMITS = SourceLimits(max_compressed_bytes=1024 * 1024, max_unpacked_bytes=4 * 1024 * 1024, max_files=50)
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def entry(name: str, data: bytes = b"", *, kind: bytes = tarfile.REGTYPE, link: str = "", size: int | None = None):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = len(data) if size is None else size
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info, data


def archive(*entries, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=fmt) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def good_archive() -> bytes:
    return archive(
        entry("index.html", b"<h1>hi</h1>"),
        entry("static", kind=tarfile.DIRTYPE),
        entry("static/app.js", b"console.log(1)"),
        entry("static/current", kind=tarfile.SYMTYPE, link="app.js"),
        entry("top", kind=tarfile.SYMTYPE, link="static/../index.html"),
        entry("copy.html", kind=tarfile.LNKTYPE, link="index.html"),
    )


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    layout = Layout(tmp_path / "data")
    layout.ensure()
    return layout


def rejected(layout: Layout, data: bytes, limits: SourceLimits = LIMITS) -> str:
    with pytest.raises(SourceRejected) as caught:
        store_upload(layout, io.BytesIO(data), limits)
    assert isinstance(caught.value, BadRequest)
    assert caught.value.body() == {"error": caught.value.message, "code": "BAD_REQUEST",
                                   "details": {"rule": caught.value.rule}}
    # A rejected upload leaves nothing behind: no archive, no temp file.
    assert [p for p in layout.sources.rglob("*") if p.is_file()] == []
    return caught.value.message


@pytest.mark.parametrize(
    ("entries", "rule"),
    [
        ([entry("/etc/passwd", b"x")], "Archive entry '/etc/passwd' has an absolute path"),
        ([entry("../x", b"x")], "Archive entry '../x' leaves the app folder"),
        ([entry("a/../../x", b"x")], "Archive entry 'a/../../x' leaves the app folder"),
        ([entry("etc", kind=tarfile.SYMTYPE, link="/etc")], "Archive entry 'etc' links outside the app folder"),
        ([entry("up", kind=tarfile.SYMTYPE, link="../..")], "Archive entry 'up' links outside the app folder"),
        ([entry("h", kind=tarfile.LNKTYPE, link="../secret")], "Archive entry 'h' links outside the app folder"),
        ([entry("h", kind=tarfile.LNKTYPE, link="/etc/shadow")], "Archive entry 'h' links outside the app folder"),
        # Each link alone stays inside; followed through each other the last one climbs out.
        (
            [
                entry("d", kind=tarfile.DIRTYPE),
                entry("d/up", kind=tarfile.SYMTYPE, link=".."),
                entry("escape", kind=tarfile.SYMTYPE, link="d/up/d/up/.."),
            ],
            "Archive entry 'escape' links outside the app folder",
        ),
        ([entry("tty", kind=tarfile.CHRTYPE)], "Archive entry 'tty' is a device or FIFO file"),
        ([entry("disk", kind=tarfile.BLKTYPE)], "Archive entry 'disk' is a device or FIFO file"),
        ([entry("pipe", kind=tarfile.FIFOTYPE)], "Archive entry 'pipe' is a device or FIFO file"),
        ([entry("a", b"1"), entry("a", b"2")], "Archive entry 'a' appears more than once"),
        ([entry(f"f{i}", b"x") for i in range(51)], "Archive has more than 50 files"),
        ([entry("big", b"\0" * (4 * 1024 * 1024 + 1))], "Archive unpacks to more than 4194304 bytes"),
        ([], "Archive is empty"),
    ],
)
def test_each_rule_rejects_with_its_name(layout: Layout, entries, rule: str) -> None:
    assert rejected(layout, archive(*entries)) == rule


def test_declared_size_is_checked_before_any_data_is_read(layout: Layout) -> None:
    # A header claiming 1 TB with no data behind it: rejected on the header alone.
    info, _ = entry("huge", size=10**12)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info)  # header only; the tar stream is cut short, as a hostile one would be
    assert rejected(layout, gzip.compress(buf.getvalue())) == "Archive unpacks to more than 4194304 bytes"


def test_gzip_bomb_is_stopped_by_counting_decompressed_bytes(layout: Layout) -> None:
    # Every declared size is zero, but a 40 MB pax header decompresses from a few kilobytes.
    info = tarfile.TarInfo("innocent.txt")
    info.pax_headers = {"comment": "A" * (40 * 1024 * 1024)}
    data = archive((info, b""))
    assert len(data) < 100 * 1024
    assert rejected(layout, data) == "Archive unpacks to more than 4194304 bytes"


def test_compressed_size_limit_stops_reading_the_upload(layout: Layout) -> None:
    class Endless(io.RawIOBase):
        read_bytes = 0

        def readinto(self, buffer) -> int:
            self.read_bytes += len(buffer)
            buffer[:] = b"\0" * len(buffer)
            return len(buffer)

    stream = Endless()
    with pytest.raises(SourceRejected, match="Archive is larger than 1048576 bytes compressed"):
        store_upload(layout, stream, LIMITS)
    assert stream.read_bytes <= 2 * 1024 * 1024


@pytest.mark.parametrize(
    "data",
    [b"just some text, not an archive", gzip.compress(b"gzip, but not a tar " * 100), b"", b"\x1f\x8b\x08broken"],
)
def test_not_a_tar_gz(layout: Layout, data: bytes) -> None:
    message = rejected(layout, data)
    assert "tar" in message or "empty" in message


def test_plain_tar_without_gzip_is_rejected(layout: Layout) -> None:
    buf = io.BytesIO()
    info, data = entry("index.html", b"hi")
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.addfile(info, io.BytesIO(data))
    assert rejected(layout, buf.getvalue()) == "Source is not a gzip-compressed tar archive (.tar.gz)"


def test_content_addressed_storage_keeps_one_copy(layout: Layout) -> None:
    data = good_archive()
    first = store_upload(layout, io.BytesIO(data), LIMITS)
    second = store_upload(layout, io.BytesIO(data), LIMITS)
    assert first == second
    assert first.sha256 == hashlib.sha256(data).hexdigest()
    assert first.size_bytes == len(data)
    assert first.path == layout.source_archive(first.sha256)
    assert first.path.read_bytes() == data
    assert [p for p in layout.sources.rglob("*") if p.is_file()] == [first.path]
    other = store_upload(layout, io.BytesIO(archive(entry("index.html", b"other"))), LIMITS)
    assert other.sha256 != first.sha256 and other.path.exists()


def test_extract_writes_the_tree_with_its_inner_links(layout: Layout, tmp_path: Path) -> None:
    stored = store_upload(layout, io.BytesIO(good_archive()), LIMITS)
    dest = tmp_path / "app"
    extract(stored.path, dest, LIMITS)
    assert (dest / "index.html").read_bytes() == b"<h1>hi</h1>"
    assert (dest / "static" / "current").is_symlink() and (dest / "static" / "current").read_text() == "console.log(1)"
    assert (dest / "top").read_text() == "<h1>hi</h1>"
    assert (dest / "copy.html").stat().st_ino == (dest / "index.html").stat().st_ino
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app", "data"]


def test_extract_checks_again(tmp_path: Path) -> None:
    # An archive that never went through store_upload (or was swapped on disk) is still refused.
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(archive(entry("../outside", b"x")))
    with pytest.raises(SourceRejected, match="leaves the app folder"):
        extract(bad, tmp_path / "app", LIMITS)
    assert not (tmp_path / "outside").exists()


def test_limits_come_from_settings() -> None:
    from runix.settings import Settings

    limits = SourceLimits.from_settings(Settings(max_upload_bytes=10, max_unpacked_bytes=20, max_source_files=3))
    assert limits == SourceLimits(max_compressed_bytes=10, max_unpacked_bytes=20, max_files=3)


def test_pack_directory_round_trips_an_example(layout: Layout, tmp_path: Path) -> None:
    buf = io.BytesIO()
    pack_directory(EXAMPLES / "express", buf)
    buf.seek(0)
    stored = store_upload(layout, buf, LIMITS)
    extract(stored.path, tmp_path / "app", LIMITS)
    assert sorted(p.name for p in (tmp_path / "app").iterdir()) == sorted(
        p.name for p in (EXAMPLES / "express").iterdir() if p.name != "node_modules"
    )
