"""API tokens: random, prefixed by kind, stored only as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import secrets

PREFIXES = {"session": "rnx_s_", "cli": "rnx_c_"}


def new_token(kind: str) -> tuple[str, str]:
    """Returns (the value to show once, the hash to store)."""
    value = PREFIXES[kind] + secrets.token_urlsafe(32)
    return value, hash_token(value)


def hash_token(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def new_code(digits: int = 6) -> str:
    return "".join(secrets.choice("0123456789") for _ in range(digits))
