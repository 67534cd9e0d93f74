"""Encryption at rest for env values (Fernet), and keyed hashes for one-time codes."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken


def load_or_create_key(configured: str | None, key_file: Path) -> bytes:
    """The server key: `RUNIX_SECRET_KEY` if set, else a key file in the data dir made on first start (mode 0600)."""
    if configured:
        return configured.encode()
    if key_file.exists():
        return key_file.read_bytes().strip()
    key = Fernet.generate_key()
    key_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


class Vault:
    """Encrypts and decrypts secrets with the server key."""

    def __init__(self, key: bytes):
        self._fernet = Fernet(key)
        self._hmac_key = hashlib.sha256(b"runix-codes:" + key).digest()

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken as exc:  # a changed server key: fail loudly rather than serve garbage
            raise RuntimeError("cannot decrypt a stored secret: was RUNIX_SECRET_KEY changed?") from exc

    def seal_env(self, env: dict[str, str]) -> str:
        """A deployment's env var snapshot, encrypted as it is stored."""
        return self.encrypt(json.dumps(env))

    def open_env(self, sealed: str | None) -> dict[str, str]:
        """The env var snapshot `seal_env` made (empty for a deployment stored without one)."""
        return json.loads(self.decrypt(sealed)) if sealed else {}

    def keyed_hash(self, value: str) -> str:
        """HMAC-SHA256 of a short secret (a 6-digit code would fall to a plain hash by brute force)."""
        return hmac.new(self._hmac_key, value.encode(), hashlib.sha256).hexdigest()
