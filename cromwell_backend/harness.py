"""A replay harness for Cromwell's TES backend: runs a small WDL-like workflow against a TES
server the way Cromwell (87 to 92) would — the same execution-directory layout, `script`, request
bodies, polling and reading of results. A harness for tests and demonstrations, not Cromwell:
no WDL parser, just tasks (a command with `~{input}` placeholders), calls, and scatters.

    split = TaskDef("split", "split -l 1 ~{data} part_", outputs={"parts": Glob("part_*")})
    count = TaskDef("count", "wc -l < ~{part} > n.txt", outputs={"n": "n.txt"})
    run = Workflow("wf", root=Path("/data/cromwell-executions"), client=client).run([
        Call(split, inputs={"data": "/data/in.txt"}),
        Call(count, scatter=("part", Out("split", "parts"))),
    ])

What it does per job, as Cromwell's TES backend:
- host paths under `root`: `<root>/<wf>/<uuid>/call-<task>[/shard-<i>]/execution/…`; the container
  sees the same tree under `docker_root`; the `script` (script.py) is written on the host first;
- inputs: each file at `<docker call root>/inputs/<its path without scheme>` (http inputs keep
  host:port in that path), named `<wf>.<task>.<input>.<index>`; the script as input
  `commandScript` (url = host path, path = container path) and again as an output;
- outputs `rc`, `stdout`, `stderr`, `commandScript`, each declared file, and per glob the
  `glob-<md5>/` DIRECTORY and `glob-<md5>.list` FILE; executor `["/bin/bash", script]` with its
  stdout/stderr at the execution directory's `stdout`/`stderr`;
- resources with `preemptible: false` and `backend_parameters.internal_path_prefix`;
  tags `workflow_id`, `root_workflow_id`, `parent_workflow_id: null`;
- polling with Cromwell's exponential backoff (poll-backoff min/max/multiplier): `?view=FULL` until
  the first TaskLog has `start_time` and `metadata.vm_price_per_hour_usd` (recorded as the call's
  cost data), then `?view=MINIMAL`; one more FULL at the end (end_time, or system_logs on error);
- COMPLETE: read `rc` from the host; a code outside `continue_on_return_code` fails the call, as
  does a missing output file; EXECUTOR_ERROR / SYSTEM_ERROR fail it with the system logs;
- workflow-failure-mode NoNewCalls: after a failure, running calls finish, no new ones start.

`hooks.on_started(job)` runs once per job when the server first reports it past QUEUED.
"""

from __future__ import annotations

import contextlib
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cromwell_backend.client import CromwellTesClient, CromwellTesError, FullTask
from cromwell_backend.script import command_script, glob_name

COST_KEY = "vm_price_per_hour_usd"
TERMINAL = ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED")


@dataclass(frozen=True)
class Glob:
    pattern: str


@dataclass(frozen=True)
class Out:
    """An output of an earlier call (a list over its shards when it was scattered)."""

    call: str
    output: str


InputValue = str | Sequence[str] | Out


@dataclass(frozen=True)
class TaskDef:
    name: str
    command: str
    docker: str = "ubuntu:22.04"
    outputs: Mapping[str, str | Glob] = field(default_factory=dict)
    cpu: int = 1
    memory_gb: float = 2.0
    disk_gb: float = 10.0
    continue_on_return_code: bool | frozenset[int] = frozenset({0})
    fail_on_stderr: bool = False
    preemptible: bool = False


@dataclass(frozen=True)
class Call:
    task: TaskDef
    inputs: Mapping[str, InputValue] = field(default_factory=dict)
    scatter: tuple[str, InputValue] | None = None  # (input name, values to scatter over)
    alias: str | None = None

    @property
    def name(self) -> str:
        return self.alias or self.task.name

    @property
    def upstream(self) -> set[str]:
        values = list(self.inputs.values()) + ([self.scatter[1]] if self.scatter else [])
        return {v.call for v in values if isinstance(v, Out)}


@dataclass(frozen=True)
class Backoff:
    """Cromwell's SimpleExponentialBackoff (poll-backoff: min, max, multiplier,
    randomization-factor)."""

    min: float = 10.0
    max: float = 300.0
    multiplier: float = 1.1
    randomization: float = 0.5

    def intervals(self) -> Any:
        current = self.min
        while True:
            spread = current * self.randomization
            yield random.uniform(current - spread, current + spread)
            current = min(current * self.multiplier, self.max)


