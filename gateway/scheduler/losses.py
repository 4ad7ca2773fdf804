"""Step 1 of a tick, expire: instances that stopped polling, never registered or are gone at the
provider become LOST; their tasks go on elsewhere (from a capsule, else from the start) or end
SYSTEM_ERROR. Attempts past a deadline are settled (gateway.scheduler.deadlines)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import Connection

from capsule_runtime.protocol.times import rfc3339
from gateway.providers.base import CloudState, ProviderError, record_of
from gateway.scheduler import upkeep
from gateway.scheduler.common import age, age_s, gone
from gateway.scheduler.deadlines import give_up_checkpoint, overdue
from gateway.scheduler.launches import MAX_LAUNCH_BACKOFF
from gateway.scheduler.unreported import record_unreported
from gateway.store.fleet import Attempt, Instance, InstanceState
from gateway.store.fleet_data import AttemptData, Lost
from gateway.tes.states import AttemptPhase, CapsuleState, State

if TYPE_CHECKING:
    from gateway.scheduler.loop import Scheduler

log = logging.getLogger(__name__)
OVERDUE_EVERY = 5.0  # seconds between looks for attempts past a deadline


def expire(s: Scheduler, now: datetime) -> None:
    sch = s.cfg.scheduler
    fleet = s.fleet.instances(
        {InstanceState.TERMINATING, InstanceState.LAUNCHING, InstanceState.READY}
    )
    states = query(s, fleet)  # one call for the whole fleet
    finish_terminating(
        s,
        [
            inst
            for inst in fleet
            if inst.state is InstanceState.TERMINATING
            and (gone(states, inst) or age(inst.updated_time, now) > 60)
        ],
    )
    for inst in fleet:
        if inst.state is InstanceState.TERMINATING:
            continue
        if inst.state is InstanceState.LAUNCHING:
            if gone(states, inst):
                lose(s, inst, "its agent exited before registering")
            elif age(inst.created_time, now) > (
                s.provider.launch_seconds or sch.launch_timeout_seconds
            ):
                lose(s, inst, "its agent never registered")
        elif silent_s(s, inst, now) > sch.heartbeat_timeout_seconds:
            lose(s, inst, "its agent stopped answering")
        elif gone(states, inst):
            lose(
                s,
                inst,
                "reclaimed" if inst.data.interruption else "its machine is gone",
            )


def finish_terminating(s: Scheduler, done: list[Instance]) -> None:
    """TERMINATING instances whose machines are gone or were given a minute to power off
    (their agents were told to shut down): TERMINATED, in one transaction fenced by the lease
    (a deposed leader stops nothing), then their machines stopped in one batched call (idle
    instances retired together are many)."""
    if not done:
        return
    with s.tasks.batch() as conn:
        s.fence(conn)
        for inst in done:
            s.fleet.set_instance_state(inst.id, InstanceState.TERMINATED, conn=conn)
    records = {inst.id: record_of(inst) for inst in done}
    failed = s.provider.terminate_many(list(records.values()))
    for iid, record in records.items():
        if (error := failed.get(record.provider_id)) is not None:
            log.warning("terminating instance %s: %s", iid, error)


def query(s: Scheduler, instances: list[Instance]) -> dict[str, CloudState | None] | None:
    """The provider's state of each instance (by instance id), in one call; None when the
    provider could not be asked (nothing is taken as gone on a failed look)."""
    if not instances:
        return {}
    records = {inst.id: record_of(inst) for inst in instances}
    try:
        found = s.provider.query(list(records.values()))
    except ProviderError as exc:
        log.warning("asking the provider about %d instances: %s", len(records), exc)
        return None
    return {iid: found.get(r.provider_id) for iid, r in records.items()}


def silent_s(s: Scheduler, inst: Instance, now: datetime) -> float:
    """How long the agent has not been heard, counting only time the gateway could hear it."""
    heard = s.hearing_since or now
    return min(age(inst.last_heartbeat, now), age_s(heard, now))


def lose(s: Scheduler, inst: Instance, why: str) -> None:
    """Give the instance up: LOST (its agent can no longer register or report), its machine
    terminated, and its live attempts settled (their tasks recovered elsewhere) once the
    machine is known to be stopped — never while a copy of a task may still run there
    (`settle_fenced`)."""
    log.warning("instance %s lost: %s", inst.id, why)
    if inst.state is InstanceState.LAUNCHING:
        s.failed_launches += 1
        delay = min(2.0**s.failed_launches, MAX_LAUNCH_BACKOFF)
        s.next_launch = s.clock() + timedelta(seconds=delay)
        log.error(
            "instance %s never came up (%d in a row); next launch in %.0fs; see %s",
            inst.id,
            s.failed_launches,
            delay,
            s.provider.log_hint(record_of(inst)),
        )
    reason = "reclaim" if inst.data.interruption else "lost"
    now = s.clock()
    lost = Lost(why=why, reason=reason, at=rfc3339(now))
    with s.tasks.batch() as conn:  # a deposed leader loses nothing
        s.fence(conn)
        s.fleet.set_instance_state(
            inst.id, InstanceState.LOST, data=inst.data.model_copy(update={"lost": lost}), conn=conn
        )
    terminate(s, inst)
    attempts = s.fleet.live_attempts(inst.id)
    if not attempts:
        return
    if stopped(s, inst) or fence_seconds(s) <= 0:
        for attempt in attempts:
            lose_attempt(s, attempt.id, inst.id, reason, why)
        return
    by = rfc3339(now + timedelta(seconds=fence_seconds(s)))
    log.warning(
        "instance %s: its machine is not confirmed stopped; its %d tasks continue elsewhere "
        "once it is, or by %s (when its agent has stopped them itself)",
        inst.id,
        len(attempts),
        by,
    )
    for attempt in attempts:
        s.tasks.record(
            attempt.task_id,
            "fencing",
            attempt_id=attempt.id,
            instance_id=inst.id,
            message=(
                f"instance {inst.id} was lost ({why}); the task continues elsewhere once its "
                f"machine is confirmed stopped, or by {by} at the latest (its agent stops its "
                "tasks, capsule first, when it cannot reach the gateway): never two copies"
            ),
        )


def terminate(s: Scheduler, inst: Instance) -> None:
    """Ask the provider to stop the machine; a failure is retried by `settle_fenced`."""
    try:
        s.provider.terminate(record_of(inst))
    except ProviderError as exc:
        log.warning("terminating instance %s: %s", inst.id, exc)


def stopped_now(s: Scheduler, inst: Instance) -> bool:
    """Ask again for the machine to be stopped; whether the provider says it is now."""
    terminate(s, inst)
    return stopped(s, inst)


def stopped(s: Scheduler, inst: Instance) -> bool:
    """Whether the provider says the machine is stopped (not when it could not say)."""
    return gone(query(s, [inst]), inst)


def fence_seconds(s: Scheduler) -> float:
    """How long after an instance is given up a copy of its tasks may still run there, when
    its machine cannot be confirmed stopped: its agent, cut off from the gateway, capsules and
    stops its tasks after `agent.gateway_lost_seconds` (the capsule bounded by
    `scheduler.checkpoint_timeout_seconds`). 0: agents never stop by themselves, so waiting
    would not help; the tasks are recovered at once."""
    lost_s = s.cfg.agent.gateway_lost_seconds
    return lost_s + s.cfg.scheduler.checkpoint_timeout_seconds if lost_s > 0 else 0.0


def settle_fenced(s: Scheduler, now: datetime, waiting: dict[str, list[Attempt]]) -> None:
    """Live attempts on LOST instances (`waiting`, by instance id): settled (their tasks
    recovered elsewhere) once the provider says the machine is stopped, or once its agent must
    have stopped them itself (`fence_seconds`); meanwhile the terminate is asked again."""
    lost = [
        inst
        for iid in waiting
        if (inst := s.fleet.instance(iid)) is not None and inst.state is InstanceState.LOST
    ]
    if not lost:
        return
    states = query(s, lost)
    for inst in lost:
        info = inst.data.lost or Lost()
        why, reason = info.why, info.reason
        if gone(states, inst):
            why = f"{why}; its machine is stopped"
        elif age(info.at, now) > fence_seconds(s):
            why = f"{why}; its agent has stopped its tasks by now"
        elif states is not None and stopped_now(s, inst):
            why = f"{why}; its machine is stopped"
        else:
            continue
        for attempt in waiting[inst.id]:
            lose_attempt(s, attempt.id, inst.id, reason, why)


def lose_attempt(s: Scheduler, attempt_id: str, instance_id: str, reason: str, why: str) -> None:
    """One attempt is gone with its instance (or given up on there): LOST → DONE, then its
    task goes on elsewhere or ends — in one transaction, so a report racing with this
    either lands before it or is refused (gateway.dispatch), never half-applied."""
    take_unreported(s, attempt_id)
    with s.tasks.batch() as conn:
        s.fence(conn)
        attempt = s.fleet.lock_attempt(conn, attempt_id)
        if attempt is None or not attempt.live:
            return
        lost = s.fleet.change_phase(conn, attempt, AttemptPhase.LOST, message=why)
        s.fleet.change_phase(conn, lost or attempt, AttemptPhase.DONE)
        record = s.tasks.get(attempt.task_id)
        if record is None:
            return
        state = s.tasks.state(attempt.task_id, conn) or record.state
        if state in (State.RUNNING, State.INITIALIZING) and recover(
            s, conn, attempt, instance_id, reason, why
        ):
            return
        target = State.CANCELED if state is State.CANCELING else State.SYSTEM_ERROR
        logs = record.logs or [{"logs": [], "outputs": []}]
        message = f"instance {instance_id} was lost ({why}); the task cannot continue"
        logs[-1].setdefault("system_logs", []).append(message)
        s.tasks.transition(
            attempt.task_id,
            target,
            message=message,
            attempt_id=attempt.id,
            logs=logs,
            conn=conn,
        )


def take_unreported(s: Scheduler, attempt_id: str) -> None:
    """Capsules the lost attempt wrote but never reported count for its recovery
    (gateway.scheduler.unreported); the store being away costs only those."""
    attempt = s.fleet.attempt(attempt_id)
    if attempt is None or not attempt.live:
        return
    try:
        record_unreported(upkeep.capsule_store(s), s.fleet, s.tasks, attempt)
    except Exception as exc:
        log.warning("looking for unreported capsules of %s: %s", attempt_id, exc)


def recover(
    s: Scheduler, conn: Connection, attempt: Attempt, instance_id: str, reason: str, why: str
) -> bool:
    """A task whose instance is gone goes on elsewhere: from its newest capsule, else from
    the beginning — unless it has used up `max_interruptions`. False: it cannot. In the
    caller's transaction."""
    losses = [a for a in s.fleet.attempts_of(attempt.task_id) if a.reason in ("reclaim", "lost")]
    if len(losses) >= s.cfg.scheduler.max_interruptions:
        return False
    capsules = s.fleet.capsules_of(attempt.task_id, {CapsuleState.COMPLETE})
    record = s.tasks.get(attempt.task_id)
    if record is not None and record.logs:
        how = f"from capsule {capsules[0].id}" if capsules else "from the beginning"
        logs = record.logs
        logs[-1].setdefault("system_logs", []).append(
            f"instance {instance_id} was lost ({why}); the task continues elsewhere, {how}"
        )
        s.tasks.set_logs(attempt.task_id, logs, conn=conn)
    migrations = attempt.data.migrations
    s.fleet.add_pending_attempt(
        attempt.task_id,
        reason=reason,
        data=AttemptData.model_validate(
            {
                "restore": bool(capsules),
                "exclude": [instance_id],
                "migrations": migrations + 1 if capsules else migrations,
                **({"limits": attempt.data.limits} if attempt.data.limits else {}),
            }
        ),
        message=f"recovery after instance {instance_id} was lost ({why})",
        conn=conn,
    )
    return True


