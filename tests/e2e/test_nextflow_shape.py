"""A multi-step pipeline in Nextflow's shape (the nf-ga4gh replay harness) through a real
`tescape serve` and real containers: inputs, glob outputs with path_prefix, a directory output
consumed by the next step, a bin script at its host path, per-file fan-out and collection, a work
dir on local disk or S3, a failing process reported as Nextflow reports it, and a Spot reclaim
in the middle of the pipeline that Nextflow never notices."""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from nextflow_plugin_shim.client import NfTesClient
from nextflow_plugin_shim.harness import (
    FileOut,
    Files,
    Hooks,
    Pipeline,
    PipelineRun,
    Process,
    Step,
    TaskResult,
)
from nextflow_plugin_shim.storage import WorkStore, join
from tests.e2e.interruption import instance_of, interrupt_task_instance, reclaimed
from tests.fixtures.seaweedfs import SeaweedS3
from tests.fixtures.server import RunningServer

pytestmark = pytest.mark.slow

NUMBERS = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]  # squares sum to 207

SPLIT = Process(
    "SPLIT", "split -l 4 numbers.txt chunk_", container="ubuntu", outputs=(FileOut("chunk_*"),)
)
SQUARE = Process(
    "SQUARE",
    "while read n; do echo $((n * n)); done < !{each} > !{each}.sq",
    container="ubuntu",
    outputs=(FileOut("*.sq"),),
)
REPORT = Process(
    "REPORT",
    """
    summarise.sh *.sq > total.txt
    mkdir -p report/parts
    cp *.sq report/parts/
    echo "squares of $(ls *.sq | wc -l) chunks" > report/README
    echo "report written"
    """,
    container="ubuntu",
    outputs=(FileOut("total.txt"), FileOut("report", type="dir")),
    memory_gb=0.5,
)
CHECK = Process(
    "CHECK",
    "ls report/parts | wc -l > parts.txt; cat report/README",
    container="ubuntu",
    outputs=(FileOut("parts.txt"),),
)


def pipeline_steps(numbers: Path) -> list[Step]:
    return [
        Step(SPLIT, inputs={"numbers.txt": str(numbers)}),
        Step(SQUARE, each=Files("SPLIT", "chunk_*")),
        Step(REPORT, collect=[Files("SQUARE", "*.sq")]),
        Step(CHECK, collect=[Files("REPORT", "report")]),
    ]


@pytest.fixture
def project(e2e_root: Path) -> Path:
    """A pipeline project: its input data and a bin/ directory of scripts."""
    root = e2e_root / f"nf-{uuid.uuid4().hex[:8]}"
    (root / "bin").mkdir(parents=True)
    script = root / "bin" / "summarise.sh"
    script.write_text('#!/bin/bash\ns=0; for n in $(cat "$@"); do s=$((s + n)); done; echo $s\n')
    script.chmod(0o755)
    (root / "numbers.txt").write_text("".join(f"{n}\n" for n in NUMBERS))
    return root


@pytest.fixture(params=["local", "s3"])
def work(request: pytest.FixtureRequest, project: Path) -> tuple[str, WorkStore]:
    if request.param == "local":
        return str(project / "work"), WorkStore()
    seaweedfs: SeaweedS3 = request.getfixturevalue("seaweedfs")
    bucket: str = request.getfixturevalue("e2e_bucket")
    return f"s3://{bucket}/{project.name}/work", WorkStore(seaweedfs.client())


def make_pipeline(
    server: RunningServer, work_dir: str, store: WorkStore, project: Path, **kw: object
) -> Pipeline:
    client = NfTesClient(server.url)
    return Pipeline(
        client,
        work_dir,
        store,
        bin_dir=project / "bin",
        queue_size=4,
        poll_interval=0.2,
        **kw,  # type: ignore[arg-type]
    )


