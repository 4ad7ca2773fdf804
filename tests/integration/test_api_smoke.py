"""The API against a real server process, on SQLite and on a real PostgreSQL."""

import requests

from tests.fixtures.server import RunningServer

TASK = {"name": "smoke", "executors": [{"image": "alpine", "command": ["true"]}]}


def test_create_get_cancel(server: RunningServer) -> None:
    created = requests.post(server.tes + "/tasks", json=TASK, timeout=10)
    assert created.status_code == 200, created.text
    task_id = created.json()["id"]
    got = requests.get(f"{server.tes}/tasks/{task_id}", timeout=10).json()
    assert got == {"id": task_id, "state": "QUEUED"}
    assert requests.post(f"{server.tes}/tasks/{task_id}:cancel", timeout=10).json() == {}
    full = requests.get(f"{server.tes}/tasks/{task_id}?view=FULL", timeout=10).json()
    assert full["state"] == "CANCELED"
    assert full["executors"] == TASK["executors"]
