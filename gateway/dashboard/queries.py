"""What the dashboard pages read, as plain dicts for the templates: one function per page.

Task listings go through `TaskStore.page` (keyset pages on the indexes the TES API uses), so a
page costs the same with 100 or 100,000 tasks. Costs come from `gateway.market.costs` over the
attempts table, as `GET /api/v1/costs` computes them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from capsule_runtime.protocol.times import rfc3339
from gateway.auth import Principal
from gateway.market.catalog import on_demand_price
from gateway.market.costs import AttemptCost, attempt_cost, summary_of, window_totals
from gateway.store.events import read_events
from gateway.store.schema import ATTEMPT_COST_COLUMNS, attempts, task_tags, tasks
from gateway.tes.states import State

if TYPE_CHECKING:
    from gateway.app import Services

PAGE_SIZE = 50
CHUNK = 500  # ids per IN (...) list
MAX_PAGE_SIZE = 500


class FilterError(ValueError):
    """A filter the user typed that cannot be applied (shown on the page, not a 500)."""


@dataclass(frozen=True)
class TaskFilter:
    state: State | None = None
    name_prefix: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    task_id: str | None = None
    before: int | None = None
    page_size: int = PAGE_SIZE

    @classmethod
    def parse(cls, args: Any) -> TaskFilter:
        """Query-string arguments → a filter. `tag` is `key=value` or `key` (any value)."""
        state = None
        if raw := (args.get("state") or "").strip().upper():
            try:
                state = State(raw)
            except ValueError:
                raise FilterError(f"unknown state {raw!r}") from None
        tags: dict[str, str] = {}
        for raw_tag in args.getlist("tag"):
            if raw_tag.strip():
                key, _, value = raw_tag.strip().partition("=")
                tags[key.strip()] = value.strip()
        try:
            before = int(args["before"]) if args.get("before") else None
            size = int(args.get("page_size") or PAGE_SIZE)
        except ValueError:
            raise FilterError("before and page_size must be integers") from None
        if not 1 <= size <= MAX_PAGE_SIZE:
            raise FilterError(f"page_size must be 1..{MAX_PAGE_SIZE}")
        return cls(
            state=state,
            name_prefix=(args.get("name") or "").strip() or None,
            tags=tags,
            task_id=(args.get("id") or "").strip() or None,
            before=before,
            page_size=size,
        )

    def query_args(self, before: int | None = None) -> dict[str, Any]:
        """The query string for this filter (and another page)."""
        out: dict[str, Any] = {}
        if self.task_id:
            out["id"] = self.task_id
        if self.state is not None:
            out["state"] = self.state.value
        if self.name_prefix:
            out["name"] = self.name_prefix
        if self.tags:
            out["tag"] = [f"{k}={v}" if v else k for k, v in self.tags.items()]
        if self.page_size != PAGE_SIZE:
            out["page_size"] = self.page_size
        if before is not None:
            out["before"] = before
        return out


def _task_row(record: Any) -> dict[str, Any]:
    spec = record.spec or {}
    return {
        "id": record.id,
        "seq": record.seq,
        "state": record.state.value,
        "name": record.name or "",
        "owner": record.owner,
        "created": record.creation_time,
        "tags": spec.get("tags") or {},
    }


def task_page(services: Services, principal: Principal, f: TaskFilter) -> dict[str, Any]:
    """One page of tasks, newest first, and the seq to continue from (None: last page)."""
    owner = principal.owner_filter
    if f.task_id:
        record = services.store.get(f.task_id, owner=owner)
        return {"tasks": [_task_row(record)] if record else [], "next": None}
    page = services.store.page(
        owner=owner,
        name_prefix=f.name_prefix,
        state=f.state,
        tags=f.tags or None,
        limit=f.page_size,
        before_seq=f.before,
        full=True,
    )
    return {"tasks": [_task_row(r) for r in page.records], "next": page.next_seq}


def state_counts(services: Services, principal: Principal) -> dict[str, int]:
    """Tasks by state (one grouped query on the (owner,) state index)."""
    query = select(tasks.c.state, func.count()).group_by(tasks.c.state)
    if principal.owner_filter is not None:
        query = query.where(tasks.c.owner == principal.owner_filter)
    with services.database.engine.connect() as conn:
        found: dict[str, int] = dict(conn.execute(query).all())
    return {s.value: int(found.get(s.value, 0)) for s in State}


# -- one task ----------------------------------------------------------------------------------


def _usage_series(attempt_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The usage samples agents reported (newest attempts' last samples), oldest first."""
    samples = []
    for a in attempt_rows:
        for s in a["data"].get("usage") or []:
            if s.get("time"):
                samples.append({**s, "attempt": a["number"]})
    samples.sort(key=lambda s: s["time"])
    return samples


