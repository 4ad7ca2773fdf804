"""Checkpoint and migrate requests for running tasks (admin API, CLI; later the scheduler's
triggers: reclaim, cost, rightsizing, OOM).

A request is written on the task's running attempt (`attempts.data.checkpoint`) and its instance
is woken; the dispatcher turns it into a CheckpointOrder on the agent's next poll (the attempt
moves RUNNING → CHECKPOINTING) and settles it when the agent's CapsuleReport arrives. A migration
(`stop`) ends with the attempt INTERRUPTED and a new attempt that restores the capsule elsewhere
(gateway.dispatch). The client keeps seeing RUNNING.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from capsule_runtime.protocol.tes import TesTask
from capsule_runtime.protocol.times import Clock, rfc3339, utcnow
from gateway.config import Config
from gateway.providers.base import Offer
from gateway.rules import effective_parameters
from gateway.scheduler.wakeups import Wakeups
from gateway.store.fleet import FleetStore, Instance, InstanceState
from gateway.store.fleet_data import CheckpointRequest, Interruption, Limits, NoticeBudgetNote
from gateway.store.ids import new_id
from gateway.store.tasks import TaskStore
from gateway.tes.states import AttemptPhase, State

if TYPE_CHECKING:
    from gateway.scheduler.notice_budget import NoticeBudget

log = logging.getLogger(__name__)


def restarts(tasks: TaskStore, cfg: Config, task_id: str) -> bool:
    """Whether the task's recovery strategy (backend_parameters.recovery, a rule, else the
    scheduler's) is `restart`: from the beginning, no capsule."""
    record = tasks.get(task_id)
    return restarts_by(cfg, record.task if record is not None else None)


def restarts_by(cfg: Config, task: TesTask | None) -> bool:
    """Whether `task`'s recovery is `restart` (it takes no capsule at a notice either)."""
    params = effective_parameters(task, cfg.tasks.rules)
    return (params.get("recovery") or cfg.scheduler.recovery) == "restart"


