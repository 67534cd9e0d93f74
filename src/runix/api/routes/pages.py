"""Cursor pagination on the wire: `?limit=&cursor=` in, a `Link: <…>; rel="next"` header out."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request, Response

Limit = Annotated[int, Query(ge=1, le=100, description="Items per page (1-100)")]
Cursor = Annotated[str | None, Query(max_length=64, pattern=r"^([a-z]+_[0-9a-z]+)?$",
                                     description="From the Link header of the previous page")]


def link_next(request: Request, response: Response, next_cursor: str | None) -> None:
    if next_cursor:
        url = request.url.include_query_params(cursor=next_cursor)
        response.headers["Link"] = f'<{url}>; rel="next"'
