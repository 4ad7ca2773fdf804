"""Telemetry in the task itself: what moving a task cost it, as TaskLog.metadata keys.

Workflow engines keep a task's TES document (Nextflow's trace, Cromwell's metadata, Snakemake's
logs) and nothing else of the server, so the numbers a user asks about — how often it was
interrupted, how long it stood frozen, what it cost against on-demand — go into that document.
TES metadata is a string map: every value is a string (counts as integers, seconds with three
decimals, USD with six, like `vm_price_per_hour_usd`). The keys are documented in
docs/telemetry.md.

Tasks that end without a last report of their agent (cancelled while queued, lost with their
instance, never placed, given up on by a deadline) get the same keys when the gateway ends them
(`on_task_end`, called by the task store in the transaction that ends the task).

Everything is derived from the store in two indexed queries: the task's attempts (interruptions,
instance types and markets, cost: gateway.market.costs) and its capsule events (`capsule`,
`checkpoint_failed`, `restored`: sizes and step durations as the agent reported them).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, select

from capsule_runtime.protocol.times import utcnow
from gateway.config import Config
from gateway.market.catalog import on_demand_price
from gateway.market.costs import attempt_cost
from gateway.store.schema import ATTEMPT_COST_COLUMNS, attempts, events

# Attempt reasons that follow the loss of the instance under a task (a Spot reclaim, with or
# without a notice), the same set `scheduler.max_interruptions` counts.
INTERRUPTIONS = ("reclaim", "lost")
EVENT_KINDS = ("capsule", "checkpoint_failed", "restored", "notice_budget")
TELEMETRY_KEY = "spot_interruptions"  # present in a TaskLog's metadata: telemetry added

_ATTEMPTS = select(
    *ATTEMPT_COST_COLUMNS,
    attempts.c.number,
    attempts.c.reason,
).order_by(attempts.c.number)
_EVENTS = (
    select(events.c.kind, events.c.data).where(events.c.kind.in_(EVENT_KINDS)).order_by(events.c.id)
)


def time_scale(cfg: Config) -> float:
    """Simulated hours per real hour of the local market (prices are per simulated hour)."""
    market = cfg.providers.local.market
    return market.time_scale if market.enabled else 1.0


def task_telemetry(
    conn: Connection,
    task_id: str,
    *,
    now: datetime | None = None,
    scale: float = 1.0,
    on_demand: Callable[[str], float | None] = on_demand_price,
) -> dict[str, str]:
    """The telemetry keys of one task, read in `conn` (the caller's transaction sees what it
    has written: the attempt it just ended)."""
    rows = [dict(r._mapping) for r in conn.execute(_ATTEMPTS.where(attempts.c.task_id == task_id))]
    found = conn.execute(_EVENTS.where(events.c.task_id == task_id))
    steps = [(r.kind, json.loads(r.data) if r.data else {}) for r in found]
    return summarize(rows, steps, now or utcnow(), scale=scale, on_demand=on_demand)


def summarize(
    attempt_rows: Iterable[Mapping[str, Any]],
    capsule_events: Iterable[tuple[str, Mapping[str, Any]]],
    now: datetime,
    *,
    scale: float = 1.0,
    on_demand: Callable[[str], float | None] = on_demand_price,
) -> dict[str, str]:
    """Attempt rows (in order) and (kind, data) of capsule events (in order) → the keys."""
    rows = list(attempt_rows)
    placed = [r for r in rows if r.get("instance_id") is not None and r.get("instance_type")]
    costs = [c for r in rows if (c := attempt_cost(r, now, on_demand, scale)) is not None]
    checkpoints = failed = restores = 0
    uploaded = stored = size = 0
    frozen = checkpointing = restoring = 0.0
    notice: dict[str, str] = {}  # the newest notice's prediction and measured time, if any
    for kind, data in capsule_events:
        if kind == "notice_budget":
            notice = {
                "notice_predicted_seconds": _seconds(data.get("predicted_s")),
                "notice_measured_seconds": _seconds(data.get("measured_s")),
            }
            continue
        seconds = data.get("seconds") or {}
        total = _float(seconds.get("total"))
        if kind == "restored":
            restores += 1
            restoring += total
            continue
        checkpointing += total
        frozen += _float(seconds.get("criu_frozen", seconds.get("files_frozen")))
        if kind == "capsule":
            checkpoints += 1
            uploaded += int(data.get("uploaded_bytes") or 0)
            stored = int(data.get("stored_bytes") or 0)  # the newest capsule's
            size = int(data.get("size_bytes") or 0)
        else:
            failed += 1
    return {
        "spot_interruptions": str(sum(1 for r in rows if r.get("reason") in INTERRUPTIONS)),
        "checkpoints": str(checkpoints),
        "checkpoints_failed": str(failed),
        "restores": str(restores),
        "capsule_size_bytes": str(size),
        "capsule_stored_bytes": str(stored),
        "capsule_uploaded_bytes": str(uploaded),
        "frozen_seconds": f"{frozen:.3f}",
        "checkpoint_seconds": f"{checkpointing:.3f}",
        "restore_seconds": f"{restoring:.3f}",
        "instance_types": ",".join(str(r["instance_type"]) for r in placed),
        "markets": ",".join(str(r.get("market") or "") for r in placed),
        "cost_usd": f"{sum(c.cost_usd for c in costs):.6f}",
        "on_demand_usd": f"{sum(c.on_demand_usd for c in costs):.6f}",
        **notice,
    }


def live_logs(
    engine: Engine, cfg: Config, task_id: str, logs: list[dict[str, Any]] | None
) -> list[dict[str, Any]] | None:
    """The TaskLogs of a task that is still running, with its telemetry so far (GetTask FULL:
    the stored copy has it only from the task's end). Two reads; nothing is written."""
    if not logs:
        return logs
    with engine.connect() as conn:
        return with_telemetry(logs, task_telemetry(conn, task_id, scale=time_scale(cfg)))


def on_task_end(
    cfg: Config,
) -> Callable[[Connection, str, list[dict[str, Any]]], list[dict[str, Any]]]:
    """The task store's `on_end` hook: the telemetry merged into the TaskLogs of a task reaching
    a terminal state, unless its agent's last report brought it already (gateway.dispatch)."""
    scale = time_scale(cfg)

    def add(conn: Connection, task_id: str, logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not logs or TELEMETRY_KEY in (logs[-1].get("metadata") or {}):
            return logs
        return with_telemetry(logs, task_telemetry(conn, task_id, scale=scale)) or logs

    return add


def with_telemetry(
    logs: list[dict[str, Any]] | None, telemetry: Mapping[str, str]
) -> list[dict[str, Any]] | None:
    """`logs` with the telemetry merged into the newest TaskLog's metadata (a new list; the
    TaskLogs given are not changed). None or no TaskLog: as given."""
    if not logs:
        return logs
    newest = logs[-1]
    metadata = {**(newest.get("metadata") or {}), **telemetry}
    return [*logs[:-1], {**newest, "metadata": metadata}]


def _float(value: Any) -> float:
    try:
        return float(value) if value is not None else 0.0
    except (TypeError, ValueError):
        return 0.0


def _seconds(value: Any) -> str:
    """Seconds as metadata writes them; "" for none (a notice without a prediction)."""
    return f"{_float(value):.3f}" if value is not None else ""
