"""A workflow in Cromwell's shape (the Cromwell TES replay harness) through a real `tescape serve`
and real containers: an http input from a loopback server, a scatter whose shards produce globs
(hard-linked into glob directories inside the container), a gather over all shards' files, cost
metadata that lets Cromwell stop polling FULL, and a failing command whose task is COMPLETE with
rc ≠ 0 — a failure Cromwell finds only in the `rc` file — and a Spot reclaim while a shard runs."""

from __future__ import annotations

import re
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from cromwell_backend.client import CromwellTesClient
from cromwell_backend.harness import Backoff, Call, Glob, Hooks, JobResult, Out, TaskDef, Workflow
from tests.e2e.conftest import FileServer
from tests.e2e.interruption import instance_of, interrupt_task_instance, reclaimed
from tests.fixtures.server import RunningServer

pytestmark = pytest.mark.slow

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")

FETCH = TaskDef(
    "fetch",
    "cat ~{remote} ~{local} > lines.txt\nsplit -l 2 lines.txt part_",
    outputs={"lines": "lines.txt", "parts": Glob("part_*")},
)
WORDS = TaskDef(
    "words",
    'for w in $(cat ~{part}); do echo "$w" > "word_$w.txt"; done',
    outputs={"words": Glob("word_*.txt")},
)
GATHER = TaskDef(
    "gather",
    "cat ~{words} | sort > sorted.txt\nwc -l < sorted.txt > n.txt\nsleep 1",
    outputs={"sorted": "sorted.txt", "n": "n.txt"},
)