def test_pipeline_runs_like_nextflow(
    e2e_server: RunningServer, project: Path, work: tuple[str, WorkStore]
) -> None:
    work_dir, store = work
    pipeline = make_pipeline(e2e_server, work_dir, store, project, legacy_exit_read=True)
    run = pipeline.run(pipeline_steps(project / "numbers.txt"), timeout=300)
    run.raise_for_error()

    [split] = run.of("SPLIT")
    chunks = split.outputs["chunk_*"]
    assert [Path(c).name for c in chunks] == ["chunk_aa", "chunk_ab", "chunk_ac"]
    # glob outputs land in the task's work dir (url = work dir, path_prefix = /work)
    assert all(c.startswith(split.work_dir) for c in chunks)
    assert store.read_text(chunks[2]) == "5\n3\n"

    squares = run.of("SQUARE")
    assert len(squares) == 3 and {t.name for t in squares} == {f"SQUARE ({i})" for i in (1, 2, 3)}
    [report] = run.of("REPORT")
    assert store.read_text(report.outputs["total.txt"][0]).strip() == "207"
    report_dir = report.outputs["report"][0]
    assert store.list_files(report_dir) == [
        "README",
        "parts/chunk_aa.sq",
        "parts/chunk_ab.sq",
        "parts/chunk_ac.sq",
    ]
    assert report.stdout == "report written\n"
    [check] = run.of("CHECK")
    assert store.read_text(check.outputs["parts.txt"][0]).strip() == "3"
    assert check.stdout.startswith("squares of")

    for task in run.tasks:
        assert task.state == "COMPLETE" and task.exit_status == 0, task
        assert task.exitcode_file == "0"
        assert store.is_file(join(task.work_dir, ".command.log"))
    assert_polled_like_nextflow(pipeline, run)


def assert_polled_like_nextflow(pipeline: Pipeline, run: PipelineRun) -> None:
    """Polls carry no view; each task is read with FULL exactly once, at the end."""
    reqs = pipeline.client.requests
    creates = [r for r in reqs if r.method == "POST" and r.path == "/v1/tasks"]
    fulls = [r for r in reqs if r.view == "FULL"]
    polls = [r for r in reqs if r.method == "GET" and r.view is None]
    assert len(creates) == len(run.tasks) == len(fulls)
    assert polls and all(r.status == 200 for r in reqs)


def test_bin_scripts_are_inputs_at_their_host_path(
    e2e_server: RunningServer, project: Path
) -> None:
    """nf-ga4gh's remote bin dir: each script is an input at the very path .command.run copies
    from (the host path for a local work dir)."""
    pipeline = make_pipeline(e2e_server, str(project / "work"), WorkStore(), project)
    pipeline.upload_bin_dir()
    step = Step(REPORT, collect=[])
    result = TaskResult("REPORT (1)", "REPORT", 1, str(project / "work" / "ab" / "cd"))
    body = pipeline.task_body(step, result, {})
    [bin_input] = [i for i in body["inputs"] if i["path"].endswith("/bin/summarise.sh")]
    assert bin_input["path"] == bin_input["url"]
    assert bin_input["path"].startswith(str(project / "work" / "tmp"))
    assert body["resources"] == {"cpu_cores": 1, "ram_gb": 0.5, "backend_parameters_strict": False}
    assert body["executors"][0]["command"][:4] == ["bash", "-o", "pipefail", "-c"]
    globs = [o for o in body["outputs"] if "path_prefix" in o]
    assert globs == []  # REPORT declares no glob; SPLIT's is checked in the pipeline test


def test_missing_declared_output_fails_the_task(e2e_server: RunningServer, project: Path) -> None:
    lazy = Process("LAZY", "echo nothing", container="ubuntu", outputs=(FileOut("out_*.txt"),))
    pipeline = make_pipeline(e2e_server, str(project / "work"), WorkStore(), project)
    run = pipeline.run([Step(lazy)], timeout=120)
    assert run.task("LAZY (1)").state == "COMPLETE"
    assert run.error is not None and "Missing output file(s) `out_*.txt`" in run.error


