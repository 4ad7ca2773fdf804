"""The notice budget planner (gateway/scheduler/notice_budget.py): the fit of an instance
type's capsule speed, the capsules it adds for a task that dirties fast, the Spot placements
it refuses, and the prediction it records next to the measured time at every notice — with the
in-process World on a ManualClock."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from capsule_runtime.protocol.messages import CapsuleReport, Notice
from capsule_runtime.protocol.times import rfc3339, utcnow
from gateway.config import NoticeBudgetConfig
from gateway.providers.base import Capability, Offer
from gateway.scheduler.notice_budget import (
    GIB,
    Footprint,
    Rates,
    add_overhead,
    add_sample,
    next_dirty_rate,
    prior,
    solve,
)
from gateway.store.fleet import Instance
from gateway.store.fleet_data import (
    AttemptData,
    CapsuleProfile,
    CheckpointRequest,
    NoticePrediction,
)
from gateway.telemetry import task_telemetry
from tests.fixtures.world import FakeProvider, World, running_with

# the default priors, s/GiB: every byte in series (CRIU's 40% of it, the pipeline's reading the
# rest), and every byte stored anew
DUMP, UPLOAD = 4.5, 2.5
CRIU, READ = 0.4 * DUMP, 0.6 * DUMP


def test_no_measurement_gives_the_priors_and_consistent_ones_keep_them() -> None:
    base = prior(NoticeBudgetConfig())
    unmeasured = solve(None, base)
    assert unmeasured == base and unmeasured.samples == 0
    assert (base.criu_s_per_gib, base.read_s_per_gib) == pytest.approx((CRIU, READ))
    assert (base.upload_s_per_gib, base.constant_s) == (UPLOAD, 0.0)
    stats = None
    for size, new in ((16, 16), (16, 1), (8, 0.5), (4, 4)):
        dump = CRIU * size
        stats = add_sample(stats, size * GIB, new * GIB, dump + READ * size + UPLOAD * new, dump)
    # a followed capsule: the longer of CRIU's dump and the pipeline
    stats = add_sample(stats, 4 * GIB, 1 * GIB, READ * 4 + UPLOAD, CRIU * 4, followed=True)
    fitted = solve(stats, base)
    assert fitted.criu_s_per_gib == pytest.approx(CRIU)
    assert fitted.read_s_per_gib == pytest.approx(READ)
    assert fitted.upload_s_per_gib == pytest.approx(UPLOAD)
    assert fitted.constant_s == pytest.approx(0.0, abs=1e-9)
    assert fitted.samples == 5


def test_measurements_pull_the_rates_to_what_the_type_does() -> None:
    """A type faster than the priors, with a constant: capsules of three shapes and the fit
    says so; a followed capsule is predicted as the longer of its two stages."""
    base = prior(NoticeBudgetConfig())
    stats = None
    for _ in range(6):
        for size, new in ((8, 8), (8, 0.4), (2, 0.1)):
            dump = 1.0 * size
            total = dump + 0.5 + 1.0 * size + 1.0 * new
            stats = add_sample(stats, size * GIB, new * GIB, total, dump)
    fitted = solve(stats, base)
    assert fitted.criu_s_per_gib == pytest.approx(1.0, rel=0.01)
    assert fitted.read_s_per_gib == pytest.approx(1.0, rel=0.1)
    assert fitted.upload_s_per_gib == pytest.approx(1.0, rel=0.05)
    # the constant is told apart from the per-GiB rates only by the sizes' spread, so the
    # prior (0) still holds it down; what is predicted is right all the same
    assert 0 < fitted.constant_s < 0.5
    # the whole capsule anew: 8 s of dump then 16.5 s of pipeline; followed, the pipeline only
    assert fitted.seconds(8 * GIB, 8 * GIB) == pytest.approx(24.5, rel=0.02)
    assert fitted.seconds(8 * GIB, 8 * GIB, followed=True) == pytest.approx(16.5, rel=0.02)
    assert fitted.seconds(8 * GIB, 0, followed=True) == pytest.approx(8.5, rel=0.03)
    # a small one whose dump is the longer stage: CRIU's 4 s, not the pipeline's 2.6 s
    slow_criu = Rates(2.0, 1.0, 1.0, 0.5)
    assert slow_criu.seconds(2 * GIB, 0.1 * GIB, followed=True) == pytest.approx(4.0)
    assert slow_criu.seconds(2 * GIB, 0.1 * GIB) == pytest.approx(6.6)


def test_a_capsule_without_its_dump_time_counts_wholly_as_dump() -> None:
    """An agent from before the split reports only its total: the safe side is to believe
    it all was CRIU's, which a followed notice cannot hide behind the pipeline."""
    base = prior(NoticeBudgetConfig())
    stats = None
    for _ in range(10):
        stats = add_sample(stats, 4 * GIB, 4 * GIB, 40.0)
    fitted = solve(stats, base)
    assert fitted.criu_s_per_gib == pytest.approx(10.0, rel=0.05)
    assert (fitted.read_s_per_gib, fitted.upload_s_per_gib) == pytest.approx((READ, UPLOAD))
    assert fitted.seconds(4 * GIB, 4 * GIB, followed=True) >= 39.0
    # the sums of the model before the split are dropped at the next sample
    old: dict[str, float] = {"ss": 5.0, "sn": 1.0, "nn": 2.0, "sy": 20.0, "ny": 3.0, "samples": 3}
    assert set(add_sample(old, GIB, GIB, 5.0, 2.0)) == {
        "d_ss", "d_sy", "samples",
        "p_11", "p_1s", "p_1n", "p_ss", "p_sn", "p_nn", "p_1y", "p_sy", "p_ny",
    }  # fmt: skip


