"""Prometheus metrics derived from the event log and the attempts table: queue latency,
checkpoint and restore durations, outcomes and bytes, migrations and restarts by reason,
interruption notices, and spend.

They are read from the store, not counted in the process that handled the report, so they
survive a gateway restart and agree with the status API, the dashboard and the task telemetry.
Each scrape reads only what is new: events are folded once below a watermark on their primary
key and kept; the newest `SETTLE_EVENTS` ids are folded afresh on every scrape and never kept,
because on PostgreSQL an event with a smaller id can commit after a larger one was seen (the
scheme of `gateway.status.OutcomeTally`). Spend does the same on `attempts.end_time`: attempts
that ended more than `SETTLE_SECONDS` ago are priced once; running ones are priced to now.
"""

from __future__ import annotations

import json
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Connection, Engine, func, select

from capsule_runtime.protocol.times import utcnow
from gateway.market.catalog import on_demand_price
from gateway.market.costs import attempt_cost
from gateway.store.schema import ATTEMPT_COST_COLUMNS, attempts, events, instances, tasks

SETTLE_EVENTS = 1000
SETTLE_SECONDS = 600.0

QUEUE_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
STEP_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

# Event kinds folded here (written by gateway.dispatch, gateway.store.fleet, gateway.migration)
STATE, ATTEMPT, INTERRUPTION = "state", "attempt", "interruption"
CHECKPOINT_KINDS = {"capsule": "ok", "checkpoint_failed": "failed"}
RESTORE_KINDS = {
    "restored": "ok",
    "restart_from_scratch": "none_usable",
    "capsule_corrupt": "corrupt",
}
KINDS = (STATE, ATTEMPT, INTERRUPTION, *CHECKPOINT_KINDS, *RESTORE_KINDS)
QUEUE_UNTIL = ("INITIALIZING", "RUNNING")  # queue latency: creation → placed, → running

Labels = tuple[str, ...]