def settle_overdue(s: Scheduler, now: datetime) -> None:
    """Attempts past a deadline (gateway.scheduler.deadlines): an assignment never
    acknowledged or a start that never finished is given up on its instance and the task
    recovered elsewhere; a checkpoint never answered is given up and the task runs on."""
    # deadlines are minutes long: a look every few seconds is soon enough (each reads every
    # live attempt)
    if s.last_overdue is not None and age_s(s.last_overdue, now) < OVERDUE_EVERY:
        return
    s.last_overdue = now
    attempts = s.fleet.live_attempts()
    if not attempts:
        return
    registered = {i.id: i.data.registered for i in s.fleet.instances({InstanceState.READY})}
    waiting: dict[str, list[Attempt]] = {}
    for attempt in attempts:
        if attempt.instance_id is None:
            continue
        if attempt.instance_id not in registered:  # given up on: settled once fenced
            waiting.setdefault(attempt.instance_id, []).append(attempt)
            continue
        why = overdue(attempt, now, s.cfg.scheduler, registered.get(attempt.instance_id))
        if why is None:
            continue
        log.warning("attempt %s of %s: %s", attempt.id, attempt.task_id, why)
        if attempt.phase is AttemptPhase.CHECKPOINTING:
            give_up_checkpoint(s.tasks, s.fleet, attempt.id, why)
        else:
            lose_attempt(s, attempt.id, attempt.instance_id, "lost", why)
            s.wakeups.notify(attempt.instance_id)
    settle_fenced(s, now, waiting)
