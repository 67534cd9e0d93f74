"""What `runix deploy` uploads: git's ignore rules, nested ignore files, and the folders never sent."""

from __future__ import annotations

import io
import os
import tarfile
import threading
from pathlib import Path

import pytest

from runix.cli.packing import INLINE_BYTES, PackError, files_to_upload, list_source, stream


def make(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_ignore_rules(tmp_path: Path) -> None:
    make(tmp_path, {
        ".gitignore": "*.log\n/dist\nbuild/\n!important.log\n",
        ".runixignore": "docs/\n!dist\n",
        "app.py": "", "debug.log": "", "important.log": "", "dist/bundle.js": "", "build/x.o": "",
        "docs/guide.md": "", "src/build/gen.py": "", "src/dist/keep.js": "", "src/.gitignore": "secret.py\n",
        "src/secret.py": "", "src/main.py": "", ".git/config": "", "node_modules/a/index.js": "",
        ".venv/bin/python": "", ".runix/project.json": "", "sub/.venv/x": "",
    })
    names = {name for _, name in files_to_upload(tmp_path)}
    assert names == {
        ".gitignore", ".runixignore", "app.py", "important.log",
        "dist", "dist/bundle.js",  # /dist ignored by .gitignore, re-included by .runixignore
        "src", "src/.gitignore", "src/main.py", "src/dist", "src/dist/keep.js", "sub",
    }


@pytest.mark.parametrize("big_bytes", [300 * 1024, INLINE_BYTES + 1], ids=["in memory", "by a thread"])
def test_stream_is_a_gzipped_tar_of_those_files(tmp_path: Path, big_bytes: int) -> None:
    big = os.urandom(big_bytes)  # by a thread: more than the pipe holds, so the packer waits for the reader
    make(tmp_path / "app", {"index.html": "hi", "a/b.txt": "b", ".gitignore": "b.txt\n"})
    (tmp_path / "app" / "big.bin").write_bytes(big)
    (tmp_path / "app" / "link").symlink_to("index.html")
    source = list_source(tmp_path / "app")
    assert source.files == 4 and source.bytes == len("hi") + len("b.txt\n") + len(big)
    packed: list[int] = []
    chunks = list(stream(source, on_packed=packed.append))
    assert (len(chunks) > 1) == (big_bytes > INLINE_BYTES) and sum(packed) == source.bytes
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks)), mode="r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert set(members) == {".gitignore", "index.html", "a", "link", "big.bin"}
        assert members["link"].issym() and members["link"].linkname == "index.html"
        assert members["a"].isdir()
        assert tar.extractfile("big.bin").read() == big  # type: ignore[union-attr]


@pytest.mark.parametrize("big_bytes", [0, INLINE_BYTES + 1], ids=["in memory", "by a thread"])
def test_a_file_gone_before_it_is_packed_fails_the_stream(tmp_path: Path, big_bytes: int) -> None:
    make(tmp_path, {"index.html": "hi", "gone.txt": "x"})
    (tmp_path / "a-big.bin").write_bytes(os.urandom(big_bytes))  # packed before gone.txt
    source = list_source(tmp_path)
    (tmp_path / "gone.txt").unlink()
    with pytest.raises(PackError, match="gone.txt"):
        list(stream(source))


def test_a_reader_that_stops_early_ends_the_packer(tmp_path: Path) -> None:
    (tmp_path / "big.bin").write_bytes(os.urandom(2 * INLINE_BYTES))
    chunks = stream(list_source(tmp_path))
    next(chunks)
    chunks.close()  # as when the upload fails: the packer sees a broken pipe and stops
    threads = [t for t in threading.enumerate() if t.name == "runix-pack"]
    for thread in threads:
        thread.join(timeout=5)
        assert not thread.is_alive()
