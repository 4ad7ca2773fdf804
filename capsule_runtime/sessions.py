"""An attempt's sessions beside its run (capsule_runtime/runner.py): checkpoints, restores and
in-place resizes of the executor container that runs now.

- `Checkpointer`: one checkpoint at a time into the attempt's capsule chain — periodic ones
  (taken while the runner waits for the container), ordered ones, and migrations (checkpoint,
  then stop: the run ends `Moved`). Every checkpoint is answered with a CapsuleReport; a failed
  one never takes the task down.
- `Restorer`: the newest usable capsule of an assignment's `restore` list, waiting out a store
  that cannot be reached, reporting a corrupt or missing capsule and falling back to the one
  before it, and saying so when none is usable (the task then starts from scratch).
- `Resizer`: the gateway's new limits set on the running container, and on a restored one
  (which comes back with the limits it was checkpointed with).

They share the runner's engine, capsule store and system_logs; the runner owns which container
runs now and hands it over through `claim` (see Checkpointer).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from capsule_runtime import checkpointing, failpoints
from capsule_runtime.capsules.manifest import Manifest
from capsule_runtime.capsules.pipeline import CapsuleCorrupt
from capsule_runtime.capsules.store import CapsuleMissing, CapsuleStore, CapsuleStoreError
from capsule_runtime.client import GatewayClient, GatewayUnreachable
from capsule_runtime.engine.errors import EngineError, WaitTimeout
from capsule_runtime.engine.protocol import ContainerEngine
from capsule_runtime.protocol.messages import Assignment, CapsuleRef, CapsuleReport, CheckpointOrder
from capsule_runtime.protocol.redact import redact

log = logging.getLogger(__name__)
GIB = 1024**3

SystemLog = Callable[[str], None]  # a line for the attempt's system_logs (redacted there)


@dataclass(frozen=True)
class Running:
    """The executor container that runs now, as a checkpoint takes it."""

    container_id: str
    index: int  # the executor's position in the task


def send_capsule(client: GatewayClient, attempt_id: str, report: CapsuleReport) -> None:
    """A CapsuleReport to the gateway; an unreachable gateway is logged, not raised (the run
    goes on, and the gateway's deadlines notice an unanswered order)."""
    try:
        client.report_capsule(attempt_id, report)
    except GatewayUnreachable as exc:
        log.error("capsule report for %s failed: %s", attempt_id, exc)


class Checkpointer:
    """The attempt's checkpoints, one at a time, from any thread.

    `claim` is the runner's: under its own lock it returns the container that runs now (None
    between executors, or once cancelled) and, when it returns one, calls `begin()` — so that a
    runner seeing its container exit waits (`settled`) for a checkpoint that is stopping it."""

    def __init__(
        self,
        assignment: Assignment,
        client: GatewayClient,
        engine: ContainerEngine,
        store: Callable[[], CapsuleStore],
        *,
        task_dir: Path,
        scratch: Path,
        claim: Callable[[], Running | None],
        cancelled: threading.Event,
        system_log: SystemLog,
        progress: Callable[[], None],
    ) -> None:
        self.a = assignment
        self.client = client
        self.engine = engine
        self.store = store
        self.task_dir = task_dir
        self.scratch = scratch
        self._claim = claim
        self._cancelled = cancelled
        self._system_log = system_log
        self._progress = progress  # reports `running`, carrying a new system_logs line
        self.sequence = assignment.next_sequence
        self.parent: Manifest | None = None  # the newest capsule: the next one's base
        self.moved_to: str | None = None  # the capsule the task left in (a migration)
        self._lock = threading.Lock()  # one checkpoint at a time
        self._done = threading.Event()  # no checkpoint holds the running container
        self._done.set()
        self._last = time.monotonic()

    def begin(self) -> None:
        """Called by `claim`, under the runner's lock: a checkpoint now holds the container."""
        self._done.clear()

    def settled(self) -> None:
        """Wait until no checkpoint holds the container (one that stops it ends first)."""
        self._done.wait()

    def wait(self, container_id: str) -> int:
        """engine.wait, taking the periodic checkpoints on the way."""
        interval = self.a.capsules.interval_seconds if self.a.capsules.store else 0.0
        while True:
            if interval <= 0:
                return self.engine.wait(container_id)
            due = self._last + interval - time.monotonic()
            try:
                return self.engine.wait(container_id, timeout=max(due, 0.05))
            except WaitTimeout:
                self.checkpoint(CheckpointOrder(attempt_id=self.a.attempt_id, request_id=""))

    def checkpoint(self, order: CheckpointOrder) -> None:
        """Checkpoint the running executor's container into a capsule. With `order.stop`, the
        container ends and the run ends Moved; a failure leaves the task running and says why in
        system_logs. Always answers with a CapsuleReport (but once the task has moved)."""
        periodic = not order.request_id
        with self._lock:
            if self.moved_to is not None:
                return  # the task has left this instance already
            self._last = time.monotonic()
            sequence = self.sequence
            report = CapsuleReport(
                state="failed",
                capsule_id=f"{self.a.attempt_id}-{sequence}",
                sequence=sequence,
                request_id=order.request_id or None,
                stop=order.stop,
                reason="periodic" if periodic and not order.stop else order.reason,
            )
            running = self._claim()
            try:
                done = self._take(running, sequence, report.reason, order.stop)
            except Exception as exc:  # a failed checkpoint never takes the task down
                log.warning("checkpoint of %s failed: %s", self.a.attempt_id, exc)
                report.error = redact(str(exc))
                self._system_log(f"checkpoint {sequence} ({report.reason}) failed: {exc}")
                send_capsule(self.client, self.a.attempt_id, report)
                self._done.set()
                self._progress()  # the system_logs line
                return
            assert running is not None  # _take refused otherwise
            self.sequence += 1
            self.parent = m = done.manifest
            report = report.model_copy(
                update={
                    "state": "complete",
                    "capsule_id": m.capsule_id,
                    "manifest_key": done.key,
                    "manifest_sha256": done.sha256,
                    "parent": m.parent,
                    "size_bytes": m.size_bytes,
                    "stored_bytes": m.stored_bytes,
                    "uploaded_bytes": m.uploaded_bytes,
                    "uploaded_chunks": m.uploaded_chunks,
                    "reused_chunks": m.reused_chunks,
                    "seconds": {**m.timings, **done.seconds},
                }
            )
            if order.stop:  # the capsule is durable: this copy ends now, whether or not the
                self.moved_to = m.capsule_id  # gateway hears of it at once
                self._stop_moved(running.container_id)
            failpoints.hold(failpoints.CAPSULE_STORED)
            send_capsule(self.client, self.a.attempt_id, report)  # before `interrupted`
            self._done.set()

    def _take(
        self, running: Running | None, sequence: int, reason: str, stop: bool = False
    ) -> checkpointing.Checkpoint:
        if not self.a.capsules.store:
            raise checkpointing.CheckpointFailed("capsules are not configured")
        if running is None or self._cancelled.is_set():
            raise checkpointing.CheckpointFailed(
                "no executor is running (staging, uploading or finished)"
            )
        return checkpointing.checkpoint(
            self.engine,
            self.store(),
            self.a.capsules,
            container_id=running.container_id,
            task_dir=self.task_dir,
            scratch=self.scratch,
            task_id=self.a.task_id,
            attempt_id=self.a.attempt_id,
            sequence=sequence,
            parent=self.parent,
            meta={"executor_index": running.index, "reason": reason},
            # A move, too, leaves the task running until its capsule is durable: a store
            # that fails mid-upload then costs a failed checkpoint, never the task
            leave_running=True,
            # a move's capsule (the task ends with it) is stored while CRIU dumps; a periodic
            # one's task goes on, so its dump is not slowed by the upload (checkpoint_via)
            follow=stop,
        )

    def _stop_moved(self, container_id: str) -> None:
        """The task lives on in its capsule: end this copy at once (what it did since the dump
        is redone from the capsule, on the instance it moves to)."""
        try:
            self.engine.stop(container_id, grace=0)
        except EngineError as exc:  # it may have ended by itself in the meantime
            log.info("stopping %s after its move: %s", container_id, exc)


class RestoreFailedHere(Exception):
    """A capsule's restore failed for this instance's reasons; the task has restore tries left
    elsewhere (Assignment.restore_elsewhere)."""

    def __init__(self, capsule_id: str, why: str) -> None:
        super().__init__(f"restoring capsule {capsule_id} failed on this instance: {why}")
        self.capsule_id, self.why = capsule_id, why


class Restorer:
    """The newest usable capsule of an assignment, restored into a running container."""

    def __init__(
        self,
        assignment: Assignment,
        client: GatewayClient,
        engine: ContainerEngine,
        store: Callable[[], CapsuleStore],
        *,
        task_dir: Path,
        scratch: Path,
        cancelled: threading.Event,
        system_log: SystemLog,
    ) -> None:
        self.a = assignment
        self.client = client
        self.engine = engine
        self.store = store
        self.task_dir = task_dir
        self.scratch = scratch
        self._cancelled = cancelled
        self._system_log = system_log

    def newest_usable(self) -> tuple[CapsuleRef, checkpointing.Restored] | None:
        """The first capsule of `restore` (newest first) that restores, with its restored
        container; None (said in system_logs and to the gateway) to start from scratch. A corrupt
        or missing capsule is reported and skipped for the one before it. The caller confirms
        the one it keeps (`confirm`) once it has taken the container over."""
        failpoints.hold(failpoints.RESTORING)
        for ref in self.a.restore:
            try:
                return ref, self._restore_waiting(ref)
            except (CapsuleCorrupt, CapsuleMissing) as exc:
                self._system_log(f"capsule {ref.capsule_id} is unusable ({exc}); not restored")
                self._send(
                    CapsuleReport(
                        state="corrupt",
                        capsule_id=ref.capsule_id,
                        sequence=ref.sequence,
                        error=redact(str(exc)),
                    )
                )
            except (EngineError, OSError, CapsuleStoreError) as exc:
                self._system_log(f"restoring capsule {ref.capsule_id} failed: {exc}")
                # podman, CRIU or this instance's disk, not the capsule: another instance may
                # restore it (the store itself was waited for already: the same everywhere)
                if self.a.restore_elsewhere and not isinstance(exc, CapsuleStoreError):
                    raise RestoreFailedHere(ref.capsule_id, str(exc)) from exc
        self._system_log(
            "no usable capsule to restore from; the task starts again from the beginning"
        )
        self._send(CapsuleReport(state="none_usable", capsule_id="-"))
        return None

    def confirm(self, ref: CapsuleRef, restored: checkpointing.Restored) -> None:
        """Tell the gateway the task runs on from capsule `ref`."""
        self._send(
            CapsuleReport(
                state="restored",
                capsule_id=ref.capsule_id,
                sequence=ref.sequence,
                size_bytes=restored.manifest.size_bytes,
                stored_bytes=restored.manifest.stored_bytes,
                seconds=restored.seconds,
            )
        )

    def _restore_waiting(self, ref: CapsuleRef) -> checkpointing.Restored:
        """Restore one capsule; while its store cannot be reached, try again with a back-off
        for `store_wait_seconds` (a store restarting or briefly unreachable must not cost the
        task its capsule, or make it start again from the beginning). Cancellable."""
        deadline = time.monotonic() + self.a.capsules.store_wait_seconds
        delay = 1.0
        while True:
            try:
                return checkpointing.restore(
                    self.engine,
                    self.store(),
                    self.a.capsules,
                    ref,
                    task_dir=self.task_dir,
                    scratch=self.scratch,
                    name=f"tescape-{self.a.attempt_id}-r{ref.sequence}",
                )
            except CapsuleStoreError as exc:
                left = deadline - time.monotonic()
                if left <= 0 or self._cancelled.is_set():
                    raise
                wait = min(delay, left)
                self._system_log(
                    f"capsule store unreachable while restoring {ref.capsule_id} ({exc}); "
                    f"trying again in {wait:.0f} s"
                )
                self._cancelled.wait(wait)
                delay = min(delay * 2, 30.0)

    def _send(self, report: CapsuleReport) -> None:
        send_capsule(self.client, self.a.attempt_id, report)


class Resizer:
    """The attempt's container limits, set in place (`assignment.limits` keeps what the gateway
    ordered last, for the next executor's container too)."""

    def __init__(
        self, assignment: Assignment, engine: ContainerEngine, system_log: SystemLog
    ) -> None:
        self.a = assignment
        self.engine = engine
        self._system_log = system_log

    def resize(
        self, container_id: str | None, cpu_cores: float | None, ram_gb: float | None
    ) -> None:
        """The gateway's in-place resize of the running executor's container (None between
        executors: the next one keeps the old limits)."""
        if container_id is None:
            self._system_log("resize ordered between executors; the next one keeps the old limits")
            return
        self.a.limits = {
            **(self.a.limits or {}),
            **{k: v for k, v in (("cpu_cores", cpu_cores), ("ram_gb", ram_gb)) if v is not None},
        }
        self._set(container_id, cpu_cores, ram_gb, "the running")

    def restored(self, container_id: str) -> None:
        """A restored container comes back with the limits it was checkpointed with; a size
        move (rightsizing, OOM protection) gave this attempt others: set them in place."""
        limits = self.a.limits or {}
        if limits:
            self._set(container_id, limits.get("cpu_cores"), limits.get("ram_gb"), "the restored")

    def _set(self, container_id: str, cpu: float | None, ram: float | None, which: str) -> None:
        memory = int(ram * GIB) if ram is not None else None
        try:
            self.engine.update(container_id, cpu_cores=cpu, memory_bytes=memory)
        except EngineError as exc:
            self._system_log(f"{which} container keeps its old limits: {exc}")
            return
        parts = [f"cpu {cpu:g}" if cpu is not None else "", f"memory {ram:g} GB" if ram else ""]
        self._system_log(f"limits of {which} container: " + ", ".join(p for p in parts if p))
