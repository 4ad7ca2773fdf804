"""Steps 2 and 6 of a tick: queued tasks to READY instances with room (as new attempts), and
attempts that continue a task elsewhere (a move's restore, a lost instance's recovery), with the
recovery plan a reclaim calls for."""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from capsule_runtime.protocol.resources import Resources
from capsule_runtime.protocol.tes import TesTask
from gateway.market.policy import MarketPolicy, recovery_plan
from gateway.providers.base import Capability, Offer
from gateway.rules import effective_parameters
from gateway.scheduler import launches
from gateway.scheduler.compat import capsule_source, keep_types, refusal, restore_types
from gateway.scheduler.needs import (
    Want,
    attempt_need,
    cheapest_first,
    interruption_budget,
    market_allows,
    only_type,
    task_policy,
    task_request,
)
from gateway.store.fleet import Attempt, Instance, InstanceState
from gateway.store.fleet_data import RecoveryPlan
from gateway.tes.states import AttemptPhase, MarketType, State

if TYPE_CHECKING:
    from gateway.scheduler.loop import Scheduler

log = logging.getLogger(__name__)
# Placements per transaction: fewer commits, while a batch holds SQLite's write lock only for a
# few milliseconds (docs/benchmarks.md, Scheduler scale).
PLACE_BATCH = 64


def placeable(s: Scheduler) -> list[Instance]:
    """READY instances that take new work (not under an interruption notice)."""
    return [i for i in s.fleet.instances({InstanceState.READY}) if not i.data.interruption]


def room_of(s: Scheduler, inst: Instance) -> Resources:
    return rooms_of(s, [inst])[inst.id]


def rooms_of(s: Scheduler, instances: list[Instance]) -> dict[str, Resources]:
    """Each instance's capacity less what its live attempts hold (`attempt_need`), from one
    query however many instances and attempts there are."""
    used: dict[str, list[float]] = {inst.id: [0.0, 0.0, 0.0] for inst in instances}
    only = instances[0].id if len(instances) == 1 else None  # `room_of`: that one's only
    for attempt, task in s.fleet.live_load(only):
        acc = used.get(attempt.instance_id or "")
        if acc is None or task is None:
            continue
        r = attempt_need(attempt, task, s.cfg)
        acc[0] += r.cpu_cores
        acc[1] += r.ram_gb
        acc[2] += r.disk_gb
    rooms: dict[str, Resources] = {}
    for inst in instances:
        cap = inst.data.capacity
        cpu, ram, disk = used[inst.id]
        rooms[inst.id] = Resources(
            (cap.cpu_cores if cap else 0.0) - cpu,
            (cap.ram_gb if cap else 0.0) - ram,
            (cap.disk_gb if cap else 0.0) - disk,
        )
    return rooms


def largest_offer(s: Scheduler) -> Offer | None:
    offers = s.provider.offers()
    return max(offers, key=lambda o: (o.cpu_cores, o.ram_gb)) if offers else None


def place_queued(s: Scheduler) -> list[Want]:
    """Place what fits; return what the queued tasks that found no room need."""
    queued = s.tasks.in_state(State.QUEUED)
    if not queued:
        return []
    # Cheapest first, sorted once: prices do not change within a tick.
    ready = sorted(placeable(s), key=cheapest_first)
    rooms = rooms_of(s, ready)
    biggest = largest_offer(s)
    largest: Resources | None = biggest
    unplaced: list[Want] = []
    # Placements commit PLACE_BATCH at a time (one transaction, not one each); the agents
    # are woken and the refusals written once their batch has committed.
    for start in range(0, len(queued), PLACE_BATCH):
        placed: dict[str, None] = {}
        refused: list[tuple[str, Resources]] = []
        with s.tasks.batch() as conn:
            s.fence(conn)
            for record in queued[start : start + PLACE_BATCH]:
                task = record.task
                if task is None:
                    continue
                need = task_request(task, s.cfg)
                if largest is not None and not need.fits(largest):
                    refused.append((record.id, need))
                    continue
                policy = task_policy(task, s.cfg)
                only = only_type(task, s.cfg)
                fp = s.budget.placing([], task)
                spot_only = policy is MarketPolicy.SPOT_ONLY
                target = next(
                    (
                        i
                        for i in ready
                        if need.fits(rooms[i.id])
                        and market_allows(policy, i.market)
                        and only in (None, i.instance_type)
                        and s.budget.allows(record.id, fp, i, spot_only)
                    ),
                    None,
                )
                if target is None:
                    unplaced.append(Want(need, policy, only, task_id=record.id, footprint=fp))
                elif assign(s, conn, record.id, target):
                    rooms[target.id] = rooms[target.id].minus(need)
                    placed[target.id] = None
        for instance_id in placed:
            s.wakeups.notify(instance_id)
        for task_id, need in refused:
            assert biggest is not None
            refuse(s, task_id, need, biggest)
    return unplaced


