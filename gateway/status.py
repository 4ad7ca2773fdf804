"""The gateway's own health and a summary of its work: what `GET /api/v1/status`, `/readyz`,
`tescape status` and the dashboard's system page show.

Every check is a real round trip (a `SELECT 1` to the database, a probe object written to and
read back from the capsule store), so a monitor sees a stopped database or an unusable capsule
store, not a cached belief. A failing check is reported, never raised: the status of a sick
gateway is exactly what a monitor asks for. Counts are aggregates only (no task ids): grouped
queries over indexed columns, and checkpoint/restore outcomes counted incrementally from the
events table (`OutcomeTally`), so they stay cheap with 100,000 tasks.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, func, select, text

from capsule_runtime.protocol.times import utcnow
from gateway import __version__
from gateway.store.fleet import LIVE_PHASES
from gateway.store.schema import attempts, events, instances, tasks
from gateway.tes.states import State

if TYPE_CHECKING:
    from gateway.app import Services

PROBE_PREFIX = "_tescape_probe/"  # capsule keys of the store probe (never a task id)
# Event kinds that count a checkpoint or a restore (written by gateway.dispatch)
CHECKPOINT_OK, CHECKPOINT_FAILED = "capsule", "checkpoint_failed"
RESTORE_OK = "restored"
RESTORE_FAILED = ("restart_from_scratch", "capsule_corrupt")
_C_R_KINDS = (CHECKPOINT_OK, CHECKPOINT_FAILED, RESTORE_OK, *RESTORE_FAILED)


@dataclass(frozen=True)
class Check:
    """One dependency's health: ok, how long the check took, and why not when not ok."""

    ok: bool
    seconds: float
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.ok else "fail",
            "seconds": round(self.seconds, 4),
            "detail": self.detail,
        }


def _timed(probe: Callable[[], str]) -> Check:
    started = time.perf_counter()
    try:
        detail = probe()
    except Exception as exc:  # any failure is the finding
        return Check(False, time.perf_counter() - started, f"{type(exc).__name__}: {exc}")
    return Check(True, time.perf_counter() - started, detail)


def check_database(services: Services) -> Check:
    """`SELECT 1` on a fresh checkout: fails when the server is stopped or the file is gone."""

    def probe() -> str:
        with services.database.engine.connect() as conn:
            conn.execute(text("SELECT 1")).scalar_one()
        return services.database.dialect

    return _timed(probe)


def check_capsule_store(services: Services) -> Check:
    """Write, read back and delete a small probe object: the store must take a capsule now."""
    from capsule_runtime.capsules.store import open_store

    url = services.config.capsule_store
    s3 = services.config.storage.s3.model_dump(exclude_none=True) if url.startswith("s3") else {}

    def probe() -> str:
        store = open_store({"url": url, "s3": s3})
        key = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
        payload = b"tescape readiness probe"
        try:
            store.put(key, payload)
            if store.get(key) != payload:
                raise RuntimeError("the probe object read back differs from what was written")
        finally:
            with contextlib.suppress(Exception):  # the put failed too: report that error
                store.delete_prefix(key)
        return store.describe()

    return _timed(probe)


class OutcomeTally:
    """Checkpoint and restore outcomes counted from the events table without scanning it all
    on every call (it has no index on `kind`, and grows by several rows per task).

    Events below a watermark are counted once and kept; each call counts only the rows since
    (a primary-key range). The last `SETTLE` ids are counted afresh every time, never kept: on
    PostgreSQL an event with a smaller id can commit after a larger one was already seen."""

    SETTLE = 1000

    def __init__(self) -> None:
        self.watermark = 0  # every event with id <= this is in `kept`
        self.kept: dict[str, int] = {}
        self.lock = threading.Lock()

    def _count(self, conn: Connection, above: int, upto: int | None) -> dict[str, int]:
        query = (
            select(events.c.kind, func.count())
            .where(events.c.id > above, events.c.kind.in_(_C_R_KINDS))
            .group_by(events.c.kind)
        )
        if upto is not None:
            query = query.where(events.c.id <= upto)
        return {kind: int(n) for kind, n in conn.execute(query).all()}

    def counts(self, conn: Connection) -> dict[str, int]:
        with self.lock:
            top = conn.execute(select(func.max(events.c.id))).scalar() or 0
            settled = max(0, top - self.SETTLE)
            if settled > self.watermark:
                for kind, n in self._count(conn, self.watermark, settled).items():
                    self.kept[kind] = self.kept.get(kind, 0) + n
                self.watermark = settled
            out = dict(self.kept)
            for kind, n in self._count(conn, self.watermark, None).items():
                out[kind] = out.get(kind, 0) + n
            return out


_TALLIES: weakref.WeakKeyDictionary[Engine, OutcomeTally] = weakref.WeakKeyDictionary()
_TALLIES_LOCK = threading.Lock()


def _tally(engine: Engine) -> OutcomeTally:
    with _TALLIES_LOCK:
        return _TALLIES.setdefault(engine, OutcomeTally())


def _provider(services: Services) -> dict[str, Any]:
    scheduler = services.scheduler
    if scheduler is None:
        return {"name": None, "status": "disabled", "detail": "the scheduler is off"}
    thread = scheduler._thread  # the scheduler loop: a dead thread places no task
    alive = thread is not None and thread.is_alive()
    return {
        "name": getattr(scheduler.provider, "name", type(scheduler.provider).__name__),
        "status": "ok" if alive else "fail",
        "detail": "scheduler running" if alive else "the scheduler loop has stopped",
        "market": "simulated" if services.market is not None else None,
    }


