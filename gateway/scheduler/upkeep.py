"""Steps 4, 5 and 7 of a tick: wake the instances of CANCELING tasks, stop idle instances, and
delete the capsules of finished tasks from the capsule store."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from gateway.scheduler.common import age
from gateway.store.fleet import Instance, InstanceState
from gateway.tes.states import TERMINAL, State

if TYPE_CHECKING:
    from gateway.scheduler.loop import Scheduler

log = logging.getLogger(__name__)


def collect_capsules(s: Scheduler) -> None:
    if s.cfg.capsules.keep:
        return
    task_ids = s.fleet.tasks_with_capsules_to_delete({state.value for state in TERMINAL})
    if not task_ids:
        return
    from capsule_runtime.capsules.pipeline import delete_task_capsules

    with s.tasks.batch() as conn:  # only the leader deletes (a deposed one raises here)
        s.fence(conn)

    for task_id in task_ids:
        try:
            deleted = delete_task_capsules(capsule_store(s), task_id)
        except Exception as exc:  # the store may be away; try again next tick
            log.warning("deleting the capsules of %s: %s", task_id, exc)
            return
        s.fleet.mark_capsules_deleted(task_id)
        s.tasks.record(task_id, "capsules_deleted", message=f"{deleted} objects deleted")


def wake_canceling(s: Scheduler) -> None:
    canceling = set(s.tasks.ids_in_state(State.CANCELING))
    if not canceling:
        return
    for attempt in s.fleet.live_attempts():
        if attempt.task_id in canceling and attempt.instance_id:
            s.wakeups.notify(attempt.instance_id)


def retire(s: Scheduler, now: datetime) -> None:
    if s.tasks.ids_in_state(State.QUEUED, limit=1):
        return
    for inst in s.fleet.instances({InstanceState.READY}):
        if s.fleet.live_attempts(inst.id):
            continue
        idle_from = s.fleet.last_attempt_end(inst.id) or inst.created_time
        idle_limit = s.provider.idle_seconds or s.cfg.scheduler.idle_timeout_seconds
        if age(idle_from, now) > idle_limit and retire_instance(s, inst):
            log.info("stopping idle instance %s", inst.id)
            s.wakeups.notify(inst.id)  # its next poll answers `shutdown`


def capsule_store(s: Scheduler) -> Any:
    if s.capsule_store_ is None:
        from capsule_runtime.capsules.store import open_store

        store = s.cfg.capsule_store
        s.capsule_store_ = open_store({"url": store, "s3": s.cfg.capsule_s3})
    return s.capsule_store_


def retire_instance(s: Scheduler, inst: Instance) -> bool:
    """READY → TERMINATING, in a transaction fenced by the scheduler lease (a deposed leader
    stops nothing); False when the instance had left READY meanwhile."""
    with s.tasks.batch() as conn:
        s.fence(conn)
        return s.fleet.set_instance_state(
            inst.id, InstanceState.TERMINATING, expect={InstanceState.READY}, conn=conn
        )
