"""Interruption notices the cloud sends the gateway itself (`Provider.notices`: on aws, EC2's
warnings from EventBridge through SQS), acted on as an agent's own notice is
(`Migrations.on_notice`, what `POST /agent/v1/instances/<id>/notice` does): the instance takes no
new work and its tasks are checkpointed and moved. So a Spot reclaim is handled even when the
machine's agent is stuck and never reports what it saw. Notices for machines this gateway does
not run (another gateway's, or not tescape's) are acknowledged and ignored.

Only the leading scheduler reads them (the tick runs only while it holds the lease), and it
handles them only after a fenced check that it still leads: a deposed leader handles and
acknowledges nothing, so the cloud sends the notices again to the next one. A notice is
acknowledged only once handled; handling one twice changes nothing (`on_notice` sees the
interruption already recorded)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from gateway.migration import restarts
from gateway.providers.base import CloudNotice, ProviderError
from gateway.store.fleet import Instance, InstanceState

if TYPE_CHECKING:
    from gateway.scheduler.loop import Scheduler

log = logging.getLogger(__name__)


def notice(s: Scheduler, inst: Instance, kind: str, when: str) -> None:
    """A notice on `inst` from the scheduler's side (a simulated reclaim, the cloud's own
    warning): the path an agent's notice takes, with the same rule for tasks that restart
    instead of moving."""
    s.migrations.on_notice(
        inst, kind, when, stays=lambda task_id: restarts(s.tasks, s.cfg, task_id), budget=s.budget
    )


def read(s: Scheduler) -> None:
    """The provider's notices since the last tick, handled and then acknowledged."""
    try:
        notices = s.provider.notices()
    except ProviderError as exc:
        log.warning("reading the provider's interruption notices: %s", exc)
        return
    if not notices:
        return
    with s.tasks.batch() as conn:  # LostLeadership for a deposed leader: nothing handled
        s.fence(conn)
    live = s.fleet.instances({InstanceState.LAUNCHING, InstanceState.READY})
    by_machine = {inst.provider_id or inst.id: inst for inst in live}
    handled: list[CloudNotice] = []
    try:
        for note in notices:
            inst = by_machine.get(note.provider_id)
            if inst is None:
                log.info(
                    "%s notice from the provider for %s: not a live instance of this gateway",
                    note.kind,
                    note.provider_id,
                )
            else:
                log.warning(
                    "instance %s (%s): %s notice from the provider, deadline %s",
                    inst.id,
                    note.provider_id,
                    note.kind,
                    note.time,
                )
                notice(s, inst, note.kind, note.time)
            handled.append(note)
    finally:  # what was handled is acknowledged even if a later one failed (it comes back)
        if handled:
            try:
                s.provider.acknowledge(handled)
            except ProviderError as exc:
                log.warning("acknowledging interruption notices: %s", exc)