def assign(s: Scheduler, conn: Connection, task_id: str, target: Instance) -> bool:
    """QUEUED → INITIALIZING with a new attempt on `target`, in the caller's transaction."""
    result = s.tasks.transition(
        task_id,
        State.INITIALIZING,
        expect={State.QUEUED},
        instance_id=target.id,
        message=f"placed on {target.id} ({target.instance_type}, {target.market})",
        on_apply=functools.partial(add_attempt, s, task_id=task_id, inst=target),
        conn=conn,
    )
    return result.applied


def add_attempt(s: Scheduler, conn: Connection, *, task_id: str, inst: Instance) -> None:
    s.fleet.add_attempt(conn, task_id, inst)


def refuse(s: Scheduler, task_id: str, need: Resources, offer: Offer) -> None:
    message = (
        f"no instance fits this task: it asks for {need.cpu_cores:g} CPU cores, "
        f"{need.ram_gb:g} GB RAM and {need.disk_gb:g} GB disk; the largest instance "
        f"({offer.instance_type}) offers {offer.cpu_cores:g} cores, {offer.ram_gb:g} GB RAM "
        f"and {offer.disk_gb:g} GB disk"
    )
    s.tasks.transition(
        task_id,
        State.SYSTEM_ERROR,
        expect={State.QUEUED},
        message=message,
        logs=[{"logs": [], "outputs": [], "system_logs": [message]}],
    )


def place_restores(s: Scheduler) -> tuple[list[Want], frozenset[str]]:
    """Place the attempts that continue a task elsewhere (a migration's restore, a
    reclaimed or lost instance's recovery); return what the unplaced ones need and the
    instances their tasks are leaving."""
    pending = s.fleet.unplaced_attempts()
    if not pending:
        return [], frozenset()
    ready = placeable(s)
    rooms = {inst.id: room_of(s, inst) for inst in ready}
    unplaced: list[Want] = []
    leaving: set[str] = set()
    offered: list[Offer] | None = None  # what the provider offers, read once if needed
    for attempt in pending:
        record = s.tasks.get(attempt.task_id)
        if record is None or record.state not in (State.RUNNING, State.INITIALIZING):
            with s.tasks.batch() as conn:  # the attempt and the cancel, or neither
                if (
                    s.fleet.set_phase(
                        attempt.id,
                        AttemptPhase.DONE,
                        expect={AttemptPhase.PROVISIONING},
                        message="the task ended before its restore",
                        conn=conn,
                    )
                    and s.tasks.state(attempt.task_id, conn) is State.CANCELING
                ):
                    s.tasks.transition(
                        attempt.task_id,
                        State.CANCELED,
                        message="cancelled between instances",
                        attempt_id=attempt.id,
                        conn=conn,
                    )
            continue
        task = record.task
        need = attempt_need(attempt, task, s.cfg)
        exclude = frozenset(attempt.data.exclude)
        # a capsule restores only onto a CPU with its features, and no older kernel or CRIU
        # (gateway.scheduler.compat); a new instance only of the types that can run it
        source = capsule_source(s.fleet, attempt.task_id) if attempt.data.restore else None
        types = restore_types(s.provider, source)
        plan = plan_recovery(s, attempt, task, need, exclude, types)
        policy = task_policy(task, s.cfg)
        planned = plan.offer
        if planned is not None and types is not None and planned.instance_type not in types:
            planned = None  # a plan made before the types were known: any compatible offer
        wanted = attempt.data.target
        # a plan's offer is taken as it is; otherwise Spot only where the notice can carry it
        fp = None
        if planned is None and s.budget.enabled:
            fp = s.budget.placing(s.fleet.attempts_of(attempt.task_id), task)
        spot_only = policy is MarketPolicy.SPOT_ONLY
        candidates = [
            i
            for i in ready
            if i.id not in exclude and need.fits(rooms[i.id]) and market_allows(policy, i.market)
        ]
        refused = {i.id: why for i in candidates if (why := refusal(i, source)) is not None}
        fits = [
            i
            for i in candidates
            if i.id not in refused
            and (
                planned is None
                or (
                    i.instance_type == planned.instance_type
                    and i.market == planned.market
                    and (i.zone == planned.zone or not plan.zone_matters)
                )
            )
            and s.budget.allows(attempt.task_id, fp, i, spot_only)
        ]
        target = next((i for i in fits if i.id == wanted), fits[0] if fits else None)
        if target is None and refused:
            say_passed(s, attempt, [(i, refused[i.id]) for i in candidates if i.id in refused])
        if target is None and types is not None and source is not None:
            offered = offered if offered is not None else s.provider.offers()
            if not any(
                need.fits(o) and market_allows(policy, o.market) for o in keep_types(offered, types)
            ):
                say_no_compatible_offer(s, attempt, source, types)
        if target is None:
            unplaced.append(
                Want(
                    need,
                    policy,
                    only_type(task, s.cfg),
                    planned,
                    exclude,
                    task_id=attempt.task_id,
                    footprint=fp,
                    types=types,
                )
            )
            leaving |= exclude
            continue
        with s.tasks.batch() as conn:
            s.fence(conn)
            placed = s.fleet.place_attempt(attempt.id, target, conn=conn)
        if placed:
            rooms[target.id] = rooms[target.id].minus(need)
            s.wakeups.notify(target.id)
    return unplaced, frozenset(leaving)


