"""Cursor pagination, newest first. Ids sort by creation time, so the cursor is the last id seen."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

from runix.errors import ValidationFailed

T = TypeVar("T")
DEFAULT_LIMIT = 20
MAX_LIMIT = 100


@dataclass
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def checked_limit(limit: int | None, cursor: str | None) -> int:
    """The page size to use; 400 for a size out of range or a cursor that cannot be an id."""
    limit = DEFAULT_LIMIT if limit is None else limit
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationFailed(f"limit must be between 1 and {MAX_LIMIT}", details=[{"field": "limit"}])
    if cursor and (len(cursor) > 64 or "\x00" in cursor):
        raise ValidationFailed("cursor is not valid", details=[{"field": "cursor"}])
    return limit


def page(s: Session, stmt: Select, id_column: InstrumentedAttribute, limit: int | None, cursor: str | None) -> Page:
    limit = checked_limit(limit, cursor)
    if cursor:
        stmt = stmt.where(id_column < cursor)
    rows = list(s.scalars(stmt.order_by(id_column.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, rows[-1].id if more and rows else None)