@dataclass
class Histogram:
    buckets: Sequence[float]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = self.counts or [0] * (len(self.buckets) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.total += value

    def merged(self, other: Histogram | None) -> Histogram:
        if other is None:
            return Histogram(self.buckets, list(self.counts), self.total)
        counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        return Histogram(self.buckets, counts, self.total + other.total)

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip([*map(str, self.buckets), "+Inf"], self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


@dataclass
class Fold:
    """Counters and histograms of some events; two folds add up."""

    counters: dict[tuple[str, Labels], float] = field(default_factory=dict)
    histograms: dict[tuple[str, Labels], Histogram] = field(default_factory=dict)

    def count(self, name: str, labels: Labels, by: float = 1.0) -> None:
        self.counters[(name, labels)] = self.counters.get((name, labels), 0.0) + by

    def observe(self, name: str, labels: Labels, value: float, buckets: Sequence[float]) -> None:
        self.histograms.setdefault((name, labels), Histogram(buckets)).observe(value)

    def plus(self, other: Fold) -> Fold:
        out = Fold(dict(self.counters), {k: h.merged(None) for k, h in self.histograms.items()})
        for key, value in other.counters.items():
            out.counters[key] = out.counters.get(key, 0.0) + value
        for key, hist in other.histograms.items():
            out.histograms[key] = hist.merged(out.histograms.get(key))
        return out


def _seconds(data: dict[str, Any], step: str) -> float | None:
    try:
        value = (data.get("seconds") or {}).get(step)
        return float(value) if value is not None else None
    except (TypeError, ValueError, AttributeError):
        return None


def _since(later: str, earlier: str | None) -> float | None:
    if not earlier:
        return None
    try:
        delta = datetime.fromisoformat(later) - datetime.fromisoformat(earlier)
    except ValueError:
        return None
    return max(0.0, delta.total_seconds())


def fold_event(out: Fold, row: Any) -> None:
    """One event row (with the task's creation time, the attempt's reason and the instance's
    type and zone joined in) into the counters and histograms it moves."""
    data: dict[str, Any] = json.loads(row.data) if row.data else {}
    kind = row.kind
    if kind == STATE:
        wait = _since(row.time, row.creation_time) if row.to_state in QUEUE_UNTIL else None
        if wait is not None:
            out.observe("queue_latency_seconds", (row.to_state,), wait, QUEUE_BUCKETS)
    elif kind == ATTEMPT:
        reason = row.reason or "unknown"
        if data.get("restore"):
            out.count("migrations", (reason,))
        elif reason != "first":
            out.count("restarts", (reason,))
    elif kind == INTERRUPTION:
        out.count("interruption_notices", (row.instance_type or "", row.zone or ""))
    elif kind in CHECKPOINT_KINDS:
        outcome = CHECKPOINT_KINDS[kind]
        out.count("checkpoints", (outcome, str(data.get("reason") or "")))
        if (total := _seconds(data, "total")) is not None:
            out.observe("checkpoint_seconds", (outcome,), total, STEP_BUCKETS)
        frozen = _seconds(data, "criu_frozen")
        frozen = frozen if frozen is not None else _seconds(data, "files_frozen")
        if frozen is not None:
            out.observe("checkpoint_frozen_seconds", (), frozen, STEP_BUCKETS)
        if outcome == "ok":
            out.count("checkpoint_bytes", ("size",), float(data.get("size_bytes") or 0))
            out.count("checkpoint_bytes", ("uploaded",), float(data.get("uploaded_bytes") or 0))
    elif kind in RESTORE_KINDS:
        outcome = RESTORE_KINDS[kind]
        out.count("restores", (outcome,))
        if outcome == "ok":
            if (total := _seconds(data, "total")) is not None:
                out.observe("restore_seconds", (), total, STEP_BUCKETS)
            out.count("restore_bytes", (), float(data.get("stored_bytes") or 0))


_EVENT_ROWS = (
    select(
        events.c.id,
        events.c.kind,
        events.c.time,
        events.c.to_state,
        events.c.data,
        tasks.c.creation_time,
        attempts.c.reason,
        instances.c.instance_type,
        instances.c.zone,
    )
    .select_from(events)
    .outerjoin(tasks, tasks.c.id == events.c.task_id)
    .outerjoin(attempts, attempts.c.id == events.c.attempt_id)
    .outerjoin(instances, instances.c.id == events.c.instance_id)
    .where(events.c.kind.in_(KINDS))
)


class EventTally:
    """The fold of every event so far, read incrementally (see the module's docstring)."""

    def __init__(self) -> None:
        self.watermark = 0
        self.kept = Fold()
        self.lock = threading.Lock()

    def _fold(self, conn: Connection, above: int, upto: int | None) -> Fold:
        query = _EVENT_ROWS.where(events.c.id > above)
        if upto is not None:
            query = query.where(events.c.id <= upto)
        out = Fold()
        for row in conn.execute(query):
            fold_event(out, row)
        return out

    def read(self, conn: Connection) -> Fold:
        with self.lock:
            top = conn.execute(select(func.max(events.c.id))).scalar() or 0
            settled = max(0, top - SETTLE_EVENTS)
            if settled > self.watermark:
                self.kept = self.kept.plus(self._fold(conn, self.watermark, settled))
                self.watermark = settled
            return self.kept.plus(self._fold(conn, self.watermark, None))


class SpendTally:
    """What attempts cost, and would have on-demand, by market: ended attempts priced once,
    running ones to now. Emitted values never go down (a running attempt priced to now may end
    a moment earlier than the scrape that priced it)."""

    def __init__(self, time_scale: Callable[[], float]):
        self.time_scale = time_scale
        self.settled_until: str | None = None  # every attempt ended at or before this is kept
        self.kept: dict[tuple[str, str], float] = {}
        self.emitted: dict[tuple[str, str], float] = {}
        self.lock = threading.Lock()

    def _price(
        self, conn: Connection, query: Any, now: datetime, into: dict[tuple[str, str], float]
    ) -> None:
        scale = self.time_scale()
        for row in conn.execute(query):
            cost = attempt_cost(dict(row._mapping), now, on_demand_price, scale)
            if cost is None:
                continue
            market = cost.market or ""
            into[("spend", market)] = into.get(("spend", market), 0.0) + cost.cost_usd
            key = ("on_demand", market)
            into[key] = into.get(key, 0.0) + cost.on_demand_usd

    def read(self, conn: Connection, now: datetime) -> dict[tuple[str, str], float]:
        base = select(*ATTEMPT_COST_COLUMNS)
        ended = attempts.c.end_time
        with self.lock:
            settle = (now - timedelta(seconds=SETTLE_SECONDS)).isoformat()
            if self.settled_until is None or settle > self.settled_until:
                query = base.where(ended.is_not(None), ended <= settle)
                if self.settled_until is not None:
                    query = query.where(ended > self.settled_until)
                self._price(conn, query, now, self.kept)
                self.settled_until = settle
            fresh = dict(self.kept)
            self._price(conn, base.where(ended > self.settled_until), now, fresh)
            self._price(conn, base.where(ended.is_(None)), now, fresh)
            for key, value in fresh.items():
                self.emitted[key] = max(value, self.emitted.get(key, 0.0))
            return dict(self.emitted)


HELP = {
    "queue_latency_seconds": "Seconds from a task's creation to INITIALIZING (placed) and RUNNING",
    "checkpoint_seconds": "Checkpoint durations (freeze, dump, upload) by outcome",
    "checkpoint_frozen_seconds": "Seconds a task stood frozen for a checkpoint",
    "restore_seconds": "Restore durations (download, restore) of restores that worked",
    "checkpoints": "Checkpoints by outcome (ok, failed) and reason (periodic, reclaim, ...)",
    "checkpoint_bytes": "Capsule bytes checkpointed: size (uncompressed), uploaded (new, stored)",
    "restores": "Restores by outcome (ok, none_usable: started afresh, corrupt capsule)",
    "restore_bytes": "Stored capsule bytes restored",
    "migrations": "Attempts that restore a capsule on another instance, by reason",
    "restarts": "Attempts after the first that start from the beginning, by reason",
    "interruption_notices": "Spot interruption notices received, by instance type and zone",
}
LABELS = {
    "queue_latency_seconds": ["until"],
    "checkpoint_seconds": ["outcome"],
    "checkpoint_frozen_seconds": [],
    "restore_seconds": [],
    "checkpoints": ["outcome", "reason"],
    "checkpoint_bytes": ["kind"],
    "restores": ["outcome"],
    "restore_bytes": [],
    "migrations": ["reason"],
    "restarts": ["reason"],
    "interruption_notices": ["instance_type", "zone"],
}
HISTOGRAMS = (
    "queue_latency_seconds",
    "checkpoint_seconds",
    "checkpoint_frozen_seconds",
    "restore_seconds",
)


class EventCollector(Collector):
    """The metrics of this module, read on each scrape (two short reads of the store)."""

    def __init__(self, engine: Engine, time_scale: Callable[[], float]):
        self.engine = engine
        self.events = EventTally()
        self.spend = SpendTally(time_scale)

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        now = utcnow()
        with self.engine.connect() as conn:
            fold = self.events.read(conn)
            spend = self.spend.read(conn, now)
        for name in HISTOGRAMS:
            family = HistogramMetricFamily(f"tescape_{name}", HELP[name], labels=LABELS[name])
            for (hname, labels), hist in sorted(fold.histograms.items()):
                if hname == name:
                    family.add_metric(list(labels), hist.cumulative(), hist.total)
            yield family
        for name, help_text in HELP.items():
            if name in HISTOGRAMS:
                continue
            counter = CounterMetricFamily(f"tescape_{name}", help_text, labels=LABELS[name])
            for (cname, labels), value in sorted(fold.counters.items()):
                if cname == name:
                    counter.add_metric(list(labels), value)
            yield counter
        for kind, help_text in (
            ("spend", "USD spent on instances by the tasks' attempts, by market"),
            ("on_demand", "USD the same attempts would have cost on-demand, by market"),
        ):
            name = "tescape_spend_usd" if kind == "spend" else "tescape_on_demand_equivalent_usd"
            counter = CounterMetricFamily(name, help_text, labels=["market"])
            for (k, market), value in sorted(spend.items()):
                if k == kind:
                    counter.add_metric([market], value)
            yield counter