def workflow(server: RunningServer, root: Path, **kw: object) -> Workflow:
    client = CromwellTesClient(server.url + "/v1/tasks")
    return Workflow(
        "wf",
        root=root,
        client=client,
        poll_backoff=Backoff(min=0.2, max=1.0, multiplier=1.1),
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def cromwell_root(e2e_root: Path) -> Path:
    return e2e_root / f"cromwell-{uuid.uuid4().hex[:8]}"


def calls(http_files: FileServer, e2e_root: Path) -> list[Call]:
    (http_files.root / "remote.txt").write_text("alpha beta\ngamma\n")
    local = e2e_root / "inputs" / "local.txt"
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_text("delta epsilon\nzeta\n")
    return [
        Call(FETCH, inputs={"remote": f"{http_files.url}/remote.txt", "local": str(local)}),
        Call(WORDS, scatter=("part", Out("fetch", "parts"))),
        Call(GATHER, inputs={"words": Out("words", "words")}),
    ]


def test_scatter_with_globs_and_http_input(
    e2e_server: RunningServer, http_files: FileServer, e2e_root: Path, cromwell_root: Path
) -> None:
    wf = workflow(e2e_server, cromwell_root)
    run = wf.run(calls(http_files, e2e_root), timeout=300)
    assert run.status == "Succeeded", run.failures

    fetch = run.job("fetch")
    assert Path(fetch.outputs["lines"]).read_text().split() == [
        "alpha", "beta", "gamma", "delta", "epsilon", "zeta"
    ]  # fmt: skip
    parts = fetch.outputs["parts"]
    assert [Path(p).name for p in parts] == ["part_aa", "part_ab"]
    # globs: the files sit in glob-<md5>/ and are listed in glob-<md5>.list, both uploaded
    assert all(Path(p).parent.name.startswith("glob-") for p in parts)

    shards = run.shards("words")
    assert [s.shard for s in shards] == [0, 1]
    assert {Path(w).name for s in shards for w in s.outputs["words"]} == {
        f"word_{w}.txt" for w in ("alpha", "beta", "gamma", "delta", "epsilon", "zeta")
    }
    assert all("/call-words/shard-" in str(s.execution_dir) for s in shards)

    gather = run.job("gather")
    assert Path(gather.outputs["n"]).read_text().strip() == "6"
    assert Path(gather.outputs["sorted"]).read_text().split()[0] == "alpha"

    for job in run.jobs:
        assert job.return_code == 0 and job.state == "COMPLETE"
        assert_cost_metadata(job)
    # the http input kept host:port in its container path, as Cromwell maps it
    netloc = http_files.url.removeprefix("http://")
    assert fetch.execution_dir is not None
    assert (fetch.execution_dir / "script").read_text().count(f"/inputs/{netloc}/remote.txt") == 1


def assert_cost_metadata(job: JobResult) -> None:
    """Cromwell reads logs[0].metadata.vm_price_per_hour_usd and logs[0].start_time; once both
    are there it polls MINIMAL instead of FULL."""
    assert job.vm_price_per_hour_usd is not None
    assert float(job.vm_price_per_hour_usd) >= 0
    assert job.start_time is not None and RFC3339.match(job.start_time), job.start_time
    assert job.end_time is not None and RFC3339.match(job.end_time)
    assert job.polls[0] == "FULL"
    first_minimal = job.polls.index("MINIMAL") if "MINIMAL" in job.polls else len(job.polls)
    assert "FULL" not in job.polls[first_minimal:]


def test_gather_polls_minimal_once_cost_is_known(
    e2e_server: RunningServer, cromwell_root: Path
) -> None:
    slow = TaskDef("slow", "sleep 3; echo done > done.txt", outputs={"done": "done.txt"})
    run = workflow(e2e_server, cromwell_root).run([Call(slow)], timeout=120)
    assert run.status == "Succeeded", run.failures
    job = run.job("slow")
    assert_cost_metadata(job)
    assert "MINIMAL" in job.polls, job.polls


def test_failing_command_is_complete_with_rc(
    e2e_server: RunningServer, cromwell_root: Path
) -> None:
    fail = TaskDef("fail", "echo 'partial' > partial.txt\necho oops >&2\nexit 3")
    ok = TaskDef("after", "echo never > never.txt", outputs={"x": "never.txt"})
    wf = workflow(e2e_server, cromwell_root)
    run = wf.run([Call(fail), Call(ok, inputs={"dep": Out("fail", "missing")})], timeout=120)

    assert run.status == "Failed"
    job = run.job("fail")
    assert job.state == "COMPLETE"  # the executor exited 0: the script ends with `mv rc.tmp rc`
    assert job.return_code == 3
    assert job.error is not None and "exited with return code 3" in job.error
    assert job.execution_dir is not None
    assert (job.execution_dir / "stderr").read_text() == "oops\n"
    assert (job.execution_dir / "rc").read_text().strip() == "3"
    assert [j.call for j in run.jobs] == ["fail"]  # NoNewCalls: `after` never started


def test_scatter_survives_instance_interruption(
    e2e_server: RunningServer, http_files: FileServer, e2e_root: Path, cromwell_root: Path
) -> None:
    """A Spot reclaim while a shard runs: Cromwell sees RUNNING → COMPLETE, rc 0, same outputs;
    the script's FIFOs and background tees are checkpointed and restored with it."""
    interrupted: dict[str, str] = {}

    def reclaim_first_shard(job: JobResult) -> None:
        if job.call == "words" and not interrupted and job.task_id:
            interrupted[job.task_id] = interrupt_task_instance(e2e_server, job.task_id)

    slow_words = replace(
        WORDS,
        command='for w in $(cat ~{part}); do echo "$w" > "word_$w.txt"; sleep 3; done',
    )
    flow = calls(http_files, e2e_root)
    flow[1] = replace(flow[1], task=slow_words)
    wf = workflow(e2e_server, cromwell_root, hooks=Hooks(on_started=reclaim_first_shard))
    run = wf.run(flow, timeout=300)
    assert run.status == "Succeeded", run.failures
    # every task on the reclaimed instance was moved (a shard that ended while others were
    # being checkpointed simply finished there)
    [victim] = interrupted.values()
    moved = [j.task_id for j in run.jobs if j.task_id and reclaimed(e2e_server, j.task_id)]
    assert moved, "no task was restored from a capsule"
    assert all(instance_of(e2e_server, t) != victim for t in moved)
    assert all(j.return_code == 0 and j.state == "COMPLETE" for j in run.jobs)
    assert Path(run.job("gather").outputs["n"]).read_text().strip() == "6"


def test_system_error_fails_the_call_with_system_logs(
    e2e_server: RunningServer, cromwell_root: Path
) -> None:
    """An input inside storage.allowed_dirs that is gone when the agent stages it."""
    peek = TaskDef("peek", "cat ~{secret}")
    run = workflow(e2e_server, cromwell_root).run(
        [Call(peek, inputs={"secret": str(cromwell_root / "gone.txt")})], timeout=120
    )
    job = run.job("peek")
    assert run.status == "Failed" and job.state == "SYSTEM_ERROR"
    assert job.error is not None and "SYSTEM_ERROR" in job.error and "staging" in job.error


def test_a_path_outside_allowed_dirs_fails_the_call_at_submission(
    e2e_server: RunningServer, cromwell_root: Path
) -> None:
    """An input outside storage.allowed_dirs is refused at create (400 naming the field)."""
    peek = TaskDef("peek", "cat ~{secret}")
    run = workflow(e2e_server, cromwell_root).run(
        [Call(peek, inputs={"secret": "/etc/hostname"})], timeout=120
    )
    job = run.job("peek")
    assert run.status == "Failed" and job.task_id is None
    assert job.error is not None and "submit failed" in job.error
    assert "outside the directories tasks may use" in job.error