@dataclass
class JobResult:
    call: str
    shard: int  # -1 when not scattered
    task_id: str | None = None
    state: str | None = None
    return_code: int | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    start_time: str | None = None
    end_time: str | None = None
    vm_price_per_hour_usd: str | None = None
    error: str | None = None
    execution_dir: Path | None = None
    polls: list[str] = field(default_factory=list)  # the view of each status poll

    @property
    def succeeded(self) -> bool:
        return self.error is None and self.state == "COMPLETE"


@dataclass
class WorkflowRun:
    id: str
    jobs: list[JobResult]
    failures: list[str]

    @property
    def status(self) -> str:
        return "Failed" if self.failures else "Succeeded"

    def job(self, call: str, shard: int = -1) -> JobResult:
        for j in self.jobs:
            if j.call == call and j.shard == shard:
                return j
        raise KeyError((call, shard))

    def shards(self, call: str) -> list[JobResult]:
        return sorted((j for j in self.jobs if j.call == call), key=lambda j: j.shard)


@dataclass
class Hooks:
    on_started: Callable[[JobResult], None] | None = None


@dataclass
class _Job:
    result: JobResult
    call: Call
    inputs: dict[str, list[str]]  # input name → host paths / URLs
    scattered_input: str | None
    next_poll: float
    backoff: Any
    cost_known: bool = False
    started: bool = False


