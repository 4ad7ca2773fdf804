"""Issue 10: a task's local paths never reach tescape's own state or code, even when
storage.allowed_dirs is the whole file system; refused at create with a 400 that names the field.
(What the agent refuses while staging, and the state's file modes: test_execution.py.)"""

from __future__ import annotations

import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

import gateway
from tests.fixtures.server import RunningServer, tescape_server

REPO = Path(gateway.__file__).resolve().parent.parent
EX = [{"image": "alpine", "command": ["true"]}]


@pytest.fixture
def everything_allowed(tmp_path: Path) -> Iterator[RunningServer]:
    config = {"storage": {"allowed_dirs": ["/"]}}
    with tescape_server(tmp_path / "data", config=config) as srv:
        yield srv


def create(srv: RunningServer, inputs: list[dict], outputs: list[dict]) -> requests.Response:
    body = {"inputs": inputs, "outputs": outputs, "executors": EX}
    return requests.post(srv.tes + "/tasks", json=body, timeout=10)


def test_state_and_code_are_refused_under_an_allowed_root(
    everything_allowed: RunningServer, tmp_path: Path
) -> None:
    data = everything_allowed.data_dir
    forbidden_inputs = [
        f"file://{data}/tescape.db",
        str(data / "secret.key"),
        f"file://{data}/../data/logs/",
        f"file://{data}/capsules/",
        str(REPO / "gateway" / "config.py"),
    ]
    forbidden_outputs = [
        str(REPO / "gateway" / "__init__.py"),  # an output over the project's own code
        f"file://{data}/tescape.db-wal",
        str(Path(sys.prefix) / "pyvenv.cfg"),
    ]
    resp = create(
        everything_allowed,
        [{"url": u, "path": f"/in/{i}"} for i, u in enumerate(forbidden_inputs)],
        [{"url": u, "path": f"/out/{i}"} for i, u in enumerate(forbidden_outputs)],
    )
    assert resp.status_code == 400 and resp.headers["Content-Type"] == "application/json"
    body = resp.json()
    fields = [e["field"] for e in body["errors"]]
    expected = [f"inputs[{i}].url" for i in range(len(forbidden_inputs))]
    expected += [f"outputs[{i}].url" for i in range(len(forbidden_outputs))]
    if sys.prefix == sys.base_prefix:  # not in a virtualenv: that python is no state of ours
        expected.remove(f"outputs[{len(forbidden_outputs) - 1}].url")
    assert fields == expected, body
    assert all("tescape's own state or code" in e["message"] for e in body["errors"])
    assert "inputs[0].url" in body["message"]

    # the same server takes a path that is not its own
    ok = create(
        everything_allowed,
        [{"url": f"file://{tmp_path}/in.txt", "path": "/in/x"}],
        [{"url": str(tmp_path / "out.txt"), "path": "/out/x"}],
    )
    assert ok.status_code == 200, ok.text


def test_a_directory_holding_the_state_is_refused(
    everything_allowed: RunningServer, tmp_path: Path
) -> None:
    resp = create(
        everything_allowed,
        [{"url": f"file://{tmp_path}/", "path": "/in", "type": "DIRECTORY"}],
        [{"url": "/", "path": "/out/", "type": "DIRECTORY"}],
    )
    assert resp.status_code == 400
    errors = {e["field"]: e["message"] for e in resp.json()["errors"]}
    assert set(errors) == {"inputs[0].url", "outputs[0].url"}
    assert all("contains" in m for m in errors.values()), errors


def test_no_local_paths_without_allowed_dirs(tmp_path: Path) -> None:
    with tescape_server(tmp_path / "data") as srv:
        resp = create(srv, [{"url": f"file://{tmp_path}/x", "path": "/in/x"}], [])
        assert resp.status_code == 400
        [error] = resp.json()["errors"]
        assert error["field"] == "inputs[0].url"
        assert "none are configured" in error["message"]
        assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
        assert stat.S_IMODE((tmp_path / "data" / "tescape.db").stat().st_mode) == 0o600