def test_the_overhead_is_learned_from_notices_and_kept_by_capsules() -> None:
    """Each notice's overhead (its measured time less the agent's) pulls the prior towards what
    the type does; the capsules between notices neither decay nor drop it."""
    base = prior(NoticeBudgetConfig())
    assert base.overhead_s == 2.0 and solve(None, base).overhead_s == 2.0
    stats = None
    for _ in range(8):
        stats = add_overhead(add_sample(stats, GIB, GIB, 5.0, 2.0, followed=True), 0.5)
        for _ in range(3):  # periodic capsules between notices
            stats = add_sample(stats, GIB, 0.1 * GIB, 3.0, 2.0)
    fitted = solve(stats, base)
    assert fitted.notices == 8
    assert 0.5 < fitted.overhead_s < 0.8  # the prior's weight is one notice among ~5
    assert fitted.notice(GIB, GIB) == pytest.approx(fitted.overhead_s + fitted.seconds(GIB, GIB))
    assert add_overhead(None, -3.0)["o_y"] == 0.0  # a clock's hiccup is no negative overhead


def test_a_dirty_rate_rises_at_once_and_falls_by_halves() -> None:
    assert next_dirty_rate(None, 5.0) == 5.0
    assert next_dirty_rate(5.0, 9.0) == 9.0
    assert next_dirty_rate(9.0, 1.0) == 5.0


def test_a_footprint_without_a_base_capsule_uploads_everything() -> None:
    fresh = Footprint(size_bytes=4 * GIB, stored_bytes=3 * GIB)
    assert fresh.upload_after(10.0) == 3 * GIB
    built = Footprint(4 * GIB, 3 * GIB, dirty_bps=0.01 * GIB, since=utcnow())
    assert built.upload_after(100.0) == pytest.approx(1 * GIB)
    assert built.upload_after(10_000.0) == 3 * GIB  # never more than the whole capsule


# -- in the World ------------------------------------------------------------------------------