class Refused(Exception):
    """The request cannot be taken now; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Migrations:
    tasks: TaskStore
    fleet: FleetStore
    wakeups: Wakeups
    clock: Clock = utcnow  # when a request was made (`requested`)

    def request(
        self,
        task_id: str,
        *,
        stop: bool,
        target: str | None = None,
        reason: str = "manual",
        plan: Offer | None = None,
        limits: Limits | None = None,
        fence: Callable[[Connection], None] | None = None,
        notice_budget: NoticeBudgetNote | None = None,
    ) -> dict[str, Any]:
        """Ask for a checkpoint (stop=False: the task keeps running here) or a migration.
        `fence`: called in the request's transaction (the scheduler's leadership check: a
        deposed leader's move is rolled back). `notice_budget`: why the notice budget planner
        asks (kept on the request and in its event)."""
        record = self.tasks.get(task_id, full=False)
        if record is None:
            raise Refused(404, f"no task {task_id!r}")
        if record.state is not State.RUNNING:
            raise Refused(409, f"task {task_id} is {record.state.value}; only RUNNING tasks move")
        live = [
            a
            for a in self.fleet.attempts_of(task_id)
            if a.phase
            in (
                AttemptPhase.PROVISIONING,
                AttemptPhase.STARTING,
                AttemptPhase.RESTORING,
                AttemptPhase.RUNNING,
                AttemptPhase.CHECKPOINTING,
            )
        ]
        if not live:
            raise Refused(409, f"task {task_id} has no running attempt")
        attempt = live[-1]
        if attempt.phase is AttemptPhase.CHECKPOINTING or attempt.data.checkpoint:
            raise Refused(409, f"a checkpoint of task {task_id} is already in progress")
        if attempt.phase is not AttemptPhase.RUNNING:
            raise Refused(
                409,
                f"task {task_id} is between instances ({attempt.phase.value.lower()}); "
                "try again when it runs",
            )
        if target is not None:
            if not stop:
                raise Refused(400, "an instance can only be named for a migration")
            inst = self.fleet.instance(target)
            if inst is None or inst.state is not InstanceState.READY:
                raise Refused(409, f"instance {target!r} is not a READY instance")
            if inst.id == attempt.instance_id:
                raise Refused(409, f"task {task_id} already runs on {target}")
        req = CheckpointRequest(
            id=new_id("ck-"),
            stop=stop,
            reason=reason,
            target=target,
            requested=rfc3339(self.clock()),
            plan=plan,  # where the restore goes (an offer), for cost and size moves
            limits=limits,  # what the restored container may use, for size moves
        )
        if notice_budget is not None:  # the key only where the planner asked (as stored before)
            req = req.model_copy(update={"notice_budget": notice_budget})
        with self.tasks.batch() as conn:  # checked again with the row taken: one request wins
            if fence is not None:
                fence(conn)
            taken = self.fleet.lock_attempt(conn, attempt.id)
            if taken is None or taken.phase is not AttemptPhase.RUNNING:
                raise Refused(409, f"task {task_id} is between instances; try again when it runs")
            if taken.data.checkpoint:
                raise Refused(409, f"a checkpoint of task {task_id} is already in progress")
            self.fleet.write_attempt_data(conn, taken, checkpoint=req)
        verb = "migration" if stop else "checkpoint"
        self.tasks.record(
            task_id,
            f"{verb}_requested",
            attempt_id=attempt.id,
            instance_id=attempt.instance_id,
            message=f"{verb} requested ({reason})" + (f", to {target}" if target else ""),
            data={k: v for k, v in req.dump().items() if v is not None},
        )
        if attempt.instance_id:
            self.wakeups.notify(attempt.instance_id)
        return {
            "task_id": task_id,
            "attempt_id": attempt.id,
            "instance_id": attempt.instance_id,
            "request_id": req.id,
            "migrate": stop,
            "target": target,
        }

    def on_notice(
        self,
        inst: Instance,
        kind: str,
        when: str,
        stays: Callable[[str], bool] | None = None,
        budget: NoticeBudget | None = None,
    ) -> None:
        """A Spot interruption notice on `inst`: no new work goes there, and every task running
        on it is checkpointed and moved (the deadline itself is the provider's business) —
        except those `stays(task_id)` keeps: tasks whose recovery is `restart` run on until the
        deadline (they may finish), then start again elsewhere, as retry-based systems do.
        `budget`: the notice budget planner, which keeps its prediction of each move on the
        attempt (and orders a move the notice found blocked by a capsule under way, once that
        capsule ends)."""
        if kind == "rebalance":
            self.tasks.record(
                None, "rebalance", instance_id=inst.id, message=f"rebalance recommended {when}"
            )
            return
        current = self.fleet.instance(inst.id) or inst
        if current.data.interruption:
            return  # heard already (from the agent and from the provider)
        data = current.data.model_copy(
            update={"interruption": Interruption(action=kind, deadline=when)}
        )
        if not self.fleet.set_instance_state(
            inst.id, current.state, data=data, expect={current.state}
        ):
            return  # its state moved meanwhile (LOST, TERMINATING): never write the old one back
        self.tasks.record(
            None,
            "interruption",
            instance_id=inst.id,
            message=f"{kind} notice: the instance goes away at {when}",
        )
        for attempt in self.fleet.live_attempts(inst.id):
            if stays is not None and stays(attempt.task_id):
                continue
            note = budget.noticed(attempt, current, when) if budget is not None else None
            try:
                self.request(attempt.task_id, stop=True, reason="reclaim")
            except Refused as exc:  # not running yet, or between instances: recovered if lost
                log.info("task %s not checkpointed on the notice: %s", attempt.task_id, exc)
                continue
            if budget is not None and note is not None:
                budget.requested(attempt.id, note)
        self.wakeups.notify(inst.id)