LATENCY_SAMPLES = 200  # placements the queue latency is taken over (the newest)
LATENCY_WINDOW = 20_000  # events looked back through for them, at most


def queue_latency(conn: Connection) -> dict[str, Any]:
    """Seconds from a task's creation to its placement (QUEUED → INITIALIZING), over the
    newest placements: median, 95th percentile and how many. Looks back through a bounded
    window of events (newest first, by primary key), so it costs the same on any store."""
    top = conn.execute(select(func.max(events.c.id))).scalar() or 0
    rows = conn.execute(
        select(events.c.time, tasks.c.creation_time)
        .join(tasks, tasks.c.id == events.c.task_id)
        .where(
            events.c.id > top - LATENCY_WINDOW,
            events.c.kind == "state",
            events.c.to_state == State.INITIALIZING.value,
        )
        .order_by(events.c.id.desc())
        .limit(LATENCY_SAMPLES)
    ).all()
    waits = sorted(
        max(0.0, (datetime.fromisoformat(t) - datetime.fromisoformat(c)).total_seconds())
        for t, c in rows
    )
    if not waits:
        return {"p50_seconds": None, "p95_seconds": None, "placements": 0}
    return {
        "p50_seconds": round(waits[len(waits) // 2], 3),
        "p95_seconds": round(waits[min(len(waits) - 1, int(len(waits) * 0.95))], 3),
        "placements": len(waits),
    }


def _rate(ok: int, failed: int) -> float | None:
    return round(ok / (ok + failed), 4) if ok + failed else None


def _counts(services: Services, now: datetime) -> dict[str, Any]:
    """Tasks by state, queue depth and age, instances by state and market, live attempts,
    checkpoint and restore outcomes."""
    with services.database.engine.connect() as conn:
        by_state: dict[str, int] = dict(
            conn.execute(select(tasks.c.state, func.count()).group_by(tasks.c.state)).all()
        )
        oldest_queued = conn.execute(
            select(tasks.c.creation_time)
            .where(tasks.c.state == State.QUEUED.value)
            .order_by(tasks.c.seq)
            .limit(1)
        ).scalar()
        inst_rows = conn.execute(
            select(instances.c.state, instances.c.market, func.count()).group_by(
                instances.c.state, instances.c.market
            )
        ).all()
        live = conn.execute(
            select(func.count()).where(attempts.c.phase.in_([p.value for p in LIVE_PHASES]))
        ).scalar_one()
        kinds = _tally(services.database.engine).counts(conn)
        latency = queue_latency(conn)
    instances_by: dict[str, dict[str, int]] = {}
    for state, market, count in inst_rows:
        instances_by.setdefault(state, {})[market] = count
    queued_age = None
    if oldest_queued:
        queued_age = round((now - datetime.fromisoformat(oldest_queued)).total_seconds(), 3)
    ckpt_ok, ckpt_failed = kinds.get(CHECKPOINT_OK, 0), kinds.get(CHECKPOINT_FAILED, 0)
    rest_ok = kinds.get(RESTORE_OK, 0)
    rest_failed = sum(kinds.get(k, 0) for k in RESTORE_FAILED)
    return {
        "tasks": {
            "by_state": {s.value: by_state.get(s.value, 0) for s in State},
            "total": sum(by_state.values()),
        },
        "queue": {
            "depth": by_state.get(State.QUEUED.value, 0),
            "oldest_seconds": queued_age,
            "latency": latency,
        },
        "instances": {
            "by_state": instances_by,
            "total": sum(c for _, _, c in inst_rows),
            "live_attempts": live,
        },
        "checkpoints": {
            "succeeded": ckpt_ok,
            "failed": ckpt_failed,
            "success_rate": _rate(ckpt_ok, ckpt_failed),
        },
        "restores": {
            "succeeded": rest_ok,
            "failed": rest_failed,
            "success_rate": _rate(rest_ok, rest_failed),
        },
    }


def ready(services: Services) -> tuple[bool, dict[str, Check]]:
    """Readiness: the database and the capsule store both answer."""
    checks = {"database": check_database(services), "capsule_store": check_capsule_store(services)}
    return all(c.ok for c in checks.values()), checks


def status(services: Services, now: datetime | None = None) -> dict[str, Any]:
    """The whole status document (`GET /api/v1/status`). `status` is "ok" when every check
    passes, "degraded" when only the provider fails, "fail" when the database or the capsule
    store does (the gateway cannot take or run tasks)."""
    now = now or utcnow()
    is_ready, checks = ready(services)
    provider = _provider(services)
    overall = "ok" if is_ready else "fail"
    if is_ready and provider["status"] == "fail":
        overall = "degraded"
    doc: dict[str, Any] = {
        "status": overall,
        "version": __version__,
        "time": now.isoformat(timespec="seconds"),
        "provider": provider,
        "database": checks["database"].as_dict(),
        "capsule_store": checks["capsule_store"].as_dict(),
    }
    if checks["database"].ok:
        try:
            doc.update(_counts(services, now))
        except Exception as exc:  # the database failed between the check and the counts
            doc["database"] = Check(False, 0.0, f"{type(exc).__name__}: {exc}").as_dict()
            doc["status"] = "fail"
    return doc
