"""Migrations on purpose: OOM protection and rightsizing from each running task's usage samples
(grown in place when the instance has room), and moves for price (gateway/market/policy.py
decides; gateway.migration acts)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING

from capsule_runtime.protocol.resources import Resources
from capsule_runtime.protocol.tes import TesTask
from gateway.market.policy import (
    CostRule,
    ResizeRule,
    Sample,
    cost_migration,
    migration_cost_usd,
    resize_decision,
)
from gateway.migration import Refused
from gateway.providers.base import Capability, Offer, offer_of
from gateway.scheduler import launches, placement, prices
from gateway.scheduler.common import age, age_s
from gateway.scheduler.compat import keep_types, restore_types
from gateway.scheduler.needs import allocation, attempt_need, task_policy, task_request
from gateway.store.fleet import Attempt, Instance
from gateway.store.fleet_data import Limits, ResizeRequest
from gateway.tes.states import AttemptPhase, MarketType, State

if TYPE_CHECKING:
    from gateway.scheduler.loop import Scheduler

log = logging.getLogger(__name__)


def run_triggers(s: Scheduler, now: datetime) -> None:
    """Migrations on purpose: OOM protection and rightsizing from each running task's usage
    samples, and moves for price (gateway/market/policy.py decides; Migrations acts)."""
    sch = s.cfg.scheduler
    if not s.provider.supports(Capability.PRICES) or not (
        sch.rightsizing.enabled or sch.cost_migration.enabled
    ):
        return
    # usage samples arrive with the agents' polls (seconds apart) and prices move in steps:
    # a look every triggers_interval_seconds is soon enough, however often the tick runs
    every = sch.triggers_interval_seconds
    if s.last_triggers is not None and age_s(s.last_triggers, now) < every:
        return
    s.last_triggers = now
    if s.market is None:
        prices.refresh_prices(s)
    offers: list[Offer] | None = None
    quarantined = launches.market_quarantined(s)
    for inst in placement.placeable(s):
        # a move restores the capsule taken here: only onto types that can (compat.py)
        kept: list[Offer] | None = None
        for attempt in s.fleet.live_attempts(inst.id):
            if attempt.phase is not AttemptPhase.RUNNING or attempt.data.checkpoint:
                continue
            record = s.tasks.get(attempt.task_id)
            task = record.task if record is not None else None
            if record is None or record.state is not State.RUNNING or task is None:
                continue
            offers = offers if offers is not None else launches.usable_offers(s)
            if kept is None:
                kept = keep_types(offers, restore_types(s.provider, inst))
            move = decide_move(s, attempt, inst, task, kept, quarantined, now)
            if move is None:
                continue
            reason, offer, limits = move
            if limits is not None and resize_in_place(s, attempt, inst, task, reason, limits):
                continue
            plan = offer
            try:
                s.migrations.request(
                    attempt.task_id,
                    stop=True,
                    reason=reason,
                    plan=plan,
                    limits=limits,
                    fence=s.fence,
                )
            except Refused as exc:
                log.info("no %s move for %s: %s", reason, attempt.task_id, exc)
                continue
            log.info(
                "moving %s (%s): %s %s → %s %s %s",
                attempt.task_id,
                reason,
                inst.instance_type,
                inst.market,
                offer.instance_type,
                offer.market,
                offer.zone,
            )


def resize_in_place(
    s: Scheduler,
    attempt: Attempt,
    inst: Instance,
    task: TesTask,
    reason: str,
    limits: Limits,
) -> bool:
    """Grow the container where it runs when its instance has room for the new limits (no
    checkpoint, no new instance); False: it has not, the task must move."""
    held = attempt_need(attempt, task, s.cfg)
    assert limits.cpu_cores is not None and limits.ram_gb is not None
    wanted = Resources(limits.cpu_cores, limits.ram_gb, held.disk_gb)
    if wanted.cpu_cores < held.cpu_cores or wanted.ram_gb < held.ram_gb:
        return False  # a smaller size saves money only on a smaller instance
    if not wanted.minus(held).fits(placement.room_of(s, inst)):
        return False
    s.fleet.update_attempt_data(
        attempt.id,
        limits=limits,
        resize=ResizeRequest(
            cpu_cores=limits.cpu_cores, ram_gb=limits.ram_gb, reason=reason, sent=False
        ),
    )
    old = attempt.data.limits or task.resources
    cpu_before = old.cpu_cores if old is not None and old.cpu_cores is not None else "-"
    ram_before = old.ram_gb if old is not None and old.ram_gb is not None else "-"
    before = f"cpu {cpu_before}, memory {ram_before} GB"
    after = f"cpu {limits.cpu_cores:g}, memory {limits.ram_gb:g} GB"
    s.tasks.record(
        attempt.task_id,
        "resized",
        attempt_id=attempt.id,
        instance_id=inst.id,
        message=f"{reason}: grown in place on {inst.id} ({before} → {after})",
        data={"reason": reason, "limits": limits.dump()},
    )
    log.info("resizing %s in place on %s (%s): %s", attempt.task_id, inst.id, reason, after)
    s.wakeups.notify(inst.id)
    return True


def decide_move(
    s: Scheduler,
    attempt: Attempt,
    inst: Instance,
    task: TesTask,
    offers: list[Offer],
    quarantined: frozenset[tuple[str, str]],
    now: datetime,
) -> tuple[str, Offer, Limits | None] | None:
    """Whether the attempt should move, why, where, and (for a size move) the container's
    new limits."""
    sch = s.cfg.scheduler
    current = offer_of(inst)
    need = task_request(task, s.cfg)
    history = attempt.data.usage
    if sch.rightsizing.enabled and history:
        r = sch.rightsizing
        samples = [
            Sample(
                t=datetime.fromisoformat(u.time).timestamp(),
                cpu_cores=float(u.cpu_cores or 0.0),
                mem_gb=float(u.memory_bytes or 0) / 2**30,
            )
            for u in history
            if u.time
        ]
        rule = ResizeRule(
            cpu_upper=r.cpu_upper,
            cpu_lower=r.cpu_lower,
            duration_seconds=r.duration_seconds,
            mem_upper=r.memory_upper,
        )
        allocated = allocation(attempt, task, inst)
        given = attempt.data.limits
        limited = (
            "ram_gb" in given.model_fields_set
            if given is not None
            else task.resources is not None and task.resources.ram_gb is not None
        )
        resize = resize_decision(
            samples,
            current,
            offers,
            need,
            rule,
            quarantined,
            allocated=allocated,
            keep_memory=limited,
        )
        if resize is not None:
            limits = Limits(cpu_cores=resize.limits.cpu_cores, ram_gb=resize.limits.ram_gb)
            return resize.reason, resize.offer, limits
    c = sch.cost_migration
    if not c.enabled or inst.price_per_hour is None or inst.market != MarketType.SPOT:
        return None  # on-demand is where a policy or a recovery strategy put the task
    ran = age(attempt.start_time, now)
    ran = s.market.simulated_seconds(ran) if s.market is not None else ran
    memory_gib = float((history[-1].memory_bytes if history else 0) or 0) / 2**30
    offer = cost_migration(
        inst.price_per_hour,
        current,
        offers,
        need,
        remaining_hours_estimate=ran / 3600.0,
        migration_cost_usd=migration_cost_usd(memory_gib, inst.price_per_hour, inst.price_per_hour),
        rule=CostRule(c.threshold_pct, c.max_price, c.hysteresis_pct, c.min_interval_seconds),
        quarantined=quarantined,
        policy=task_policy(task, s.cfg),
        seconds_since_last_move=age(attempt.start_time, now),
    )
    return ("cost", offer, None) if offer is not None else None
