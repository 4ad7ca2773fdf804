"""One task attempt on this instance, start to finish, in its own thread.

The steps, in order (each reported to the gateway as it happens):

    1. initializing   stage inputs into the workspace; make every image available
    2. running        executors one after another in one work area (stop at the first non-zero
                      exit unless `ignore_error`); each ExecutorLog gets times, exit code and the
                      tails of stdout/stderr; the full streams go to the gateway
    3. outputs        uploaded even when an executor failed; a missing output is noted in
                      system_logs and skipped
    4. end            complete | executor_error | system_error | canceled (outputs not uploaded)

Capsules (capsule_runtime/checkpointing.py): while an executor runs, the attempt can be
checkpointed — periodically (`capsules.interval_seconds`, the task keeps running), or on an order
from the gateway (`checkpoint`, or a migration: checkpoint, stop, report `interrupted`). An
assignment with `restore` starts by restoring the newest usable capsule instead of staging: the
task directory comes back at the same host path, the container resumes where it was, and the run
goes on from that executor with the same TaskLog. A corrupt capsule is reported and skipped for
the one before it; when none is usable the task starts from scratch (said in system_logs).

The capsule sessions (checkpoints, restores, resizes) are capsule_runtime/sessions.py; how an
executor and the attempt end is typed in capsule_runtime/outcomes.py.

The task directory is `<tasks_dir>/<task_id>`, the same on every instance, because podman's
checkpoint names its bind mounts by host path.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import threading
from pathlib import Path
from typing import Any, Literal

from capsule_runtime import failpoints
from capsule_runtime.capsules.store import CapsuleStore, open_store
from capsule_runtime.client import Fenced, GatewayClient, GatewayUnreachable
from capsule_runtime.engine.errors import EngineError
from capsule_runtime.engine.protocol import ContainerEngine
from capsule_runtime.engine.spec import ContainerSpec, Mount
from capsule_runtime.image_source import prepare_image
from capsule_runtime.live_logs import LiveStreams, open_stream
from capsule_runtime.outcomes import (
    AttemptEnd,
    Cancelled,
    ExecutorEnd,
    Exited,
    FinalStatus,
    Finished,
    Moved,
    RestoreElsewhere,
    Superseded,
)
from capsule_runtime.protocol.local_paths import install_dirs
from capsule_runtime.protocol.messages import (
    Assignment,
    AttemptReport,
    AttemptStatus,
    CheckpointOrder,
)
from capsule_runtime.protocol.redact import (
    is_secret_name,
    redact,
    remember_env_secrets,
    remember_secret,
)
from capsule_runtime.protocol.tasklog import NOT_RUN, drop_unstarted
from capsule_runtime.protocol.tes import TesExecutor, TesResources, TesTask
from capsule_runtime.protocol.times import rfc3339, utcnow
from capsule_runtime.sessions import Checkpointer, Resizer, RestoreFailedHere, Restorer, Running
from capsule_runtime.staging import (
    S3Config,
    StagingError,
    StagingPolicy,
    Workspace,
    check_shared_mounts,
    stage_inputs,
    upload_outputs_report,
)
from capsule_runtime.usage import Usage, UsageSampler

log = logging.getLogger(__name__)
GIB = 1024**3
CANCEL_GRACE = 10.0  # seconds between SIGTERM and SIGKILL when a user cancels
ABORT_GRACE = 2.0  # ... when the instance shuts down
CANCELED = Finished("canceled")


def now() -> str:
    return rfc3339(utcnow())


def tail(path: Path, limit: int) -> str:
    """The last `limit` bytes of a regular file as text (invalid UTF-8 replaced); "" for a
    missing file or anything else (a symlink is not followed, a FIFO never blocks)."""
    if limit <= 0:
        return ""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return ""
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        size = f.seek(0, 2)
        f.seek(max(0, size - limit))
        return f.read().decode("utf-8", errors="replace")


def default_engine() -> ContainerEngine:
    from capsule_runtime.engine.podman import PodmanEngine

    return PodmanEngine()


def s3_store_location(store: str) -> list[str]:
    """The bucket/prefix of an s3:// capsule store (never a task's s3 URL, whatever the gateway
    sent), else nothing."""
    return [store[5:]] if store[:5].lower() == "s3://" else []


class TaskRun(threading.Thread):
    def __init__(
        self,
        assignment: Assignment,
        client: GatewayClient,
        work_dir: Path,
        engine: ContainerEngine | None = None,
        tasks_dir: Path | None = None,
    ):
        super().__init__(name=f"task-{assignment.task_id}", daemon=True)
        self.a = assignment
        self.client = client
        self.engine = engine or default_engine()
        self.dir = (tasks_dir or work_dir / "tasks") / assignment.task_id
        # this agent's own folders (every task's workspace, images, capsule scratch) and code:
        # never a task's local input or output, whatever storage.allowed_dirs says
        self.private_dirs = (work_dir, tasks_dir or work_dir / "tasks", *install_dirs())
        self.scratch = work_dir / "scratch" / assignment.attempt_id
        self.images_dir = work_dir / "images"
        # one empty file per container this instance runs: what a hard stop must remove
        self.ledger = work_dir / "containers"
        self.task: TesTask = assignment.task
        self._cancel = threading.Event()
        self._abort_reason: str | None = None
        self._abandoned: str | None = None
        # the executor container running now and its index (None between executors), and the
        # workspace: set and read under _lock (cancel, resize, usage, a checkpoint's _claim)
        self._lock = threading.Lock()
        self._container: str | None = None
        self._index: int | None = None
        self._workspace: Workspace | None = None
        self._finished_containers: list[str] = []
        # (executor, stream) to upload
        self._streams: list[tuple[int, Literal["stdout", "stderr"]]] = []
        self._running_reported = False
        # capsules: the store opened on first use, shared by the sessions
        self._store: CapsuleStore | None = None
        self._checkpoints = Checkpointer(
            assignment,
            client,
            self.engine,
            self.store,
            task_dir=self.dir,
            scratch=self.scratch,
            claim=self._claim,
            cancelled=self._cancel,
            system_log=self.system_log,
            progress=lambda: self.report("running"),
        )
        self._restorer = Restorer(
            assignment,
            client,
            self.engine,
            self.store,
            task_dir=self.dir,
            scratch=self.scratch,
            cancelled=self._cancel,
            system_log=self.system_log,
        )
        self._resizer = Resizer(assignment, self.engine, self.system_log)
        self._sampler = UsageSampler()
        self._pids: dict[str, int] = {}  # container id → its init process (host PID)
        _remember_secrets(assignment)
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

    def abandon(self, reason: str) -> None:
        """The gateway is out of reach and this instance gives up on it: stop at once and send
        no final report (a gateway that comes back finds the instance lost and continues the
        task from its newest capsule, as after any lost instance)."""
        self._abandoned = reason
        self.abort(reason)

    @property
    def left_in_capsule(self) -> bool:
        """Whether the task has left this instance in a capsule (a move's checkpoint)."""
        return self._checkpoints.moved_to is not None

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

    def report(
        self, status: AttemptStatus, message: str | None = None, reason: str | None = None
    ) -> None:
        if status in ("complete", "executor_error", "system_error", "canceled"):
            self.log["end_time"] = now()
            self.log["logs"] = drop_unstarted(self.log["logs"])
        try:
            self.client.report(
                self.a.attempt_id,
                AttemptReport(
                    status=status,
                    task_log=self.log,
                    message=redact(message) if message else message,
                    reason=reason,
                ),
            )
        except GatewayUnreachable as exc:
            log.error("report %s for %s failed: %s", status, self.a.attempt_id, exc)

    def system_log(self, line: str) -> None:
        self.log["system_logs"].append(redact(line))

    # -- the run ------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            end = self._execute()
        except Exception as exc:  # anything unexpected is a system error, never a hang
            log.exception("attempt %s failed", self.a.attempt_id)
            why = f"internal error on the worker: {exc}"
            self.system_log(why)
            end = Finished("system_error", why)
        match end:
            case Moved(capsule_id):
                self._leave()
                self.report("interrupted", f"moved into capsule {capsule_id}")
            case RestoreElsewhere(capsule_id, why):
                self._leave()
                message = (
                    f"restoring capsule {capsule_id} failed on this instance ({why}); "
                    "the restore is tried on another instance"
                )
                self.system_log(message)
                self.report("interrupted", message, reason="restore_failed")
            case Superseded():  # the gateway refused it for good: nothing more to say
                self._remove_containers()
                if self._workspace is not None:
                    self._workspace.close()
                shutil.rmtree(self.dir, ignore_errors=True)
            case Finished(status, message):
                self._finish(status, message)

    def _finish(self, status: FinalStatus, message: str | None) -> None:
        """The final report (a cancel or an abort overrides all but a real end), then the
        streams saved, the containers removed and the work area dropped. An abandoned attempt
        (the gateway out of reach for good) ends with no report."""
        if self._abandoned and status not in ("complete", "executor_error"):
            log.warning("attempt %s stopped unreported: %s", self.a.attempt_id, self._abandoned)
            self._leave()
            return
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

    def _execute(self) -> AttemptEnd:
        settings = self.a.settings
        images: dict[str, str] = {}
        resumed: Running | None = None  # the executor a capsule brought back, running again
        policy = self._policy()
        if self.a.restore:
            self.report("restoring")
            try:
                images = self._prepare_images()
                check_shared_mounts(self.task, policy)
            except EngineError as exc:
                if self.a.restore_elsewhere:
                    return RestoreElsewhere("-", f"its images could not be prepared: {exc}")
                return Finished("system_error", str(exc))
            except (StagingError, OSError) as exc:  # e.g. a shared dir this instance lacks
                self.system_log(f"cannot restore here: {exc}")
                if self.a.restore_elsewhere:
                    return RestoreElsewhere("-", str(exc))
                return Finished("system_error", str(exc))
            try:
                resumed = self._restore()
            except RestoreFailedHere as exc:
                return RestoreElsewhere(exc.capsule_id, exc.why)
            if self._cancel.is_set():
                return CANCELED
        else:
            self.report("initializing")
        try:
            workspace = Workspace.create(
                self.dir / "work", self.task, policy, s3=S3Config.from_mapping(settings.s3)
            )
            with self._lock:
                self._workspace = workspace
            if resumed is None:
                shutil.rmtree(self.dir, ignore_errors=True)  # a restart from scratch: clean
                self.dir.mkdir(parents=True, exist_ok=True)
                mounts = stage_inputs(self.task.inputs or [], workspace)
            else:
                mounts = workspace.mounts()
                for index in range(resumed.index):  # their full streams came in the capsule
                    self._streams += [(index, "stdout"), (index, "stderr")]
        except (StagingError, OSError) as exc:
            self.system_log(f"input staging failed: {exc}")
            return Finished("system_error", str(exc))
        if self._cancel.is_set():
            return CANCELED
        if not images:
            try:
                images = self._prepare_images()
            except EngineError as exc:
                return Finished("system_error", str(exc))
        failed = False
        for index, ex in enumerate(self.task.executors):
            if resumed is not None and index < resumed.index:
                continue  # ran on an earlier instance
            if self._cancel.is_set():
                return CANCELED
            if resumed is not None and index == resumed.index:
                end = self._follow(index, ex, workspace, resumed.container_id)
            else:
                end = self._run_executor(index, ex, images[ex.image], workspace, mounts)
            match end:
                case Cancelled():
                    return CANCELED
                case Moved():
                    return end
                case Exited(code) if code != 0 and not ex.ignore_error:
                    failed = True
                    break
        if self._cancel.is_set():
            return CANCELED
        if not self._still_live():
            return Superseded()
        failpoints.hold(failpoints.UPLOADING_OUTPUTS)
        report = upload_outputs_report(self.task.outputs or [], workspace)
        self.log["outputs"] = report.outputs
        for note in report.system_logs:
            self.system_log(note)
        if failed:
            return Finished("executor_error")
        if report.failed:  # COMPLETE means the outputs were uploaded (TES)
            return Finished("system_error", f"{report.failed} output upload(s) failed")
        return Finished("complete")

    def _still_live(self) -> bool:
        """Before outputs go to the user's URLs: is this attempt still its task's live one? A
        superseded copy (its instance given up on while it ran on, e.g. behind a partition)
        must not overwrite what the attempt that replaced it writes. An unknown answer (the
        gateway unreachable after the client's retries) counts as live: outputs are not held
        back for a gateway that may never come back."""
        try:
            self.client.report(
                self.a.attempt_id,
                AttemptReport(status="running", task_log=self.log, message="uploading outputs"),
            )
        except Fenced as exc:
            log.warning("attempt %s superseded, outputs not uploaded: %s", self.a.attempt_id, exc)
            return False
        except GatewayUnreachable as exc:
            log.warning("uploading the outputs of %s unconfirmed: %s", self.a.attempt_id, exc)
        return True

    def _policy(self) -> StagingPolicy:
        """What this task's URLs may reach (the gateway's lists plus this agent's own folders)."""
        settings = self.a.settings
        return StagingPolicy.create(
            settings.allowed_dirs,
            settings.block_private_networks,
            denied_dirs=[*settings.denied_dirs, *self.private_dirs],
            s3_allowed=settings.s3_allowed,
            s3_denied=[*settings.s3_denied, *s3_store_location(self.a.capsules.store)],
            shared_dirs=settings.shared_dirs,
        )

    def _prepare_images(self) -> dict[str, str]:
        """Every executor's image, available locally (raises EngineError, noted in system_logs)."""
        images: dict[str, str] = {}
        for ex in self.task.executors:
            if ex.image in images:
                continue
            try:
                images[ex.image] = prepare_image(
                    self.engine, ex.image, self.a.settings, self.client, self.images_dir
                )
            except EngineError as exc:
                self.system_log(f"image {ex.image!r} is not available: {exc}")
                raise EngineError(f"image {ex.image} not available") from exc
        return images

    def _stdio(self, index: int, ex: TesExecutor, workspace: Workspace) -> tuple[Path, Path]:
        """Executor `index`'s stdout and stderr files on the host: the agent's own (under
        <task>/streams, which no container sees), or the paths the task named, resolved inside
        its tree (a symlink the task made never leads the agent to a host file; PathEscapes
        when it leads out of the mounted directories). Call it only while no container of the
        task runs: a task process could otherwise swap a directory for a link meanwhile."""
        streams = self.dir / "streams"
        out = (
            streams / f"{index}.stdout" if ex.stdout is None else workspace.confined_path(ex.stdout)
        )
        err = (
            streams / f"{index}.stderr" if ex.stderr is None else workspace.confined_path(ex.stderr)
        )
        return out, err

    def _open_stdio(
        self, index: int, ex: TesExecutor, workspace: Workspace
    ) -> tuple[Path | None, Path, Path]:
        """Executor `index`'s stdin, stdout and stderr, ready for the engine: stdout and stderr
        created empty (through no symlink), stdin an existing regular file inside the tree.
        Raises StagingError (PathEscapes for a symlink that leads out) or OSError."""
        out, err = self._stdio(index, ex, workspace)
        for named, path in ((ex.stdout, out), (ex.stderr, err)):
            if named is not None:
                workspace.create_file(named)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
        stdin = None
        if ex.stdin is not None:
            try:
                stdin = workspace.existing_file(ex.stdin)
            except FileNotFoundError:
                raise StagingError(f"stdin file {ex.stdin} does not exist") from None
        return stdin, out, err

    def _stream_file(
        self,
        index: int,
        stream: Literal["stdout", "stderr"],
        workspace: Workspace | None,
        note: bool = True,
    ) -> Path | None:
        """Where to read executor `index`'s finished `stream` ("stdout" or "stderr") from now:
        the agent's own file, or the task's path resolved inside its tree and checked to be a
        regular file — None when it is missing or would lead out (said in system_logs with
        `note`). Called when no container of the task runs, each time it is read: a later
        executor may have replaced an earlier one's file with a symlink."""
        named = self.task.executors[index].stdio(stream)
        if named is None:
            return self.dir / "streams" / f"{index}.{stream}"
        if workspace is None:
            return None
        try:
            return workspace.existing_file(named)
        except FileNotFoundError:
            return None
        except (StagingError, OSError) as exc:
            if note:
                self.system_log(f"executor {index}'s {stream} is not read: {exc}")
            else:
                log.warning("executor %d's %s is not read: %s", index, stream, exc)
            return None

    def _run_executor(
        self,
        index: int,
        ex: TesExecutor,
        image: str,
        workspace: Workspace,
        mounts: tuple[Mount, ...],
    ) -> ExecutorEnd:
        try:
            stdin, out, err = self._open_stdio(index, ex, workspace)
        except (StagingError, OSError) as exc:
            entry = self._entry(index)
            entry.update(start_time=now(), end_time=now(), exit_code=127, stderr=str(exc))
            self.system_log(f"executor {index} could not start: {exc}")
            return Exited(127)
        asked = self.task.resources or TesResources()
        limits = self.a.limits or {}
        cpu_cores = limits.get("cpu_cores", asked.cpu_cores)
        ram_gb = limits.get("ram_gb", asked.ram_gb)
        spec = ContainerSpec(
            image=image,
            argv=tuple(ex.command),
            task_id=self.a.task_id,
            name=f"tescape-{self.a.attempt_id}-{index}",
            env=ex.env or {},
            workdir=ex.workdir,
            mounts=mounts,
            stdin=stdin,
            stdout=out,
            stderr=err,
            cpu_cores=cpu_cores,
            memory_bytes=int(ram_gb * GIB) if ram_gb is not None else None,
            labels={"io.tescape.attempt": self.a.attempt_id},
        )
        entry = self._entry(index)
        entry.update(start_time=now(), exit_code=NOT_RUN)
        live = self._live_sources(index, ex, {"stdout": out, "stderr": err})
        try:
            cid = self.engine.run(spec)
        except EngineError as exc:
            LiveStreams(self.client, self.a.attempt_id, index, live).stop()  # closes them
            entry.update(end_time=now(), exit_code=127, stderr=str(exc))
            self.system_log(f"executor {index} could not start: {exc}")
            return Exited(127)
        self._record(cid)
        return self._follow(index, ex, workspace, cid, live)

    def _live_sources(
        self, index: int, ex: TesExecutor, named: dict[str, Path] | None
    ) -> dict[str, int | Path]:
        """Where live logs read executor `index`'s streams from while it runs (live_logs.py):
        the agent's own files by path; a file the task named only through a descriptor opened
        here, from the path `_stdio` resolved — so only before its container starts (`named`),
        never for a container restored from a capsule, whose task may have swapped it."""
        sources: dict[str, int | Path] = {}
        for stream in ("stdout", "stderr"):
            if ex.stdio(stream) is None:
                sources[stream] = self.dir / "streams" / f"{index}.{stream}"
            elif named is not None and (fd := open_stream(named[stream])) is not None:
                sources[stream] = fd
        return sources

    def _record(self, cid: str, present: bool = True) -> None:
        path = self.ledger / cid
        if present:
            self.ledger.mkdir(parents=True, exist_ok=True)
            path.touch()
        else:
            path.unlink(missing_ok=True)

    def _remove_containers(self) -> None:
        for cid in self._finished_containers:
            try:
                self.engine.remove(cid)
                self._record(cid, present=False)
            except EngineError as exc:
                log.warning("removing %s: %s", cid, exc)
        self._finished_containers.clear()

    def _follow(
        self,
        index: int,
        ex: TesExecutor,
        workspace: Workspace,
        cid: str,
        live: dict[str, int | Path] | None = None,
    ) -> ExecutorEnd:
        """Wait for executor `index`'s running container `cid`; checkpoint it when due; push its
        logs live meanwhile. Exited with its exit code, Cancelled, or Moved when it left in a
        capsule."""
        with self._lock:
            self._container, self._index = cid, index
        if not self._running_reported:
            self._running_reported = True
            self.report("running")  # the first executor is running: INITIALIZING → RUNNING
        if live is None:  # a restored container: the agent's own stream files only
            live = self._live_sources(index, ex, None)
        pusher = LiveStreams(self.client, self.a.attempt_id, index, live).start()
        if self._cancel.is_set():
            self._stop_container()
        try:
            try:
                code = self._checkpoints.wait(cid)
            except EngineError:
                # podman cannot wait for a container a checkpoint has just stopped
                self._checkpoints.settled()
                if self._checkpoints.moved_to is None:
                    raise
            self._checkpoints.settled()  # a checkpoint that stopped the container ends first
            if (capsule_id := self._checkpoints.moved_to) is not None:
                self._finished_containers.append(cid)
                return Moved(capsule_id)
            if code == 128 + 9 and self.engine.inspect(cid).oom_killed:  # SIGKILL: maybe OOM
                self.system_log(f"executor {index} was killed: out of memory")
        finally:
            pusher.stop()
            with self._lock:
                self._container, self._index = None, None
            if cid not in self._finished_containers:
                self._finished_containers.append(cid)
        limit = self.a.settings.log_tail_bytes
        tails = {}
        for stream in ("stdout", "stderr"):
            path = self._stream_file(index, stream, workspace)
            tails[stream] = tail(path, limit) if path is not None else ""
        self._entry(index).update(end_time=now(), exit_code=code, **tails)
        self._streams += [(index, "stdout"), (index, "stderr")]
        if self._cancel.is_set():
            return Cancelled()
        if index < len(self.task.executors) - 1:
            self.report("running")  # progress; the last executor's log goes with the final report
        return Exited(code)

    # -- usage ------------------------------------------------------------------------------

    def usage(self) -> Usage | None:
        """What the running executor's container uses now (None between executors)."""
        with self._lock:
            cid = self._container
        if cid is None:
            return None
        pid = self._pids.get(cid)
        if pid is None:
            try:
                pid = self.engine.inspect(cid).pid
            except EngineError:
                return None
            if pid is None:
                return None
            self._pids[cid] = pid
        return self._sampler.sample(pid)

    # -- capsules -----------------------------------------------------------------------------

    def store(self) -> CapsuleStore:
        """The capsule store, opened on first use (a task that never checkpoints needs none)."""
        if self._store is None:
            self._store = open_store({"url": self.a.capsules.store, "s3": self.a.capsules.s3})
        return self._store

    def checkpoint(self, order: CheckpointOrder) -> None:
        """Checkpoint the running executor's container into a capsule (from any thread). With
        `order.stop`, the container ends and the attempt reports `interrupted`; a failure leaves
        the task running and says why in system_logs. Always answers with a CapsuleReport."""
        self._checkpoints.checkpoint(order)

    def _claim(self) -> Running | None:
        """The container a checkpoint may take now, held for it (sessions.Checkpointer) under
        the same lock `_follow` sets and clears it with."""
        with self._lock:
            cid, index = self._container, self._index
            if cid is None or index is None or self._cancel.is_set():
                return None
            self._checkpoints.begin()
            return Running(cid, index)

    def _restore(self) -> Running | None:
        """Restore from the newest usable capsule: its executor, running again, or None to
        start from scratch."""
        found = self._restorer.newest_usable()
        if found is None:
            return None
        ref, restored = found
        self._resizer.restored(restored.container_id)
        self._checkpoints.parent = restored.manifest
        self._record(restored.container_id)
        self._finished_containers.append(restored.container_id)  # removed at the end
        index = int(restored.manifest.meta.get("executor_index", 0))
        self.log["metadata"]["restored_from"] = ref.capsule_id
        self._restorer.confirm(ref, restored)
        return Running(restored.container_id, index)

    def resize(self, cpu_cores: float | None, ram_gb: float | None) -> None:
        """The gateway's in-place resize: new limits for the running executor's container."""
        with self._lock:
            cid = self._container
        self._resizer.resize(cid, cpu_cores, ram_gb)

    def _leave(self) -> None:
        """The task moved into a capsule: free this instance's copy before the gateway assigns
        the next attempt, which may land on this machine, at the same path."""
        self._remove_containers()
        if self._workspace is not None:
            self._workspace.close()
            self._workspace = None
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.scratch, ignore_errors=True)

    def _after_report(self) -> None:
        """Off the critical path, once the client can see the result: save the full streams
        (GET /api/v1/tasks/{id}/logs), remove the exited containers, drop the work area."""
        for index, stream in self._streams:
            path = self._stream_file(index, stream, self._workspace, note=False)
            if path is None:
                continue
            try:
                self.client.upload_stream(self.a.attempt_id, index, stream, path)
            except GatewayUnreachable as exc:
                log.warning("full %s of executor %d not saved: %s", stream, index, exc)
        self._remove_containers()


def _remember_secrets(assignment: Assignment) -> None:
    """The secrets this task's run may print in an error (a registry password in a podman
    message, the S3 secret key, the capsule key, the task's secret env values): masked in the
    agent's logs and in the system_logs it reports (capsule_runtime.protocol.redact)."""
    settings = assignment.settings
    remember_secret(*(c.get("password") for c in settings.registry_credentials.values()))
    for s3 in (settings.s3, assignment.capsules.s3):
        remember_secret(*(str(v) for k, v in s3.items() if is_secret_name(k) and v))
    remember_secret(str(assignment.capsules.encryption.get("key") or ""))
    for executor in assignment.task.executors:
        if executor.env:
            remember_env_secrets(executor.env)
