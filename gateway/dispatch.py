"""The gateway's side of the agent protocol (gateway.tes.protocol): registration, long polls that
hand out orders, and reports that move tasks through their states.

Orders are derived from the store on every poll, never kept only in memory, so a gateway restart
loses nothing: an attempt in PROVISIONING on an instance is an assignment not yet picked up; a live
attempt of a CANCELING task is a stop order.
"""

from __future__ import annotations

import base64
import hmac
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gateway.auth import AuthError, token_sha256
from gateway.config import Config
from gateway.library import Library
from gateway.migration import Migrations, restarts
from gateway.rules import effective_parameters
from gateway.scheduler.loop import SCHEDULER, container_limits
from gateway.scheduler.wakeups import Wakeups
from gateway.store.fleet import Attempt, FleetStore, Instance, InstanceState
from gateway.store.tasks import TaskStore
from gateway.tes.backend_parameters import duration_seconds
from gateway.tes.protocol import (
    Assignment,
    AttemptReport,
    CapsuleRef,
    CapsuleReport,
    CapsuleSettings,
    CheckpointOrder,
    Notice,
    Orders,
    Poll,
    Registration,
    ResizeOrder,
    TaskSettings,
)
from gateway.tes.redact import remember_secret
from gateway.tes.states import AttemptPhase, State
from gateway.tes.times import rfc3339, utcnow

log = logging.getLogger(__name__)

MAX_WAIT = 25.0  # seconds a poll may be held open
USAGE_SAMPLES = 24  # usage samples kept per attempt (about two minutes at one per 5 s)
STREAMS = ("stdout", "stderr")

STATUS_STATE = {
    "running": State.RUNNING,
    "complete": State.COMPLETE,
    "executor_error": State.EXECUTOR_ERROR,
    "system_error": State.SYSTEM_ERROR,
    "canceled": State.CANCELED,
}


class NotYours(LookupError):
    """The attempt does not exist or belongs to another instance."""


