"""The gateway status API, /readyz and `tescape status` against a real `tescape serve`: green
while its database and capsule store answer, red (503, exit code 1) when the capsule store
directory is replaced by a file or the PostgreSQL server is stopped, green again once it is back.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from werkzeug.security import generate_password_hash

from gateway.tes.states import State
from tests.fixtures.postgres import PostgresServer, _as_postgres, _pg_bin, start_postgres
from tests.fixtures.server import RunningServer, tescape_server
from tests.fixtures.tasks import wait_for

TASK = {"name": "status-probe", "executors": [{"image": "busybox", "command": ["true"]}]}


def cli(srv: RunningServer, *args: str, token: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TESCAPE_")}
    env["TESCAPE_SERVER"] = srv.url
    env["COLUMNS"] = "120"
    if token:
        env["TESCAPE_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "status", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def get(srv: RunningServer, path: str, **kw: Any) -> requests.Response:
    return requests.get(srv.url + path, timeout=30, **kw)


@pytest.fixture
def store_server(tmp_path: Path) -> Iterator[tuple[RunningServer, Path]]:
    capsules = tmp_path / "capsules"
    config = {"capsules": {"store": str(capsules)}}
    with tescape_server(tmp_path / "data", config=config) as srv:
        yield srv, capsules


def test_status_document_and_cli(store_server: tuple[RunningServer, Path]) -> None:
    srv, capsules = store_server
    for _ in range(3):
        assert requests.post(srv.tes + "/tasks", json=TASK, timeout=10).status_code == 200
    resp = get(srv, "/api/v1/status")
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    installed = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "--version"], capture_output=True, text=True
    ).stdout
    assert doc["version"] in installed and doc["version"] != "0+unknown"
    assert doc["status"] == "ok"
    assert doc["database"]["status"] == "ok" and doc["database"]["detail"] == "sqlite"
    assert doc["capsule_store"] == {**doc["capsule_store"], "status": "ok"}
    assert doc["capsule_store"]["detail"] == f"file:{capsules}"
    assert doc["provider"]["status"] == "disabled"  # the test server runs no scheduler
    assert doc["tasks"]["by_state"][State.QUEUED.value] == 3
    assert set(doc["tasks"]["by_state"]) == {s.value for s in State}
    assert doc["tasks"]["total"] == 3
    assert doc["queue"]["depth"] == 3 and doc["queue"]["oldest_seconds"] >= 0
    assert doc["queue"]["latency"]["placements"] == 0  # nothing placed: no scheduler
    assert doc["instances"] == {"by_state": {}, "total": 0, "live_attempts": 0}
    assert doc["checkpoints"] == {"succeeded": 0, "failed": 0, "success_rate": None}
    assert doc["restores"] == {"succeeded": 0, "failed": 0, "success_rate": None}
    assert not list(capsules.rglob("*probe*/*"))  # the probe leaves no object behind
    # service-info reports the same version
    assert get(srv, "/ga4gh/tes/v1/service-info").json()["version"] == doc["version"]

    as_json = cli(srv, "--json")
    assert as_json.returncode == 0, as_json.stderr
    printed = json.loads(as_json.stdout)
    assert set(printed) == set(doc) and printed["tasks"] == doc["tasks"]
    table = cli(srv)
    assert table.returncode == 0, table.stderr
    for words in ("database", "capsule store", "queue depth", "QUEUED 3", "checkpoints"):
        assert words in table.stdout, table.stdout

    assert get(srv, "/readyz").json()["status"] == "ok"
    assert get(srv, "/healthz").status_code == 200


def test_an_unusable_capsule_store_turns_readiness_red_and_back(
    store_server: tuple[RunningServer, Path],
) -> None:
    srv, capsules = store_server
    assert get(srv, "/readyz").status_code == 200
    # the store's directory replaced by a file: nothing can be written under it (even as root)
    moved = capsules.with_name("capsules.away")
    capsules.rename(moved)
    capsules.write_text("not a directory")
    try:
        ready = get(srv, "/readyz")
        assert ready.status_code == 503, ready.text
        body = ready.json()
        assert body["status"] == "fail" and body["database"]["status"] == "ok"
        assert body["capsule_store"]["status"] == "fail" and body["capsule_store"]["detail"]
        status = get(srv, "/api/v1/status")
        assert status.status_code == 503 and status.json()["status"] == "fail"
        assert status.json()["tasks"]["total"] == 0  # the counts still come (the database is up)
        out = cli(srv)
        assert out.returncode == 1 and "fail" in out.stdout, out.stdout + out.stderr
        assert get(srv, "/healthz").status_code == 200  # alive, just not ready
    finally:
        capsules.unlink()
        moved.rename(capsules)
    assert get(srv, "/readyz").status_code == 200
    assert cli(srv, "--json").returncode == 0


@pytest.mark.postgres
def test_a_stopped_database_turns_readiness_red(tmp_path: Path) -> None:
    """A PostgreSQL server of its own, stopped under the running gateway."""
    pg: PostgresServer = start_postgres()
    try:
        url = pg.create_database("readyz")
        with tescape_server(tmp_path / "data", db_url=url) as srv:
            assert get(srv, "/readyz").status_code == 200
            assert get(srv, "/api/v1/status").json()["database"]["detail"] == "postgresql"
            _as_postgres(
                [_pg_bin("pg_ctl"), "-D", str(pg.directory / "data"), "-m", "fast", "-w", "stop"]
            )
            # (a Response is falsy when its status is an error: wrap it)
            [ready] = wait_for(
                "readyz to fail",
                lambda: [r] if (r := get(srv, "/readyz")).status_code == 503 else [],
                timeout=20,
            )
            assert ready.json()["database"]["status"] == "fail"
            assert ready.json()["capsule_store"]["status"] == "ok"
            status = get(srv, "/api/v1/status")
            assert status.status_code == 503
            doc = status.json()
            assert doc["status"] == "fail" and "tasks" not in doc  # no counts without a database
            out = cli(srv, "--json")
            assert out.returncode == 1 and json.loads(out.stdout)["database"]["status"] == "fail"
            assert get(srv, "/healthz").status_code == 200
    finally:
        pg.stop()


def test_status_needs_credentials_readyz_does_not(tmp_path: Path) -> None:
    config = {
        "auth": {
            "mode": "basic",
            "users": [{"name": "ann", "password_hash": generate_password_hash("pw")}],
        }
    }
    with tescape_server(tmp_path / "data", config=config) as srv:
        assert get(srv, "/api/v1/status").status_code == 401
        assert get(srv, "/readyz").status_code == 200
        creds = base64.b64encode(b"ann:pw").decode()
        ok = get(srv, "/api/v1/status", headers={"Authorization": f"Basic {creds}"})
        assert ok.status_code == 200 and ok.json()["status"] == "ok"
        assert cli(srv).returncode == 1  # no credentials: the CLI says so, and fails


def test_status_of_an_unreachable_server_fails_clearly(tmp_path: Path) -> None:
    srv = RunningServer("http://127.0.0.1:9", None, tmp_path)  # type: ignore[arg-type]
    out = cli(srv)
    assert out.returncode == 1 and "cannot reach" in out.stderr
    shutil.rmtree(tmp_path, ignore_errors=True)
