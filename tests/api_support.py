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