def task_detail(
    services: Services, principal: Principal, task_id: str, now: datetime
) -> dict[str, Any] | None:
    """Everything the task page shows; None when the task is not there for this user."""
    record = services.store.get(task_id, owner=principal.owner_filter)
    if record is None:
        return None
    fleet = services.fleet
    with services.database.engine.connect() as conn:
        cost_rows = conn.execute(select(*ATTEMPT_COST_COLUMNS).where(attempts.c.task_id == task_id))
        costs = {
            r.id: c
            for r in cost_rows
            if (c := attempt_cost(dict(r._mapping), now, on_demand_price, _time_scale(services)))
        }
    rows = []
    for a in fleet.attempts_of(task_id):
        inst = fleet.instance(a.instance_id) if a.instance_id else None
        row = {
            "id": a.id,
            "number": a.number,
            "phase": a.phase.value,
            "reason": a.reason,
            "start": a.start_time,
            "end": a.end_time,
            "instance_id": a.instance_id,
            "instance_type": inst.instance_type if inst else None,
            "market": inst.market if inst else None,
            "zone": inst.zone if inst else None,
            "price": inst.price_per_hour if inst else None,
            "data": a.data.dump(),
        }
        cost = costs.get(a.id)
        row["cost"] = cost.cost_usd if cost else None
        row["on_demand"] = cost.on_demand_usd if cost else None
        rows.append(row)
    capsules = [
        {
            "id": c.id,
            "sequence": c.sequence,
            "state": c.state,
            "size_bytes": c.size_bytes,
            "created": c.created_time,
            "reason": c.data.get("reason"),
            "attempt_id": c.attempt_id,
        }
        for c in fleet.capsules_of(task_id)
    ]
    spec = record.spec or {}
    return {
        "id": record.id,
        "name": record.name or "",
        "state": record.state.value,
        "terminal": record.state.terminal,
        "owner": record.owner,
        "created": record.creation_time,
        "tags": spec.get("tags") or {},
        "executors": spec.get("executors") or [],
        "resources": spec.get("resources") or {},
        "logs": record.logs or [],
        "attempts": rows,
        "capsules": capsules,
        "events": _with_notices(services, services.store.events(task_id), rows),
        "usage": _usage_series(rows),
        "cost_usd": sum(c.cost_usd for c in costs.values()),
        "on_demand_usd": sum(c.on_demand_usd for c in costs.values()),
    }


INSTANCE_NOTICES = ("interruption", "rebalance")  # instance events a task's page shows too


