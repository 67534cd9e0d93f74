"""Shared fixtures. `server` is one real `runix server` for the whole session; `account` a fresh sign-in on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ADMIN_EMAIL, Account, RunixServer, running_server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunixServer]:
    with running_server(tmp_path_factory.mktemp("runix"), RUNIX_RATE_LIMIT_PER_MINUTE="100000",
                        RUNIX_ADMIN_EMAILS=ADMIN_EMAIL) as s:
        yield s


@pytest.fixture
def account(server: RunixServer) -> Account:
    """A new account on the shared server (each test has its own, so tests never see each other's data)."""
    return server.sign_in()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[RunixServer]:
    """A server of the test's own, for tests that restart it or change its settings."""
    with running_server(tmp_path) as s:
        yield s
