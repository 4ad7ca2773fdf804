"""Placement and migration decisions as pure functions: the scheduler and the cost simulator
(bench/spot_sim.py) call the same ones, so the simulation measures the code that runs.

Nothing here reads a clock, a store or a random number: every input is an argument.

    market_for        which market(s) a task may use (MMCloud's vmPolicy)
    choose_offer      the cheapest fitting offer under a policy, avoiding quarantined pools
    recovery_plan     where a task goes after a reclaim, by strategy name (same_type, next_zone,
                      on_demand_after:N, restart), and whether it restores its capsule
    cost_migration    whether a running task should move because a fitting offer is cheaper
    resize_decision   rightsizing (WaveRider's thresholds) and OOM protection
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from capsule_runtime.protocol.resources import EPS, Resources
from gateway.providers.base import Offer
from gateway.tes.states import MarketType

SPOT, ON_DEMAND = MarketType.SPOT, MarketType.ON_DEMAND
Pool = tuple[str, str]  # (instance type, zone)


class MarketPolicy(StrEnum):
    SPOT_ONLY = "spot_only"
    SPOT_FIRST = "spot_first"  # Spot; on-demand when no Spot offer fits or is available
    ON_DEMAND_ONLY = "on_demand_only"


class Placement(Protocol):
    """Where a task runs or ran: an Offer, an Instance row or an attempt row."""

    @property
    def instance_type(self) -> str: ...
    @property
    def zone(self) -> str: ...
    @property
    def market(self) -> str: ...


def fits(need: Resources, offer: Offer) -> bool:
    return need.fits(offer)


def _price(offer: Offer) -> float:
    return offer.price_per_hour if offer.price_per_hour is not None else float("inf")


def _rank(offer: Offer) -> tuple[float, float, float, int, str, str]:
    """Cheapest first; ties: the smaller, then the higher Spot placement score (where the
    provider knows one), then by name and zone (deterministic)."""
    return (
        _price(offer),
        offer.cpu_cores,
        offer.ram_gb,
        -(offer.placement_score or 0),
        offer.instance_type,
        offer.zone,
    )


# -- which market ---------------------------------------------------------------------------


def _truthy(value: object) -> bool | None:
    if isinstance(value, bool) or value is None:
        return value
    text = str(value).strip().lower()
    return {"true": True, "false": False}.get(text)


def market_for(
    backend_parameters: Mapping[str, str] | None,
    preemptible: bool | None,
    default_policy: MarketPolicy | str = MarketPolicy.SPOT_FIRST,
) -> MarketPolicy:
    """The market policy of one task.

    1. `backend_parameters.market_policy` wins (spot_only | spot_first | on_demand_only);
    2. else TES `resources.preemptible`: false → on_demand_only; true → the server's default when
       that allows Spot, else spot_first (true *allows* preemptible capacity, TES 1.1);
    3. else (unset) the server's default.
    """
    default = MarketPolicy(default_policy)
    asked = (backend_parameters or {}).get("market_policy")
    if asked:
        return MarketPolicy(asked)
    flag = _truthy(preemptible)
    if flag is False:
        return MarketPolicy.ON_DEMAND_ONLY
    if flag is True:
        return default if default is not MarketPolicy.ON_DEMAND_ONLY else MarketPolicy.SPOT_FIRST
    return default


# -- placement ------------------------------------------------------------------------------


def _cheapest(
    need: Resources,
    offers: Iterable[Offer],
    market: str,
    quarantined: frozenset[Pool] | set[Pool],
    exclude: frozenset[Pool] | set[Pool],
    only_type: str | None,
) -> Offer | None:
    best: Offer | None = None
    best_price = float("inf")
    cpu, ram, disk = need.cpu_cores - EPS, need.ram_gb - EPS, need.disk_gb - EPS
    for o in offers:
        if o.market != market or o.cpu_cores < cpu or o.ram_gb < ram or o.disk_gb < disk:
            continue
        price = _price(o)
        if price > best_price or (only_type is not None and o.instance_type != only_type):
            continue
        pool = (o.instance_type, o.zone)
        if pool in exclude or (market == SPOT and pool in quarantined):
            continue
        if best is None or price < best_price or _rank(o) < _rank(best):
            best, best_price = o, price
    return best


def choose_offer(
    need: Resources,
    offers: Sequence[Offer],
    policy: MarketPolicy | str = MarketPolicy.SPOT_FIRST,
    quarantined: frozenset[Pool] | set[Pool] = frozenset(),
    exclude_types_zones: frozenset[Pool] | set[Pool] = frozenset(),
    prefer: str | None = None,
    only_type: str | None = None,
) -> Offer | None:
    """The cheapest offer that fits `need` under `policy`, or None.

    - quarantined (type, zone) pools are skipped for Spot (on-demand there is fine);
    - exclude_types_zones are skipped in both markets (e.g. the pool a task is leaving);
    - prefer: an instance type taken when one of it fits (cheapest of that type), else any;
    - only_type: nothing but this type (backend_parameters.instance_type).
    spot_first falls back to on-demand when no Spot offer fits or is available.
    """
    policy = MarketPolicy(policy)
    markets = {
        MarketPolicy.SPOT_ONLY: (SPOT,),
        MarketPolicy.SPOT_FIRST: (SPOT, ON_DEMAND),
        MarketPolicy.ON_DEMAND_ONLY: (ON_DEMAND,),
    }[policy]
    for market in markets:
        if prefer is not None and only_type is None:
            found = _cheapest(need, offers, market, quarantined, exclude_types_zones, prefer)
            if found is not None:
                return found
        found = _cheapest(need, offers, market, quarantined, exclude_types_zones, only_type)
        if found is not None:
            return found
    return None


# -- recovery after a reclaim ---------------------------------------------------------------


@dataclass(frozen=True)
class RecoveryPlan:
    offer: Offer | None  # None: nothing fits now (the scheduler retries later)
    restore_capsule: bool  # False: start again from the beginning
    quarantine: tuple[Pool, ...] = ()  # pools to quarantine (for the market's window)
    reason: str = ""


@dataclass(frozen=True)
class RecoveryContext:
    interrupted: Placement
    interruptions_so_far: int  # Spot interruptions of this task, the current one included
    offers: Sequence[Offer]
    need: Resources
    quarantined: frozenset[Pool] | set[Pool]
    policy: MarketPolicy
    argument: int | None = None  # N of on_demand_after:N


RecoveryStrategy = Callable[[RecoveryContext], RecoveryPlan]
RECOVERY: dict[str, RecoveryStrategy] = {}
_STRATEGY = re.compile(r"^([a-z_]+)(?::(\d+))?$")


def register_recovery(name: str) -> Callable[[RecoveryStrategy], RecoveryStrategy]:
    """Register a recovery strategy under `name` (a task or the config picks it by name)."""

    def add(fn: RecoveryStrategy) -> RecoveryStrategy:
        RECOVERY[name] = fn
        return fn

    return add


def parse_strategy(spec: str) -> tuple[str, int | None]:
    """'on_demand_after:3' → ('on_demand_after', 3); ValueError for an unknown one."""
    match = _STRATEGY.match(spec.strip())
    if match is None or match.group(1) not in RECOVERY:
        raise ValueError(
            f"unknown recovery strategy {spec!r} (known: {', '.join(sorted(RECOVERY))})"
        )
    name, arg = match.group(1), match.group(2)
    if name == "on_demand_after" and arg is None:
        raise ValueError("on_demand_after needs a count: on_demand_after:N")
    return name, int(arg) if arg is not None else None


@register_recovery("same_type")
def _same_type(ctx: RecoveryContext) -> RecoveryPlan:
    """SpotSurfer's default: the same instance type in any zone not quarantined (the reclaimed
    zone included), cheapest first; another type only when that type is nowhere to be had."""
    offer = choose_offer(
        ctx.need,
        ctx.offers,
        ctx.policy,
        ctx.quarantined,
        prefer=ctx.interrupted.instance_type,
    )
    return RecoveryPlan(offer, restore_capsule=True, reason="same_type")


@register_recovery("next_zone")
def _next_zone(ctx: RecoveryContext) -> RecoveryPlan:
    """SkyPilot's EAGER_NEXT_REGION, per zone, with MMCloud's per-AZ quarantine: the reclaimed
    type+zone is quarantined (more reclaims there are likely within minutes) and the task goes to
    the same type in another zone, else the cheapest other fit."""
    pool = (ctx.interrupted.instance_type, ctx.interrupted.zone)
    spot = ctx.interrupted.market == SPOT
    quarantined = set(ctx.quarantined) | {pool} if spot else ctx.quarantined
    offer = choose_offer(
        ctx.need, ctx.offers, ctx.policy, quarantined, prefer=ctx.interrupted.instance_type
    )
    return RecoveryPlan(
        offer,
        restore_capsule=True,
        quarantine=(pool,) if spot else (),
        reason="next_zone",
    )


@register_recovery("on_demand_after")
def _on_demand_after(ctx: RecoveryContext) -> RecoveryPlan:
    """Cromwell's "N preemptible tries, then dedicated", keeping the capsule: after N Spot
    interruptions the task moves to on-demand (the same type when it fits; not under spot_only);
    before that, as same_type."""
    n = ctx.argument or 0
    if ctx.interruptions_so_far >= n and ctx.policy is not MarketPolicy.SPOT_ONLY:
        offer = choose_offer(
            ctx.need,
            ctx.offers,
            MarketPolicy.ON_DEMAND_ONLY,
            prefer=ctx.interrupted.instance_type,
        )
        return RecoveryPlan(offer, restore_capsule=True, reason=f"on_demand_after:{n}")
    plan = _same_type(ctx)
    return RecoveryPlan(plan.offer, True, reason=f"on_demand_after:{n}")


@register_recovery("restart")
def _restart(ctx: RecoveryContext) -> RecoveryPlan:
    """The baseline of retry-based systems (Nextflow maxSpotAttempts, AWS Batch, Cromwell
    preemptible): place the task as new and run it from the beginning."""
    offer = choose_offer(ctx.need, ctx.offers, ctx.policy, ctx.quarantined)
    return RecoveryPlan(offer, restore_capsule=False, reason="restart")


def recovery_plan(
    strategy: str,
    interrupted: Placement,
    interruptions_so_far: int,
    offers: Sequence[Offer],
    need: Resources,
    quarantined: frozenset[Pool] | set[Pool] = frozenset(),
    policy: MarketPolicy | str = MarketPolicy.SPOT_FIRST,
    budget: int | None = None,
) -> RecoveryPlan:
    """Where a reclaimed task goes next, by strategy name (`same_type`, `next_zone`,
    `on_demand_after:N`, `restart`, or any registered one).

    `budget`: the Spot interruptions a task takes, whatever its strategy; once this one uses it
    up, the task goes on on-demand (the strategy still says whether its capsule is restored),
    unless its policy is spot_only."""
    name, argument = parse_strategy(strategy)
    ctx = RecoveryContext(
        interrupted=interrupted,
        interruptions_so_far=interruptions_so_far,
        offers=offers,
        need=need,
        quarantined=quarantined,
        policy=MarketPolicy(policy),
        argument=argument,
    )
    plan = RECOVERY[name](ctx)
    spent = budget is not None and interruptions_so_far >= budget
    if not spent or ctx.policy is MarketPolicy.SPOT_ONLY:
        return plan
    if plan.offer is not None and plan.offer.market != SPOT:
        return plan
    offer = choose_offer(
        need, offers, MarketPolicy.ON_DEMAND_ONLY, prefer=interrupted.instance_type
    )
    return RecoveryPlan(
        offer,
        plan.restore_capsule,
        plan.quarantine,
        reason=f"{plan.reason or name}, interruption budget ({budget}) used up: on-demand",
    )


# -- cost-triggered migration ---------------------------------------------------------------


@dataclass(frozen=True)
class CostRule:
    """When a running task moves for price.

    threshold_pct: a fitting offer must be at least this much cheaper per hour (relative), and
        the saving over the remaining time must exceed the migration's cost (net of it);
    max_price: the current price crossing this (USD/h) moves the task to any fitting offer at or
        below it, even if the relative saving is smaller;
    min_interval_seconds + hysteresis: no move sooner than this after the last one, and a move
        for max_price only when the price is above max_price x (1 + hysteresis_pct/100), so a
        price hovering at the limit does not bounce a task back and forth.
    """

    threshold_pct: float = 20.0
    max_price: float | None = None
    hysteresis_pct: float = 5.0
    min_interval_seconds: float = 1800.0


def cost_migration(
    current_price: float,
    current_offer: Placement,
    offers: Sequence[Offer],
    need: Resources,
    remaining_hours_estimate: float,
    migration_cost_usd: float,
    rule: CostRule | None = None,
    quarantined: frozenset[Pool] | set[Pool] = frozenset(),
    policy: MarketPolicy | str = MarketPolicy.SPOT_FIRST,
    seconds_since_last_move: float | None = None,
) -> Offer | None:
    """The offer a running task should move to for price, or None to stay.

    Candidates: fitting offers of the task's policy other than its own pool (Spot ones not
    quarantined). A task moves when the best candidate is cheaper by more than threshold_pct and
    (current - candidate) x remaining hours - migration cost > 0; or when its price is above
    max_price (with hysteresis) and a candidate at or below max_price exists."""
    rule = rule or CostRule()
    if remaining_hours_estimate <= 0:
        return None
    if seconds_since_last_move is not None and seconds_since_last_move < rule.min_interval_seconds:
        return None
    own = (current_offer.instance_type, current_offer.zone, current_offer.market)
    policy = MarketPolicy(policy)
    allowed = {
        MarketPolicy.SPOT_ONLY: {SPOT},
        MarketPolicy.SPOT_FIRST: {SPOT, ON_DEMAND},
        MarketPolicy.ON_DEMAND_ONLY: {ON_DEMAND},
    }[policy]
    best: Offer | None = None
    best_price = float("inf")
    for o in offers:
        price = o.price_per_hour
        if price is None or price > best_price or o.market not in allowed or not fits(need, o):
            continue
        if (o.instance_type, o.zone, o.market) == own:
            continue
        if o.market == SPOT and (o.instance_type, o.zone) in quarantined:
            continue
        if best is None or price < best_price or _rank(o) < _rank(best):
            best, best_price = o, price
    if best is None or best.price_per_hour is None:
        return None
    candidate = best.price_per_hour
    net = (current_price - candidate) * remaining_hours_estimate - migration_cost_usd
    if candidate < current_price * (1 - rule.threshold_pct / 100.0) and net > 0:
        return best
    if (
        rule.max_price is not None
        and current_price > rule.max_price * (1 + rule.hysteresis_pct / 100.0)
        and candidate <= rule.max_price
    ):
        return best
    return None


def migration_hours(
    memory_gib: float,
    dump_gib_per_s: float = 0.8,
    restore_gib_per_s: float = 0.8,
    boot_s: float = 60.0,
) -> float:
    """Hours a migration takes: checkpoint + boot of the new instance + restore."""
    return (memory_gib / dump_gib_per_s + boot_s + memory_gib / restore_gib_per_s) / 3600.0


def migration_cost_usd(
    memory_gib: float,
    current_price: float,
    new_price: float,
    dump_gib_per_s: float = 0.8,
    restore_gib_per_s: float = 0.8,
    boot_s: float = 60.0,
) -> float:
    """What a migration costs: the old instance during the checkpoint, the new one while it boots
    and restores (neither does the task's work meanwhile)."""
    dump_h = memory_gib / dump_gib_per_s / 3600.0
    new_h = (boot_s + memory_gib / restore_gib_per_s) / 3600.0
    return current_price * dump_h + new_price * new_h


# -- rightsizing and OOM protection ---------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One utilisation sample of a running task."""

    t: float  # seconds (any origin, increasing)
    cpu_cores: float  # cores in use (1.5 = one and a half cores busy)
    mem_gb: float  # resident memory


@dataclass(frozen=True)
class ResizeRule:
    """WaveRider's defaults: CPU above 90% or below 5% of the instance for 30 s; OOM protection
    when memory use reaches 90% of the instance's memory."""

    cpu_upper: float = 0.90
    cpu_lower: float = 0.05
    duration_seconds: float = 30.0
    mem_upper: float = 0.90
    mem_headroom: float = 1.25  # a smaller type must hold peak memory x this
    grow_factor: float = 2.0  # a bigger type has at least this x the CPU (or memory for OOM)


@dataclass(frozen=True)
class Resize:
    offer: Offer
    reason: str  # rightsize | oom
    direction: str  # up | down
    limits: Resources  # what the task's container may use after the move


def _window(samples: Sequence[Sample], duration: float) -> list[Sample] | None:
    """The samples of the last `duration` seconds, or None when they do not span it."""
    if not samples:
        return None
    end = samples[-1].t
    recent = [s for s in samples if s.t >= end - duration]
    if end - samples[0].t < duration:
        return None
    return recent


def resize_decision(
    samples: Sequence[Sample],
    current: Offer,
    offers: Sequence[Offer],
    need: Resources,
    rule: ResizeRule | None = None,
    quarantined: frozenset[Pool] | set[Pool] = frozenset(),
    allocated: Resources | None = None,
    keep_memory: bool = False,
) -> Resize | None:
    """Rightsizing and OOM protection of one task on `current`, in the same market.

    `allocated` is what the task's container may use (default: the whole instance, MMCloud's one
    task per instance); utilisation is measured against it.
    - oom: the newest sample uses ≥ mem_upper of the allocated memory → the cheapest offer with
      ≥ grow_factor x that memory (and the allocated cores), before the kernel kills the task;
    - up: CPU ≥ cpu_upper of the allocated cores over the whole last `duration_seconds` → the
      cheapest offer with ≥ grow_factor x the cores (and the peak memory);
    - down: CPU ≤ cpu_lower over that window → the cheapest offer with fewer cores than the
      instance that holds max(1, cores / grow_factor), the disk, and peak memory x mem_headroom,
      when it costs less than the current one. `keep_memory`: the container has a memory
      limit of its own (asked for, or given by OOM protection) and a down move keeps it — only
      the cores shrink, so a task whose memory still grows is not sent back and forth.
    """
    rule = rule or ResizeRule()
    if not samples:
        return None
    limits = allocated or current
    policy = MarketPolicy.SPOT_ONLY if current.market == SPOT else MarketPolicy.ON_DEMAND_ONLY
    newest = samples[-1]
    if newest.mem_gb >= rule.mem_upper * limits.ram_gb:
        bigger = Resources(limits.cpu_cores, limits.ram_gb * rule.grow_factor, need.disk_gb)
        offer = choose_offer(bigger, offers, policy, quarantined)
        return Resize(offer, "oom", "up", bigger) if offer is not None else None
    window = _window(samples, rule.duration_seconds)
    if window is None:
        return None
    cores = limits.cpu_cores
    peak = max(s.mem_gb for s in window)
    if all(s.cpu_cores >= rule.cpu_upper * cores for s in window):
        bigger = Resources(cores * rule.grow_factor, max(limits.ram_gb, peak), need.disk_gb)
        offer = choose_offer(bigger, offers, policy, quarantined)
        return Resize(offer, "rightsize", "up", bigger) if offer is not None else None
    if all(s.cpu_cores <= rule.cpu_lower * cores for s in window):
        memory = limits.ram_gb if keep_memory else peak * rule.mem_headroom
        smaller = Resources(max(1.0, cores / rule.grow_factor), memory, need.disk_gb)
        offer = choose_offer(smaller, offers, policy, quarantined)
        if (
            offer is not None
            and offer.cpu_cores < current.cpu_cores
            and _price(offer) < _price(current)
        ):
            return Resize(offer, "rightsize", "down", smaller)
    return None


def rightsize(
    samples: Sequence[Sample],
    current: Offer,
    offers: Sequence[Offer],
    need: Resources,
    rule: ResizeRule | None = None,
    quarantined: frozenset[Pool] | set[Pool] = frozenset(),
    allocated: Resources | None = None,
) -> Offer | None:
    """The offer to move to for size or memory, or None (resize_decision says why)."""
    decision = resize_decision(samples, current, offers, need, rule, quarantined, allocated)
    return decision.offer if decision else None
