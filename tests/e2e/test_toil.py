"""Real Toil (7.0.0, `--batchSystem tes` from toil-batch-system-tes 2.0.0, py-tes 0.4.2) through a
real `tescape serve`: a small workflow (a root job, three children, a follow-on that adds their
results) with a **file job store inside a shared directory** (storage.shared_dirs).

How it works (read from the plugin's source): at start the plugin reads the legacy service-info
`storage` list; the job store's `file://` path starts with the shared directory's prefix, so
every task gets the job store as a DIRECTORY input at its own path, which tescape bind-mounts
read-write (never a copy). Each task runs `_toil_contained_executor` in the Toil appliance
(TOIL_APPLIANCE_SELF, built locally: tests/fixtures/toil_env.py), which loads the workflow
module (auto-deployed through the job store), runs the job and writes its results and the next
jobs back into the job store, where the leader on the host reads them.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.interruption import interrupt_task_instance, wait_running
from tests.fixtures.server import RunningServer, tescape_server
from tests.fixtures.tasks import events, wait_for
from tests.fixtures.toil_env import _toil_appliance, _toil_python  # noqa: F401

# a cold run installs Toil (a minute) and builds the appliance (a minute or two)
pytestmark = [pytest.mark.slow, pytest.mark.toil, pytest.mark.timeout(900)]

WORKFLOW = """\
from toil.common import Toil
from toil.job import Job

SMALL = {"cores": 1, "memory": "256M", "disk": "16M"}


def square(job, n):
    return n * n


def slow_square(job, n, seconds):
    import time

    deadline = time.monotonic() + seconds  # a job in the middle of its work when reclaimed
    while time.monotonic() < deadline:
        time.sleep(0.1)
    return n * n


def total(job, values):
    return sum(values)


def root(job, count, slow):
    squares = [job.addChildJobFn(square, n, **SMALL).rv() for n in range(1, count + 1)]
    if slow:
        squares.append(job.addChildJobFn(slow_square, count + 1, slow, **SMALL).rv())
    return job.addFollowOnJobFn(total, squares, **SMALL).rv()


if __name__ == "__main__":
    parser = Job.Runner.getDefaultArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--slow", type=float, default=0)
    options = parser.parse_args()
    with Toil(options) as workflow:
        result = workflow.start(Job.wrapJobFn(root, 3, options.slow, **SMALL))
    with open(options.out, "w") as out:
        out.write(f"{result}\\n")
"""


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("toil")


@pytest.fixture(scope="module")
def server(root: Path) -> Iterator[RunningServer]:
    (root / "shared").mkdir()
    config = {
        "storage": {"shared_dirs": [str(root / "shared")]},
        "scheduler": {"interval_seconds": 0.2},
        "capsules": {"store": str(root / "capsules"), "interval_seconds": 0},
        # Toil's worker holds file locks (its coordination files): CRIU dumps them only when
        # asked, and Toil cannot send backend_parameters, so a rule asks for every task
        "tasks": {"rules": [{"backend_parameters": {"file_locks": "true"}}]},
    }
    with tescape_server(root / "data", config=config, run_tasks=True) as srv:
        yield srv


def run_toil(
    server: RunningServer,
    root: Path,
    name: str,
    toil_python: Path,
    appliance: str,
    *extra: str,
) -> tuple[Path, subprocess.Popen[str]]:
    """Start the workflow (leader on this machine, jobs through TES); its result file and
    process."""
    workflow = root / name / "squares.py"  # its own folder: Toil ships the folder
    workflow.parent.mkdir()
    workflow.write_text(WORKFLOW)
    job_store = root / "shared" / name
    out = root / name / "result.txt"
    env = {
        **os.environ,
        "TOIL_APPLIANCE_SELF": appliance,
        "TOIL_TES_ENDPOINT": server.url,
        "HOME": str(root),  # no ~/.aws for the plugin to offer
    }
    cmd = [
        str(toil_python),
        str(workflow),
        f"file:{job_store}",
        "--batchSystem",
        "tes",
        "--out",
        str(out),
        "--logLevel",
        "INFO",
        *extra,
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=workflow.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return out, proc


def finish(server: RunningServer, proc: subprocess.Popen[str]) -> None:
    try:
        output, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output[-6000:] + server.log()[-4000:]


def tasks(server: RunningServer) -> list[dict[str, Any]]:
    answer = requests.get(f"{server.tes}/tasks", params={"view": "FULL"}, timeout=10)
    answer.raise_for_status()
    return list(answer.json().get("tasks", []))


def test_a_toil_workflow_runs_with_a_file_job_store_in_a_shared_dir(
    server: RunningServer, root: Path, toil_python: Path, toil_appliance: str
) -> None:
    out, proc = run_toil(server, root, "plain", toil_python, toil_appliance)
    finish(server, proc)
    assert out.read_text() == "14\n"  # 1 + 4 + 9
    job_store = str(root / "shared" / "plain")
    mine = [t for t in tasks(server) if t.get("inputs", [{}])[0].get("path") == job_store]
    assert len(mine) == 5  # root, three children, the follow-on
    for task in mine:  # the job store, mounted at its own path: never a copy
        mount = {"url": f"file://{job_store}", "path": job_store, "type": "DIRECTORY"}
        assert task["inputs"] == [mount]
        assert task["state"] == "COMPLETE"


def test_a_toil_job_survives_a_spot_reclaim(
    server: RunningServer, root: Path, toil_python: Path, toil_appliance: str
) -> None:
    out, proc = run_toil(server, root, "reclaim", toil_python, toil_appliance, "--slow", "20")
    try:

        def slow_job() -> str | None:
            listed = requests.get(
                f"{server.tes}/tasks",
                params={"name_prefix": "'slow_square'", "state": "RUNNING"},
                timeout=10,
            ).json()
            found = listed.get("tasks", [])
            return str(found[0]["id"]) if found else None

        task_id = wait_for("the slow Toil job to run", slow_job, timeout=300, srv=server)
        wait_running(server, task_id)

        def in_its_job() -> bool:  # the worker has started the job's function by then
            [log] = requests.get(f"{server.tes}/tasks/{task_id}?view=FULL", timeout=10).json()[
                "logs"
            ]
            started = datetime.fromisoformat(log["logs"][0]["start_time"])
            return (datetime.now(UTC) - started).total_seconds() > 5

        wait_for("the slow job to be 5 s into its run", in_its_job, timeout=60, srv=server)
        victim = interrupt_task_instance(server, task_id, notice_seconds=10)
    finally:
        finish(server, proc)
    assert out.read_text() == "30\n"  # 1 + 4 + 9 + 16
    attempts = requests.get(f"{server.url}/api/v1/tasks/{task_id}/attempts", timeout=10).json()
    reasons = [a["reason"] for a in attempts["attempts"]]
    assert reasons == ["first", "reclaim"], attempts
    assert attempts["attempts"][-1]["instance_id"] != victim
    [log] = requests.get(f"{server.tes}/tasks/{task_id}?view=FULL", timeout=10).json()["logs"]
    why = "\n".join(log.get("system_logs", [])) + str(events(server, task_id))[-3000:]
    assert log["metadata"]["restores"] == "1", why  # from its capsule, not from scratch
