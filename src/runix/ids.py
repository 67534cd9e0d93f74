"""Resource identifiers: a kind prefix and a time-ordered random suffix.

The suffix sorts by creation time (like a ULID), so "newest first" pagination is an index scan on the id alone.
"""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lowercase


def _b32(n: int, length: int) -> str:
    out = []
    for _ in range(length):
        out.append(_ALPHABET[n & 31])
        n >>= 5
    return "".join(reversed(out))


def new_id(prefix: str) -> str:
    """`prj_01h…`: 10 chars of milliseconds then 16 random chars."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    return f"{prefix}_{_b32(millis, 10)}{_b32(rand, 16)}"


def short_id(resource_id: str) -> str:
    """The part of a deployment id used in its URL: the last 8 (random) characters."""
    return resource_id.rsplit("_", 1)[-1][-8:]