def _with_notices(
    services: Services, task_events: list[dict[str, Any]], attempt_rows: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The task's events and the interruption notices of the instances it ran on (recorded on
    the instance, not the task), each notice tied to the attempt running there at the time."""
    notices = []
    for instance_id in dict.fromkeys(a["instance_id"] for a in attempt_rows if a["instance_id"]):
        for e in read_events(services.database, instance_id=instance_id):
            if e["kind"] not in INSTANCE_NOTICES or e.get("task_id"):
                continue
            on = [
                a
                for a in attempt_rows
                if a["instance_id"] == instance_id
                and (a["start"] or "") <= e["time"] <= (a["end"] or "9999")
            ]
            notices.append({**e, "attempt_id": on[0]["id"] if on else None})
    if not notices:
        return task_events
    return sorted([*task_events, *notices], key=lambda e: (e["time"], e.get("id", 0)))


def _time_scale(services: Services) -> float:
    return services.market.time_scale if services.market is not None else 1.0


# -- instances ---------------------------------------------------------------------------------


def instance_rows(services: Services, include_ended: bool) -> list[dict[str, Any]]:
    """Instances (live ones unless `include_ended`), newest first, with their tasks and the
    share of their CPU and memory those tasks use now (from the latest usage samples)."""
    from gateway.store.fleet import InstanceState

    fleet = services.fleet
    with services.database.engine.connect() as conn:
        ran: dict[str, int] = dict(
            conn.execute(
                select(attempts.c.instance_id, func.count(attempts.c.task_id.distinct()))
                .where(attempts.c.instance_id.is_not(None))
                .group_by(attempts.c.instance_id)
            ).all()
        )
    states = None if include_ended else {InstanceState.LAUNCHING, InstanceState.READY,
                                          InstanceState.TERMINATING}  # fmt: skip
    out = []
    for inst in sorted(fleet.instances(states), key=lambda i: i.created_time, reverse=True):
        live = fleet.live_attempts(inst.id)
        cap = inst.data.capacity
        cpu = mem = 0.0
        for a in live:
            last = a.data.usage[-1] if a.data.usage else None
            cpu += float((last.cpu_cores if last else None) or 0.0)
            mem += float((last.memory_bytes if last else None) or 0.0)
        cores = float(cap.cpu_cores or 0) if cap else 0.0
        ram = float(cap.ram_gb or 0) if cap else 0.0
        notice = inst.data.interruption.dump() if inst.data.interruption else {}
        out.append(
            {
                "id": inst.id,
                "provider": inst.provider,
                "instance_type": inst.instance_type,
                "market": inst.market,
                "zone": inst.zone,
                "state": inst.state.value,
                "price_per_hour": inst.price_per_hour,
                "created": inst.created_time,
                "last_heartbeat": inst.last_heartbeat,
                "cpu_cores": cores or None,
                "ram_gb": ram or None,
                "cpu_used": round(cpu, 3),
                "cpu_pct": round(100 * cpu / cores, 1) if cores else None,
                "mem_pct": round(100 * mem / (ram * 2**30), 1) if ram else None,
                "task_ids": sorted({a.task_id for a in live}),
                "tasks_run": int(ran.get(inst.id, 0)),
                "notice": notice.get("action"),
                "deadline": notice.get("deadline"),
            }
        )
    return out


# -- costs -------------------------------------------------------------------------------------


def _attempt_rows(
    services: Services, principal: Principal, since: datetime
) -> list[dict[str, Any]]:
    """Attempts on an instance at or after `since`, their start clipped to it. Only the narrow
    attempts table is read (the wide tasks rows only for a user's owner filter)."""
    since_s = rfc3339(since)
    query = (
        select(*ATTEMPT_COST_COLUMNS)
        .where(attempts.c.start_time.is_not(None))
        .where((attempts.c.end_time.is_(None)) | (attempts.c.end_time >= since_s))
    )
    if principal.owner_filter is not None:
        query = query.select_from(attempts.join(tasks, tasks.c.id == attempts.c.task_id)).where(
            tasks.c.owner == principal.owner_filter
        )
    with services.database.engine.connect() as conn:
        result = conn.execute(query)
        keys = list(result.keys())  # once: a Row's own mapping costs more than the query
        rows = [dict(zip(keys, r, strict=True)) for r in result]
    return _clipped(rows, since_s)


def _clipped(rows: list[dict[str, Any]], since_s: str) -> list[dict[str, Any]]:
    """The attempts running at or after `since_s`, each counted from `since_s` at the earliest."""
    out = []
    for row in rows:
        if row["end_time"] is not None and row["end_time"] < since_s:
            continue
        out.append({**row, "start_time": max(row["start_time"], since_s)})
    return out


def _task_names(services: Services, task_ids: Iterable[str]) -> dict[str, str]:
    """Names of these tasks, read by primary key in chunks."""
    names: dict[str, str] = {}
    wanted = list(dict.fromkeys(task_ids))
    with services.database.engine.connect() as conn:
        for i in range(0, len(wanted), CHUNK):
            found = conn.execute(
                select(tasks.c.id, tasks.c.name).where(tasks.c.id.in_(wanted[i : i + CHUNK]))
            ).all()
            names.update({r.id: r.name or "" for r in found})
    return names


def _task_tags(services: Services, task_ids: Iterable[str]) -> dict[str, dict[str, str]]:
    """Tags of these tasks. Only the index on tasks.id is read (id → seq), never the wide task
    rows: the costs page asks for the tags of every task that ran in the window."""
    tags: dict[str, dict[str, str]] = {}
    wanted = list(dict.fromkeys(task_ids))
    with services.database.engine.connect() as conn:
        for i in range(0, len(wanted), CHUNK):
            query = (
                select(tasks.c.id, task_tags.c.key, task_tags.c.value)
                .select_from(tasks.join(task_tags, task_tags.c.task_seq == tasks.c.seq))
                .where(tasks.c.id.in_(wanted[i : i + CHUNK]))
            )
            for task_id, key, value in conn.execute(query):
                tags.setdefault(task_id, {})[key] = value
    return tags


def spend(
    services: Services, principal: Principal, now: datetime, windows: dict[str, int]
) -> dict[str, dict[str, Any]]:
    """Cost, on-demand equivalent and savings of what ran in each window (name → days), from
    one read of the attempts (the totals only: no per-task summaries are built)."""
    widest = _attempt_rows(services, principal, now - timedelta(days=max(windows.values())))
    since = {name: now - timedelta(days=days) for name, days in windows.items()}
    return window_totals(widest, now, since, on_demand_price, _time_scale(services))


def cost_breakdown(
    services: Services, principal: Principal, now: datetime, days: int, top: int = 50
) -> dict[str, Any]:
    """The costs page: totals, by task (the `top` dearest), by tag, by day (an attempt's cost
    goes to the day it started, or the window's first day)."""
    since = now - timedelta(days=days)
    rows = _attempt_rows(services, principal, since)
    scale = _time_scale(services)
    priced = [
        (row, c)
        for row in rows
        if (c := attempt_cost(row, now, on_demand_price, scale)) is not None
    ]  # each attempt priced once, for the totals and the breakdowns
    summary = summary_of(c for _, c in priced)
    by_task = sorted(summary["tasks"], key=lambda t: t["cost_usd"], reverse=True)
    tags = _task_tags(services, (c.task_id for _, c in priced))
    names = _task_names(services, (t["task_id"] for t in by_task[:top]))
    for t in by_task[:top]:
        t["name"] = names.get(t["task_id"], "")
    by_tag: dict[str, dict[str, float]] = {}
    by_day: dict[str, dict[str, float]] = {}
    for row, c in priced:
        keys = [f"{k}={v}" for k, v in sorted(tags.get(c.task_id, {}).items())] or ["(no tag)"]
        for key in keys:
            _add(by_tag, key, c)
        _add(by_day, row["start_time"][:10], c)
    start_day = since.date()
    days_list = [(start_day + timedelta(days=i)).isoformat() for i in range(days + 1)]
    return {
        "days": days,
        "total": summary["total"],
        "by_task": by_task[:top],
        "tasks_listed": min(top, len(by_task)),
        "tasks_total": len(by_task),
        "by_tag": sorted(
            ({"tag": k, **v} for k, v in by_tag.items()), key=lambda r: -r["cost_usd"]
        ),
        "by_day": [
            {"day": d, **by_day.get(d, {"cost_usd": 0.0, "on_demand_usd": 0.0})} for d in days_list
        ],
    }


def _add(into: dict[str, dict[str, float]], key: str, c: AttemptCost) -> None:
    entry = into.setdefault(key, {"cost_usd": 0.0, "on_demand_usd": 0.0})
    entry["cost_usd"] += c.cost_usd
    entry["on_demand_usd"] += c.on_demand_usd
