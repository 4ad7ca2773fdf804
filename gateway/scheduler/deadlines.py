"""Deadlines of an attempt's in-between phases, and what happens when one passes.

    assignment  sent to the agent (PROVISIONING → STARTING | RESTORING) but never acknowledged
                (never listed in a poll's `running`) within `delivery_timeout_seconds`: the
                attempt is given up on that instance and the task goes on elsewhere
    start       STARTING or RESTORING (images, inputs, a capsule's download) for longer than
                `starting_timeout_seconds` since the assignment was sent: the same
    checkpoint  CHECKPOINTING longer than `checkpoint_timeout_seconds` since the order was sent:
                the checkpoint is given up (a `checkpoint_failed` event and a system_logs line
                say why), the attempt is RUNNING again and the task runs on where it is

    restart     the instance's agent registered again after the attempt was sent (a new agent
                process, which runs nothing): the attempt is given up there and the task goes
                on elsewhere

Times come from the attempt's data (`sent` for an assignment, `checkpoint.sent` for an order),
written by gateway.dispatch when the order first went out. 0 turns a deadline off.
"""

from __future__ import annotations

from datetime import datetime

from gateway.config import SchedulerConfig
from gateway.store.fleet import Attempt, FleetStore
from gateway.store.tasks import TaskStore
from gateway.tes.states import AttemptPhase


def _age(timestamp: str | None, now: datetime) -> float | None:
    if not timestamp:
        return None
    return (now - datetime.fromisoformat(timestamp)).total_seconds()


def overdue(
    attempt: Attempt, now: datetime, cfg: SchedulerConfig, registered: str | None = None
) -> str | None:
    """Why `attempt` is past its phase's deadline or gone with its agent (`registered`: when
    its instance's agent last registered), or None when neither."""
    sent = _age(attempt.data.sent, now)
    since_registered = _age(registered, now)
    if sent is not None and since_registered is not None and since_registered < sent:
        return "its agent restarted after the attempt was sent and no longer runs it"
    if attempt.phase in (AttemptPhase.STARTING, AttemptPhase.RESTORING):
        age = _age(attempt.data.sent, now)
        if age is None:
            return None
        if not attempt.data.delivered:
            limit = cfg.delivery_timeout_seconds
            if limit and age > limit:
                return f"its agent did not acknowledge the assignment within {limit:g} s"
        limit = cfg.starting_timeout_seconds
        if limit and age > limit:
            what = "restore" if attempt.phase is AttemptPhase.RESTORING else "start"
            return f"it did not {what} within {limit:g} s"
        return None
    if attempt.phase is AttemptPhase.CHECKPOINTING:
        request = attempt.data.checkpoint
        age = _age(request.sent if request is not None else None, now)
        limit = cfg.checkpoint_timeout_seconds
        if age is not None and limit and age > limit:
            return f"its checkpoint was not answered within {limit:g} s"
    return None


def give_up_checkpoint(tasks: TaskStore, fleet: FleetStore, attempt_id: str, why: str) -> None:
    """The attempt's checkpoint order is forgotten and the attempt RUNNING again, with the
    reason where the user looks (events, system_logs). A late answer to it is recorded but
    settles nothing (gateway.dispatch)."""
    with tasks.batch() as conn:
        attempt = fleet.lock_attempt(conn, attempt_id)
        if attempt is None or attempt.phase is not AttemptPhase.CHECKPOINTING:
            return
        request = attempt.data.checkpoint
        fleet.write_attempt_data(conn, attempt, checkpoint=None)
        fleet.change_phase(conn, attempt, AttemptPhase.RUNNING, message=why)
        message = f"checkpoint ({request.reason if request else 'manual'}) failed: {why}"
        tasks.record(
            attempt.task_id,
            "checkpoint_failed",
            attempt_id=attempt.id,
            instance_id=attempt.instance_id,
            message=message,
            data={"request_id": request.id if request else None, "timeout": True},
            conn=conn,
        )
        record = tasks.get(attempt.task_id)
        if record is not None and record.logs:
            logs = record.logs
            logs[-1].setdefault("system_logs", []).append(message)
            tasks.set_logs(attempt.task_id, logs, conn=conn)
