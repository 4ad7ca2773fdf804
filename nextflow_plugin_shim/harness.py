"""A replay harness for nf-ga4gh: runs a small pipeline against a TES server the way Nextflow with
nf-ga4gh would — the same work-dir layout, wrapper scripts, request bodies, polling and reading of
results. It is a harness for tests and demonstrations, not Nextflow: there are no channels or
Groovy, just processes, fixed inputs and upstream outputs (one task per file, or all collected).

    SPLIT = Process("SPLIT", "split -l 2 data.txt chunk_", outputs=(FileOut("chunk_*"),))
    COUNT = Process("COUNT", "wc -l < !{each} > !{each}.count", outputs=(FileOut("*.count"),))
    run = Pipeline(NfTesClient(url), work_dir="/data/work").run([
        Step(SPLIT, inputs={"data.txt": "/data/data.txt"}),
        Step(COUNT, each=Files("SPLIT", "chunk_*")),
    ])
    run.raise_for_error()

What it does per task, as nf-ga4gh (TesTaskHandler, TesExecutor, TesFileCopyStrategy):
- work dir `<workDir>/<2 hex>/<30 hex>`; `.command.sh` and `.command.run` written there
  (wrapper.py);
  local inputs are staged into `<workDir>/stage-<session>/…` first when the work dir is on S3;
- the bin directory (`bin_dir`) is copied once to `<workDir>/tmp/<2>/<30>/bin`, and each script is
  an input at that very path in the container (Path.toString(): the host path, or /bucket/key);
- inputs at `/work/<name>`; outputs `.command.out/.err/.log` and `.exitcode` (type FILE), then each
  declared output: a glob as `{"path": "/work/<glob>", "path_prefix": "/work", "url": <work dir>}`,
  a directory as type DIRECTORY;
- resources `cpu_cores` (+ `ram_gb`, `disk_gb` when set) and `backend_parameters_strict: false`;
- polling (TaskPollingMonitor): at most `queue_size` tasks in flight; every `poll_interval` each
  task is read with GET and no view; once terminal, one GET ?view=FULL: COMPLETE is exit status 0,
  EXECUTOR_ERROR is `logs[0].logs[0].exit_code`, SYSTEM_ERROR/CANCELED is 1 and an unreadable
  answer Integer.MAX_VALUE (nf-ga4gh 1.4.2; `legacy_exit_read` reads the executor log for every
  terminal state, as 1.3.0 to 1.4.0 did);
- then, like Nextflow's TaskProcessor: a non-zero exit fails the task, and so does a declared
  output with no matching file in the work dir; the error report shows the exit status and the
  tails of .command.out and .command.err; errorStrategy `terminate` cancels the other tasks.

`hooks.on_started(task)` is called once per task when it is first seen started: the place where a
test will interrupt an instance mid-pipeline.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from nextflow_plugin_shim import wrapper
from nextflow_plugin_shim.client import NfTesClient, TesApiError
from nextflow_plugin_shim.storage import WorkStore, container_path, is_s3, join

TERMINAL = ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED")
STARTED = ("INITIALIZING", "RUNNING", "PAUSED", *TERMINAL)
UNREADABLE_EXIT = 2**31 - 1  # Integer.MAX_VALUE: what nf-ga4gh reports when it cannot read one


@dataclass(frozen=True)
class FileOut:
    """A `path` output: a file name, a glob, or a directory (`type="dir"`)."""

    pattern: str
    type: Literal["file", "dir"] = "file"
    optional: bool = False

    @property
    def is_glob(self) -> bool:
        return any(ch in self.pattern for ch in "*?")


@dataclass(frozen=True)
class Process:
    """A process definition. In `script`, `!{each}` is the name of the file a per-file step is
    running for, and `!{index}` the task's index."""

    name: str
    script: str
    container: str = "ubuntu:22.04"
    outputs: tuple[FileOut, ...] = ()
    cpus: int = 1
    memory_gb: float | None = None
    disk_gb: float | None = None
    stdin: str | None = None  # content piped into the script (Nextflow's .command.in)


