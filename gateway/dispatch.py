"""The gateway's side of the agent protocol (capsule_runtime.protocol.messages): registration,
long polls that hand out orders, and reports that move tasks through their states.

Orders are derived from the store on every poll, never kept only in memory, so a gateway restart
loses nothing: an attempt in PROVISIONING on an instance is an assignment not yet picked up; a live
attempt of a CANCELING task is a stop order. Delivery is at least once: an assignment is sent
again until the agent lists its attempt in `Poll.running`, a checkpoint or resize order until the
agent lists its id in `Poll.received` (capsule_runtime.protocol.messages).

Fencing: every report takes its attempt's row (FleetStore.lock_attempt) and, in that one
transaction, checks that the attempt is the caller's, live, and its task's newest attempt, then
applies the attempt's phase change, the task's transition and any next attempt — or nothing. A
duplicated `interrupted` therefore creates one restore attempt, and a stale `complete` from a
superseded attempt is refused (`Fenced`, HTTP 409) instead of ending the task.
"""

from __future__ import annotations

import base64
import hmac
import logging
import os
import secrets
import threading
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from capsule_runtime.protocol.messages import (
    Assignment,
    AttemptReport,
    CapsuleRef,
    CapsuleReport,
    CapsuleSettings,
    CheckpointOrder,
    Notice,
    Orders,
    Poll,
    Registered,
    Registration,
    ResizeOrder,
    Resources,
    TaskSettings,
)
from capsule_runtime.protocol.redact import remember_secret
from capsule_runtime.protocol.tes import TesTask
from capsule_runtime.protocol.times import Clock, rfc3339, utcnow
from gateway.auth import AuthError, token_sha256
from gateway.config import Config
from gateway.library import Library
from gateway.migration import Migrations, restarts
from gateway.rules import effective_parameters
from gateway.scheduler.loop import SCHEDULER
from gateway.scheduler.needs import container_limits
from gateway.scheduler.notice_budget import NoticeBudget
from gateway.scheduler.wakeups import Wakeups
from gateway.store.fleet import Attempt, FleetStore, Instance, InstanceState
from gateway.store.fleet_data import AttemptData, InstanceData, Migration, RecoveryPlan, UsageSample
from gateway.store.tasks import TaskRecord, TaskStore
from gateway.telemetry import task_telemetry, time_scale, with_telemetry
from gateway.tes.backend_parameters import duration_seconds
from gateway.tes.states import AttemptPhase, CapsuleState, State

log = logging.getLogger(__name__)

MAX_WAIT = 25.0  # seconds a poll may be held open
USAGE_SAMPLES = 24  # usage samples kept per attempt (about two minutes at one per 5 s)
STREAMS = ("stdout", "stderr")
_STREAM_APPENDS = threading.Lock()  # live pushes are small: one at a time is plenty
STREAM_SETTLE_SECONDS = (
    60.0  # an ended attempt's streams count as whole this long after, marked or not
)


def _read_text(path: Path) -> str:
    """A small file's text; '' when there is none."""
    try:
        return path.read_text()
    except OSError:
        return ""


STATUS_STATE = {
    "running": State.RUNNING,
    "complete": State.COMPLETE,
    "executor_error": State.EXECUTOR_ERROR,
    "system_error": State.SYSTEM_ERROR,
    "canceled": State.CANCELED,
}


class StreamGap(ValueError):
    """A live push starts past the end of what the gateway has of that stream."""

    def __init__(self, size: int) -> None:
        super().__init__(f"the stream has {size} bytes")
        self.size = size


class Fenced(LookupError):
    """A message for an attempt that is not this instance's live attempt — it does not exist, it
    belongs to another instance, it was settled or superseded — or a register from an instance
    the gateway has given up on (HTTP 409: the agent stops that work, it does not retry)."""

    def __init__(self, subject: str, why: str):
        super().__init__(f"{subject} {why}")
        self.subject = subject


AGENT_REALM = 'Bearer realm="agent"'


