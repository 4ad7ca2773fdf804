"""What a task or an attempt needs of an instance (a `Resources`), what an unplaced one asks of
a new instance (`Want`), and the task-level choices behind them (market policy, instance type,
limits)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from capsule_runtime.protocol.resources import Resources
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


def task_policy(spec: dict[str, Any], cfg: Config) -> MarketPolicy:
    rules = cfg.tasks.rules
    return market_for(
        effective_parameters(spec, rules),
        effective_preemptible(spec, rules),
        cfg.scheduler.market_policy,
    )


def market_allows(policy: MarketPolicy, market: str) -> bool:
    if policy is MarketPolicy.SPOT_ONLY:
        return market == MarketType.SPOT
    if policy is MarketPolicy.ON_DEMAND_ONLY:
        return market != MarketType.SPOT
    return True


def task_request(spec: dict[str, Any], cfg: Config) -> Resources:
    res = spec.get("resources", {})
    return Resources(
        cpu_cores=float(res.get("cpu_cores", cfg.scheduler.default_cpu_cores)),
        ram_gb=float(res.get("ram_gb", cfg.scheduler.default_ram_gb)),
        disk_gb=float(res.get("disk_gb", 0.0)),
    )


def attempt_need(attempt: Attempt, spec: dict[str, Any] | None, cfg: Config) -> Resources:
    """What a live attempt holds of its instance: its own allocation (`limits`, set when a
    task is rightsized) where it has one, else what its task asks for."""
    asked = task_request(spec or {}, cfg)
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


def container_limits(attempt: Attempt, spec: dict[str, Any], inst: Instance) -> dict[str, float]:
    """What the attempt's container may use: the limits a size move gave it, else the task's
    resources; what neither says, the whole instance (its type's size, scaled to the machine
    for local instances) — a task cannot outgrow the machine it was placed on unnoticed."""
    given = attempt.data.limits.dump() if attempt.data.limits else {}
    asked = spec.get("resources") or {}
    capacity = inst.data.capacity.sizes() if inst.data.capacity else {}
    limits: dict[str, float] = {}
    for key in ("cpu_cores", "ram_gb"):
        value = given.get(key, asked.get(key, capacity.get(key)))
        if value:
            limits[key] = float(value)
    return limits


def allocation(attempt: Attempt, spec: dict[str, Any], inst: Instance) -> Resources:
    """container_limits as a Resources: what the attempt's use is measured against."""
    limits = container_limits(attempt, spec, inst)
    disk = float((spec.get("resources") or {}).get("disk_gb", 0.0))
    return Resources(limits.get("cpu_cores", 0.0), limits.get("ram_gb", 0.0), disk)


def cheapest_first(inst: Instance) -> tuple[bool, float]:
    """Spot before on-demand, then by price: where a task placed on running capacity goes."""
    return inst.market != MarketType.SPOT, inst.price_per_hour or 0.0


def only_type(spec: dict[str, Any], cfg: Config) -> str | None:
    value = effective_parameters(spec, cfg.tasks.rules).get("instance_type")
    return str(value) if value else None