class Workflow:
    def __init__(
        self,
        name: str,
        root: Path,
        client: CromwellTesClient,
        docker_root: str = "/cromwell-executions",
        poll_backoff: Backoff | None = None,
        concurrent_job_limit: int = 100,
        hooks: Hooks | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.id = str(uuid.uuid4())
        self.root = root.resolve()
        self.client = client
        self.docker_root = docker_root.rstrip("/")
        self.poll_backoff = poll_backoff or Backoff()
        self.limit = concurrent_job_limit
        self.hooks = hooks or Hooks()
        self.sleep = sleep
        self.clock = clock

    # -- paths (TesJobPaths) --------------------------------------------------------------------

    def call_root(self, call: str, shard: int, docker: bool = False) -> str:
        base = self.docker_root if docker else str(self.root)
        path = f"{base}/{self.name}/{self.id}/call-{call}"
        return f"{path}/shard-{shard}" if shard >= 0 else path

    def container_input(self, call: str, shard: int, url: str) -> str:
        """mapInputPath: the input's path without its scheme, under the call's inputs dir."""
        parts = urlsplit(url)
        without_scheme = parts.netloc + parts.path if parts.scheme in ("http", "https") else url
        return f"{self.call_root(call, shard, docker=True)}/inputs/{without_scheme.lstrip('/')}"

    # -- the run loop ---------------------------------------------------------------------------

    def run(self, calls: Sequence[Call], timeout: float = 600.0) -> WorkflowRun:
        names = [c.name for c in calls]
        if len(set(names)) != len(names):
            raise ValueError("call names must be unique")
        running: list[_Job] = []
        try:
            return self._loop(calls, running, timeout)
        except BaseException:
            for job in running:  # a hook or the deadline raised: leave nothing running
                if job.result.task_id:
                    with contextlib.suppress(CromwellTesError):
                        self.client.cancel(job.result.task_id)
            raise

    def _loop(self, calls: Sequence[Call], running: list[_Job], timeout: float) -> WorkflowRun:
        done: dict[str, list[JobResult]] = {}
        waiting = list(calls)
        queue: list[_Job] = []
        jobs: list[JobResult] = []
        failures: list[str] = []
        deadline = self.clock() + timeout
        while True:
            if not failures:
                for call in [c for c in waiting if c.upstream <= done.keys()]:
                    waiting.remove(call)
                    new = self._instantiate(call, done)
                    if not new:
                        done[call.name] = []
                    queue += new
                    jobs += [j.result for j in new]
            while queue and len(running) < self.limit and not failures:
                job = queue.pop(0)
                try:
                    self._submit(job)
                except (CromwellTesError, OSError) as exc:
                    job.result.error = f"submit failed: {exc}"
                    failures.append(self._failure(job.result))
                    continue
                running.append(job)
            if not running:
                if failures or not (waiting or queue):
                    break
                if not any(c.upstream <= done.keys() for c in waiting) and not queue:
                    raise RuntimeError(f"calls never became ready: {[c.name for c in waiting]}")
                continue
            now = self.clock()
            if now > deadline:
                raise TimeoutError(f"workflow still running after {timeout:.0f} s")
            job = min(running, key=lambda j: j.next_poll)
            if job.next_poll > now:
                self.sleep(job.next_poll - now)
            if self._poll(job):
                running.remove(job)
                if job.result.error is not None:
                    failures.append(self._failure(job.result))
                group = [j for j in jobs if j.call == job.result.call]
                if all(j.state in TERMINAL or j.error for j in group) and not any(
                    q.result.call == job.result.call for q in queue + running
                ):
                    done[job.result.call] = group
            else:
                job.next_poll = self.clock() + next(job.backoff)
        return WorkflowRun(self.id, jobs, failures)

    def _failure(self, job: JobResult) -> str:
        shard = f", shard {job.shard}" if job.shard >= 0 else ""
        return f"{self.name}.{job.call}{shard}: {job.error}"

    def _instantiate(self, call: Call, done: Mapping[str, list[JobResult]]) -> list[_Job]:
        fixed = {name: self._resolve(value, done) for name, value in call.inputs.items()}
        if call.scatter is None:
            shards: list[tuple[int, dict[str, list[str]]]] = [(-1, fixed)]
            scattered = None
        else:
            scattered, over = call.scatter
            values = self._resolve(over, done)
            shards = [(i, {**fixed, scattered: [v]}) for i, v in enumerate(values)]
        out = []
        for shard, inputs in shards:
            result = JobResult(call.name, shard)
            result.execution_dir = Path(self.call_root(call.name, shard)) / "execution"
            out.append(_Job(result, call, inputs, scattered, 0.0, self.poll_backoff.intervals()))
        return out

    @staticmethod
    def _resolve(value: InputValue, done: Mapping[str, list[JobResult]]) -> list[str]:
        if isinstance(value, Out):
            found: list[str] = []
            for job in sorted(done[value.call], key=lambda j: j.shard):
                got = job.outputs[value.output]
                found += got if isinstance(got, list) else [got]
            return found
        if isinstance(value, str):
            return [value]
        return list(value)

    # -- one job ----------------------------------------------------------------------------------

    def task_body(self, job: _Job) -> dict[str, Any]:
        """The Task message Cromwell's TesTask builds."""
        call, result = job.call, job.result
        task = call.task
        fq_name = f"{self.name}.{call.name}"
        host_exec = f"{self.call_root(call.name, result.shard)}/execution"
        cont_exec = f"{self.call_root(call.name, result.shard, docker=True)}/execution"
        inputs: list[dict[str, Any]] = []
        for name, urls in job.inputs.items():
            for index, url in enumerate(urls):
                inputs.append(
                    {
                        "name": f"{fq_name}.{name}.{index}",
                        "description": f"{self.name}.{fq_name}.{name}.{index}",
                        "url": url,
                        "path": self.container_input(call.name, result.shard, url),
                        "type": "FILE",
                    }
                )
        inputs.append(
            {
                "name": "commandScript",
                "description": f"{fq_name}.commandScript",
                "url": f"{host_exec}/script",
                "path": f"{cont_exec}/script",
                "type": "FILE",
            }
        )

        def output(name: str, rel: str, kind: str = "FILE") -> dict[str, Any]:
            return {
                "name": name,
                "description": f"{fq_name}.{name}",
                "url": f"{host_exec}/{rel}",
                "path": f"{cont_exec}/{rel}",
                "type": kind,
            }

        outputs = [output(n, n) for n in ("rc", "stdout", "stderr")]
        outputs.append(output("commandScript", "script"))
        for index, value in enumerate(task.outputs.values()):
            if isinstance(value, Glob):
                g = glob_name(value.pattern)
                outputs.append(output(f"globDir.{index}", f"{g}/", "DIRECTORY"))
                outputs.append(output(f"globList.{index}", f"{g}.list"))
            else:
                outputs.append(output(f"{fq_name}.output.{index}", value))
        return {
            "name": fq_name,
            "description": (
                f"{self.id}:BackendJobDescriptorKey_CommandCallNode_{fq_name}:{result.shard}:1"
            ),
            "inputs": inputs,
            "outputs": outputs,
            "resources": {
                "cpu_cores": task.cpu,
                "ram_gb": float(task.memory_gb),
                "disk_gb": float(task.disk_gb),
                "preemptible": task.preemptible,
                "backend_parameters": {
                    "internal_path_prefix": f"{self.call_root(call.name, result.shard)}/tes_task"
                },
            },
            "executors": [
                {
                    "image": task.docker,
                    "command": ["/bin/bash", f"{cont_exec}/script"],
                    "stdout": f"{cont_exec}/stdout",
                    "stderr": f"{cont_exec}/stderr",
                }
            ],
            "tags": {
                "workflow_id": self.id,
                "root_workflow_id": self.id,
                "parent_workflow_id": None,
            },
        }

    def _command(self, job: _Job) -> str:
        command = job.call.task.command
        for name, urls in job.inputs.items():
            paths = " ".join(self.container_input(job.call.name, job.result.shard, u) for u in urls)
            command = command.replace(f"~{{{name}}}", paths)
        return command

    def _submit(self, job: _Job) -> None:
        assert job.result.execution_dir is not None
        execution = job.result.execution_dir
        execution.mkdir(parents=True, exist_ok=True)
        cont_exec = f"{self.call_root(job.call.name, job.result.shard, docker=True)}/execution"
        globs = [v.pattern for v in job.call.task.outputs.values() if isinstance(v, Glob)]
        (execution / "script").write_text(command_script(cont_exec, self._command(job), globs))
        job.result.task_id = self.client.create_task(self.task_body(job))
        job.next_poll = self.clock() + next(job.backoff)

    def _poll(self, job: _Job) -> bool:
        """One pollStatusAsync; True when the job is finished (successfully or not)."""
        result = job.result
        assert result.task_id is not None
        try:
            if job.cost_known:
                result.polls.append("MINIMAL")
                state = self.client.minimal(result.task_id)
            else:
                result.polls.append("FULL")
                full = self.client.full(result.task_id)
                state = full.state or ""
                self._record_cost(job, full)
        except CromwellTesError as exc:
            result.error = f"TES Job {result.task_id} has not been found, failing call: {exc}"
            return True
        if state not in ("QUEUED", "") and not job.started:
            job.started = True
            if self.hooks.on_started is not None:
                self.hooks.on_started(result)
        if state not in TERMINAL:
            return False
        result.state = state
        try:
            final = self.client.full(result.task_id)
        except CromwellTesError as exc:
            result.error = str(exc)
            return True
        first = final.logs[0] if final.logs else None
        result.end_time = first.end_time if first else None
        if state == "CANCELED":
            result.error = "Aborted"
        elif state in ("EXECUTOR_ERROR", "SYSTEM_ERROR"):
            last = final.logs[-1] if final.logs else None
            logs = "; ".join(last.system_logs) if last else ""
            kind = "EXECUTOR_ERROR" if state == "EXECUTOR_ERROR" else "SYSTEM_ERROR"
            result.error = f"Task {self.name}.{job.call.name} failed with {kind}. {logs}".strip()
        else:
            self._on_complete(job)
        return True

    def _record_cost(self, job: _Job, full: FullTask) -> None:
        first = full.logs[0] if full.logs else None
        if first is None:
            return
        job.result.start_time = first.start_time or job.result.start_time
        job.result.vm_price_per_hour_usd = first.metadata.get(COST_KEY)
        job.cost_known = bool(first.start_time and first.metadata.get(COST_KEY))

    def _on_complete(self, job: _Job) -> None:
        """StandardAsyncExecutionActor on success: the rc file decides, then the outputs."""
        result, task = job.result, job.call.task
        assert result.execution_dir is not None
        execution = result.execution_dir
        tag = f"{self.name}.{job.call.name}:{result.shard if result.shard >= 0 else 'NA'}:1"
        try:
            rc_text = (execution / "rc").read_text().strip()
            result.return_code = int(rc_text)
        except (OSError, ValueError) as exc:
            result.error = f"Failed to read the return code of job {tag}: {exc}"
            return
        ok = task.continue_on_return_code
        if not (ok is True or (isinstance(ok, frozenset) and result.return_code in ok)):
            result.error = (
                f"Job {tag} exited with return code {result.return_code} which has not been "
                "declared as a valid return code. See 'continueOnReturnCode' runtime attribute "
                "for more details."
            )
            return
        if task.fail_on_stderr and (execution / "stderr").stat().st_size > 0:
            result.error = f"Job {tag} failed because stderr was not empty (failOnStderr)."
            return
        for name, value in task.outputs.items():
            if isinstance(value, Glob):
                g = glob_name(value.pattern)
                listing = execution / f"{g}.list"
                if not listing.is_file():
                    result.error = f"Could not process output, file not found: {listing}"
                    return
                names = [n for n in listing.read_text().splitlines() if n]
                result.outputs[name] = [str(execution / g / n) for n in names]
            else:
                path = execution / value
                if not path.exists():
                    result.error = f"Could not process output, file not found: {path}"
                    return
                result.outputs[name] = str(path)