class Dispatcher:
    def __init__(
        self,
        config: Config,
        tasks: TaskStore,
        fleet: FleetStore,
        wakeups: Wakeups,
        library: Library,
        *,
        clock: Clock = utcnow,
    ):
        self.cfg = config
        self.clock = clock  # when orders were sent and agents registered (deadlines read them)
        self.tasks = tasks
        self.fleet = fleet
        self.wakeups = wakeups
        self.library = library
        self.logs_dir = config.data_path / "logs"
        self._capsule_key: str | None = None  # base64, once read
        # the notice budget planner: capsule reports measure it, notices are predicted by it
        self.budget = NoticeBudget(config, tasks, fleet, clock=clock)

    # -- identity -----------------------------------------------------------------------------

    def authenticate(
        self, instance_id: str, authorization: str | None, *, registering: bool = False
    ) -> Instance:
        """The instance whose token the caller presents. An instance whose provider hands out
        one-time registration tokens (`registration_ttl`) and has not registered yet holds
        only that token: it is good for registering (`registering`) and nothing else."""
        expected = self.fleet.token_sha256(instance_id)
        scheme, _, token = (authorization or "").partition(" ")
        if (
            expected is None
            or scheme.lower() != "bearer"
            or not hmac.compare_digest(token_sha256(token.strip()), expected)
        ):
            raise AuthError("unknown instance or wrong instance token", AGENT_REALM)
        inst = self.fleet.instance(instance_id)
        assert inst is not None
        if (
            not registering
            and inst.state is InstanceState.LAUNCHING
            and self.registration_ttl(inst) is not None
        ):
            raise AuthError(
                f"instance {instance_id} has not registered: its registration token is good "
                "for registering only",
                AGENT_REALM,
            )
        return inst

    def registration_ttl(self, inst: Instance) -> float | None:
        """Seconds after launch an instance's token is good for its one registration, when its
        provider's settings ask for one-time registration tokens (`token_ttl_seconds`, e.g.
        providers.aws: user-data is readable on the machine, so what it carries must be
        useless after the agent has registered); None: the launch token is the agent's
        credential for the instance's life (the local provider)."""
        section = getattr(self.cfg.providers, inst.provider, None)
        ttl = getattr(section, "token_ttl_seconds", None)
        return float(ttl) if ttl else None

    def _restarts(self, task_id: str) -> bool:
        return restarts(self.tasks, self.cfg, task_id)

    def settings(self, task: TesTask, owner: str = "") -> TaskSettings:
        """The agent's rules for one task of `owner` (its s3 allow-list may be their own)."""
        s3 = self.cfg.storage.s3.connection()
        apps, credentials = self.library.resolve(
            (ex.image for ex in task.executors), self.cfg.images.rewrites
        )
        return TaskSettings(
            apps=apps,
            registry_credentials=credentials,
            log_tail_bytes=self.cfg.executor_logs.tail_bytes,
            allowed_dirs=self.cfg.allowed_dirs,
            denied_dirs=self.cfg.denied_dirs,
            shared_dirs=self.cfg.shared_dirs,
            block_private_networks=self.cfg.blocks_private_networks,
            s3_allowed=self.cfg.s3_allowed(owner),
            s3_denied=self.cfg.s3_denied,
            image_rewrites=self.cfg.images.rewrites,
            insecure_registries=self.cfg.images.insecure_registries,
            s3=s3,
        )

    def capsule_settings(self, task: TesTask | None) -> CapsuleSettings:
        cfg = self.cfg.capsules
        params = effective_parameters(task, self.cfg.tasks.rules)
        interval = cfg.interval_seconds
        if "checkpoint_interval" in params:
            interval = duration_seconds(params["checkpoint_interval"])
        store = self.cfg.capsule_store
        s3 = self.cfg.capsule_s3 if store.startswith("s3://") else {}
        return CapsuleSettings(
            store=store,
            s3=s3,
            interval_seconds=interval,
            tcp_established=params.get("tcp_established", "false").lower() == "true",
            file_locks=params.get("file_locks", "false").lower() == "true",
            chunk_mib=cfg.chunk_mib,
            compression_level=cfg.compression_level,
            workers=cfg.workers,
            checkpoint_via=cfg.checkpoint_via,
            store_wait_seconds=cfg.store_wait_seconds,
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
            for c in self.fleet.capsules_of(task_id, {CapsuleState.COMPLETE})
        ]

    # -- register and poll --------------------------------------------------------------------

    def register(self, inst: Instance, reg: Registration) -> Registered:
        """Make the instance READY with what its agent reports. An instance registering with
        its one-time registration token gets its own credential in the answer: the registration
        token is replaced by it in the same transaction, so it cannot be used again (nor after
        `registration_ttl`)."""
        offered = inst.data.capacity or reg.capacity
        reported = reg.capacity
        data = inst.data.model_copy(
            update={
                # never plan beyond what either side says the machine has
                "capacity": Resources(
                    cpu_cores=min(reported.cpu_cores, offered.cpu_cores),
                    ram_gb=min(reported.ram_gb, offered.ram_gb),
                    disk_gb=min(reported.disk_gb, offered.disk_gb),
                ),
                "hostname": reg.hostname,
                "agent_version": reg.agent_version,
                "facts": reg.facts,
                "cpu": reg.cpu or inst.data.cpu,
                "host": reg.host or inst.data.host,
                # an agent registers once per process: what was sent before this moment, it no
                # longer holds (gateway.scheduler.deadlines settles those attempts)
                "registered": rfc3339(self.clock()),
            }
        )
        ttl = self.registration_ttl(inst)
        if ttl is not None and inst.state is InstanceState.LAUNCHING:
            credential = self._exchange(inst, data, ttl)
        else:
            credential = None
            # Only a launching instance (or a READY one whose agent restarted) becomes READY: one
            # the scheduler gave up on (LOST) had its tasks moved elsewhere and never comes back.
            if not self.fleet.set_instance_state(
                inst.id,
                InstanceState.READY,
                data=data,
                expect={InstanceState.LAUNCHING, InstanceState.READY},
            ):
                current = self.fleet.instance(inst.id)
                state = current.state.value if current is not None else "gone"
                raise Fenced(f"instance {inst.id}", f"is {state} and cannot register again")
        self.fleet.heartbeat(inst.id)
        self.wakeups.notify(SCHEDULER)
        return Registered(token=credential)

    def _exchange(self, inst: Instance, data: InstanceData, ttl: float) -> str:
        """The first registration with a one-time registration token: refused after `ttl`
        seconds from the launch; else the instance is READY and holds a new credential, which
        is returned (its hash replaces the registration token's, once: a second registration
        with the same token finds the instance no longer LAUNCHING)."""
        age = (self.clock() - datetime.fromisoformat(inst.created_time)).total_seconds()
        if age > ttl:
            log.warning(
                "instance %s registered %.0f s after its launch: its registration token had "
                "expired (token_ttl_seconds: %g)",
                inst.id,
                age,
                ttl,
            )
            raise AuthError(
                f"the registration token of instance {inst.id} expired {age - ttl:.0f} s ago "
                f"(providers.{inst.provider}.token_ttl_seconds: {ttl:g})",
                AGENT_REALM,
            )
        credential = secrets.token_urlsafe(32)
        if not self.fleet.set_instance_state(
            inst.id,
            InstanceState.READY,
            data=data,
            expect={InstanceState.LAUNCHING},
            token_sha256=token_sha256(credential),
        ):
            current = self.fleet.instance(inst.id)
            state = current.state if current is not None else None
            if state not in (InstanceState.READY, InstanceState.LAUNCHING):
                shown = state.value if state is not None else "gone"
                raise Fenced(f"instance {inst.id}", f"is {shown} and cannot register again")
            raise AuthError(
                f"the registration token of instance {inst.id} has been used already",
                AGENT_REALM,
            )
        remember_secret(credential)
        return credential

    def poll(self, inst: Instance, poll: Poll) -> Orders:
        self.fleet.heartbeat(inst.id)
        if poll.usage:
            self._record_usage(inst, poll.usage)
        seen = self.wakeups.version(inst.id)
        orders = self._orders(inst.id, poll.running, poll.received)
        # a long poll records no heartbeat while it waits: never longer than a third of the
        # heartbeat timeout, so a waiting agent is never taken for a silent one
        wait = min(poll.wait_seconds, MAX_WAIT, self.cfg.scheduler.heartbeat_timeout_seconds / 3)
        # a cancel the agent acknowledged (it is stopping that attempt) is no news: wait
        news = [c for c in orders.cancel if c not in poll.received]
        if wait > 0 and not (
            orders.assign or news or orders.shutdown or orders.checkpoint or orders.resize
        ):
            self.wakeups.wait(inst.id, seen, wait)
            self.fleet.heartbeat(inst.id)
            orders = self._orders(inst.id, poll.running, poll.received)
        return orders

    def _record_usage(self, inst: Instance, usage: dict[str, dict[str, Any]]) -> None:
        """Keep the newest samples of each of this instance's live attempts (attempt data
        `usage`), oldest first; samples for any other attempt are dropped."""
        now = rfc3339(self.clock())
        for attempt_id, sample in usage.items():
            with self.tasks.batch() as conn:
                attempt = self.fleet.lock_attempt(conn, attempt_id)
                if attempt is None or attempt.instance_id != inst.id or not attempt.live:
                    continue
                history = attempt.data.usage[-(USAGE_SAMPLES - 1) :]
                history = [*history, UsageSample.model_validate({**sample, "time": now})]
                self.fleet.write_attempt_data(conn, attempt, usage=history)

    def _orders(
        self, instance_id: str, running: Iterable[str], received: Iterable[str] = ()
    ) -> Orders:
        inst = self.fleet.instance(instance_id)
        if inst is None or inst.state is not InstanceState.READY:
            return Orders(shutdown=True)
        orders = Orders()
        running_ids, received_ids = set(running), set(received)
        live = self.fleet.live_attempts(instance_id)
        orders.cancel.extend(self._superseded(instance_id, running_ids - {a.id for a in live}))
        for attempt in live:
            record = self.tasks.get(attempt.task_id)
            if record is None:
                continue
            if record.state is State.CANCELING:
                if attempt.phase is AttemptPhase.PROVISIONING:
                    self._cancel_unstarted(attempt, record.logs)
                elif attempt.id in running_ids:
                    orders.cancel.append(attempt.id)
                continue
            if (
                attempt.phase
                in (
                    AttemptPhase.PROVISIONING,
                    AttemptPhase.STARTING,
                    AttemptPhase.RESTORING,
                )
                and not attempt.data.delivered
            ):
                if (assignment := self._deliver(attempt, running_ids, record, inst)) is not None:
                    orders.assign.append(assignment)
                continue
            if (resize := self._resize_order(attempt, running_ids, received_ids)) is not None:
                orders.resize.append(resize)
            if (checkpoint := self._checkpoint_order(attempt, received_ids)) is not None:
                orders.checkpoint.append(checkpoint)
        return orders

    def _newest(self, attempt: Attempt | None) -> bool:
        """Whether `attempt` is its task's newest attempt (read outside any transaction)."""
        return attempt is not None and self.fleet.attempts_of(attempt.task_id)[-1].id == attempt.id

    def _superseded(self, instance_id: str, ids: set[str]) -> list[str]:
        """Of the attempts an agent says it runs that are not live here, those it must stop:
        another instance's, or superseded by a newer attempt of their task (the gateway gave
        up on them while the agent was unreachable). An attempt that just ended is left to
        finish its last steps (full streams, clean-up)."""
        stop = []
        for attempt_id in sorted(ids):
            attempt = self.fleet.attempt(attempt_id)
            ours = attempt is not None and attempt.instance_id == instance_id
            if not ours or not self._newest(attempt):
                stop.append(attempt_id)
        return stop

    def _deliver(
        self, attempt: Attempt, running: set[str], record: TaskRecord, inst: Instance
    ) -> Assignment | None:
        """The attempt's assignment, until the agent acknowledges it (lists it as running):
        the first time it moves PROVISIONING → STARTING | RESTORING; a poll that does not list
        it gets it again (its answer was lost); the first poll that lists it marks it
        delivered."""
        now = rfc3339(self.clock())
        with self.tasks.batch() as conn:
            taken = self.fleet.lock_attempt(conn, attempt.id)
            if taken is None or not taken.live or taken.data.delivered:
                return None
            if taken.id in running:
                self.fleet.write_attempt_data(conn, taken, delivered=now)
                return None
            if taken.phase is AttemptPhase.PROVISIONING:
                restore = taken.data.restore
                phase = AttemptPhase.RESTORING if restore else AttemptPhase.STARTING
                if self.fleet.change_phase(conn, taken, phase) is None:
                    return None
                self.fleet.write_attempt_data(conn, taken, sent=now)
            elif taken.phase not in (AttemptPhase.STARTING, AttemptPhase.RESTORING):
                return None
        task = record.task
        if task is None:
            return None
        restore = taken.data.restore
        return Assignment(
            attempt_id=taken.id,
            task_id=taken.task_id,
            task=task,
            task_log=record.logs[-1] if record.logs else None,
            settings=self.settings(task, record.owner),
            capsules=self.capsule_settings(task),
            restore=self.restore_refs(taken.task_id) if restore else [],
            next_sequence=self.fleet.next_capsule_sequence(taken.task_id),
            limits=container_limits(taken, task, inst),
            restore_elsewhere=restore and self._restore_tries_left(taken.task_id),
        )

    def _restore_tries_left(self, task_id: str) -> bool:
        """Whether a restore that fails for its instance's reasons may still be tried on
        another instance: fewer than `capsules.restore_tries` instances tried so far."""
        failed = sum(a.reason == "restore_failed" for a in self.fleet.attempts_of(task_id))
        return failed + 1 < self.cfg.capsules.restore_tries

    def _resize_order(
        self, attempt: Attempt, running: set[str], received: set[str]
    ) -> ResizeOrder | None:
        """The attempt's new limits, until the agent lists the order's id as received."""
        resize = attempt.data.resize
        if not resize or resize.delivered or attempt.id not in running:
            return None
        with self.tasks.batch() as conn:
            taken = self.fleet.lock_attempt(conn, attempt.id)
            resize = taken.data.resize if taken is not None else None
            if taken is None or not resize or resize.delivered:
                return None
            order_id = resize.id or f"rs-{taken.id}-{taken.version}"
            if order_id in received:
                self.fleet.write_attempt_data(
                    conn,
                    taken,
                    resize=resize.model_copy(update={"id": order_id, "delivered": True}),
                )
                return None
            if not resize.sent or not resize.id:
                resize = resize.model_copy(update={"id": order_id, "sent": rfc3339(self.clock())})
                self.fleet.write_attempt_data(conn, taken, resize=resize)
        return ResizeOrder(
            attempt_id=attempt.id,
            cpu_cores=resize.cpu_cores,
            ram_gb=resize.ram_gb,
            order_id=order_id,
        )

    def _checkpoint_order(self, attempt: Attempt, received: set[str]) -> CheckpointOrder | None:
        """The attempt's checkpoint request as an order, until the agent lists it as received:
        the first time the attempt moves RUNNING → CHECKPOINTING."""
        request = attempt.data.checkpoint
        if not request or request.delivered:
            return None
        with self.tasks.batch() as conn:
            taken = self.fleet.lock_attempt(conn, attempt.id)
            request = taken.data.checkpoint if taken is not None else None
            if taken is None or not request or request.delivered:
                return None
            if request.id in received:
                self.fleet.write_attempt_data(
                    conn, taken, checkpoint=request.model_copy(update={"delivered": True})
                )
                return None
            if taken.phase is AttemptPhase.RUNNING and not request.sent:
                if self.fleet.change_phase(conn, taken, AttemptPhase.CHECKPOINTING) is None:
                    return None
                request = request.model_copy(update={"sent": rfc3339(self.clock())})
                self.fleet.write_attempt_data(conn, taken, checkpoint=request)
            elif taken.phase is not AttemptPhase.CHECKPOINTING:
                return None
        return CheckpointOrder(
            attempt_id=attempt.id,
            request_id=request.id,
            stop=request.stop,
            reason=request.reason,
        )

    def _cancel_unstarted(self, attempt: Attempt, logs: list[dict[str, Any]] | None) -> None:
        with self.tasks.batch() as conn:
            taken = self.fleet.lock_attempt(conn, attempt.id)
            if taken is not None and taken.phase is AttemptPhase.PROVISIONING:
                self._finish(conn, taken, State.CANCELED, logs, "cancelled before start")
        self.wakeups.notify(SCHEDULER)

    # -- reports ------------------------------------------------------------------------------

    def _take(
        self, conn: Connection, inst: Instance, attempt_id: str, report_id: str | None
    ) -> Attempt | None:
        """Take the attempt for a report from `inst`, in `conn`'s transaction: None when this
        report was applied already (a resend: answered the same, applied once); `Fenced` when
        the attempt is not this instance's, or was settled or superseded."""
        attempt = self.fleet.lock_attempt(conn, attempt_id)
        if attempt is None or attempt.instance_id != inst.id:
            raise Fenced(f"attempt {attempt_id}", "is not assigned to this instance")
        if report_id and report_id in attempt.report_ids:
            return None
        if self.fleet.instance_state(conn, inst.id) is InstanceState.LOST:
            # the scheduler gave up on this instance: its tasks are recovered elsewhere once the
            # machine is stopped (gateway.scheduler.losses); nothing it says counts any more
            raise Fenced(f"instance {inst.id}", "was given up on (lost): its work goes elsewhere")
        if not attempt.live:
            raise Fenced(
                f"attempt {attempt_id}", f"was settled already ({attempt.phase.value.lower()})"
            )
        if self.fleet.newest_attempt_number(conn, attempt.task_id) != attempt.number:
            raise Fenced(f"attempt {attempt_id}", "was superseded by a newer attempt of its task")
        return attempt

    def attempt_of(self, inst: Instance, attempt_id: str) -> Attempt:
        """The attempt, read without taking it, when it is `inst`'s and its task's newest (it
        may have ended: full streams are uploaded after the final report)."""
        attempt = self.fleet.attempt(attempt_id)
        if attempt is None or attempt.instance_id != inst.id:
            raise Fenced(f"attempt {attempt_id}", "is not assigned to this instance")
        if not self._newest(attempt):
            raise Fenced(f"attempt {attempt_id}", "was superseded by a newer attempt of its task")
        return attempt

    def report(self, inst: Instance, attempt_id: str, report: AttemptReport) -> None:
        settled = False
        with self.tasks.batch() as conn:
            attempt = self._take(conn, inst, attempt_id, report.report_id)
            if attempt is None:
                return
            if not attempt.data.delivered:  # it reports, so its assignment arrived
                data = self.fleet.write_attempt_data(conn, attempt, delivered=rfc3339(self.clock()))
                attempt = replace(attempt, data=data)
            logs = [self._with_metadata(report.task_log, inst, attempt)]
            if report.status in ("initializing", "restoring"):
                self.tasks.set_logs(attempt.task_id, logs, conn=conn)
            elif report.status == "interrupted":
                self._interrupted(conn, attempt, logs, report.message, report.reason)
                settled = True
            elif report.status == "running":
                self._running(conn, attempt, logs)
            else:
                self._finish(conn, attempt, STATUS_STATE[report.status], logs, report.message)
                settled = True
            if report.report_id:
                self.fleet.remember_report(conn, attempt, report.report_id)
        if settled:
            self.wakeups.notify(SCHEDULER)

    def _running(self, conn: Connection, attempt: Attempt, logs: list[dict[str, Any]]) -> None:
        if attempt.phase in (AttemptPhase.STARTING, AttemptPhase.RESTORING):
            self.fleet.change_phase(conn, attempt, AttemptPhase.RUNNING)
        result = self.tasks.transition(
            attempt.task_id,
            State.RUNNING,
            expect={State.INITIALIZING},
            logs=logs,
            attempt_id=attempt.id,
            instance_id=attempt.instance_id,
            conn=conn,
        )
        if not result.applied:
            self.tasks.set_logs(attempt.task_id, logs, conn=conn)

    def _finish(
        self,
        conn: Connection,
        attempt: Attempt,
        target: State,
        logs: list[dict[str, Any]] | None,
        message: str | None,
    ) -> None:
        """The attempt ended (it was taken in `conn`): it is DONE and its task reaches `target`
        (CANCELED when a cancel came first), in the one transaction."""
        self.fleet.change_phase(conn, attempt, AttemptPhase.DONE, message=message)
        if logs:  # what running on Spot cost the task, in its own TaskLog (gateway.telemetry)
            telemetry = task_telemetry(conn, attempt.task_id, scale=time_scale(self.cfg))
            logs = with_telemetry(logs, telemetry)
        for _ in range(3):  # PostgreSQL: a cancel may land between the read and the swap
            state = self.tasks.state(attempt.task_id, conn)
            if state is None or state.terminal:
                break
            final = State.CANCELED if state is State.CANCELING else target
            if state is State.INITIALIZING and final in (State.COMPLETE, State.EXECUTOR_ERROR):
                # executors ran, so the task was RUNNING even if that report never arrived
                self.tasks.transition(
                    attempt.task_id, State.RUNNING, expect={State.INITIALIZING}, conn=conn
                )
                state = State.RUNNING
            result = self.tasks.transition(
                attempt.task_id,
                final,
                expect={state},
                logs=logs,
                message=message,
                attempt_id=attempt.id,
                instance_id=attempt.instance_id,
                conn=conn,
            )
            if result.applied:
                return
        self.tasks.record(
            attempt.task_id,
            "report_not_applied",
            attempt_id=attempt.id,
            instance_id=attempt.instance_id,
            message=f"attempt {attempt.id} ended {target.value}; the task was {state}",
            conn=conn,
        )

    # -- interruptions --------------------------------------------------------------------------

    def notice(self, inst: Instance, notice: Notice) -> None:
        """A Spot interruption notice on `inst` (from its agent's watcher or the provider)."""
        Migrations(self.tasks, self.fleet, self.wakeups, self.clock).on_notice(
            inst, notice.kind, notice.time, stays=self._restarts, budget=self.budget
        )

    # -- capsules and migration ---------------------------------------------------------------

    def capsule(self, inst: Instance, attempt_id: str, report: CapsuleReport) -> None:
        """A checkpoint's outcome, or a capsule found corrupt by a restore."""
        with self.tasks.batch() as conn:
            attempt = self._take(conn, inst, attempt_id, report.report_id)
            if attempt is None:
                return
            applied = self._capsule(conn, attempt, report)
            if report.report_id:
                self.fleet.remember_report(conn, attempt, report.report_id)
            learned = self.budget.observe(conn, attempt.id, inst, report) if applied else None
        if learned is not None:  # the instance type's speed, apart: it never fails the report
            self.budget.learn(*learned)

    def _capsule(self, conn: Connection, attempt: Attempt, report: CapsuleReport) -> bool:
        """Apply the report; False: the same capsule reported again (applied the first time)."""
        data = report.model_dump(exclude_none=True, exclude={"state", "capsule_id", "report_id"})
        where = {"attempt_id": attempt.id, "instance_id": attempt.instance_id}
        if report.state in ("restored", "none_usable"):
            restored = report.state == "restored"
            self.tasks.record(
                attempt.task_id,
                "restored" if restored else "restart_from_scratch",
                **where,
                message=(
                    f"restored from capsule {report.capsule_id} in "
                    f"{report.seconds.get('total', 0.0):.2f} s"
                    if restored
                    else "no usable capsule: the task starts again from the beginning"
                ),
                data=data if restored else None,
                conn=conn,
            )
            return True
        if report.state == "corrupt":
            self.fleet.set_capsule_state(report.capsule_id, CapsuleState.CORRUPT, conn=conn)
            self.tasks.record(
                attempt.task_id,
                "capsule_corrupt",
                **where,
                message=f"capsule {report.capsule_id} failed verification: {report.error}",
                data=data,
                conn=conn,
            )
            return True
        complete = report.state == "complete" and report.manifest_key and report.manifest_sha256
        if complete:
            assert report.manifest_key and report.manifest_sha256
            added = self.fleet.add_capsule(
                capsule_id=report.capsule_id,
                task_id=attempt.task_id,
                attempt_id=attempt.id,
                sequence=report.sequence,
                store_key=report.manifest_key,
                manifest_sha256=report.manifest_sha256,
                size_bytes=report.size_bytes,
                parent_id=report.parent,
                data=data,
                conn=conn,
            )
            if not added:
                return False  # the same capsule again (its answer was lost): handled the first time
            message = (
                f"capsule {report.capsule_id} ({report.reason}): "
                f"{report.size_bytes / 2**20:.1f} MiB, {report.uploaded_bytes / 2**20:.1f} MiB "
                f"uploaded in {report.seconds.get('total', 0.0):.2f} s"
            )
            kind = "capsule"
        else:
            message = f"checkpoint ({report.reason}) failed: {report.error}"
            kind = "checkpoint_failed"
        self.tasks.record(attempt.task_id, kind, **where, message=message, data=data, conn=conn)
        if report.request_id is None:
            return True  # periodic: the attempt's phase never left RUNNING
        request = attempt.data.checkpoint
        if request is None or request.id != report.request_id:
            return True  # an order given up on already (checkpoint timeout): nothing to settle
        leaving = report.stop and report.state == "complete"
        self.fleet.write_attempt_data(
            conn,
            attempt,
            checkpoint=None,
            migrate=(
                Migration(
                    reason=report.reason,
                    target=request.target,
                    plan=request.plan,
                    limits=request.limits,
                )
                if leaving
                else None
            ),
        )
        if not leaving and attempt.phase is AttemptPhase.CHECKPOINTING:
            self.fleet.change_phase(conn, attempt, AttemptPhase.RUNNING)  # the task runs on here
        return True

    def _interrupted(
        self,
        conn: Connection,
        attempt: Attempt,
        logs: list[dict[str, Any]],
        message: str | None,
        why: str | None = None,
    ) -> None:
        """The attempt's container left in a capsule: the task (still RUNNING to its client)
        gets a new attempt that restores it, on another instance — in the transaction that
        settles this one, so a resent or duplicated report creates no second attempt."""
        self.tasks.set_logs(attempt.task_id, logs, conn=conn)
        current: Attempt | None = attempt
        if attempt.phase is AttemptPhase.RUNNING:  # its checkpoint order timed out meanwhile
            current = self.fleet.change_phase(conn, attempt, AttemptPhase.CHECKPOINTING)
        if current is not None:
            current = self.fleet.change_phase(
                conn, current, AttemptPhase.INTERRUPTED, message=message
            )
        if current is None:
            raise Fenced(
                f"attempt {attempt.id}", f"cannot be interrupted while {attempt.phase.value}"
            )
        self.fleet.change_phase(conn, current, AttemptPhase.DONE)
        state = self.tasks.state(attempt.task_id, conn)
        if state is None or state.terminal:
            return
        if state is State.CANCELING:
            self.tasks.transition(
                attempt.task_id, State.CANCELED, message="cancelled while migrating", conn=conn
            )
            return
        migrate = attempt.data.migrate or Migration()
        # `restore_failed`: its restore failed on that instance (the agent says so); the next
        # attempt tries the same capsules elsewhere
        target = None if why else migrate.target
        reason = why or migrate.reason or "manual"
        fields: dict[str, Any] = {
            "restore": True,
            "exclude": [attempt.instance_id] if attempt.instance_id else [],
            "target": target,
            "migrations": attempt.data.migrations + 1,
        }
        if migrate.plan:
            fields["plan"] = RecoveryPlan(offer=migrate.plan, zone_matters=True)
        # a size move gives the container new limits; any other move keeps the ones it had
        if limits := migrate.limits or attempt.data.limits:
            fields["limits"] = limits
        data = AttemptData(**fields)
        self.fleet.add_pending_attempt(
            attempt.task_id,
            reason=reason,
            data=data,
            message=f"restore after {reason} migration from {attempt.instance_id}",
            conn=conn,
        )

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
            migrations=str(attempt.data.migrations),
        )
        if inst.price_per_hour is not None:
            meta["vm_price_per_hour_usd"] = f"{inst.price_per_hour:.6f}"
        return {**task_log, "metadata": meta}

    # -- full executor streams ----------------------------------------------------------------

    @staticmethod
    def final_marker(path: Path) -> Path:
        """Beside a stream: the id of the attempt whose agent uploaded it whole (at its end)."""
        return path.with_name(path.name + ".final")

    @staticmethod
    def _append_stream(
        path: Path, offset: int, chunks: Iterable[bytes], attempt_id: str = ""
    ) -> int:
        with _STREAM_APPENDS:
            size = path.stat().st_size if path.exists() else 0
            if attempt_id and _read_text(Dispatcher.final_marker(path)) == attempt_id:
                return size  # a late push: its attempt's whole stream is here already
            if offset > size:
                raise StreamGap(size)
            with open(path, "r+b" if path.exists() else "wb") as out:
                out.seek(offset)
                for chunk in chunks:
                    out.write(chunk)
                out.truncate()
                return out.tell()

    def stream_path(self, task_id: str, executor: int, stream: str) -> Path:
        if stream not in STREAMS or executor < 0:
            raise ValueError(f"no stream {stream!r} for executor {executor}")
        return self.logs_dir / task_id / f"{executor}.{stream}"

    def stream_is_final(self, task_id: str, executor: int, stream: str) -> bool:
        """Whether the stored stream is all there will be: the whole one that the task's newest
        attempt uploaded when it ended, rather than its live pushes (which stop up to a push
        interval short) — or, without that mark, what is there STREAM_SETTLE_SECONDS after the
        attempt ended (its upload failed, or it ended before streams were marked)."""
        attempts = self.fleet.attempts_of(task_id)
        if not attempts:
            return False
        newest = attempts[-1]
        if _read_text(self.final_marker(self.stream_path(task_id, executor, stream))) == newest.id:
            return True
        if newest.end_time is None:
            return False
        ended = (self.clock() - datetime.fromisoformat(newest.end_time)).total_seconds()
        return ended > STREAM_SETTLE_SECONDS

    def save_stream(
        self,
        inst: Instance,
        attempt_id: str,
        executor: int,
        stream: str,
        chunks: Iterable[bytes],
        offset: int | None = None,
    ) -> int:
        """Store an executor's stream: whole (replacing what was there: the agent's upload once
        the task has ended, marked final for its attempt), or, with `offset`, the bytes from
        that offset on (the agent's live pushes while the executor runs, so logs can be
        followed). A push sent again after a lost answer writes the same bytes at the same
        place; one that arrives after its attempt's whole stream changes nothing. Returns the
        stored size."""
        attempt = self.attempt_of(inst, attempt_id)
        path = self.stream_path(attempt.task_id, executor, stream)
        path.parent.mkdir(parents=True, exist_ok=True)
        if offset is not None:
            return self._append_stream(path, offset, chunks, attempt_id)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        size = 0
        with open(tmp, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
                size += len(chunk)
        marker = self.final_marker(path)
        marker_tmp = marker.with_name(marker.name + f".{os.getpid()}.tmp")
        marker_tmp.write_text(attempt_id)
        with _STREAM_APPENDS:  # no live push lands between the stream and its mark
            tmp.replace(path)
            marker_tmp.replace(marker)
        return size