def say_passed(s: Scheduler, attempt: Attempt, passed: list[tuple[Instance, str]]) -> None:
    """A restore waits although an instance has room: it cannot restore the capsule there
    (its CPU, kernel, CRIU or podman). Said in the task's events once per instance."""
    new = [(i, why) for i, why in passed if i.id not in attempt.data.passed_over]
    if not new:
        return
    with s.tasks.batch() as conn:
        s.fence(conn)
        for inst, why in new:
            s.tasks.record(
                attempt.task_id,
                "incompatible_instance",
                attempt_id=attempt.id,
                instance_id=inst.id,
                message=(
                    f"not restored on {inst.id} ({inst.instance_type}), which has room: {why}; "
                    "waiting for an instance that can restore the capsule"
                ),
                conn=conn,
            )
        s.fleet.update_attempt_data(
            attempt.id, passed_over=[*attempt.data.passed_over, *(i.id for i, _ in new)], conn=conn
        )


def say_no_compatible_offer(
    s: Scheduler, attempt: Attempt, source: Instance, types: frozenset[str]
) -> None:
    """A restore no offered instance type can take (none of the architecture and processor
    family of the one its capsule was taken on, or none that fits it): said once in the task's
    events, and nothing is launched for it."""
    if attempt.data.no_compatible_offer:
        return
    some = f" (of those: {', '.join(sorted(types))})" if types else ""
    message = (
        f"no instance type the {s.provider.name} provider offers can restore this task's "
        f"capsule, taken on {source.id} ({source.instance_type}): none with the same CPU "
        f"architecture and processor family that fits it{some}; nothing is launched for it. "
        "Offer such a type (providers.aws.instance_types), or cancel the task"
    )
    log.warning("%s: %s", attempt.task_id, message)
    with s.tasks.batch() as conn:
        s.fence(conn)
        s.tasks.record(
            attempt.task_id,
            "no_compatible_offer",
            attempt_id=attempt.id,
            message=message,
            data={"source_type": source.instance_type, "types": sorted(types)},
            conn=conn,
        )
        s.fleet.update_attempt_data(attempt.id, no_compatible_offer=True, conn=conn)


def plan_recovery(
    s: Scheduler,
    attempt: Attempt,
    task: TesTask | None,
    need: Resources,
    exclude: frozenset[str],
    types: frozenset[str] | None = None,
) -> RecoveryPlan:
    """A reclaimed task's recovery plan (market/policy.py), made once and kept on the
    attempt: the offer to go to (of `types`, where its capsule restores only on those), and
    the pools to quarantine."""
    if attempt.data.plan is not None:
        return attempt.data.plan
    plan: dict[str, Any] = {}
    left = [s.fleet.instance(i) for i in exclude]
    source = next((i for i in left if i is not None), None)
    if (
        attempt.reason == "reclaim"
        and source is not None
        and s.provider.supports(Capability.PRICES)
    ):
        params = effective_parameters(task, s.cfg.tasks.rules)
        strategy = params.get("recovery") or s.cfg.scheduler.recovery
        reclaims = [a for a in s.fleet.attempts_of(attempt.task_id) if a.reason == "reclaim"]
        result = recovery_plan(
            strategy,
            source,
            len(reclaims),
            keep_types(launches.usable_offers(s), types),
            need,
            launches.market_quarantined(s),
            task_policy(task, s.cfg),
            budget=interruption_budget(params, s.cfg),
        )
        if "budget" in result.reason:
            s.tasks.record(attempt.task_id, "interruption_budget", message=result.reason)
        for instance_type, zone in result.quarantine:
            if s.market is not None:
                s.market.quarantine(instance_type, zone)
            else:
                seconds = s.cfg.scheduler.quarantine_seconds
                s.quarantines.add(instance_type, zone, MarketType.SPOT, seconds)
            s.tasks.record(
                attempt.task_id,
                "quarantine",
                message=f"{instance_type} in {zone} quarantined after a reclaim",
            )
        if result.offer is not None:
            plan["offer"] = result.offer
            plan["zone_matters"] = strategy.startswith("next_zone")
        plan["strategy"] = strategy
        if not result.restore_capsule and attempt.data.restore:
            s.fleet.update_attempt_data(attempt.id, restore=False)
    made = RecoveryPlan(**plan)
    s.fleet.update_attempt_data(attempt.id, plan=made)
    return made
