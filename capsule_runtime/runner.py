"""One task attempt on this instance, start to finish, in its own thread.

The steps, in order (each reported to the gateway as it happens):

    1. initializing   stage inputs into the workspace; make every image available
    2. running        executors one after another in one work area (stop at the first non-zero
                      exit unless `ignore_error`); each ExecutorLog gets times, exit code and the
                      tails of stdout/stderr; the full streams go to the gateway
    3. outputs        uploaded even when an executor failed; a missing output is noted in
                      system_logs and skipped
    4. end            complete | executor_error | system_error | canceled (outputs not uploaded)
"""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path
from typing import Any

from capsule_runtime.client import GatewayClient, GatewayUnreachable
from capsule_runtime.engine.errors import EngineError
from capsule_runtime.engine.protocol import ContainerEngine
from capsule_runtime.engine.spec import ContainerSpec, Mount
from capsule_runtime.image_source import prepare_image
from capsule_runtime.staging import (
    S3Config,
    StagingError,
    StagingPolicy,
    Workspace,
    stage_inputs,
    upload_outputs_report,
)
from gateway.tes.protocol import Assignment, AttemptReport, AttemptStatus
from gateway.tes.tasklog import NOT_RUN, drop_unstarted
from gateway.tes.times import rfc3339, utcnow

log = logging.getLogger(__name__)
GIB = 1024**3
CANCEL_GRACE = 10.0  # seconds between SIGTERM and SIGKILL when a user cancels
ABORT_GRACE = 2.0  # ... when the instance shuts down


def now() -> str:
    return rfc3339(utcnow())


def tail(path: Path, limit: int) -> str:
    """The last `limit` bytes of a file as text (invalid UTF-8 replaced)."""
    if limit <= 0 or not path.exists():
        return ""
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        f.seek(max(0, size - limit))
        return f.read().decode("utf-8", errors="replace")


def default_engine() -> ContainerEngine:
    from capsule_runtime.engine.podman import PodmanEngine

    return PodmanEngine()