def capsule(
    world: World,
    inst: Instance,
    aid: str,
    sequence: int,
    *,
    size_gib: float,
    new_gib: float,
    seconds: float,
    parent: str | None = None,
    dump: float | None = None,
    followed: bool = False,
    **fields: Any,
) -> str:
    """A complete capsule report, `seconds` long, ending now; CRIU's dump took `dump` of it
    (default: the priors' CRIU seconds per GiB), the pipeline followed it when `followed`."""
    timings = {"total": seconds, "dump": CRIU * size_gib if dump is None else dump}
    if followed:
        timings["dump_followed"] = timings["dump"]
    capsule_id = f"{aid}-{sequence}"
    world.dispatch.capsule(
        inst,
        aid,
        CapsuleReport(
            state="complete",
            capsule_id=capsule_id,
            sequence=sequence,
            manifest_key=f"k/{sequence}",
            manifest_sha256="0" * 64,
            parent=parent,
            size_bytes=int(size_gib * GIB),
            stored_bytes=int(size_gib * GIB),
            uploaded_bytes=int(new_gib * GIB),
            seconds=timings,
            **fields,
        ),
    )
    return capsule_id


def data(world: World, aid: str) -> AttemptData:
    attempt = world.fleet.attempt(aid)
    assert attempt is not None
    return attempt.data


def profile_of(world: World, aid: str) -> CapsuleProfile:
    profile = data(world, aid).capsule_profile
    assert profile is not None
    return profile


def prediction_of(world: World, aid: str) -> NoticePrediction:
    note = data(world, aid).notice_prediction
    assert note is not None
    return note


def request_of(world: World, aid: str) -> CheckpointRequest:
    request = data(world, aid).checkpoint
    assert request is not None
    return request


def task_of(world: World, aid: str) -> str:
    attempt = world.fleet.attempt(aid)
    assert attempt is not None
    return attempt.task_id


def kinds(world: World, task_id: str, kind: str) -> list[dict[str, Any]]:
    return [e for e in world.tasks.events(task_id) if e["kind"] == kind]


def test_a_task_that_dirties_fast_gets_capsules_sooner_than_its_interval(tmp_path: Path) -> None:
    """24 GiB on Spot: a notice's capsule stores the pages while CRIU dumps them, so its
    pipeline (24 * 2.7 = 64.8 s to read them) is what counts of the 84 s budget (0.7 * 120 s),
    leaving 17.2 s for new chunks — 6.9 GiB at 2.5 s/GiB. At 0.01 GiB/s of dirt that is 688 s
    after the newest capsule: the planner asks for one then, not at the 900 s interval."""
    world = World(tmp_path)
    inst, aid = running_with(world)
    task_id = task_of(world, aid)
    start = world.clock()
    # the first capsule, taken in series: everything new (24 * 4.5 + 24 * 2.5 = 168 s)
    world.clock.set(start + timedelta(seconds=168))
    first = capsule(world, inst, aid, 1, size_gib=24, new_gib=24, seconds=168)
    # the second began 100 s after the first: 1 GiB new (24 * 4.5 + 2.5 = 110.5 s)
    world.clock.set(start + timedelta(seconds=210.5))
    capsule(world, inst, aid, 2, size_gib=24, new_gib=1, seconds=110.5, parent=first)
    profile = profile_of(world, aid)
    assert profile.dirty_bps == pytest.approx(0.01 * GIB)
    began = world.clock() - timedelta(seconds=110.5)
    assert profile.since == rfc3339(began)
    # stored as the JSON object it always was
    assert set(data(world, aid).dump()["capsule_profile"]) == {
        "since",
        "size_bytes",
        "stored_bytes",
        "dirty_bps",
    }
    # 600 s after it: 2 + 64.8 + 15 = 81.8 s ≤ 84: no capsule yet
    world.clock.set(began + timedelta(seconds=600))
    world.poll(inst, [aid])  # a heartbeat: the instance is alive
    world.scheduler.tick()
    assert data(world, aid).checkpoint is None
    # 700 s after it: 2 + 64.8 + 17.5 = 84.3 s > 84: a capsule, the task running on
    world.clock.set(began + timedelta(seconds=700))
    world.poll(inst, [aid])
    world.scheduler.tick()
    request = request_of(world, aid)
    assert request.reason == "notice_budget" and request.stop is False
    assert request.notice_budget is not None
    assert request.notice_budget.predicted_s == pytest.approx(84.3, abs=0.01)
    assert data(world, aid).dump()["checkpoint"]["notice_budget"]["budget_s"] == pytest.approx(84)
    [asked] = kinds(world, task_id, "checkpoint_requested")
    assert asked["data"]["notice_budget"]["budget_s"] == pytest.approx(84.0)
    [order] = world.poll(inst, [aid]).checkpoint
    assert order.reason == "notice_budget" and not order.stop
    # the capsule fails: not asked for again before min_interval_seconds (60 s)
    world.dispatch.capsule(
        inst,
        aid,
        CapsuleReport(
            state="failed",
            capsule_id=f"{aid}-3",
            sequence=3,
            request_id=order.request_id,
            reason="notice_budget",
            error="criu said no",
        ),
    )
    assert data(world, aid).checkpoint is None
    world.clock.advance(30)
    world.poll(inst, [aid])
    world.scheduler.tick()
    assert data(world, aid).checkpoint is None
    world.clock.advance(31)
    world.poll(inst, [aid])
    world.scheduler.tick()
    assert request_of(world, aid).reason == "notice_budget"
    # the type's rates learned the two capsules; they agreed with the priors
    rates = world.scheduler.budget.rates(inst.provider, inst.instance_type)
    assert rates.samples == 2 and rates.criu_s_per_gib == pytest.approx(CRIU)
    assert rates.read_s_per_gib == pytest.approx(READ)


