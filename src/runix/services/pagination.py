"""Cursor pagination. Ids sort by creation time, so the cursor is the last id seen.

A list is newest first (by id) unless it has an order of its own (env vars by key, domains by name): then it runs
ascending on that column with the id breaking ties, and the cursor's place in that order is the cursor row's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from sqlalchemy import Select, tuple_
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


def page(s: Session, stmt: Select, id_column: InstrumentedAttribute, limit: int | None, cursor: str | None,
         order_by: InstrumentedAttribute | None = None) -> Page:
    """The rows of `stmt` after `cursor`: newest first, or ascending on (`order_by`, id) when given."""
    limit = checked_limit(limit, cursor)
    if order_by is None:
        if cursor:
            stmt = stmt.where(id_column < cursor)
        stmt = stmt.order_by(id_column.desc())
    else:
        if cursor:
            stmt = stmt.where(tuple_(order_by, id_column) > tuple_(_place_of(s, stmt, id_column, order_by, cursor),
                                                                    cursor))
        stmt = stmt.order_by(order_by, id_column)
    rows = list(s.scalars(stmt.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, rows[-1].id if more and rows else None)


def _place_of(s: Session, stmt: Select, id_column: InstrumentedAttribute, order_by: InstrumentedAttribute,
              cursor: str) -> object:
    """The `order_by` value of the cursor's row, looked up within the list itself (so another project's id tells
    nothing). A row that is not in the list has no place in it: 400, to start again from the first page."""
    place = s.scalar(stmt.with_only_columns(order_by).where(id_column == cursor))
    if place is None:
        raise ValidationFailed("cursor is not valid: it names nothing in this list (removed since that page was "
                               "read?); list again from the first page", details=[{"field": "cursor"}])
    return place