class Dispatcher:
    def __init__(
        self,
        config: Config,
        tasks: TaskStore,
        fleet: FleetStore,
        wakeups: Wakeups,
        library: Library,
    ):
        self.cfg = config
        self.tasks = tasks
        self.fleet = fleet
        self.wakeups = wakeups
        self.library = library
        self.logs_dir = config.data_path / "logs"
        self._capsule_key: str | None = None  # base64, once read

    # -- identity -----------------------------------------------------------------------------

    def authenticate(self, instance_id: str, authorization: str | None) -> Instance:
        expected = self.fleet.token_sha256(instance_id)
        scheme, _, token = (authorization or "").partition(" ")
        if (
            expected is None
            or scheme.lower() != "bearer"
            or not hmac.compare_digest(token_sha256(token.strip()), expected)
        ):
            raise AuthError("unknown instance or wrong instance token", 'Bearer realm="agent"')
        inst = self.fleet.instance(instance_id)
        assert inst is not None
        return inst

    def _restarts(self, task_id: str) -> bool:
        return restarts(self.tasks, self.cfg, task_id)

    def settings(self, task: dict[str, Any]) -> TaskSettings:
        s3 = self.cfg.storage.s3.model_dump(exclude_none=True)
        apps, credentials = self.library.resolve(
            (ex["image"] for ex in task.get("executors", [])), self.cfg.images.rewrites
        )
        return TaskSettings(
            apps=apps,
            registry_credentials=credentials,
            log_tail_bytes=self.cfg.executor_logs.tail_bytes,
            allowed_dirs=self.cfg.allowed_dirs,
            denied_dirs=self.cfg.denied_dirs,
            block_private_networks=self.cfg.storage.block_private_networks,
            image_rewrites=self.cfg.images.rewrites,
            insecure_registries=self.cfg.images.insecure_registries,
            s3=s3,
        )

    def capsule_settings(self, task: dict[str, Any]) -> CapsuleSettings:
        cfg = self.cfg.capsules
        params = effective_parameters(task, self.cfg.tasks.rules)
        interval = cfg.interval_seconds
        if "checkpoint_interval" in params:
            interval = duration_seconds(params["checkpoint_interval"])
        store = self.cfg.capsule_store
        s3 = self.cfg.storage.s3.model_dump(exclude_none=True) if store.startswith("s3://") else {}
        return CapsuleSettings(
            store=store,
            s3=s3,
            interval_seconds=interval,
            tcp_established=params.get("tcp_established", "false").lower() == "true",
            file_locks=params.get("file_locks", "false").lower() == "true",
            chunk_mib=cfg.chunk_mib,
            compression_level=cfg.compression_level,
            workers=cfg.workers,
            encryption=self.capsule_encryption(),
        )

    def capsule_encryption(self) -> dict[str, Any]:
        """CapsuleSettings.encryption: the master key for the agent (read, or created on first
        use, once); {} when capsules are written in the clear."""
        if self.cfg.capsules.encryption.mode == "none":
            return {}
        if self._capsule_key is None:
            from capsule_runtime.capsules.crypto import load_or_create_master_key

            key = load_or_create_master_key(self.cfg.capsule_key_file)
            self._capsule_key = base64.b64encode(key).decode()
            remember_secret(self._capsule_key)
        return {"mode": "key", "key": self._capsule_key}

    def restore_refs(self, task_id: str) -> list[CapsuleRef]:
        return [
            CapsuleRef(
                capsule_id=c.id,
                sequence=c.sequence,
                manifest_key=c.store_key,
                manifest_sha256=c.manifest_sha256 or "",
            )
            for c in self.fleet.capsules_of(task_id, {"complete"})
        ]

    # -- register and poll --------------------------------------------------------------------

    def register(self, inst: Instance, reg: Registration) -> None:
        data = dict(inst.data)
        offered = data.get("capacity", {})
        reported = reg.capacity.model_dump()
        # never plan beyond what either side says the machine has
        data["capacity"] = {k: min(v, offered.get(k, v)) for k, v in reported.items()}
        data.update(hostname=reg.hostname, agent_version=reg.agent_version, facts=reg.facts)
        self.fleet.set_instance_state(inst.id, InstanceState.READY, data=data)
        self.fleet.heartbeat(inst.id)
        self.wakeups.notify(SCHEDULER)

    def poll(self, inst: Instance, poll: Poll) -> Orders:
        self.fleet.heartbeat(inst.id)
        if poll.usage:
            self._record_usage(poll.usage)
        seen = self.wakeups.version(inst.id)
        orders = self._orders(inst.id, poll.running)
        wait = min(poll.wait_seconds, MAX_WAIT)
        if wait > 0 and not (orders.assign or orders.cancel or orders.shutdown):
            self.wakeups.wait(inst.id, seen, wait)
            self.fleet.heartbeat(inst.id)
            orders = self._orders(inst.id, poll.running)
        return orders

    def _record_usage(self, usage: dict[str, dict[str, Any]]) -> None:
        """Keep the newest samples of each attempt (attempt data `usage`), oldest first."""
        now = rfc3339(utcnow())
        for attempt_id, sample in usage.items():
            attempt = self.fleet.attempt(attempt_id)
            if attempt is None or attempt.phase is AttemptPhase.DONE:
                continue
            history = list(attempt.data.get("usage") or [])[-(USAGE_SAMPLES - 1) :]
            history.append({**sample, "time": now})
            self.fleet.update_attempt_data(attempt_id, usage=history)

    def _orders(self, instance_id: str, running: Iterable[str]) -> Orders:
        inst = self.fleet.instance(instance_id)
        if inst is None or inst.state is not InstanceState.READY:
            return Orders(shutdown=True)
        orders = Orders()
        running_ids = set(running)
        for attempt in self.fleet.live_attempts(instance_id):
            record = self.tasks.get(attempt.task_id)
            if record is None:
                continue
            if record.state is State.CANCELING:
                if attempt.phase is AttemptPhase.PROVISIONING:
                    self._finish(attempt, State.CANCELED, record.logs, "cancelled before start")
                elif attempt.id in running_ids:
                    orders.cancel.append(attempt.id)
                continue
            restore = bool(attempt.data.get("restore"))
            phase = AttemptPhase.RESTORING if restore else AttemptPhase.STARTING
            if attempt.phase is AttemptPhase.PROVISIONING and self.fleet.set_phase(
                attempt.id, phase, expect={AttemptPhase.PROVISIONING}
            ):
                spec = record.spec or {}
                orders.assign.append(
                    Assignment(
                        attempt_id=attempt.id,
                        task_id=attempt.task_id,
                        task=spec,
                        task_log=record.logs[-1] if record.logs else None,
                        settings=self.settings(spec),
                        capsules=self.capsule_settings(spec),
                        restore=self.restore_refs(attempt.task_id) if restore else [],
                        next_sequence=self.fleet.next_capsule_sequence(attempt.task_id),
                        limits=container_limits(attempt, spec, inst),
                    )
                )
                continue
            resize = attempt.data.get("resize")
            if resize and not resize.get("sent") and attempt.id in running_ids:
                self.fleet.update_attempt_data(attempt.id, resize={**resize, "sent": True})
                orders.resize.append(
                    ResizeOrder(
                        attempt_id=attempt.id,
                        cpu_cores=resize.get("cpu_cores"),
                        ram_gb=resize.get("ram_gb"),
                    )
                )
            request = attempt.data.get("checkpoint")
            if (
                request
                and not request.get("sent")
                and self.fleet.set_phase(
                    attempt.id, AttemptPhase.CHECKPOINTING, expect={AttemptPhase.RUNNING}
                )
            ):
                self.fleet.update_attempt_data(attempt.id, checkpoint={**request, "sent": True})
                orders.checkpoint.append(
                    CheckpointOrder(
                        attempt_id=attempt.id,
                        request_id=request["id"],
                        stop=bool(request.get("stop")),
                        reason=request.get("reason", "manual"),
                    )
                )
        return orders

    # -- reports ------------------------------------------------------------------------------

    def attempt_of(self, inst: Instance, attempt_id: str) -> Attempt:
        attempt = self.fleet.attempt(attempt_id)
        if attempt is None or attempt.instance_id != inst.id:
            raise NotYours(attempt_id)
        return attempt

    def report(self, inst: Instance, attempt_id: str, report: AttemptReport) -> None:
        attempt = self.attempt_of(inst, attempt_id)
        if attempt.phase is AttemptPhase.DONE:
            return  # a late report from an attempt that was settled already
        logs = [self._with_metadata(report.task_log, inst, attempt)]
        if report.status in ("initializing", "restoring"):
            self.tasks.set_logs(attempt.task_id, logs)
            return
        if report.status == "interrupted":
            self._interrupted(attempt, logs, report.message)
            return
        target = STATUS_STATE[report.status]
        if target is State.RUNNING:
            self.fleet.set_phase(
                attempt.id,
                AttemptPhase.RUNNING,
                expect={AttemptPhase.STARTING, AttemptPhase.RESTORING},
            )
            result = self.tasks.transition(
                attempt.task_id,
                State.RUNNING,
                expect={State.INITIALIZING},
                logs=logs,
                attempt_id=attempt.id,
                instance_id=inst.id,
            )
            if not result.applied:
                self.tasks.set_logs(attempt.task_id, logs)
            return
        self._finish(attempt, target, logs, report.message)

    def _finish(
        self,
        attempt: Attempt,
        target: State,
        logs: list[dict[str, Any]] | None,
        message: str | None,
    ) -> None:
        record = self.tasks.get(attempt.task_id, full=False)
        if record is not None and record.state is State.CANCELING:
            target = State.CANCELED  # the cancel was asked first; it wins
        elif (
            record is not None
            and record.state is State.INITIALIZING
            and target
            in (
                State.COMPLETE,
                State.EXECUTOR_ERROR,
            )
        ):
            # executors ran, so the task was RUNNING even if that report never arrived
            self.tasks.transition(attempt.task_id, State.RUNNING, expect={State.INITIALIZING})
        self.fleet.set_phase(attempt.id, AttemptPhase.DONE, message=message)
        self.tasks.transition(
            attempt.task_id,
            target,
            logs=logs,
            message=message,
            attempt_id=attempt.id,
            instance_id=attempt.instance_id,
        )
        self.wakeups.notify(SCHEDULER)

    # -- interruptions --------------------------------------------------------------------------

    def notice(self, inst: Instance, notice: Notice) -> None:
        """A Spot interruption notice on `inst` (from its agent's watcher or the provider)."""
        Migrations(self.tasks, self.fleet, self.wakeups).on_notice(
            inst, notice.kind, notice.time, stays=self._restarts
        )

    # -- capsules and migration ---------------------------------------------------------------

    def capsule(self, inst: Instance, attempt_id: str, report: CapsuleReport) -> None:
        """A checkpoint's outcome, or a capsule found corrupt by a restore."""
        attempt = self.attempt_of(inst, attempt_id)
        data = report.model_dump(exclude_none=True, exclude={"state", "capsule_id"})
        if report.state in ("restored", "none_usable"):
            restored = report.state == "restored"
            self.tasks.record(
                attempt.task_id,
                "restored" if restored else "restart_from_scratch",
                attempt_id=attempt.id,
                instance_id=inst.id,
                message=(
                    f"restored from capsule {report.capsule_id} in "
                    f"{report.seconds.get('total', 0.0):.2f} s"
                    if restored
                    else "no usable capsule: the task starts again from the beginning"
                ),
                data=data if restored else None,
            )
            return
        if report.state == "corrupt":
            self.fleet.set_capsule_state(report.capsule_id, "corrupt")
            self.tasks.record(
                attempt.task_id,
                "capsule_corrupt",
                attempt_id=attempt.id,
                instance_id=inst.id,
                message=f"capsule {report.capsule_id} failed verification: {report.error}",
                data=data,
            )
            return
        if report.state == "complete" and report.manifest_key and report.manifest_sha256:
            self.fleet.add_capsule(
                capsule_id=report.capsule_id,
                task_id=attempt.task_id,
                attempt_id=attempt.id,
                sequence=report.sequence,
                store_key=report.manifest_key,
                manifest_sha256=report.manifest_sha256,
                size_bytes=report.size_bytes,
                parent_id=report.parent,
                data=data,
            )
            message = (
                f"capsule {report.capsule_id} ({report.reason}): "
                f"{report.size_bytes / 2**20:.1f} MiB, {report.uploaded_bytes / 2**20:.1f} MiB "
                f"uploaded in {report.seconds.get('total', 0.0):.2f} s"
            )
            kind = "capsule"
        else:
            message = f"checkpoint ({report.reason}) failed: {report.error}"
            kind = "checkpoint_failed"
        self.tasks.record(
            attempt.task_id,
            kind,
            attempt_id=attempt.id,
            instance_id=inst.id,
            message=message,
            data=data,
        )
        if report.request_id is None:
            return  # periodic: the attempt's phase never left RUNNING
        request = attempt.data.get("checkpoint") or {}
        leaving = report.stop and report.state == "complete"
        self.fleet.update_attempt_data(
            attempt.id,
            checkpoint=None,
            migrate=(
                {
                    "reason": report.reason,
                    "target": request.get("target"),
                    "plan": request.get("plan"),
                    "limits": request.get("limits"),
                }
                if leaving
                else None
            ),
        )
        if not leaving:  # leave-running, or failed: the task runs on here
            self.fleet.set_phase(
                attempt.id, AttemptPhase.RUNNING, expect={AttemptPhase.CHECKPOINTING}
            )

    def _interrupted(
        self, attempt: Attempt, logs: list[dict[str, Any]], message: str | None
    ) -> None:
        """The attempt's container left in a capsule: the task (still RUNNING to its client)
        gets a new attempt that restores it, on another instance."""
        self.tasks.set_logs(attempt.task_id, logs)
        self.fleet.set_phase(attempt.id, AttemptPhase.INTERRUPTED, message=message)
        self.fleet.set_phase(attempt.id, AttemptPhase.DONE)
        record = self.tasks.get(attempt.task_id, full=False)
        if record is None or record.state.terminal or record.state is State.CANCELING:
            if record is not None and record.state is State.CANCELING:
                self.tasks.transition(
                    attempt.task_id, State.CANCELED, message="cancelled while migrating"
                )
            return
        migrate = attempt.data.get("migrate") or {}
        target, reason = migrate.get("target"), migrate.get("reason") or "manual"
        data: dict[str, Any] = {
            "restore": True,
            "exclude": [attempt.instance_id] if attempt.instance_id else [],
            "target": target,
            "migrations": int(attempt.data.get("migrations", 0)) + 1,
        }
        if migrate.get("plan"):
            data["plan"] = {"offer": migrate["plan"], "zone_matters": True}
        # a size move gives the container new limits; any other move keeps the ones it had
        if limits := migrate.get("limits") or attempt.data.get("limits"):
            data["limits"] = limits
        self.fleet.add_pending_attempt(
            attempt.task_id,
            reason=reason,
            data=data,
            message=f"restore after {reason} migration from {attempt.instance_id}",
        )
        self.wakeups.notify(SCHEDULER)

    def _with_metadata(
        self, task_log: dict[str, Any], inst: Instance, attempt: Attempt
    ) -> dict[str, Any]:
        """What the client sees of where its task ran (TaskLog.metadata is a string map)."""
        meta = dict(task_log.get("metadata") or {})
        meta.update(
            instance_id=inst.id,
            instance_type=inst.instance_type,
            market=inst.market,
            zone=inst.zone,
            attempts=str(attempt.number),
            migrations=str(attempt.data.get("migrations", 0)),
        )
        if inst.price_per_hour is not None:
            meta["vm_price_per_hour_usd"] = f"{inst.price_per_hour:.6f}"
        return {**task_log, "metadata": meta}

    # -- full executor streams ----------------------------------------------------------------

    def stream_path(self, task_id: str, executor: int, stream: str) -> Path:
        if stream not in STREAMS or executor < 0:
            raise ValueError(f"no stream {stream!r} for executor {executor}")
        return self.logs_dir / task_id / f"{executor}.{stream}"

    def save_stream(
        self, inst: Instance, attempt_id: str, executor: int, stream: str, chunks: Iterable[bytes]
    ) -> int:
        attempt = self.attempt_of(inst, attempt_id)
        path = self.stream_path(attempt.task_id, executor, stream)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
        size = 0
        with open(tmp, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
                size += len(chunk)
        tmp.replace(path)
        return size