def test_a_small_task_gets_no_extra_capsules(tmp_path: Path) -> None:
    world = World(tmp_path)
    inst, aid = running_with(world)
    world.clock.advance(10)
    capsule(world, inst, aid, 1, size_gib=1, new_gib=1, seconds=7)
    world.clock.advance(3600)
    world.poll(inst, [aid])
    world.scheduler.tick()
    assert data(world, aid).checkpoint is None


def test_the_planner_can_be_turned_off(tmp_path: Path) -> None:
    world = World(tmp_path, capsules={"notice_budget": {"enabled": False}})
    inst, aid = running_with(world)
    world.clock.advance(120)
    capsule(world, inst, aid, 1, size_gib=16, new_gib=16, seconds=112)
    world.clock.advance(3600)
    world.poll(inst, [aid])
    world.scheduler.tick()
    assert data(world, aid).checkpoint is None
    assert data(world, aid).capsule_profile is None
    assert "capsule_profile" not in data(world, aid).dump()


class TwoMarkets(FakeProvider):
    """One type, bought Spot or on-demand."""

    def __init__(self) -> None:
        super().__init__(cpu=4, ram=64)
        self.capabilities = frozenset({Capability.SPOT, Capability.ON_DEMAND})

    def offers(self) -> list[Offer]:
        return [
            Offer(
                instance_type="fake.large",
                market=market,
                zone="z1",
                price_per_hour=price,
                cpu_cores=self.cpu,
                ram_gb=self.ram,
                disk_gb=100,
            )
            for market, price in (("spot", 0.05), ("on-demand", 0.20))
        ]


def launched_market(world: World, provider: TwoMarkets) -> str:
    inst = world.fleet.instance(provider.launched[-1])
    assert inst is not None
    return inst.market


def test_a_task_too_large_for_the_notice_goes_on_demand_with_an_event(tmp_path: Path) -> None:
    """32 GB at 2.7 s/GiB is 86 s of reading alone: no Spot capsule at a notice could make it."""
    world = World(tmp_path)
    provider = TwoMarkets()
    world.scheduler = world.new_scheduler(provider)
    big = world.submit(cpu_cores=1, ram_gb=32)
    world.scheduler.tick()
    assert launched_market(world, provider) == "on-demand"
    [refused] = kinds(world, big, "spot_refused")
    assert "not placed on Spot fake.large" in refused["message"]
    assert "on-demand" in refused["message"]
    assert refused["data"]["predicted_s"] == pytest.approx(2 + 32 * READ)
    assert refused["data"]["budget_s"] == pytest.approx(84.0)
    world.scheduler.tick()
    assert len(kinds(world, big, "spot_refused")) == 1  # said once