class TaskRun(threading.Thread):
    def __init__(
        self,
        assignment: Assignment,
        client: GatewayClient,
        work_dir: Path,
        engine: ContainerEngine | None = None,
    ):
        super().__init__(name=f"task-{assignment.task_id}", daemon=True)
        self.a = assignment
        self.client = client
        self.engine = engine or default_engine()
        self.dir = work_dir / assignment.attempt_id
        self.task: dict[str, Any] = assignment.task
        self._cancel = threading.Event()
        self._abort_reason: str | None = None
        self._container: str | None = None
        self._workspace: Workspace | None = None
        self._finished_containers: list[str] = []
        self._streams: list[tuple[int, str, Path]] = []
        self._running_reported = False
        self._lock = threading.Lock()
        previous = assignment.task_log or {}
        self.log: dict[str, Any] = {
            "logs": list(previous.get("logs", [])),
            "outputs": list(previous.get("outputs", [])),
            "system_logs": list(previous.get("system_logs", [])),
            "metadata": dict(previous.get("metadata", {})),
            "start_time": previous.get("start_time") or now(),
        }

    # -- control from the agent ---------------------------------------------------------------

    def cancel(self) -> None:
        """The user cancelled: stop the container; outputs are not uploaded."""
        self._cancel.set()
        self._stop_container(CANCEL_GRACE)

    def abort(self, reason: str) -> None:
        """The instance is going away: stop at once and report a system error."""
        self._abort_reason = reason
        self._cancel.set()
        self._stop_container(ABORT_GRACE)

    def _stop_container(self, grace: float = CANCEL_GRACE) -> None:
        with self._lock:
            cid = self._container
            workspace = self._workspace
        if workspace is not None:
            workspace.cancel()  # interrupts a transfer in progress
        if cid is not None:
            try:
                self.engine.stop(cid, grace=grace)
            except EngineError as exc:
                log.warning("stopping %s: %s", cid, exc)

    # -- reporting ----------------------------------------------------------------------------

    def _entry(self, index: int) -> dict[str, Any]:
        """Executor `index`'s ExecutorLog: the planned one if the TaskLog has it, else a new one."""
        logs: list[dict[str, Any]] = self.log["logs"]
        while len(logs) <= index:
            logs.append({"exit_code": NOT_RUN})
        return logs[index]

    def report(self, status: AttemptStatus, message: str | None = None) -> None:
        if status in ("complete", "executor_error", "system_error", "canceled"):
            self.log["end_time"] = now()
            self.log["logs"] = drop_unstarted(self.log["logs"])
        try:
            self.client.report(
                self.a.attempt_id,
                AttemptReport(status=status, task_log=self.log, message=message),
            )
        except GatewayUnreachable as exc:
            log.error("report %s for %s failed: %s", status, self.a.attempt_id, exc)

    def system_log(self, line: str) -> None:
        self.log["system_logs"].append(line)

    # -- the run ------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            status, message = self._execute()
        except Exception as exc:  # anything unexpected is a system error, never a hang
            log.exception("attempt %s failed", self.a.attempt_id)
            status, message = "system_error", f"internal error on the worker: {exc}"
            self.system_log(message)
        if self._abort_reason and status not in ("complete", "executor_error"):
            status, message = "system_error", self._abort_reason
            self.system_log(f"stopped: {self._abort_reason}")
        elif self._cancel.is_set() and status not in ("complete", "executor_error"):
            status, message = "canceled", "cancelled by the user"
        self.report(status, message)
        self._after_report()
        if self._workspace is not None:
            self._workspace.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _execute(self) -> tuple[AttemptStatus, str | None]:
        settings = self.a.settings
        self.dir.mkdir(parents=True, exist_ok=True)
        self.report("initializing")
        try:
            workspace = Workspace.create(
                self.dir / "work",
                self.task,
                StagingPolicy.create(settings.allowed_dirs, settings.block_private_networks),
                s3=S3Config.from_mapping(settings.s3),
            )
            with self._lock:
                self._workspace = workspace
            mounts = stage_inputs(self.task.get("inputs", []), workspace)
        except (StagingError, OSError) as exc:
            self.system_log(f"input staging failed: {exc}")
            return "system_error", str(exc)
        if self._cancel.is_set():
            return "canceled", None
        images: dict[str, str] = {}
        for ex in self.task["executors"]:
            try:
                ref = prepare_image(
                    self.engine, ex["image"], settings, self.client, self.dir.parent / "images"
                )
            except EngineError as exc:
                self.system_log(f"image {ex['image']!r} is not available: {exc}")
                return "system_error", f"image {ex['image']} not available"
            images[ex["image"]] = ref
        failed = False
        for index, ex in enumerate(self.task["executors"]):
            if self._cancel.is_set():
                return "canceled", None
            code = self._run_executor(index, ex, images[ex["image"]], workspace, mounts)
            if code is None:
                return "canceled", None
            if code != 0 and not ex.get("ignore_error"):
                failed = True
                break
        if self._cancel.is_set():
            return "canceled", None
        report = upload_outputs_report(self.task.get("outputs", []), workspace)
        self.log["outputs"] = report.outputs
        for note in report.system_logs:
            self.system_log(note)
        if failed:
            return "executor_error", None
        if report.failed:  # COMPLETE means the outputs were uploaded (TES)
            return "system_error", f"{report.failed} output upload(s) failed"
        return "complete", None

    def _run_executor(
        self,
        index: int,
        ex: dict[str, Any],
        image: str,
        workspace: Workspace,
        mounts: tuple[Mount, ...],
    ) -> int | None:
        streams = self.dir / "streams"
        streams.mkdir(exist_ok=True)
        out = workspace.tree_path(ex["stdout"]) if "stdout" in ex else streams / f"{index}.stdout"
        err = workspace.tree_path(ex["stderr"]) if "stderr" in ex else streams / f"{index}.stderr"
        for path in (out, err):
            path.parent.mkdir(parents=True, exist_ok=True)
        res = self.task.get("resources", {})
        spec = ContainerSpec(
            image=image,
            argv=tuple(ex["command"]),
            task_id=self.a.task_id,
            name=f"tescape-{self.a.attempt_id}-{index}",
            env=ex.get("env", {}),
            workdir=ex.get("workdir"),
            mounts=mounts,
            stdin=workspace.tree_path(ex["stdin"]) if "stdin" in ex else None,
            stdout=out,
            stderr=err,
            cpu_cores=res.get("cpu_cores"),
            memory_bytes=int(res["ram_gb"] * GIB) if "ram_gb" in res else None,
            labels={"io.tescape.attempt": self.a.attempt_id},
        )
        entry = self._entry(index)
        entry.update(start_time=now(), exit_code=NOT_RUN)
        try:
            cid = self.engine.run(spec)
        except EngineError as exc:
            entry.update(end_time=now(), exit_code=127, stderr=str(exc))
            self.system_log(f"executor {index} could not start: {exc}")
            return 127
        with self._lock:
            self._container = cid
        if not self._running_reported:
            self._running_reported = True
            self.report("running")  # the first executor is running: INITIALIZING → RUNNING
        if self._cancel.is_set():
            self._stop_container()
        try:
            code = self.engine.wait(cid)
            info = self.engine.inspect(cid)
            if info.oom_killed:
                self.system_log(f"executor {index} was killed: out of memory")
        finally:
            with self._lock:
                self._container = None
            self._finished_containers.append(cid)
        limit = self.a.settings.log_tail_bytes
        entry.update(
            end_time=now(), exit_code=code, stdout=tail(out, limit), stderr=tail(err, limit)
        )
        self._streams += [(index, "stdout", out), (index, "stderr", err)]
        if self._cancel.is_set():
            return None
        if index < len(self.task["executors"]) - 1:
            self.report("running")  # progress; the last executor's log goes with the final report
        return code

    def _after_report(self) -> None:
        """Off the critical path, once the client can see the result: save the full streams
        (GET /api/v1/tasks/{id}/logs), remove the exited containers, drop the work area."""
        for index, stream, path in self._streams:
            try:
                self.client.upload_stream(self.a.attempt_id, index, stream, path)
            except GatewayUnreachable as exc:
                log.warning("full %s of executor %d not saved: %s", stream, index, exc)
        for cid in self._finished_containers:
            try:
                self.engine.remove(cid)
            except EngineError as exc:
                log.warning("removing %s: %s", cid, exc)
