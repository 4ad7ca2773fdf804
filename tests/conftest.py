"""Shared fixtures. Servers are real processes on loopback; each is stopped by PID at the end, and
a session-end check proves none was left behind."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.aws_world import worlds  # noqa: F401
from tests.fixtures.containers import (  # noqa: F401
    _container_leak_check,
    _podman_engine,
    mounted_from,
    remove_containers,
    task_containers,
)
from tests.fixtures.images import _busybox_image, _debian_bash_image  # noqa: F401
from tests.fixtures.moto_server import _moto_server, moto  # noqa: F401
from tests.fixtures.postgres import PostgresServer, start_postgres
from tests.fixtures.server import API_CONFIG, RunningServer, tescape_server

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


_db_counter = iter(range(1_000_000))


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tescape.db'}"
    pg: PostgresServer = request.getfixturevalue("postgres")
    return pg.create_database(f"t{os.getpid()}_{next(_db_counter)}")


@pytest.fixture
def server(db_url: str, tmp_path: Path) -> Iterator[RunningServer]:
    """A real `tescape serve` on each store, auth off."""
    with tescape_server(tmp_path / "data", config=API_CONFIG, db_url=db_url) as srv:
        yield srv


@pytest.fixture(scope="session")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One shared server (SQLite, auth off) for tests that only read what they create."""
    with tescape_server(tmp_path_factory.mktemp("shared") / "data", config=API_CONFIG) as srv:
        yield srv


_before: set[str] | None = None


def pytest_sessionstart(session: pytest.Session) -> None:
    global _before
    _before = task_containers()


@pytest.hookimpl(trylast=True)  # after pytest's own hook has torn down session fixtures
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Leak checks: no `tescape serve` started from this test session may outlive it, and no
    task container its servers' agents made may be left (those are removed, then reported)."""
    base = session.config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    after = task_containers() if _before is not None else None
    if after is not None and _before is not None and (left := mounted_from(after - _before, base)):
        remove_containers(left)
        print(f"\nLEAK: task containers left behind (now removed): {sorted(left)}")
        session.exitstatus = 1
    out = subprocess.run(
        ["pgrep", "-f", f"gateway.cli serve --port 0 --data-dir {base}"],
        capture_output=True,
        text=True,
    )
    servers = [pid for pid in out.stdout.split() if pid.strip()]
    if servers:
        print(f"\nLEAK: tescape servers still running: {servers}")
        session.exitstatus = 1
