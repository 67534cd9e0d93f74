"""Where the CLI keeps its token: `$XDG_CONFIG_HOME/runix/credentials.json` (default ~/.config/runix), mode 0600.

RUNIX_TOKEN and RUNIX_API_URL override what the file says.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

DEFAULT_API_URL = "http://127.0.0.1:8000"


class Credentials:
    """A saved (or RUNIX_TOKEN) token and its API. A plain class: a dataclass or NamedTuple generates and compiles
    code when defined, ~1 ms of every `runix deploy` start."""

    FIELDS = ("api_url", "token", "token_id", "email", "created_at")
    __slots__ = FIELDS

    def __init__(self, api_url: str, token: str, token_id: str | None = None, email: str | None = None,
                 created_at: str | None = None):
        self.api_url = api_url
        self.token = token
        self.token_id = token_id
        self.email = email
        self.created_at = created_at

    def as_dict(self) -> dict[str, str | None]:
        return {name: getattr(self, name) for name in self.FIELDS}


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "runix"


def credentials_path() -> Path:
    return config_dir() / "credentials.json"


def read_file() -> Credentials | None:
    try:
        data = json.loads(credentials_path().read_text())
        return Credentials(**{k: data.get(k) for k in Credentials.FIELDS})
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def api_url(override: str | None = None) -> str:
    """The API to talk to: --api-url, else RUNIX_API_URL, else the one logged in to, else the local default."""
    saved = read_file()
    url = override or os.environ.get("RUNIX_API_URL") or (saved.api_url if saved else None) or DEFAULT_API_URL
    return url.rstrip("/")


def current() -> Credentials | None:
    """The token to use and its API; None when not logged in (to the API RUNIX_API_URL names, if set)."""
    saved = read_file()
    env_token = os.environ.get("RUNIX_TOKEN")
    token = env_token or (saved.token if saved else None)
    if not token:
        return None
    url = (os.environ.get("RUNIX_API_URL") or (saved.api_url if saved else None) or DEFAULT_API_URL).rstrip("/")
    if env_token:
        return Credentials(api_url=url, token=env_token)
    assert saved is not None
    if url != saved.api_url.rstrip("/"):
        return None  # the saved token belongs to another server
    return saved


def save(url: str, token: str, token_id: str | None = None, email: str | None = None) -> Path:
    """Writes the file atomically, readable by the owner only (it holds a secret)."""
    from datetime import UTC, datetime

    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = Credentials(api_url=url.rstrip("/"), token=token, token_id=token_id, email=email,
                       created_at=datetime.now(UTC).isoformat(timespec="seconds"))
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        json.dump(data.as_dict(), handle, indent=2)
        handle.write("\n")
    os.replace(partial, path)
    return path


def remove() -> bool:
    try:
        credentials_path().unlink()
        return True
    except FileNotFoundError:
        return False