def test_a_task_that_fits_the_notice_goes_on_spot(tmp_path: Path) -> None:
    world = World(tmp_path)
    provider = TwoMarkets()
    world.scheduler = world.new_scheduler(provider)
    small = world.submit(cpu_cores=1, ram_gb=8)  # 2 + 21.6 s
    world.scheduler.tick()
    assert launched_market(world, provider) == "spot"
    assert kinds(world, small, "spot_refused") == []


def test_a_longer_notice_or_a_restart_task_is_placed_on_spot(tmp_path: Path) -> None:
    world = World(tmp_path, capsules={"notice_budget": {"notice_seconds": {"default": 300}}})
    provider = TwoMarkets()
    world.scheduler = world.new_scheduler(provider)
    world.submit(cpu_cores=1, ram_gb=32)  # 88.4 s ≤ 0.7 * 300
    world.scheduler.tick()
    assert launched_market(world, provider) == "spot"
    world = World(tmp_path / "restart")
    provider = TwoMarkets()
    world.scheduler = world.new_scheduler(provider)
    world.submit(cpu_cores=1, ram_gb=32, backend_parameters={"recovery": "restart"})
    world.scheduler.tick()
    assert launched_market(world, provider) == "spot"  # it takes no capsule at a notice


def test_spot_only_waits_and_says_why(tmp_path: Path) -> None:
    world = World(tmp_path)
    provider = TwoMarkets()
    world.scheduler = world.new_scheduler(provider)
    big = world.submit(cpu_cores=1, ram_gb=32, backend_parameters={"market_policy": "spot_only"})
    world.scheduler.tick()
    assert provider.launched == []
    [refused] = kinds(world, big, "spot_refused")
    assert "waits" in refused["message"]


def test_a_ready_spot_instance_is_passed_over_for_a_task_too_large(tmp_path: Path) -> None:
    """A 20 s notice (budget 14 s): 1 GB fits (4.7 s), 6 GB does not (18.2 s)."""
    world = World(tmp_path, capsules={"notice_budget": {"notice_seconds": {"default": 20}}})
    small = world.submit(cpu_cores=1, ram_gb=1)
    inst = world.boot()  # the fake world's one Spot type, 8 GB
    big = world.submit(cpu_cores=1, ram_gb=6)
    world.scheduler.tick()
    assert [a.task_id for a in world.poll(inst).assign] == [small]
    assert kinds(world, big, "spot_refused")


def test_every_notice_records_the_prediction_next_to_the_measured_time(tmp_path: Path) -> None:
    world = World(tmp_path)
    inst, aid = running_with(world)
    task_id = task_of(world, aid)
    world.clock.advance(40)
    capsule(world, inst, aid, 1, size_gib=4, new_gib=4, seconds=28)  # 4 * 7 s
    world.clock.advance(30)
    deadline = rfc3339(world.clock() + timedelta(seconds=120)).replace("+00:00", "Z")
    world.dispatch.notice(inst, Notice(kind="terminate", time=deadline))
    note = prediction_of(world, aid)
    # no dirty rate yet: the whole capsule again, followed: 2 + max(4 * 1.8, 4 * 2.7 + 4 * 2.5)
    assert note.predicted_s == pytest.approx(22.8)
    assert note.notice_s == pytest.approx(120.0) and note.requested is True
    assert set(data(world, aid).dump()["notice_prediction"]) == {
        "heard",
        "deadline",
        "notice_s",
        "budget_s",
        "predicted_s",
        "size_bytes",
        "upload_bytes",
        "basis",
        "requested",
    }
    [order] = world.poll(inst, [aid]).checkpoint
    assert order.stop and order.reason == "reclaim"
    world.clock.advance(14)
    capsule(
        world,
        inst,
        aid,
        2,
        size_gib=4,
        new_gib=0.5,
        seconds=12.5,
        dump=7.0,
        followed=True,
        parent=f"{aid}-1",
        request_id=order.request_id,
        stop=True,
        reason="reclaim",
    )
    [event] = kinds(world, task_id, "notice_budget")
    assert event["data"]["predicted_s"] == pytest.approx(22.8)
    assert event["data"]["measured_s"] == pytest.approx(14.0)
    # the rates on the capsule as it came out, followed: 2 + max(4 * 1.8, 4 * 2.7 + 0.5 * 2.5)
    assert event["data"]["model_s"] == pytest.approx(14.05)
    assert event["data"]["dump_s"] == pytest.approx(7.0) and event["data"]["followed"] is True
    # what the notice cost besides the capsule: 14 s measured, 12.5 s the agent's own; the
    # type learns it (the prior, 2 s, weighs as one notice)
    assert event["data"]["overhead_s"] == pytest.approx(1.5)
    assert event["data"]["overhead_model_s"] == pytest.approx(2.0)
    world.scheduler.budget.refresh()
    rates = world.scheduler.budget.rates(inst.provider, inst.instance_type)
    assert rates.notices == 1 and rates.overhead_s == pytest.approx(1.75)
    assert event["data"]["outcome"] == "durable" and event["data"]["within_notice"] is True
    assert "14.0 s after the notice (predicted 22.8 s" in event["message"]
    with world.db.engine.connect() as conn:  # and in the task's telemetry
        keys = task_telemetry(conn, task_id)
    assert keys["notice_predicted_seconds"] == "22.800"
    assert keys["notice_measured_seconds"] == "14.000"