@dataclass(frozen=True)
class Files:
    """The files an upstream step produced for one of its outputs (matched by `pattern`)."""

    step: str
    pattern: str


@dataclass
class Step:
    """A process applied to inputs: `inputs` maps stage names to sources (absolute paths or
    s3:// URLs, files or directories); `collect` stages every matching upstream file in one
    task; `each` runs one task per matching upstream file."""

    process: Process
    inputs: Mapping[str, str] = field(default_factory=dict)
    collect: Sequence[Files] = ()
    each: Files | None = None

    @property
    def name(self) -> str:
        return self.process.name

    @property
    def upstream(self) -> set[str]:
        deps = {f.step for f in self.collect}
        if self.each is not None:
            deps.add(self.each.step)
        return deps


@dataclass
class TaskResult:
    name: str
    process: str
    index: int
    work_dir: str
    task_id: str | None = None
    state: str | None = None
    exit_status: int | None = None
    exitcode_file: str | None = None  # the content of .exitcode, as uploaded
    outputs: dict[str, list[str]] = field(default_factory=dict)  # pattern → file URLs
    stdout: str = ""  # .command.out
    stderr: str = ""  # .command.err
    error: str | None = None
    started: bool = False
    script: str = ""

    @property
    def files(self) -> list[str]:
        return [url for urls in self.outputs.values() for url in urls]


class PipelineError(RuntimeError):
    """The pipeline stopped on a failed task; the message is Nextflow's error report."""


@dataclass
class PipelineRun:
    tasks: list[TaskResult]
    error: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.error is None

    def task(self, name: str) -> TaskResult:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(name)

    def of(self, process: str) -> list[TaskResult]:
        return [t for t in self.tasks if t.process == process]

    def raise_for_error(self) -> None:
        if self.error is not None:
            raise PipelineError(self.error)


@dataclass
class Hooks:
    on_started: Callable[[TaskResult], None] | None = None


@dataclass
class _Handle:
    result: TaskResult
    step: Step
    status: Literal["SUBMITTED", "RUNNING", "COMPLETED"] = "SUBMITTED"


