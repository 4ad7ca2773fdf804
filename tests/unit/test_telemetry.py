"""Telemetry in TaskLog.metadata (gateway.telemetry): a task interrupted once and restored
carries its interruption, capsule, durations, instances and cost as strings, through the
in-process dispatcher of test_scheduler; the summary itself on fixed rows."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import tes
import tes.utils
from sqlalchemy import event

from capsule_runtime.protocol.messages import AttemptReport, CapsuleReport
from gateway.auth import ANONYMOUS
from gateway.migration import Migrations
from gateway.providers.base import Offer
from gateway.service import TaskService
from gateway.store.tasks import TaskRecord
from gateway.telemetry import on_task_end, summarize, with_telemetry
from gateway.tes.states import State
from gateway.tes.views import View
from tests.fixtures.world import World, running_with

KEYS = {
    "spot_interruptions",
    "checkpoints",
    "checkpoints_failed",
    "restores",
    "capsule_size_bytes",
    "capsule_stored_bytes",
    "capsule_uploaded_bytes",
    "frozen_seconds",
    "checkpoint_seconds",
    "restore_seconds",
    "instance_types",
    "markets",
    "cost_usd",
    "on_demand_usd",
}


def capsule(**fields: object) -> CapsuleReport:
    base: dict[str, object] = {
        "state": "complete",
        "manifest_key": "k",
        "manifest_sha256": "0" * 64,
        "size_bytes": 1000,
        "stored_bytes": 400,
        "uploaded_bytes": 400,
        "seconds": {"total": 2.0, "criu_frozen": 0.5, "files_frozen": 0.01},
    }
    return CapsuleReport.model_validate({**base, **fields})


def test_a_task_interrupted_once_and_restored_reports_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(tmp_path, scheduler={"heartbeat_timeout_seconds": 10**6})
    first, aid = running_with(world)
    task_id = world.fleet.attempt(aid).task_id  # type: ignore[union-attr]
    world.dispatch.capsule(first, aid, capsule(capsule_id="c1", sequence=1))  # periodic
    request = Migrations(world.tasks, world.fleet, world.wakeups).request(
        task_id, stop=True, reason="reclaim"
    )
    [order] = world.poll(first, [aid]).checkpoint
    assert order.request_id == request["request_id"]
    world.dispatch.capsule(
        first,
        aid,
        capsule(
            capsule_id="c2",
            sequence=2,
            parent="c1",
            request_id=order.request_id,
            stop=True,
            reason="reclaim",
            size_bytes=1200,
            stored_bytes=450,
            uploaded_bytes=50,
            seconds={"total": 1.0, "criu_frozen": 0.25},
        ),
    )
    world.dispatch.report(
        first, aid, AttemptReport(status="interrupted", task_log={"logs": [], "outputs": []})
    )
    monkeypatch.setattr(  # the restore lands on another type, on-demand
        world.provider,
        "offers",
        lambda: [
            Offer(
                instance_type="fake.xlarge",
                market="on-demand",
                zone="z2",
                price_per_hour=0.2,
                cpu_cores=8,
                ram_gb=16,
                disk_gb=100,
            )
        ],
    )
    second = world.boot()
    world.scheduler.tick()
    [assignment] = world.poll(second).assign
    assert assignment.restore[0].capsule_id == "c2"  # the newest capsule first
    restored = CapsuleReport(state="restored", capsule_id="c2", sequence=2, seconds={"total": 3.25})
    world.dispatch.capsule(second, assignment.attempt_id, restored)
    world.report(second, assignment.attempt_id, "running")
    world.report(second, assignment.attempt_id, "complete", logs=[{"exit_code": 0}])
    assert world.state(task_id) is State.COMPLETE

    meta = _metadata(world.tasks.get(task_id))
    assert meta.keys() >= KEYS and all(isinstance(v, str) for v in meta.values())
    assert meta["spot_interruptions"] == "1"
    assert meta["migrations"] == "1"  # kept: the keys that were there before
    assert meta["instance_type"] == "fake.xlarge" and meta["vm_price_per_hour_usd"] == "0.200000"
    assert meta["instance_types"] == "fake.large,fake.xlarge"
    assert meta["markets"] == "spot,on-demand"
    assert (meta["checkpoints"], meta["checkpoints_failed"], meta["restores"]) == ("2", "0", "1")
    assert meta["capsule_size_bytes"] == "1200" and meta["capsule_stored_bytes"] == "450"
    assert meta["capsule_uploaded_bytes"] == "450"  # 400 + 50: the second reused the rest
    assert meta["frozen_seconds"] == "0.750"
    assert meta["checkpoint_seconds"] == "3.000" and meta["restore_seconds"] == "3.250"
    assert float(meta["cost_usd"]) >= 0 and float(meta["on_demand_usd"]) >= float(meta["cost_usd"])
    # py-tes 1.1.4 (what nf-ga4gh-like Python clients use) reads the task as TES says it is
    wire = TaskService(world.cfg, world.tasks).get(task_id, View.FULL, ANONYMOUS)
    task = tes.utils.unmarshal(json.dumps(wire), tes.Task)
    assert task.logs[-1].metadata["spot_interruptions"] == "1"


def test_a_task_that_never_moved_has_zeros_and_one_instance(tmp_path: Path) -> None:
    world = World(tmp_path)
    inst, aid = running_with(world)
    task_id = world.fleet.attempt(aid).task_id  # type: ignore[union-attr]
    world.report(inst, aid, "executor_error", logs=[{"exit_code": 1}])
    meta = _metadata(world.tasks.get(task_id))
    assert meta["spot_interruptions"] == "0" and meta["checkpoints"] == "0"
    assert meta["instance_types"] == "fake.large" and meta["markets"] == "spot"
    assert meta["frozen_seconds"] == "0.000"


def test_get_reads_telemetry_only_for_a_running_task_in_full_view(tmp_path: Path) -> None:
    """MINIMAL and BASIC cost one query as before; FULL of a running task adds the two reads
    and shows the numbers so far; a finished task shows what its end stored."""
    world = World(tmp_path)
    inst, aid = running_with(world)
    task_id = world.fleet.attempt(aid).task_id  # type: ignore[union-attr]
    service = TaskService(world.cfg, world.tasks)
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    def queries(view: View) -> tuple[int, dict[str, Any]]:
        statements.clear()
        event.listen(world.db.engine, "before_cursor_execute", count)
        try:
            task = service.get(task_id, view, ANONYMOUS)
        finally:
            event.remove(world.db.engine, "before_cursor_execute", count)
        return len(statements), task

    assert queries(View.MINIMAL)[0] == 1
    basic = queries(View.BASIC)
    assert basic[0] == 1 and "checkpoints" not in basic[1]["logs"][-1]["metadata"]
    n, full = queries(View.FULL)
    assert n == 3 and full["logs"][-1]["metadata"]["instance_types"] == "fake.large"
    world.report(inst, aid, "complete", logs=[{"exit_code": 0}])
    n, done = queries(View.FULL)
    assert n == 1 and done["logs"][-1]["metadata"]["checkpoints"] == "0"


def test_summary_of_fixed_rows() -> None:
    """Cost follows gateway.market.costs: price x hours, on-demand price for the same hours;
    a failed checkpoint counts its time, not a capsule; attempts never placed count nowhere."""
    rows = [
        _row(1, "first", "spot", "m5.large", 0.04, "00:00", "01:00"),
        _row(2, "reclaim", "spot", "m5.xlarge", 0.08, "01:00", "01:30"),
        {"id": "a3", "task_id": "t", "number": 3, "reason": "lost", "instance_id": None},
    ]
    steps: list[tuple[str, dict[str, Any]]] = [
        ("checkpoint_failed", {"seconds": {"total": 4.0, "files_frozen": 0.125}}),
        ("capsule", {"size_bytes": 10, "stored_bytes": 5, "uploaded_bytes": 5, "seconds": {}}),
    ]
    prices = {"m5.large": 0.096, "m5.xlarge": 0.192}
    out = summarize(rows, steps, datetime(2026, 1, 1, 2, tzinfo=UTC), on_demand=prices.get)
    assert out["spot_interruptions"] == "2"  # the reclaim and the loss (its restore unplaced)
    assert out["instance_types"] == "m5.large,m5.xlarge" and out["markets"] == "spot,spot"
    assert out["cost_usd"] == "0.080000"  # 0.04 x 1 h + 0.08 x 0.5 h
    assert out["on_demand_usd"] == "0.192000"  # 0.096 x 1 h + 0.192 x 0.5 h
    assert (out["checkpoints"], out["checkpoints_failed"]) == ("1", "1")
    assert out["checkpoint_seconds"] == "4.000" and out["frozen_seconds"] == "0.125"


def test_with_telemetry_merges_into_the_newest_tasklog_only() -> None:
    logs: list[dict[str, Any]] = [
        {"metadata": {"a": "1"}},
        {"logs": [], "metadata": {"instance_id": "i"}},
    ]
    out = with_telemetry(logs, {"checkpoints": "0"})
    assert out == [logs[0], {"logs": [], "metadata": {"instance_id": "i", "checkpoints": "0"}}]
    assert logs[1]["metadata"] == {"instance_id": "i"}  # the given list is left as it was
    assert with_telemetry(None, {"checkpoints": "0"}) is None


def _row(
    number: int, reason: str, market: str, itype: str, price: float, start: str, end: str
) -> dict[str, Any]:
    day = "2026-01-01T"
    return {
        "id": f"a{number}",
        "task_id": "t",
        "number": number,
        "reason": reason,
        "instance_id": f"i{number}",
        "market": market,
        "instance_type": itype,
        "zone": "z",
        "price_per_hour": price,
        "start_time": f"{day}{start}:00+00:00",
        "end_time": f"{day}{end}:00+00:00",
    }


def _metadata(record: TaskRecord | None) -> dict[str, str]:
    assert record is not None and record.logs
    return dict(record.logs[-1]["metadata"])


def ended_by_the_gateway(tmp_path: Path, **cfg: Any) -> World:
    """A World whose task store adds telemetry when the gateway ends a task, as build_services
    wires it."""
    world = World(tmp_path, **cfg)
    world.tasks.on_end = on_task_end(world.cfg)
    return world


def test_a_task_cancelled_while_queued_carries_the_keys(tmp_path: Path) -> None:
    world = ended_by_the_gateway(tmp_path)
    service = TaskService(world.cfg, world.tasks)  # as a client creates it: with a TaskLog
    created = service.create({"executors": [{"image": "alpine", "command": ["true"]}]}, ANONYMOUS)
    task_id = created["id"]
    service.cancel(task_id, ANONYMOUS)
    assert world.state(task_id) is State.CANCELED
    meta = _metadata(world.tasks.get(task_id))
    assert set(meta) >= KEYS and meta["spot_interruptions"] == "0"
    assert meta["instance_types"] == "" and meta["cost_usd"] == "0.000000"


def test_a_task_lost_with_its_instance_carries_the_keys(tmp_path: Path) -> None:
    world = ended_by_the_gateway(tmp_path, scheduler={"max_interruptions": 0})
    task_id = world.submit()
    inst = world.boot()
    world.scheduler.tick()
    world.poll(inst)
    world.provider.vanish(inst.id)  # the machine vanished: no last report
    world.scheduler.tick()
    assert world.state(task_id) is State.SYSTEM_ERROR
    meta = _metadata(world.tasks.get(task_id))
    assert meta["instance_types"] == "fake.large"  # where it ran (survived: none)
    assert float(meta["cost_usd"]) >= 0


def test_a_task_no_instance_fits_carries_the_keys(tmp_path: Path) -> None:
    world = ended_by_the_gateway(tmp_path)
    task_id = world.submit(cpu_cores=64)
    world.scheduler.tick()
    assert world.state(task_id) is State.SYSTEM_ERROR
    meta = _metadata(world.tasks.get(task_id))
    assert set(meta) >= KEYS and meta["markets"] == ""


def test_the_agents_report_is_not_priced_twice(tmp_path: Path) -> None:
    """A task whose agent reported its end has the telemetry from the dispatcher: the hook
    sees the key and leaves it."""
    world = ended_by_the_gateway(tmp_path)
    calls: list[str] = []
    hook = world.tasks.on_end
    assert hook is not None

    def counting(conn: Any, task_id: str, logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = hook(conn, task_id, logs)
        calls.append("same" if out is logs else "added")
        return out

    world.tasks.on_end = counting
    inst, aid = running_with(world)
    task_id = world.fleet.attempt(aid).task_id  # type: ignore[union-attr]
    world.report(inst, aid, "complete", logs=[{"exit_code": 0}])
    assert world.state(task_id) is State.COMPLETE and calls == ["same"]
    assert _metadata(world.tasks.get(task_id))["checkpoints"] == "0"
