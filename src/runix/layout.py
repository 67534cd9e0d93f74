"""The on-disk layout of the data dir: every path Runix writes is named here and nowhere else."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

FILLED_SUFFIX = ".filled"  # bytecode/<deployment id>.filled: its cache is compiled


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
    def records(self) -> Path:
        """The server's record of each release (what to run), where no sandbox can see or write."""
        return self.root / "records"

    def release_record(self, deployment_id: str) -> Path:
        return self.records / f"{deployment_id}.json"

    @classmethod
    def of_release(cls, release_dir: Path) -> Layout | None:
        """The layout whose release folder `release_dir` is, or None when it is not one (e.g. a test's folder)."""
        layout = cls(release_dir.parent.parent)
        return layout if layout.release_dir(release_dir.name) == release_dir else None

    @property
    def bytecode(self) -> Path:
        """Python bytecode caches of running apps (PYTHONPYCACHEPREFIX), outside their read-only releases."""
        return self.root / "bytecode"

    def bytecode_cache(self, deployment_id: str) -> Path:
        """One deployment's bytecode cache: its app reads it; only the runtime's compiler writes it."""
        return self.bytecode / deployment_id

    def bytecode_filled(self, deployment_id: str) -> Path:
        """Beside the cache (where no sandbox writes): there once the runtime has compiled the release into it."""
        return self.bytecode / f"{deployment_id}{FILLED_SUFFIX}"

    @property
    def system_bytecode(self) -> Path:
        """Links to the system Pythons' own compiled standard library, laid out as PYTHONPYCACHEPREFIX expects;
        apps read it (read-only) so that a bytecode cache does not start by compiling the standard library."""
        return self.root / "system-bytecode"

    @property
    def cache(self) -> Path:
        """Shared download caches (uv, npm) so a second install of the same dependencies is fast."""
        return self.root / "cache"

    def account_caches(self, account_id: str) -> list[Path]:
        """Every build cache of one account: cache/<tool>/<account id>/<project id>."""
        return sorted(p for p in self.cache.glob(f"*/{account_id}/*") if p.is_dir() and not p.is_symlink())

    def project_caches(self, account_id: str, project_id: str) -> list[Path]:
        return [p for p in self.account_caches(account_id) if p.name == project_id]

    def cache_usage(self, account_id: str) -> Path:
        """What the account's build caches took after its last build (bytes), where no build writes."""
        return self.cache / ".usage" / account_id

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def protect_database(self) -> None:
        """The SQLite database and its journal files are the server's alone (0600)."""
        for path in (self.database, *self.root.glob("runix.db-*")):
            if path.is_file() and not path.is_symlink():
                path.chmod(0o600)

    def ensure(self) -> None:
        """Makes the folders; the data dir is the server's alone (0700), whatever the umask."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.root.chmod(0o700)
        for d in (self.sources, self.builds, self.releases, self.records, self.cache, self.logs, self.bytecode):
            d.mkdir(parents=True, exist_ok=True)
