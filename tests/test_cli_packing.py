"""What `runix deploy` uploads: git's ignore rules, nested ignore files, and the folders never sent."""

from __future__ import annotations

import tarfile
from pathlib import Path

from runix.cli.packing import files_to_upload, pack


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


def test_pack_is_a_gzipped_tar_of_those_files(tmp_path: Path) -> None:
    make(tmp_path / "app", {"index.html": "hi", "a/b.txt": "b", ".gitignore": "b.txt\n"})
    (tmp_path / "app" / "link").symlink_to("index.html")
    archive = pack(tmp_path / "app")
    try:
        with tarfile.open(fileobj=archive.file, mode="r:gz") as tar:
            members = {m.name: m for m in tar.getmembers()}
        assert set(members) == {".gitignore", "index.html", "a", "link"}
        assert members["link"].issym() and members["link"].linkname == "index.html"
        assert archive.files == 3 and archive.bytes > 0
    finally:
        archive.close()