def test_pipeline_survives_instance_interruption(e2e_server: RunningServer, project: Path) -> None:
    """A Spot reclaim while SQUARE tasks run: the instance's tasks are checkpointed and restored
    on another instance, Nextflow sees them RUNNING → COMPLETE, and the results are the same."""
    slow_square = replace(
        SQUARE, script="while read n; do echo $((n * n)); sleep 2; done < !{each} > !{each}.sq"
    )
    interrupted: dict[str, str] = {}

    def reclaim_first_square(task: TaskResult) -> None:
        if task.process == "SQUARE" and not interrupted and task.task_id:
            interrupted[task.task_id] = interrupt_task_instance(e2e_server, task.task_id)

    pipeline = make_pipeline(
        e2e_server,
        str(project / "work"),
        WorkStore(),
        project,
        hooks=Hooks(on_started=reclaim_first_square),
    )
    steps = pipeline_steps(project / "numbers.txt")
    steps[1] = replace(steps[1], process=slow_square)
    run = pipeline.run(steps, timeout=300)
    run.raise_for_error()
    # every task on the reclaimed instance was moved (one that ended while others were being
    # checkpointed simply finished there)
    [victim] = interrupted.values()
    moved = [t.task_id for t in run.tasks if t.task_id and reclaimed(e2e_server, t.task_id)]
    assert moved, "no task was restored from a capsule"
    assert all(instance_of(e2e_server, t) != victim for t in moved)
    for task in run.tasks:
        assert task.state == "COMPLETE" and task.exit_status == 0 and task.exitcode_file == "0"
    [report] = run.of("REPORT")
    assert Path(report.outputs["total.txt"][0]).read_text().strip() == "207"


def test_system_error_is_exit_status_1(e2e_server: RunningServer, project: Path) -> None:
    """An input directory holding a link out of storage.allowed_dirs (the agent refuses it while
    staging): SYSTEM_ERROR, which nf-ga4gh 1.4.2 reads as exit status 1 ("Defaulting exit_code
    to 1")."""
    linked = project / "linked"
    linked.mkdir()
    (linked / "hostname").symlink_to("/etc/hostname")
    peek = Process("PEEK", "cat linked/hostname", container="ubuntu")
    pipeline = make_pipeline(e2e_server, str(project / "work"), WorkStore(), project)
    run = pipeline.run([Step(peek, inputs={"linked": str(linked)})], timeout=120)
    task = run.task("PEEK (1)")
    assert task.state == "SYSTEM_ERROR" and task.exit_status == 1
    assert run.error is not None and "error exit status (1)" in run.error


def test_a_path_outside_allowed_dirs_fails_the_submission(
    e2e_server: RunningServer, project: Path
) -> None:
    """An input outside storage.allowed_dirs is refused at create: nf-ga4gh's submit gets a 400
    that names the field and says why, and the run stops there."""
    peek = Process("PEEK", "cat hostname", container="ubuntu")
    pipeline = make_pipeline(e2e_server, str(project / "work"), WorkStore(), project)
    run = pipeline.run([Step(peek, inputs={"hostname": "/etc/hostname"})], timeout=120)
    task = run.task("PEEK (1)")
    assert task.task_id is None and task.error is not None
    assert "submit failed" in task.error and "400" in task.error
    assert "outside the directories tasks may use" in task.error and ".url" in task.error


# Last in the module: the task it cancels (a bash PID 1 that ignores SIGTERM) takes podman's
# 10 s stop timeout to go away, which delays the next task placed on that instance.
def test_failing_process_is_reported_as_nextflow_does(
    e2e_server: RunningServer, project: Path
) -> None:
    fail = Process("FAIL", "echo partial result\necho boom >&2\nexit 3", container="ubuntu")
    slow = Process("SLOW", "sleep 300", container="ubuntu")
    pipeline = make_pipeline(e2e_server, str(project / "work"), WorkStore(), project)
    run = pipeline.run([Step(slow), Step(fail)], timeout=120)

    assert not run.succeeded
    failed = run.task("FAIL (1)")
    assert failed.state == "EXECUTOR_ERROR" and failed.exit_status == 3
    assert failed.exitcode_file == "3"  # uploaded although the executor failed
    assert failed.stdout == "partial result\n" and failed.stderr == "boom\n"
    assert run.error is not None
    assert "Error executing process > 'FAIL (1)'" in run.error
    assert "terminated with an error exit status (3)" in run.error
    assert "Command exit status:\n  3" in run.error
    assert "Command output:\n  partial result" in run.error
    assert "Command error:\n  boom" in run.error
    # errorStrategy terminate: the other task was cancelled
    slow_id = run.task("SLOW (1)").task_id
    assert any(r.path == f"/v1/tasks/{slow_id}:cancel" for r in pipeline.client.requests)