def test_a_notice_during_a_capsule_moves_the_task_when_that_capsule_ends(
    tmp_path: Path,
) -> None:
    world = World(tmp_path)
    inst, aid = running_with(world)
    world.migrations.request(task_of(world, aid), stop=False)
    [order] = world.poll(inst, [aid]).checkpoint
    world.dispatch.notice(inst, Notice(kind="terminate", time="2099-01-01T00:00:00Z"))
    assert prediction_of(world, aid).requested is False  # refused: a capsule is under way
    assert request_of(world, aid).reason == "manual"
    world.clock.advance(5)
    capsule(world, inst, aid, 1, size_gib=1, new_gib=1, seconds=4, request_id=order.request_id)
    world.clock.advance(1)
    world.scheduler.tick()
    assert request_of(world, aid).reason == "reclaim"
    assert prediction_of(world, aid).requested is True


def test_a_moved_task_keeps_its_dirty_rate_and_counts_from_its_restore(tmp_path: Path) -> None:
    world = World(tmp_path, scheduler={"heartbeat_timeout_seconds": 10**6})
    inst, aid = running_with(world)
    task_id = task_of(world, aid)
    world.clock.advance(112)
    first = capsule(world, inst, aid, 1, size_gib=16, new_gib=16, seconds=112)
    world.clock.advance(174.5 - 112)
    second = capsule(world, inst, aid, 2, size_gib=16, new_gib=1, seconds=74.5, parent=first)
    world.migrations.request(task_id, stop=True)
    [order] = world.poll(inst, [aid]).checkpoint
    world.clock.advance(80)
    capsule(
        world,
        inst,
        aid,
        3,
        size_gib=16,
        new_gib=0.5,
        seconds=73.25,
        parent=second,
        request_id=order.request_id,
        stop=True,
        reason="manual",
    )
    world.report(inst, aid, "interrupted")
    other = world.boot()  # the restore's instance
    world.scheduler.tick()
    [assignment] = world.poll(other).assign
    assert assignment.restore and assignment.restore[0].capsule_id == f"{aid}-3"
    world.clock.advance(30)
    world.dispatch.capsule(
        other,
        assignment.attempt_id,
        CapsuleReport(
            state="restored",
            capsule_id=f"{aid}-3",
            sequence=3,
            size_bytes=16 * 2**30,
            stored_bytes=16 * 2**30,
            seconds={"total": 30.0},
        ),
    )
    moved = profile_of(world, assignment.attempt_id)
    before = profile_of(world, aid)
    assert moved.dirty_bps is not None and before.dirty_bps is not None
    assert moved.dirty_bps == before.dirty_bps > 0  # the task's, not the attempt's
    assert moved.since == rfc3339(world.clock())  # dirt counts from the restore
