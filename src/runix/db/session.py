"""The database engine, sessions, and migrating the schema on start."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, Select, create_engine, event
from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def make_engine(url: str, *, pooled: bool = True) -> Engine:
    if url.startswith("sqlite"):
        pool_args = {"pool_size": 20} if pooled else {"poolclass": NullPool}
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **pool_args)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # noqa: ANN001
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    if not pooled:
        return create_engine(url, poolclass=NullPool)
    return create_engine(url, pool_size=20, max_overflow=20, pool_pre_ping=True)


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(url: str) -> None:
    """Bring the schema up to the newest revision (safe to run on every start)."""
    command.upgrade(alembic_config(url), "head")


@dataclass(frozen=True)
class _Prepared:
    sql: str
    positional: tuple[str, ...] | None  # bind names in order for qmark-style drivers, None for named ones
    defaults: dict[str, Any]  # values bound in the statement itself (e.g. a LIMIT); the caller gives the rest
    names: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]


class RawReads:
    """Reads for the per-request hot path (checking a token, reading one project) straight on a DB-API cursor.

    A statement is written with SQLAlchemy once and compiled once per dialect; each thread keeps one autocommit
    connection, so a read costs the query and little else (the ORM and a pool checkout cost several times more
    than the query on SQLite). Autocommit means every read sees the latest commit: a revoked token fails at once.
    Meant for the event loop (async routes and dependencies): each thread that reads holds a pooled connection.
    """

    def __init__(self, engine: Engine):
        self.engine = engine
        self._local = threading.local()
        self._prepared: dict[int, _Prepared] = {}
        self._lock = threading.Lock()
        self._all: list[Any] = []

    def _prepare(self, stmt: Select) -> _Prepared:
        dialect = self.engine.dialect
        compiled = stmt.compile(dialect=dialect)
        processors = tuple(col.type.dialect_impl(dialect).result_processor(dialect, None)
                           for col in stmt.selected_columns)
        prepared = _Prepared(
            sql=str(compiled),
            positional=tuple(compiled.positiontup or ()) if dialect.positional else None,
            defaults={name: bind.value for name, bind in compiled.binds.items() if bind.value is not None},
            names=tuple(col.key for col in stmt.selected_columns),
            processors=processors,
        )
        self._prepared[id(stmt)] = prepared
        return prepared

    def _connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.engine.raw_connection()
            self.engine.dialect.set_isolation_level(conn.driver_connection, "AUTOCOMMIT")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def rows(self, stmt: Select, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Every row of `stmt` (a select kept for the process's life) as a dict keyed by column key."""
        prepared = self._prepared.get(id(stmt)) or self._prepare(stmt)
        values = {**prepared.defaults, **params} if prepared.defaults else params
        args: Any = tuple(values[n] for n in prepared.positional) if prepared.positional is not None else values
        for attempt in (1, 2):
            conn = self._connection()
            try:
                cursor = conn.cursor()
                try:
                    cursor.execute(prepared.sql, args)
                    fetched = cursor.fetchall()
                finally:
                    cursor.close()
                break
            except self.engine.dialect.loaded_dbapi.DataError as exc:  # a value the database cannot take
                raise DataError(prepared.sql, args, exc) from exc
            except (self.engine.dialect.loaded_dbapi.OperationalError, self.engine.dialect.loaded_dbapi.InterfaceError):
                # A connection the database dropped (a restart): forget it and try once on a new one.
                self._local.conn = None
                conn.invalidate()
                if attempt == 2:
                    raise
        names, processors = prepared.names, prepared.processors
        return [{n: (p(v) if p else v) for n, p, v in zip(names, processors, row, strict=True)} for row in fetched]

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()


class Database:
    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.raw = RawReads(self.engine)

    def migrate(self) -> None:
        migrate(self.url)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits when the block succeeds and rolls back when it raises."""
        with self.sessions() as s:
            try:
                yield s
                s.commit()
            except BaseException:
                s.rollback()
                raise

    def dispose(self) -> None:
        self.raw.close()
        self.engine.dispose()
