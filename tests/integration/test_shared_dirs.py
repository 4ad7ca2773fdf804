"""storage.shared_dirs for real: a task whose input names a directory of a shared directory at its
own path gets it bind-mounted read-write (podman), writes into it in place while it runs (a file
held open, as Toil's worker holds its job store files), is checkpointed with CRIU, moved to
another local instance and restored there with the same mount; a file the test writes into the
shared directory after the move is seen by the restored task, and what the task wrote comes back
in the same directory, never through a copy. What the task wrote there between the checkpoint's
dump and its stop is written again by the restored task (docs/toil-and-cwl-tes.md)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.fixtures.server import RunningServer, tescape_server
from tests.fixtures.tasks import admin, ended, get, submit, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="CRIU needs root")

# counts into a file held open in the shared directory until the test's gate file appears there
COUNTER = r"""
set -e
exec 3>>"$1/log"
i=0
while [ $i -lt 10 ] || [ ! -e "$1/go" ]; do
  i=$((i + 1))
  echo "$i" >&3
  sleep 0.1
done
exec 3>&-
echo "done $i" > "$1/result"
"""


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("shared")


@pytest.fixture(scope="module")
def server(root: Path, busybox_image: str) -> Iterator[RunningServer]:
    (root / "shared").mkdir()
    config = {
        "images": {"rewrites": {"alpine": busybox_image}},
        "storage": {"shared_dirs": [str(root / "shared")]},
        "scheduler": {"interval_seconds": 0.2},
        "providers": {"local": {"max_instances": 1}},
        "capsules": {"store": str(root / "capsules"), "interval_seconds": 0},
    }
    with tescape_server(root / "data", config=config, run_tasks=True) as srv:
        yield srv


def lines(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except FileNotFoundError:
        return []


def test_service_info_lists_the_shared_dir(server: RunningServer, root: Path) -> None:
    info = requests.get(f"{server.url}/v1/tasks/service-info", timeout=10).json()
    assert info["storage"] == [f"file://{root / 'shared'}"]


def test_a_shared_mount_is_written_in_place_and_survives_a_move(
    server: RunningServer, root: Path
) -> None:
    js = root / "shared" / "jobstore"
    js.mkdir()
    task = {
        "name": "shared-move",
        "inputs": [{"url": f"file://{js}", "path": str(js), "type": "DIRECTORY"}],
        "outputs": [{"url": f"file://{js}/result", "path": f"{js}/result", "type": "FILE"}],
        "executors": [{"image": "alpine", "command": ["sh", "-c", COUNTER, "counter", str(js)]}],
    }
    task_id = submit(server, task)
    wait_for("the count to pass 5 in place", lambda: len(lines(js / "log")) >= 5, srv=server)
    first = admin(server, "GET", f"/tasks/{task_id}/attempts").json()["attempts"][-1]
    # the capsule's workspace holds the task's own tree only: the shared data is not in it
    tree = root / "data" / "instances"
    assert not any(tree.glob(f"**/{task_id}/work/fs{js}"))
    resp = admin(server, "POST", f"/tasks/{task_id}:migrate")
    assert resp.status_code == 202, resp.text

    def restored() -> bool:
        attempts = admin(server, "GET", f"/tasks/{task_id}/attempts").json()["attempts"]
        return len(attempts) == 2 and attempts[-1]["phase"] == "RUNNING"

    wait_for("the restored attempt to run", restored, srv=server)
    before = len(lines(js / "log"))
    wait_for("the count to go on", lambda: len(lines(js / "log")) > before + 3, srv=server)
    (js / "go").touch()  # written on the host: the restored task must see it through its mount
    done = ended(server, task_id)
    assert done["state"] == "COMPLETE", json.dumps(done, indent=1) + server.log()[-4000:]
    count = [int(n) for n in lines(js / "log")]
    last = count[-1]
    # went on from the checkpoint, never from 1; what the source wrote between its dump and its
    # stop (the move leaves it running until the capsule is stored) is written again
    assert count.count(1) == 1 and sorted(set(count)) == list(range(1, last + 1))
    assert (js / "result").read_text() == f"done {last}\n"
    attempts = admin(server, "GET", f"/tasks/{task_id}/attempts").json()["attempts"]
    assert attempts[0]["id"] == first["id"] and len(attempts) == 2
    assert attempts[0]["instance_id"] != attempts[1]["instance_id"]
    [log] = get(server, task_id, "FULL")["logs"]
    assert log["metadata"]["restores"] == "1"
    [output] = log["outputs"]
    assert (output["url"], output["path"]) == (f"file://{js}/result", f"{js}/result")