class Pipeline:
    def __init__(
        self,
        client: NfTesClient,
        work_dir: str,
        store: WorkStore | None = None,
        bin_dir: Path | None = None,
        queue_size: int = 5,
        poll_interval: float = 5.0,
        legacy_exit_read: bool = False,
        hooks: Hooks | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.work_dir = work_dir.rstrip("/") if is_s3(work_dir) else str(Path(work_dir))
        self.store = store or WorkStore()
        self.bin_dir = bin_dir
        self.queue_size = queue_size
        self.poll_interval = poll_interval
        self.legacy_exit_read = legacy_exit_read
        self.hooks = hooks or Hooks()
        self.sleep = sleep
        self.clock = clock
        self.session = str(uuid.uuid4())
        self.remote_bin_dir: str | None = None
        self.remote_bin_files: list[str] = []

    # -- the run loop (TaskPollingMonitor) ------------------------------------------------------

    def run(self, steps: Sequence[Step], timeout: float = 600.0) -> PipelineRun:
        names = [s.name for s in steps]
        if len(set(names)) != len(names):
            raise ValueError("step names must be unique")
        for step in steps:
            missing = step.upstream - set(names)
            if missing:
                raise ValueError(f"{step.name} depends on unknown steps {sorted(missing)}")
        self.upload_bin_dir()
        running: list[_Handle] = []
        try:
            return self._loop(steps, running, timeout)
        except BaseException:
            for handle in running:  # a hook or the deadline raised: leave nothing running
                self._kill(handle.result)
            raise

    def _loop(self, steps: Sequence[Step], running: list[_Handle], timeout: float) -> PipelineRun:
        done: dict[str, list[TaskResult]] = {}
        waiting = list(steps)
        pending: list[tuple[Step, TaskResult, dict[str, str]]] = []
        results: list[TaskResult] = []
        deadline = self.clock() + timeout
        while waiting or pending or running:
            ready = [s for s in waiting if s.upstream <= done.keys()]
            while ready:  # a step with no tasks (nothing to fan out over) is done at once
                for step in ready:
                    waiting.remove(step)
                    instances = self._instantiate(step, done)
                    if not instances:
                        done[step.name] = []
                    for result, inputs in instances:
                        results.append(result)
                        pending.append((step, result, inputs))
                ready = [s for s in waiting if s.upstream <= done.keys()]
            while pending and len(running) < self.queue_size:
                step, result, inputs = pending.pop(0)
                try:
                    self._submit(step, result, inputs)
                except TesApiError as exc:
                    result.error = f"submit failed: {exc} {exc.body}".strip()
                    return self._terminate(results, running, result)
                running.append(_Handle(result, step))
            if not running:
                if waiting and not pending:
                    stuck = ", ".join(s.name for s in waiting)
                    raise RuntimeError(f"steps never became ready: {stuck}")
                continue
            self.sleep(self.poll_interval)
            for handle in list(running):
                try:
                    finished = self._check(handle)
                except TesApiError as exc:
                    handle.result.error = f"polling failed: {exc}"
                    running.remove(handle)
                    return self._terminate(results, running, handle.result)
                if not finished:
                    continue
                running.remove(handle)
                if handle.result.error is not None:
                    return self._terminate(results, running, handle.result)
                name = handle.step.name
                group = [r for r in results if r.process == name]
                if all(r.state in TERMINAL for r in group) and not any(
                    p[0].name == name for p in pending
                ):
                    done[name] = group
            if self.clock() > deadline:
                raise TimeoutError(f"pipeline still running after {timeout:.0f} s")
        return PipelineRun(results)

    def _terminate(
        self, results: list[TaskResult], running: list[_Handle], failed: TaskResult
    ) -> PipelineRun:
        """errorStrategy 'terminate': kill what is still running, report the failed task."""
        for handle in running:
            self._kill(handle.result)
        return PipelineRun(results, error=self._error_report(failed))

    def _kill(self, result: TaskResult) -> None:
        if result.task_id:
            # nf-ga4gh logs "Failed to cancel TES task" and moves on
            with contextlib.suppress(TesApiError):
                self.client.cancel_task(result.task_id)

    # -- one task ---------------------------------------------------------------------------

    def _instantiate(
        self, step: Step, done: Mapping[str, list[TaskResult]]
    ) -> list[tuple[TaskResult, dict[str, str]]]:
        fixed = dict(step.inputs)
        for ref in step.collect:
            for url in _matching(done[ref.step], ref.pattern):
                name = PurePosixPath(url).name
                if name in fixed:  # Nextflow: "Process ... input file name collision"
                    raise ValueError(f"{step.name}: input file name collision: {name}")
                fixed[name] = url
        if step.each is None:
            groups: list[dict[str, str]] = [fixed]
            each_names: list[str | None] = [None]
        else:
            urls = _matching(done[step.each.step], step.each.pattern)
            groups = [{**fixed, PurePosixPath(u).name: u} for u in urls]
            each_names = [PurePosixPath(u).name for u in urls]
        out = []
        for index, (inputs, each) in enumerate(zip(groups, each_names, strict=True), start=1):
            script = step.process.script.replace("!{index}", str(index))
            if each is not None:
                script = script.replace("!{each}", each)
            name = f"{step.name} ({index})"
            digest = hashlib.sha256(
                "\0".join([self.session, name, script, *sorted(inputs.values())]).encode()
            ).hexdigest()
            work = join(self.work_dir, digest[:2], digest[2:32])
            out.append(
                (
                    TaskResult(name, step.name, index, work, script=script),
                    inputs,
                )
            )
        return out

    def upload_bin_dir(self) -> None:
        if self.bin_dir is None or self.remote_bin_dir is not None:
            return
        if not self.bin_dir.is_dir() or not any(self.bin_dir.iterdir()):
            return
        digest = hashlib.sha256(f"{self.session}/bin".encode()).hexdigest()
        temp = join(self.work_dir, "tmp", digest[:2], digest[2:32])
        self.remote_bin_files = self.store.copy_tree(self.bin_dir, join(temp, "bin"))
        self.remote_bin_dir = container_path(join(temp, "bin"))

    def _stage(self, source: str, name: str) -> str:
        """An input as the URL the task gets: on an S3 work dir, a local file is uploaded to the
        stage area first (Nextflow's foreign-file staging)."""
        if is_s3(self.work_dir) and not is_s3(source):
            digest = hashlib.sha256(f"{self.session}\0{source}".encode()).hexdigest()
            dest = join(self.work_dir, f"stage-{self.session}", digest[:2], digest[2:32], name)
            self.store.copy_tree(Path(source), dest)
            return dest
        return source

    def task_body(self, step: Step, result: TaskResult, inputs: Mapping[str, str]) -> dict:
        """The TesTask nf-ga4gh builds (newTesTask), as JSON."""
        proc = step.process
        work = result.work_dir
        wd = wrapper.WORK_DIR
        body_inputs: list[dict[str, Any]] = [
            self._in_item(join(work, wrapper.CMD_SCRIPT)),
            self._in_item(join(work, wrapper.CMD_RUN)),
        ]
        for url in self.remote_bin_files:
            body_inputs.append({"url": url, "path": container_path(url), "type": "FILE"})
        if proc.stdin is not None:
            body_inputs.append(self._in_item(join(work, wrapper.CMD_IN)))
        for name, source in inputs.items():
            body_inputs.append(self._in_item(self._stage(source, name), name))
        body_outputs = [
            self._out_item(work, name, "FILE")
            for name in (wrapper.CMD_OUT, wrapper.CMD_ERR, wrapper.CMD_LOG, wrapper.CMD_EXIT)
        ]
        for out in proc.outputs:
            body_outputs.append(
                self._out_item(work, out.pattern, "DIRECTORY" if out.type == "dir" else "FILE")
            )
        resources: dict[str, Any] = {"cpu_cores": proc.cpus, "backend_parameters_strict": False}
        if proc.memory_gb is not None:
            resources["ram_gb"] = float(proc.memory_gb)
        if proc.disk_gb is not None:
            resources["disk_gb"] = float(math.ceil(proc.disk_gb))
        return {
            "name": result.name,
            "inputs": body_inputs,
            "outputs": body_outputs,
            "resources": resources,
            "executors": [
                {"image": proc.container, "command": wrapper.executor_command(), "workdir": wd}
            ],
        }

    def _in_item(self, url: str, name: str | None = None) -> dict[str, Any]:
        stage = name or PurePosixPath(url).name
        kind = "DIRECTORY" if self.store.is_dir(url) else "FILE"
        return {"url": url, "path": f"{wrapper.WORK_DIR}/{stage}", "type": kind}

    @staticmethod
    def _out_item(work: str, name: str, kind: str | None) -> dict[str, Any]:
        item: dict[str, Any]
        if "*" in name or "?" in name:
            item = {
                "path": f"{wrapper.WORK_DIR}/{name}",
                "path_prefix": wrapper.WORK_DIR,
                "url": work,
            }
        else:
            item = {"path": f"{wrapper.WORK_DIR}/{name}", "url": join(work, name)}
        if kind is not None:
            item["type"] = kind
        return item

    def _submit(self, step: Step, result: TaskResult, inputs: Mapping[str, str]) -> None:
        work = result.work_dir
        self.store.write_text(join(work, wrapper.CMD_SCRIPT), wrapper.command_script(result.script))
        self.store.write_text(
            join(work, wrapper.CMD_RUN),
            wrapper.command_run(result.name, self.remote_bin_dir, step.process.stdin is not None),
        )
        if step.process.stdin is not None:
            self.store.write_text(join(work, wrapper.CMD_IN), step.process.stdin)
        result.task_id = self.client.create_task(self.task_body(step, result, inputs))

    def _check(self, handle: _Handle) -> bool:
        """checkIfRunning, then checkIfCompleted, as TaskPollingMonitor does every cycle."""
        result = handle.result
        assert result.task_id is not None
        if handle.status == "SUBMITTED":
            state = self.client.get_task(result.task_id)["state"]
            if state not in STARTED:
                return False
            handle.status = "RUNNING"
            result.started = True
            if self.hooks.on_started is not None:
                self.hooks.on_started(result)
        state = self.client.get_task(result.task_id)["state"]
        if state not in TERMINAL:
            return False
        result.state = state
        result.exit_status = self._read_exit_status(result.task_id)
        handle.status = "COMPLETED"
        self._finalize(handle)
        return True

    def _read_exit_status(self, task_id: str) -> int:
        try:
            task = self.client.get_task(task_id, view="FULL")
            if task["state"] == "COMPLETE" and not self.legacy_exit_read:
                return 0
            if self.legacy_exit_read or task["state"] == "EXECUTOR_ERROR":
                code = task["logs"][0]["logs"][0]["exit_code"]
                if not isinstance(code, int):
                    raise TypeError(f"exit_code {code!r} is not an integer")
                return code
            return 1  # SYSTEM_ERROR, CANCELED: "Defaulting exit_code to 1"
        except (TesApiError, KeyError, IndexError, TypeError):
            return UNREADABLE_EXIT

    def _finalize(self, handle: _Handle) -> None:
        """What Nextflow does with a completed task: read .command.out/.err/.exitcode, check the
        exit status, then resolve every declared output in the work dir."""
        result = handle.result
        work = result.work_dir
        for attr, name in (("stdout", wrapper.CMD_OUT), ("stderr", wrapper.CMD_ERR)):
            url = join(work, name)
            setattr(result, attr, self.store.read_text(url) if self.store.is_file(url) else "")
        exit_url = join(work, wrapper.CMD_EXIT)
        if self.store.is_file(exit_url):
            result.exitcode_file = self.store.read_text(exit_url).strip()
        if result.exit_status != 0:
            result.error = (
                f"Process `{result.name}` terminated with an error exit status "
                f"({result.exit_status})"
            )
            return
        listing = self.store.list_files(work)
        for out in handle.step.process.outputs:
            found = self._resolve(work, out, listing)
            if not found and not out.optional:
                result.error = (
                    f"Missing output file(s) `{out.pattern}` expected by process `{result.name}`"
                )
                return
            result.outputs[out.pattern] = found

    def _resolve(self, work: str, out: FileOut, listing: list[str]) -> list[str]:
        if out.type == "dir":
            return [join(work, out.pattern)] if self.store.is_dir(join(work, out.pattern)) else []
        if out.is_glob:
            hidden = {wrapper.CMD_OUT, wrapper.CMD_ERR, wrapper.CMD_LOG, wrapper.CMD_EXIT}
            names = [
                n
                for n in listing
                if fnmatch.fnmatchcase(n, out.pattern) and not n.startswith(".") and n not in hidden
            ]
            return [join(work, n) for n in names]
        return [join(work, out.pattern)] if self.store.is_file(join(work, out.pattern)) else []

    def _error_report(self, failed: TaskResult) -> str:
        """Nextflow's report for a failed task (TaskProcessor's error formatting)."""

        def block(text: str) -> str:
            lines = text.rstrip("\n").splitlines()[-100:]
            return "\n".join("  " + line for line in lines) if lines else "  (empty)"

        status = "-" if failed.exit_status is None else str(failed.exit_status)
        return (
            f"ERROR ~ Error executing process > '{failed.name}'\n\n"
            f"Caused by:\n  {failed.error}\n\n"
            f"Command executed:\n\n{block(failed.script)}\n\n"
            f"Command exit status:\n  {status}\n\n"
            f"Command output:\n{block(failed.stdout)}\n\n"
            f"Command error:\n{block(failed.stderr)}\n\n"
            f"Work dir:\n  {failed.work_dir}\n"
        )


def _matching(results: Sequence[TaskResult], pattern: str) -> list[str]:
    """URLs of the files upstream tasks produced for output `pattern` (in task order)."""
    urls: list[str] = []
    for r in results:
        for out_pattern, found in r.outputs.items():
            if out_pattern == pattern:
                urls += found
    return urls
