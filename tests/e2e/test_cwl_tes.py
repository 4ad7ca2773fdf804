"""Real cwl-tes (0.3.0, cwltool 1.0.20191022103248, py-tes 0.4.2; installed as
tests/fixtures/cwltes_env.py says) through a real `tescape serve`: a CWL workflow that scatters
one step over three words and gathers their outputs in a second step, with a Spot reclaim of the
instance of one scattered job while it runs — the job moves in a capsule and cwl-tes never
notices.

What cwl-tes sends (read from its source and seen here): ordinary TES tasks with `file://`
inputs under /var/lib/cwl/stg…, one DIRECTORY output (the job's work dir, at a random top-level
container path) to a `file://` temporary directory beside the workflow, and `workdir` set; it
polls `GET /v1/tasks/{id}` until a terminal state. So the work area lies in
`storage.allowed_dirs`; nothing else is needed.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.e2e.interruption import interrupt_task_instance
from tests.fixtures.cwltes_env import _cwl_tes  # noqa: F401
from tests.fixtures.server import RunningServer, tescape_server
from tests.fixtures.tasks import get

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SHOUT = """\
cwlVersion: v1.0
class: CommandLineTool
requirements:
  DockerRequirement:
    dockerPull: alpine
baseCommand: [sh, -c]
arguments: ["sleep $(inputs.seconds); echo $(inputs.word) | tr a-z A-Z > shout.txt"]
inputs:
  word: string
  seconds: int
outputs:
  out:
    type: File
    outputBinding:
      glob: shout.txt
"""

JOIN = """\
cwlVersion: v1.0
class: CommandLineTool
requirements:
  DockerRequirement:
    dockerPull: alpine
baseCommand: [cat]
inputs:
  parts:
    type: File[]
    inputBinding: {}
stdout: joined.txt
outputs:
  joined:
    type: stdout
"""

WORKFLOW = """\
cwlVersion: v1.0
class: Workflow
requirements:
  ScatterFeatureRequirement: {}
inputs:
  words: string[]
  seconds: int
outputs:
  joined:
    type: File
    outputSource: join/joined
steps:
  shout:
    run: shout.cwl
    scatter: word
    in:
      word: words
      seconds: seconds
    out: [out]
  join:
    run: join.cwl
    in:
      parts: shout/out
    out: [joined]
"""

INPUTS = """\
words: [alpha, beta, gamma]
seconds: 15
"""


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cwl-tes")


@pytest.fixture(scope="module")
def server(root: Path, busybox_image: str) -> Iterator[RunningServer]:
    config = {
        "images": {"rewrites": {"alpine": busybox_image}},
        "storage": {"allowed_dirs": [str(root / "work")]},
        "scheduler": {"interval_seconds": 0.2},
        "capsules": {"interval_seconds": 0},
    }
    with tescape_server(root / "data", config=config, run_tasks=True) as srv:
        yield srv


class Reclaimer(threading.Thread):
    """Reclaims the instance of the first scattered job seen RUNNING (a Spot notice; the
    instance dies at the deadline)."""

    def __init__(self, server: RunningServer):
        super().__init__(daemon=True)
        self.server = server
        self.stop = threading.Event()
        self.victim: tuple[str, str] | None = None  # (task id, instance id)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set() and self.victim is None:
                listed = requests.get(
                    f"{self.server.tes}/tasks",
                    params={"name_prefix": "shout", "state": "RUNNING"},
                    timeout=10,
                ).json()
                for task in listed.get("tasks", []):
                    instance = interrupt_task_instance(self.server, task["id"], 10)
                    self.victim = (task["id"], instance)
                    return
                self.stop.wait(0.2)
        except BaseException as exc:  # reported by the test
            self.error = exc


def test_a_scatter_workflow_survives_a_reclaim(
    server: RunningServer, root: Path, cwl_tes: Path
) -> None:
    work = root / "work"
    work.mkdir()
    for name, text in (
        ("shout.cwl", SHOUT),
        ("join.cwl", JOIN),
        ("scatter.cwl", WORKFLOW),
        ("inputs.yml", INPUTS),
    ):
        (work / name).write_text(text)
    reclaim = Reclaimer(server)
    reclaim.start()
    try:
        done = subprocess.run(
            [
                str(cwl_tes),
                "--tes",
                server.url,
                "--parallel",
                "--outdir",
                str(work / "out"),
                "scatter.cwl",
                "inputs.yml",
            ],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        reclaim.stop.set()
        reclaim.join(timeout=30)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:] + server.log()[-3000:]
    assert (work / "out" / "joined.txt").read_text() == "ALPHA\nBETA\nGAMMA\n"
    assert reclaim.error is None, reclaim.error
    assert reclaim.victim is not None, "no scattered job was seen running to reclaim"
    task_id, victim = reclaim.victim
    attempts = requests.get(f"{server.url}/api/v1/tasks/{task_id}/attempts", timeout=10).json()
    assert [a["reason"] for a in attempts["attempts"]] == ["first", "reclaim"], attempts
    assert attempts["attempts"][-1]["instance_id"] != victim
    [log] = get(server, task_id)["logs"]
    assert log["metadata"]["restores"] == "1", log.get("system_logs")  # from its capsule
