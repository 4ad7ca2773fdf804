"""Cost accounting per attempt and task: price x time, what on-demand would have cost, savings.

An attempt costs `price_per_hour x hours` from its start to its end (an attempt still running:
to `now`). Its on-demand equivalent is the on-demand price of the same type for the same time;
for an on-demand attempt the two are equal. A type with no known on-demand price (the `local`
instance) counts its own cost as its on-demand equivalent, so it shows no savings.
With a simulated market running `time_scale` times faster than the clock, an attempt's hours are
simulated hours (its wall-clock time x time_scale), as its price is per simulated hour.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from gateway.market.catalog import on_demand_price as catalog_on_demand
from gateway.tes.states import MarketType

ON_DEMAND = MarketType.ON_DEMAND


@dataclass(frozen=True)
class AttemptCost:
    task_id: str
    attempt_id: str
    market: str | None
    instance_type: str | None
    zone: str | None
    price_per_hour: float
    hours: float
    cost_usd: float
    on_demand_usd: float

    @property
    def savings_usd(self) -> float:
        return self.on_demand_usd - self.cost_usd


def _time(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def attempt_cost(
    row: Mapping[str, Any],
    now: datetime,
    on_demand: Callable[[str], float | None] = catalog_on_demand,
    time_scale: float = 1.0,
) -> AttemptCost | None:
    """One attempts-table row (task_id, id, market, instance_type, zone, price_per_hour,
    instance_id, start_time, end_time) → its cost; None for an attempt not (yet) on an
    instance."""
    start = _time(row.get("start_time"))
    if start is None or ("instance_id" in row and row["instance_id"] is None):
        return None  # never started, or a restore still waiting for an instance
    end = _time(row.get("end_time")) or now
    hours = max(0.0, (end - start).total_seconds()) * time_scale / 3600.0
    price = float(row.get("price_per_hour") or 0.0)
    cost = price * hours
    itype = row.get("instance_type")
    od_price = on_demand(itype) if itype else None
    own = row.get("market") == ON_DEMAND or od_price is None
    od = cost if own or od_price is None else od_price * hours
    return AttemptCost(
        task_id=str(row.get("task_id", "")),
        attempt_id=str(row.get("id", row.get("attempt_id", ""))),
        market=row.get("market"),
        instance_type=itype,
        zone=row.get("zone"),
        price_per_hour=price,
        hours=hours,
        cost_usd=cost,
        on_demand_usd=od,
    )


def _totals(costs: Iterable[AttemptCost]) -> dict[str, float]:
    cost = od = hours = 0.0
    for c in costs:
        cost += c.cost_usd
        od += c.on_demand_usd
        hours += c.hours
    return _sums(cost, od, hours)


def _sums(cost: float, od: float, hours: float) -> dict[str, float]:
    return {
        "cost_usd": round(cost, 6),
        "on_demand_usd": round(od, 6),
        "savings_usd": round(od - cost, 6),
        "savings_pct": round(100.0 * (od - cost) / od, 2) if od > 0 else 0.0,
        "instance_hours": round(hours, 6),
    }


def costs_summary(
    rows: Iterable[Mapping[str, Any]],
    now: datetime,
    on_demand: Callable[[str], float | None] = catalog_on_demand,
    attempts: bool = False,
    time_scale: float = 1.0,
) -> dict[str, Any]:
    """Attempt rows → {"tasks": [{task_id, attempts, cost_usd, on_demand_usd, savings_usd,
    savings_pct, instance_hours[, attempt_costs]}], "total": {...}, "currency": "USD"}; tasks in
    the order their first attempt appears."""
    priced = (attempt_cost(row, now, on_demand, time_scale) for row in rows)
    return summary_of((c for c in priced if c is not None), attempts=attempts)


def summary_of(costs: Iterable[AttemptCost], attempts: bool = False) -> dict[str, Any]:
    """`costs_summary` of attempts priced already (a caller that needs each attempt's cost
    too prices it once)."""
    per_task: dict[str, list[AttemptCost]] = {}
    for c in costs:
        per_task.setdefault(c.task_id, []).append(c)
    tasks = []
    for task_id, costs in per_task.items():
        entry: dict[str, Any] = {"task_id": task_id, "attempts": len(costs), **_totals(costs)}
        if attempts:
            entry["attempt_costs"] = [
                {**asdict(c), "savings_usd": round(c.savings_usd, 6)} for c in costs
            ]
        tasks.append(entry)
    every = [c for costs in per_task.values() for c in costs]
    return {"currency": "USD", "tasks": tasks, "total": {"tasks": len(tasks), **_totals(every)}}


def window_totals(
    rows: Iterable[Mapping[str, Any]],
    now: datetime,
    since: Mapping[str, datetime],
    on_demand: Callable[[str], float | None] = catalog_on_demand,
    time_scale: float = 1.0,
) -> dict[str, dict[str, float]]:
    """For each window (name → its first moment), the `total` that `costs_summary` gives for the
    attempts running in it, each counted from the window's start at the earliest. Each row's
    times are parsed once and nothing is kept per task but its id: the system page prices the
    week and the month of 100,000 tasks' attempts with this."""
    prices: dict[str, float | None] = {}
    parsed = []
    for row in rows:
        start = _time(row.get("start_time"))
        if start is None or ("instance_id" in row and row["instance_id"] is None):
            continue  # as attempt_cost: never started, or a restore waiting for an instance
        itype = row.get("instance_type")
        if itype and itype not in prices:
            prices[itype] = on_demand(itype)
        od_price = prices.get(itype) if itype else None
        own = row.get("market") == ON_DEMAND or od_price is None
        price = float(row.get("price_per_hour") or 0.0)
        end = _time(row.get("end_time"))
        parsed.append((row.get("task_id"), start, end, price, None if own else od_price))
    out = {}
    for name, first in since.items():
        cost = od = hours = 0.0
        tasks = set()
        for task_id, start, end, price, od_price in parsed:
            if end is not None and end < first:
                continue
            h = max(0.0, ((end or now) - max(start, first)).total_seconds()) * time_scale / 3600
            cost += price * h
            od += price * h if od_price is None else od_price * h
            hours += h
            tasks.add(task_id)
        out[name] = {"tasks": len(tasks), **_sums(cost, od, hours)}
    return out
