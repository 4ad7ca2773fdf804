"""PostgreSQL goes down and comes back while a stateful task runs (issue 10, a fault in a phase).

While the database is down the gateway says so — `/readyz` 503, TES calls 503 with a body that
names the database, never a hang or a bare 500 — and the task keeps running on its instance; the
agent's reports wait and are delivered when the database is back. The task then ends COMPLETE
with its whole output, in its first attempt: nothing was restarted or lost."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fixtures.postgres import PostgresServer, start_postgres
from tests.fixtures.server import tescape_server
from tests.fixtures.stateful import count_lines, numbers, stateful_task
from tests.fixtures.tasks import admin, ended, submit
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="CRIU needs root")


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A server of this test's own: the session's is shared and must not go down."""
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


def test_a_database_outage_loses_no_running_work(
    tmp_path: Path, busybox_image: str, own_postgres: PostgresServer
) -> None:
    config: dict[str, Any] = {
        "images": {"rewrites": {"alpine": busybox_image}},
        "storage": {"allowed_dirs": [str(tmp_path)]},
        # an outage longer than the heartbeat timeout: the agents' silence is the database's
        "scheduler": {"interval_seconds": 0.2, "heartbeat_timeout_seconds": 6},
        "providers": {"local": {"max_instances": 1}},
        "capsules": {"store": str(tmp_path / "capsules"), "interval_seconds": 0},
    }
    n = 180
    db_url = own_postgres.create_database("outage")
    with tescape_server(tmp_path / "data", config, db_url=db_url, run_tasks=True) as srv:
        task_id = submit(srv, stateful_task(tmp_path, "outage", n, 0.1, 1))
        wait_for("the counter to pass 10", lambda: count_lines(tmp_path, task_id) >= 10, srv=srv)

        own_postgres.halt()
        down_at = count_lines(tmp_path, task_id)
        ready = requests.get(srv.url + "/readyz", timeout=30)
        assert ready.status_code == 503, ready.text
        assert requests.get(srv.url + "/healthz", timeout=30).status_code == 200
        during = requests.get(f"{srv.tes}/tasks/{task_id}", timeout=30)
        assert during.status_code == 503, during.text
        assert "database" in during.json()["message"], during.text
        assert during.headers.get("Retry-After")
        # the task goes on meanwhile: its counter moves with the database down
        wait_for(
            "the counter to move on with the database down",
            lambda: count_lines(tmp_path, task_id) >= down_at + 80,
            srv=srv,
        )
        own_postgres.resume()

        wait_for(
            "the gateway to be ready again",
            lambda: requests.get(srv.url + "/readyz", timeout=30).status_code == 200,
            srv=srv,
        )
        done = ended(srv, task_id)
        assert done["state"] == "COMPLETE", done
        attempts = admin(srv, "GET", f"/tasks/{task_id}/attempts").json()["attempts"]
        assert [a["reason"] for a in attempts] == ["first"], attempts
    for name in ("count", "pipe.log", "net.log"):
        assert numbers(tmp_path / "out" / "outage" / name) == list(range(1, n + 1)), name
