"""The on-disk layout of the data dir: every path Runix writes is named here and nowhere else."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def database(self) -> Path:
        return self.root / "runix.db"

    @property
    def secret_key_file(self) -> Path:
        return self.root / "secret.key"

    @property
    def maildir(self) -> Path:
        return self.root / "mail"

    @property
    def sources(self) -> Path:
        """Uploaded archives, content-addressed by SHA-256."""
        return self.root / "sources"

    def source_archive(self, sha256: str) -> Path:
        return self.sources / sha256[:2] / f"{sha256}.tar.gz"

    @property
    def builds(self) -> Path:
        """Scratch folders where builds run."""
        return self.root / "builds"

    @property
    def releases(self) -> Path:
        """Immutable release folders, one per deployment."""
        return self.root / "releases"

    def release_dir(self, deployment_id: str) -> Path:
        return self.releases / deployment_id

    @property
    def cache(self) -> Path:
        """Shared download caches (uv, npm) so a second install of the same dependencies is fast."""
        return self.root / "cache"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def ensure(self) -> None:
        for d in (self.root, self.sources, self.builds, self.releases, self.cache, self.logs):
            d.mkdir(parents=True, exist_ok=True)
