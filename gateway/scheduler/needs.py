"""What a task or an attempt needs of an instance (a `Resources`), what an unplaced one asks of
a new instance (`Want`), and the task-level choices behind them (market policy, instance type,
limits)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from capsule_runtime.protocol.resources import Resources
from capsule_runtime.protocol.tes import TesResources, TesTask
from gateway.config import Config
from gateway.market.policy import MarketPolicy, market_for
from gateway.providers.base import Offer
from gateway.rules import effective_parameters, effective_preemptible
from gateway.scheduler.notice_budget import Footprint
from gateway.store.fleet import Attempt, Instance
from gateway.tes.states import MarketType

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Want:
    """What an unplaced task or restore needs from a new instance."""

    need: Resources
    policy: MarketPolicy
    only_type: str | None = None
    offer: Offer | None = None  # a recovery plan's choice, taken as it is
    exclude: frozenset[str] = frozenset()  # instances it may not go to
    # for the notice budget planner: whose want it is, and what its capsule would carry
    task_id: str | None = None
    footprint: Footprint | None = None
    # the instance types a capsule's restore can run on (gateway.scheduler.compat); None: any
    types: frozenset[str] | None = None


def task_policy(task: TesTask | None, cfg: Config) -> MarketPolicy:
    rules = cfg.tasks.rules
    return market_for(
        effective_parameters(task, rules),
        effective_preemptible(task, rules),
        cfg.scheduler.market_policy,
    )


def market_allows(policy: MarketPolicy, market: str) -> bool:
    if policy is MarketPolicy.SPOT_ONLY:
        return market == MarketType.SPOT
    if policy is MarketPolicy.ON_DEMAND_ONLY:
        return market != MarketType.SPOT
    return True


def asked_of(task: TesTask | None) -> TesResources:
    """The task's own `resources` (empty when it says none)."""
    return (task.resources if task is not None else None) or TesResources()


def task_request(task: TesTask | None, cfg: Config) -> Resources:
    res = asked_of(task)
    sched = cfg.scheduler
    return Resources(
        cpu_cores=float(res.cpu_cores if res.cpu_cores is not None else sched.default_cpu_cores),
        ram_gb=float(res.ram_gb if res.ram_gb is not None else sched.default_ram_gb),
        disk_gb=float(res.disk_gb or 0.0),
    )


def attempt_need(attempt: Attempt, task: TesTask | None, cfg: Config) -> Resources:
    """What a live attempt holds of its instance: its own allocation (`limits`, set when a
    task is rightsized) where it has one, else what its task asks for."""
    asked = task_request(task, cfg)
    limits = attempt.data.limits
    if not limits:
        return asked
    return Resources(
        cpu_cores=float(limits.cpu_cores if limits.cpu_cores is not None else asked.cpu_cores),
        ram_gb=float(limits.ram_gb if limits.ram_gb is not None else asked.ram_gb),
        disk_gb=float(limits.disk_gb if limits.disk_gb is not None else asked.disk_gb),
    )


def interruption_budget(params: dict[str, Any], cfg: Config) -> int | None:
    """The Spot reclaims a task takes on Spot (backend_parameters.interruption_budget, else the
    scheduler's); None: no budget."""
    value = params.get("interruption_budget", cfg.scheduler.interruption_budget)
    try:
        return None if value is None else max(0, int(value))
    except (TypeError, ValueError):
        return cfg.scheduler.interruption_budget


def container_limits(attempt: Attempt, task: TesTask | None, inst: Instance) -> dict[str, float]:
    """What the attempt's container may use: the limits a size move gave it, else the task's
    resources; what neither says, the whole instance (its type's size, scaled to the machine
    for local instances) — a task cannot outgrow the machine it was placed on unnoticed."""
    given = attempt.data.limits.dump() if attempt.data.limits else {}
    res = asked_of(task)
    asked = {"cpu_cores": res.cpu_cores, "ram_gb": res.ram_gb}
    capacity = inst.data.capacity.sizes() if inst.data.capacity else {}
    limits: dict[str, float] = {}
    for key in ("cpu_cores", "ram_gb"):
        own = asked[key]
        value = given.get(key, own if own is not None else capacity.get(key))
        if value:
            limits[key] = float(value)
    return limits


def allocation(attempt: Attempt, task: TesTask | None, inst: Instance) -> Resources:
    """container_limits as a Resources: what the attempt's use is measured against."""
    limits = container_limits(attempt, task, inst)
    disk = float(asked_of(task).disk_gb or 0.0)
    return Resources(limits.get("cpu_cores", 0.0), limits.get("ram_gb", 0.0), disk)


def cheapest_first(inst: Instance) -> tuple[bool, float]:
    """Spot before on-demand, then by price: where a task placed on running capacity goes."""
    return inst.market != MarketType.SPOT, inst.price_per_hour or 0.0


def only_type(task: TesTask | None, cfg: Config) -> str | None:
    value = effective_parameters(task, cfg.tasks.rules).get("instance_type")
    return str(value) if value else None
