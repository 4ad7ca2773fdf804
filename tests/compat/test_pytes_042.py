"""py-tes 0.4.2 — what Snakemake's TES executor and Toil's TES plugin use — against a real
`tescape serve`, run in its own venv by `pytes042_driver.py`.

py-tes 0.4.2 knows only the pre-1.0 models: no `path_prefix`, `streamable`, `ignore_error`,
`backend_parameters`, no PREEMPTED/PAUSED/CANCELING, and the legacy service-info. It raises on
any key it does not know, so the driver finishing at all proves the response shapes; the asserts
below check what it read.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.pytes_venv import _pytes042_python  # noqa: F401 - the fixture
from tests.fixtures.server import RunningServer

DRIVER = Path(__file__).with_name("pytes042_driver.py")
SERVER_FIELDS = ("id", "state", "creation_time", "logs")


@pytest.fixture
def summary(pytes042_python: Path, server: RunningServer) -> dict[str, Any]:
    """Run the driver against a fresh server (SQLite and PostgreSQL) and parse its summary."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    done = subprocess.run(
        [str(pytes042_python), "-I", str(DRIVER), server.url],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, f"py-tes 0.4.2 failed:\n{done.stderr}\n{server.log()[-3000:]}"
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


def without_content(task: dict[str, Any]) -> dict[str, Any]:
    """The BASIC view of a task document: Input.content left out."""
    inputs = [{k: v for k, v in i.items() if k != "content"} for i in task["inputs"]]
    return {**task, "inputs": inputs}


def test_pytes_042_full_session(summary: dict[str, Any]) -> None:
    """py-tes 0.4.2 (Snakemake, Toil): legacy service-info, create, get_task and list_tasks in
    every view with paging, cancel — every response unmarshals and carries what was sent."""
    assert summary["version"] == "0.4.2"

    # legacy service-info (/v1/tasks/service-info): exactly the three keys 0.4.2 knows
    assert set(summary["service_info"]) <= {"name", "doc", "storage"}
    assert summary["service_info"]["name"]

    ids = summary["created"]
    assert len(set(ids)) == 5

    gets = summary["get"]
    assert gets["MINIMAL"] == {"id": ids[0], "state": "QUEUED"}
    sent = summary["sent"]
    for view in ("BASIC", "FULL"):
        got = dict(gets[view])
        assert got.pop("id") == ids[0] and got.pop("state") == "QUEUED"
        assert got.pop("creation_time")  # parsed by dateutil into a datetime
        assert got.pop("logs")
        assert got == (sent if view == "FULL" else without_content(sent)), view

    for view in ("MINIMAL", "BASIC", "FULL"):
        listing = summary["list"][view]
        assert listing == {"ids": list(reversed(ids)), "pages": 3}, view
    assert summary["list_full_first"]["executors"] == sent["executors"]

    assert {v: t["state"] for v, t in summary["after_cancel"].items()} == {
        "MINIMAL": "CANCELED",
        "BASIC": "CANCELED",
        "FULL": "CANCELED",
    }
    assert summary["states"] == ["CANCELED", "QUEUED", "QUEUED", "QUEUED", "QUEUED"]
