"""The API suites (schemathesis too) again, on PostgreSQL: a fresh database per run, migrated by Alembic on start."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from runix.db.session import alembic_config
from tests import (
    test_api_auth,
    test_api_billing,
    test_api_domains,
    test_api_env,
    test_api_errors,
    test_api_projects,
    test_api_restart,
    test_schema,
)
from tests.api_support import run_sql
from tests.dns_server import LoopbackDns, dns  # noqa: F401 - the fixture
from tests.support import ADMIN_EMAIL, RunixServer, drop_postgres_database, fresh_postgres_database, running_server
from tests.test_schema import token  # noqa: F401 - the schemathesis suite's fixture

pytestmark = pytest.mark.postgres

SUITES = (test_api_auth, test_api_projects, test_api_env, test_api_domains, test_api_billing, test_api_errors,
          test_api_restart, test_schema)


def _collect_suites() -> None:
    """Each suite's tests, collected here too, run with this module's `server` and `fresh_server` (PostgreSQL)."""
    for suite in SUITES:
        for name in dir(suite):
            if name.startswith("test_"):
                assert name not in globals(), f"two suites share the test name {name}"
                globals()[name] = getattr(suite, name)


_collect_suites()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, dns: LoopbackDns) -> Iterator[RunixServer]:  # noqa: F811
    url = fresh_postgres_database()
    try:
        with running_server(tmp_path_factory.mktemp("runix-pg"), RUNIX_DATABASE_URL=url,
                            RUNIX_DNS_RESOLVER=dns.address, RUNIX_RATE_LIMIT_PER_MINUTE="100000",
                            RUNIX_ADMIN_EMAILS=ADMIN_EMAIL) as s:
            yield s
    finally:
        drop_postgres_database(url)


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[RunixServer]:
    url = fresh_postgres_database()
    try:
        with running_server(tmp_path, RUNIX_DATABASE_URL=url) as s:
            yield s
    finally:
        drop_postgres_database(url)


def test_schema_is_migrated_to_the_newest_revision(server: RunixServer) -> None:
    head = ScriptDirectory.from_config(alembic_config("postgresql://unused")).get_current_head()
    assert run_sql(server, "SELECT version_num FROM alembic_version") == [(head,)]
    indexes = {r[0] for r in run_sql(server, "SELECT indexname FROM pg_indexes WHERE tablename = 'projects'")}
    assert "ix_projects_account_id_id" in indexes
    assert not (server.data_dir / "runix.db").exists()
