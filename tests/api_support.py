"""Helpers for the API tests: the error shape, and direct access to a server's database (SQLite or PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from runix.settings import Settings
from tests.support import RunixServer


def error(r: httpx.Response, status: int, code: str) -> dict:
    """Asserts the documented error shape with this status and code; returns the body."""
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert body["code"] == code and isinstance(body["error"], str) and body["error"], body
    assert r.headers["content-type"].startswith("application/json")
    return body


def all_pages(client: httpx.Client, path: str, limit: int) -> list[list[dict]]:
    """Every page of a list, `limit` at a time, following its `Link: <…>; rel="next"` headers."""
    pages, url = [], f"{path}?limit={limit}"
    while url:
        r = client.get(url)
        assert r.status_code == 200, r.text
        pages.append(r.json())
        url = r.links.get("next", {}).get("url")
        assert len(pages) < 50
    return pages


def assert_paginated(client: httpx.Client, path: str, ids_in_order: list[str]) -> None:
    """The documented pagination of a list holding exactly `ids_in_order`: pages of `?limit=` items in that order,
    a Link to the next page on all but the last (also when the last is full), and 400 VALIDATION_ERROR for a limit
    outside 1-100 or a malformed cursor."""
    count = len(ids_in_order)
    for limit in (3, count, 100):
        pages = all_pages(client, path, limit)
        assert [len(p) for p in pages] == [limit] * (count // limit) + ([count % limit] if count % limit else [])
        assert [item["id"] for page in pages for item in page] == ids_in_order
    whole = client.get(path)
    assert [item["id"] for item in whole.json()] == ids_in_order[:20] and "link" not in whole.headers  # default 20
    link = client.get(f"{path}?limit=3").headers["link"]
    assert link.startswith("<http") and link.endswith('>; rel="next"') and "limit=3" in link and "cursor=" in link
    for bad in ("0", "101", "-1", "abc", "1.5"):
        error(client.get(f"{path}?limit={bad}"), 400, "VALIDATION_ERROR")
    for bad in ("x" * 65, "NOT-AN-ID", "a_b c"):
        error(client.get(f"{path}?cursor={bad}"), 400, "VALIDATION_ERROR")


def database_url(server: RunixServer) -> str:
    return Settings(data_dir=server.data_dir, database_url=server.env.get("RUNIX_DATABASE_URL")).sqlalchemy_url


def run_sql(server: RunixServer, statement: str, **params: Any) -> list[tuple]:
    """Runs one statement on the server's database (committed) and returns its rows, if any."""
    url = database_url(server)
    if url.startswith("sqlite"):  # stored as naive UTC text there, as Runix writes it
        params = {k: v.astimezone(UTC).replace(tzinfo=None) if isinstance(v, datetime) and v.tzinfo else v
                  for k, v in params.items()}
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(statement), params)
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()


def stored_text(server: RunixServer) -> str:
    """Everything the database keeps, as text: the SQLite file with its WAL, or every row of every PG table."""
    if "RUNIX_DATABASE_URL" not in server.env:
        db = server.data_dir / "runix.db"
        parts = [p.read_bytes() for p in (db, db.with_name("runix.db-wal")) if p.exists()]
        return b"".join(parts).decode("latin-1")
    tables = [r[0] for r in run_sql(server, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
    assert "tokens" in tables and "env_vars" in tables, tables
    return "\n".join(str(row[0]) for t in tables for row in run_sql(server, f'SELECT t::text FROM "{t}" t'))
