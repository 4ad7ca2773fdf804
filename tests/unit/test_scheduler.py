"""Scheduler and dispatcher together, in-process, with a fake provider and a scripted agent:
placement, capacity, cancel at every phase, lost instances, idle retirement, restarts."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.dispatch import Fenced
from gateway.providers.base import Capability, CloudState, LaunchRecord, LaunchSpec, Offer
from gateway.providers.fake import FakeCloud
from gateway.providers.fake import FakeProvider as ShippedFakeProvider
from gateway.scheduler import losses
from gateway.store.fleet import Instance, InstanceState
from gateway.store.fleet_data import Limits, UsageSample
from gateway.tes.states import AttemptPhase, State
from tests.fixtures.world import FakeProvider, World, running_with


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def test_happy_path(world: World) -> None:
    t = world.submit()
    inst = world.boot()
    assert inst.state is InstanceState.READY
    world.scheduler.tick()
    assert world.state(t) is State.INITIALIZING
    orders = world.poll(inst)
    assert [a.task_id for a in orders.assign] == [t]
    aid = orders.assign[0].attempt_id
    assert world.poll(inst, [aid]).assign == []  # handed out once
    world.report(inst, aid, "running", start_time="s")
    assert world.state(t) is State.RUNNING
    world.report(inst, aid, "complete", report_id="r-done", logs=[{"exit_code": 0}])
    assert world.state(t) is State.COMPLETE
    rec = world.tasks.get(t)
    assert rec is not None and rec.logs is not None
    meta = rec.logs[0]["metadata"]
    assert meta["instance_type"] == "fake.large" and meta["vm_price_per_hour_usd"] == "0.050000"
    assert world.fleet.attempt(aid).phase is AttemptPhase.DONE  # type: ignore[union-attr]
    world.report(inst, aid, "complete", report_id="r-done")  # a resend: answered the same
    with pytest.raises(Fenced):  # another report for a settled attempt: refused
        world.report(inst, aid, "system_error")
    assert world.state(t) is State.COMPLETE


def test_capacity_is_respected(world: World) -> None:
    ids = [world.submit(cpu_cores=2) for _ in range(3)]
    world.boot()
    world.scheduler.tick()
    states = [world.state(i) for i in ids]
    assert states.count(State.INITIALIZING) == 2 and states.count(State.QUEUED) == 1


def test_a_task_no_instance_fits_fails_with_a_reason(world: World) -> None:
    t = world.submit(cpu_cores=64)
    world.scheduler.tick()
    assert world.state(t) is State.SYSTEM_ERROR
    rec = world.tasks.get(t)
    assert rec and rec.logs and "64 CPU cores" in rec.logs[0]["system_logs"][0]


@pytest.mark.parametrize("phase", ["queued", "assigned", "picked_up", "running"])
def test_cancel_at_every_phase(world: World, phase: str) -> None:
    from gateway.auth import ANONYMOUS
    from gateway.service import TaskService

    svc = TaskService(world.cfg, world.tasks)
    t = world.submit()
    inst = world.boot()
    aid = None
    if phase != "queued":
        world.scheduler.tick()
    if phase in ("picked_up", "running"):
        aid = world.poll(inst).assign[0].attempt_id
    if phase == "running":
        world.report(inst, aid, "running")  # type: ignore[arg-type]
    svc.cancel(t, ANONYMOUS)
    if phase == "queued":
        assert world.state(t) is State.CANCELED
        return
    assert world.state(t) is State.CANCELING
    orders = world.poll(inst, [aid] if aid else [])
    if aid is None:  # never picked up: settled by the dispatcher itself
        assert orders.cancel == [] and world.state(t) is State.CANCELED
        return
    assert orders.cancel == [aid]
    world.report(inst, aid, "canceled")
    assert world.state(t) is State.CANCELED


def test_finish_racing_a_cancel_ends_canceled(world: World) -> None:
    t = world.submit()
    inst = world.boot()
    world.scheduler.tick()
    aid = world.poll(inst).assign[0].attempt_id
    world.report(inst, aid, "running")
    world.tasks.transition(t, State.CANCELING)
    world.report(inst, aid, "complete")
    assert world.state(t) is State.CANCELED


def test_lost_instance_past_the_interruption_budget_fails_its_tasks(tmp_path: Path) -> None:
    world = World(tmp_path, scheduler={"max_interruptions": 0})
    t = world.submit()
    inst = world.boot()
    world.scheduler.tick()
    world.poll(inst)
    world.provider.vanish(inst.id)  # the machine vanished
    world.scheduler.tick()
    assert world.state(t) is State.SYSTEM_ERROR
    assert world.fleet.instance(inst.id).state is InstanceState.LOST  # type: ignore[union-attr]
    rec = world.tasks.get(t)
    assert rec and rec.logs and "was lost" in rec.logs[-1]["system_logs"][-1]


def test_lost_instance_restarts_its_task_elsewhere(world: World) -> None:
    """No capsule yet: the task starts again from the beginning on another instance; the
    client keeps seeing it run, and the reason is in system_logs."""
    t = world.submit()
    first = world.boot()
    world.scheduler.tick()
    aid = world.poll(first).assign[0].attempt_id
    world.report(first, aid, "running")
    world.provider.vanish(first.id)  # the machine vanished
    world.scheduler.tick()
    assert world.state(t) is State.RUNNING
    rec = world.tasks.get(t)
    assert rec and rec.logs and "from the beginning" in rec.logs[-1]["system_logs"][-1]
    second = world.boot()
    world.scheduler.tick()
    [assignment] = world.poll(second).assign
    assert assignment.restore == [] and assignment.task_id == t
    attempts = world.fleet.attempts_of(t)
    assert [a.reason for a in attempts] == ["first", "lost"]
    assert attempts[1].instance_id == second.id != first.id
    world.report(second, assignment.attempt_id, "complete")
    assert world.state(t) is State.COMPLETE


def test_silent_agent_is_lost(world: World) -> None:
    world.submit()
    inst = world.boot()
    world.clock.advance(world.cfg.scheduler.heartbeat_timeout_seconds + 1)
    world.scheduler.tick()
    assert world.fleet.instance(inst.id).state is InstanceState.LOST  # type: ignore[union-attr]


def test_idle_instance_is_retired_and_told_to_shut_down(world: World) -> None:
    t = world.submit()
    inst = world.boot()
    world.scheduler.tick()
    aid = world.poll(inst).assign[0].attempt_id
    world.report(inst, aid, "complete")
    assert world.state(t) is State.COMPLETE
    world.clock.advance(world.cfg.scheduler.idle_timeout_seconds + 1)
    world.fleet.heartbeat(inst.id)  # the agent kept polling meanwhile
    world.scheduler.tick()
    assert world.fleet.instance(inst.id).state is InstanceState.TERMINATING  # type: ignore[union-attr]
    assert world.poll(inst).shutdown


def test_a_providers_own_idle_time_wins(world: World) -> None:
    """providers.aws.idle_seconds: a cloud's idle machines cost money, so it may stop sooner."""
    world.provider.idle_seconds = 5.0
    t = world.submit()
    inst = world.boot()
    world.scheduler.tick()
    aid = world.poll(inst).assign[0].attempt_id
    world.report(inst, aid, "complete")
    assert world.state(t) is State.COMPLETE
    world.clock.advance(6)
    world.fleet.heartbeat(inst.id)  # the agent kept polling meanwhile
    world.scheduler.tick()
    assert world.fleet.instance(inst.id).state is InstanceState.TERMINATING  # type: ignore[union-attr]


def test_a_providers_own_launch_time_wins(world: World) -> None:
    """providers.aws.launch_timeout_seconds: a cloud machine installs podman and CRIU at boot,
    so it may take longer to register than the scheduler's own launch timeout."""
    world.provider.launch_seconds = 900.0
    world.submit()
    world.scheduler.tick()
    inst = world.fleet.instance(world.provider.launched[-1])
    assert inst is not None
    world.clock.advance(world.cfg.scheduler.launch_timeout_seconds + 1)
    world.scheduler.tick()
    assert world.fleet.instance(inst.id).state is InstanceState.LAUNCHING  # type: ignore[union-attr]
    world.clock.advance(900)
    world.scheduler.tick()
    assert world.fleet.instance(inst.id).state is InstanceState.LOST  # type: ignore[union-attr]


def test_orphaned_machines_are_terminated_at_start(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A machine the provider says this gateway started, that no live row names, is terminated
    when the scheduler starts (and a row's own machine is left alone)."""
    world.submit()
    inst = world.boot()
    stray = world.provider.cloud.start(LaunchSpec("stray", "tok", world.provider.offers()[0]))
    seen: list[list[str]] = []

    def orphans(records: list[LaunchRecord]) -> list[LaunchRecord]:
        seen.append([r.provider_id for r in records])
        return [LaunchRecord(stray.provider_id, "fake-1a", {})]

    monkeypatch.setattr(world.provider, "orphans", orphans, raising=False)
    world.scheduler._recover_on_start()
    assert seen and inst.provider_id in seen[0]
    assert world.provider.cloud.state(stray.provider_id) is CloudState.TERMINATED
    assert world.provider.cloud.state(inst.provider_id) is CloudState.RUNNING


def test_restart_settles_tasks_of_unreachable_instances(tmp_path: Path) -> None:
    w = World(tmp_path)
    t = w.submit()
    inst = w.boot()
    w.scheduler.tick()
    w.poll(inst)
    again = World(tmp_path)  # a new gateway process on the same store: no agents of its own
    again.scheduler._recover_on_start()
    assert again.state(t) is State.INITIALIZING  # not lost: it starts again on a new instance
    assert [a.reason for a in again.fleet.attempts_of(t)] == ["first", "lost"]
    assert again.fleet.instance(inst.id).state is InstanceState.LOST  # type: ignore[union-attr]
    spent = World(tmp_path / "spent", scheduler={"max_interruptions": 0})
    t2 = spent.submit()
    inst2 = spent.boot()
    spent.scheduler.tick()
    spent.poll(inst2)
    after = World(tmp_path / "spent", scheduler={"max_interruptions": 0})
    after.scheduler._recover_on_start()
    assert after.state(t2) is State.SYSTEM_ERROR


def test_failed_launches_back_off(world: World) -> None:
    world.submit()
    world.scheduler.tick()
    first = world.provider.launched[-1]
    world.provider.vanish(first)  # the agent died before registering
    world.scheduler.tick()
    assert world.fleet.instance(first).state is InstanceState.LOST  # type: ignore[union-attr]
    assert world.scheduler.failed_launches == 1
    world.scheduler.tick()
    assert world.provider.launched == [first]  # waiting out the back-off


class MarketProvider(FakeProvider):
    """The fake provider, offering what a market offers."""

    def __init__(self, market: Any) -> None:
        super().__init__()
        self.market = market
        self.capabilities = self.capabilities | {Capability.PRICES}

    def offers(self) -> list[Offer]:
        return list(self.market.offers())

    def interrupt(self, record: LaunchRecord, notice_seconds: float) -> str:
        return "2026-01-01T00:00:00Z"

    def reclaims(self, instances: Any, dt_seconds: float) -> list[tuple[Any, float]]:
        notice = self.market.config.notice_seconds
        return [(i, notice) for i in self.market.draw_interruptions(instances, dt_seconds)]


def market_world(tmp: Path) -> World:
    from gateway.market.config import MarketConfig
    from gateway.market.model import Market

    world = World(tmp, scheduler={"triggers_interval_seconds": 0})
    market = Market(MarketConfig(instance_types=["c5.large", "c5.xlarge", "r5.large"], seed=1))
    world.provider = MarketProvider(market)
    world.scheduler = world.new_scheduler(world.provider, market)
    return world


def running_on_market(world: World) -> tuple[str, Instance, str]:
    t = world.submit()
    inst = world.boot()
    world.scheduler.tick()
    aid = world.poll(inst).assign[0].attempt_id
    world.report(inst, aid, "running")
    assert inst.instance_type == "c5.large" and inst.market == "spot"  # the cheapest fit
    return t, inst, aid


def usage(aid: str, world: World, cpu: float, gib: float, seconds: int = 40) -> None:
    start = world.clock() - timedelta(seconds=seconds)
    history = [
        UsageSample.model_validate(
            {
                "cpu_cores": cpu,
                "memory_bytes": int(gib * 2**30),
                "memory_limit_bytes": None,
                "time": (start + timedelta(seconds=s)).isoformat(),
            }
        )
        for s in range(0, seconds + 1, 5)
    ]
    world.fleet.update_attempt_data(aid, usage=history)


def test_memory_near_the_instance_limit_moves_the_task_to_a_bigger_type(tmp_path: Path) -> None:
    world = market_world(tmp_path)
    t, _, aid = running_on_market(world)
    usage(aid, world, cpu=0.5, gib=3.8)  # c5.large has 4 GiB: 95%
    world.scheduler.tick()
    request = world.fleet.attempt(aid).data.checkpoint  # type: ignore[union-attr]
    assert request is not None and request.plan is not None
    assert request.reason == "oom" and request.stop
    assert request.plan.ram_gb >= 8 and request.plan.market == "spot"
    assert world.state(t) is State.RUNNING


def test_sustained_high_cpu_moves_the_task_to_more_cores(tmp_path: Path) -> None:
    world = market_world(tmp_path)
    _, _, aid = running_on_market(world)
    usage(aid, world, cpu=1.95, gib=0.5)  # 2 cores busy for 40 s
    world.scheduler.tick()
    request = world.fleet.attempt(aid).data.checkpoint  # type: ignore[union-attr]
    assert request is not None and request.plan is not None
    assert request.reason == "rightsize" and request.plan.cpu_cores >= 4


def test_a_quiet_task_stays_put(tmp_path: Path) -> None:
    world = market_world(tmp_path)
    _, _, aid = running_on_market(world)
    usage(aid, world, cpu=0.5, gib=0.5)
    world.scheduler.tick()
    assert world.fleet.attempt(aid).data.checkpoint is None  # type: ignore[union-attr]


def test_a_busy_container_grows_in_place_when_its_instance_has_room(tmp_path: Path) -> None:
    world = market_world(tmp_path)
    inst, aid = running_with(world, cpu_cores=1, ram_gb=2)
    usage(aid, world, cpu=0.98, gib=0.5)  # its one core busy for 40 s
    world.scheduler.tick()
    attempt = world.fleet.attempt(aid)
    assert attempt is not None and attempt.data.checkpoint is None
    assert attempt.data.limits == Limits(cpu_cores=2.0, ram_gb=2.0)
    [order] = world.poll(inst, [aid]).resize
    assert (order.attempt_id, order.cpu_cores, order.ram_gb) == (aid, 2.0, 2.0)
    [again] = world.poll(inst, [aid]).resize  # sent again until the agent acknowledges it
    assert again.order_id == order.order_id
    assert world.poll(inst, [aid], [order.order_id]).resize == []  # acknowledged: not again
    world.scheduler.tick()  # measured against its new limits now: 49%, nothing more
    assert world.fleet.attempt(aid).data.limits.cpu_cores == 2.0  # type: ignore[union-attr]
    kinds = [e["kind"] for e in world.tasks.events(world.fleet.attempt(aid).task_id)]  # type: ignore[union-attr]
    assert kinds.count("resized") == 1


def test_memory_near_its_limit_grows_in_place_or_moves_with_new_limits(tmp_path: Path) -> None:
    world = market_world(tmp_path)
    _, aid = running_with(world, cpu_cores=1, ram_gb=2)
    usage(aid, world, cpu=0.2, gib=1.9)  # 95% of its 2 GB; the instance has 6 GB free
    world.scheduler.tick()
    assert world.fleet.attempt(aid).data.limits == Limits(cpu_cores=1.0, ram_gb=4.0)  # type: ignore[union-attr]
    usage(aid, world, cpu=0.2, gib=3.9)  # 4 GB more would not fit: it must move
    world.scheduler.tick()
    request = world.fleet.attempt(aid).data.checkpoint  # type: ignore[union-attr]
    assert request is not None and request.plan is not None
    assert request.reason == "oom" and request.stop
    assert request.limits == Limits(cpu_cores=1.0, ram_gb=8.0)
    assert request.plan.ram_gb >= 8


def test_an_idle_instance_of_the_wrong_kind_makes_room_for_a_launch(tmp_path: Path) -> None:
    """One instance slot, taken by an idle on-demand instance, while a Spot-only task waits:
    the idle instance is stopped at once, not after the idle timeout."""
    world = market_world(tmp_path)
    first = world.submit(preemptible=False)
    od = world.boot()
    assert od.market == "on-demand"
    world.scheduler.tick()
    aid = world.poll(od).assign[0].attempt_id
    world.report(od, aid, "complete")
    assert world.state(first) is State.COMPLETE
    waiting = world.submit(backend_parameters={"market_policy": "spot_only"})
    world.scheduler.tick()
    assert world.fleet.instance(od.id).state is InstanceState.TERMINATING  # type: ignore[union-attr]
    assert world.state(waiting) is State.QUEUED


def test_a_notice_moves_capsule_tasks_and_leaves_restart_ones_running(world: World) -> None:
    """`restart` is the retry-based baseline: its task runs on to the deadline (it may finish
    there) instead of being stopped at the notice and started over."""
    from capsule_runtime.protocol.messages import Notice

    moving = world.submit(cpu_cores=1)
    staying = world.submit(cpu_cores=1, backend_parameters={"recovery": "restart"})
    inst = world.boot()
    world.scheduler.tick()
    attempts = {a.task_id: a.attempt_id for a in world.poll(inst).assign}
    for aid in attempts.values():
        world.report(inst, aid, "running")
    world.dispatch.notice(inst, Notice(kind="terminate", time="2026-01-01T00:02:00Z"))
    assert world.fleet.attempt(attempts[moving]).data.checkpoint.reason == "reclaim"  # type: ignore[union-attr]
    assert world.fleet.attempt(attempts[staying]).data.checkpoint is None  # type: ignore[union-attr]


def test_a_container_is_limited_to_what_it_asked_for_else_to_its_instance(world: World) -> None:
    world.submit()
    world.submit(cpu_cores=1)
    inst = world.boot()  # registers 4 cores and 8 GB
    world.scheduler.tick()
    limits = sorted(
        ((a.limits or {}).get("cpu_cores"), (a.limits or {}).get("ram_gb"))
        for a in world.poll(inst).assign
    )
    assert limits == [(1.0, 8.0), (4.0, 8.0)]  # memory: neither asked, the instance's


def test_evacuated_work_is_placed_before_new_work(world: World) -> None:
    """A task whose instance was lost waits for room behind nobody: when room comes, it is
    placed before tasks queued after it was evacuated."""
    world.provider.cpu = 1  # one task per instance
    first_task = world.submit(cpu_cores=1)
    first = world.boot()
    world.scheduler.tick()
    aid = world.poll(first).assign[0].attempt_id
    world.report(first, aid, "running")
    world.provider.vanish(first.id)  # the machine vanished: its task must move
    world.scheduler.tick()
    fresh = [world.submit(cpu_cores=1) for _ in range(2)]  # queued after the evacuation
    second = world.boot()
    world.scheduler.tick()
    [assignment] = world.poll(second).assign
    assert assignment.task_id == first_task and assignment.attempt_id != aid
    assert all(world.state(t) is State.QUEUED for t in fresh)


# -- the provider boundary ---------------------------------------------------------------------


def provider_world(tmp: Path, provider: ShippedFakeProvider, **cfg: Any) -> World:
    world = World(tmp, **cfg)
    world.provider = provider  # type: ignore[assignment]
    world.scheduler = world.new_scheduler(provider)
    return world


def test_the_launch_record_is_kept_on_the_instance_row(world: World) -> None:
    world.submit()
    inst = world.boot()
    # the fake cloud names its machines itself: the row carries that id and its data
    assert inst.provider_id == "fake-0001" and inst.provider_id != inst.id
    assert inst.provider_data == {"region": "fake-1", "tag": inst.id}


def test_one_query_per_tick_for_the_whole_fleet(tmp_path: Path) -> None:
    provider = ShippedFakeProvider(
        capabilities=frozenset({Capability.SPOT, Capability.ON_DEMAND}), max_instances=3
    )
    world = provider_world(tmp_path, provider)
    for _ in range(3):
        world.submit(cpu_cores=4)
    for _ in range(3):
        world.boot()
    assert len(world.fleet.instances({InstanceState.READY})) == 3
    before = dict(provider.cloud.calls)
    world.scheduler.tick()
    assert provider.cloud.calls["query"] - before.get("query", 0) == 1


class BatchCountingProvider(ShippedFakeProvider):
    """The shipped fake, counting batched and single terminations."""

    def __init__(self) -> None:
        super().__init__(
            capabilities=frozenset({Capability.SPOT, Capability.ON_DEMAND}), max_instances=3
        )
        self.batches: list[list[str]] = []
        self.singles: list[str] = []

    def terminate(self, record: LaunchRecord) -> None:
        self.singles.append(record.provider_id)
        super().terminate(record)

    def terminate_many(self, records: Any) -> dict[str, Any]:
        self.batches.append([r.provider_id for r in records])
        self.singles.clear()
        results = super().terminate_many(records)  # the default: one terminate each
        self.singles.clear()
        return results


def test_instances_retired_together_are_terminated_in_one_call(tmp_path: Path) -> None:
    """Idle instances retired in one tick are stopped with one `terminate_many` (a cloud
    sends one TerminateInstances), not one call each."""
    provider = BatchCountingProvider()
    world = provider_world(tmp_path, provider)
    tasks = [world.submit(cpu_cores=4) for _ in range(3)]
    instances = [world.boot() for _ in range(3)]
    world.scheduler.tick()
    for inst in instances:
        for order in world.poll(inst).assign:
            world.report(inst, order.attempt_id, "complete")
    assert all(world.state(t) is State.COMPLETE for t in tasks)
    world.clock.advance(world.cfg.scheduler.idle_timeout_seconds + 1)
    for inst in instances:
        world.fleet.heartbeat(inst.id)
    world.scheduler.tick()
    assert {world.fleet.instance(i.id).state for i in instances} == {  # type: ignore[union-attr]
        InstanceState.TERMINATING
    }
    world.clock.advance(61)  # their agents never powered the machines off
    for inst in instances:
        world.fleet.heartbeat(inst.id)
    world.scheduler.tick()
    assert {world.fleet.instance(i.id).state for i in instances} == {  # type: ignore[union-attr]
        InstanceState.TERMINATED
    }
    machines = sorted(str(i.provider_id) for i in instances)
    assert [sorted(b) for b in provider.batches] == [machines]
    assert provider.singles == []
    assert all(provider.cloud.state(m) is CloudState.TERMINATED for m in machines)


def test_a_pool_without_capacity_is_quarantined_and_the_next_offer_tried(tmp_path: Path) -> None:
    cheap = Offer(
        instance_type="fake.large",
        market="spot",
        zone="z1",
        price_per_hour=0.05,
        cpu_cores=4,
        ram_gb=8,
        disk_gb=100,
    )
    next_best = Offer(
        instance_type="fake.large",
        market="spot",
        zone="z2",
        price_per_hour=0.06,
        cpu_cores=4,
        ram_gb=8,
        disk_gb=100,
    )
    provider = ShippedFakeProvider(offers=[cheap, next_best])
    provider.cloud.capacity[("fake.large", "z1", "spot")] = 0
    world = provider_world(tmp_path, provider, scheduler={"quarantine_seconds": 60})
    world.submit()
    world.scheduler.tick()
    rows = world.fleet.instances()
    assert [(r.zone, r.state) for r in rows] == [
        ("z1", InstanceState.TERMINATED),  # never started: no capacity
        ("z2", InstanceState.LAUNCHING),
    ]
    assert world.scheduler.quarantines.blocks(cheap)
    assert not world.scheduler.quarantines.blocks(next_best)
    assert world.scheduler.failed_launches == 0  # not a broken setup: no back-off

    # once the quarantine is over, the pool is tried again
    world.clock.advance(61)
    assert not world.scheduler.quarantines.blocks(cheap)


def test_a_failed_precheck_loses_the_launch(tmp_path: Path) -> None:
    provider = ShippedFakeProvider(precheck="no credentials")
    world = provider_world(tmp_path, provider)
    world.submit()
    world.scheduler.tick()
    [row] = world.fleet.instances()
    assert row.state is InstanceState.LOST and provider.launched == []
    world.scheduler.tick()
    assert len(world.fleet.instances()) == 1  # backing off, not launching every tick


def test_a_failed_query_loses_nothing(tmp_path: Path) -> None:
    from gateway.providers.base import ProviderError

    provider = ShippedFakeProvider(max_instances=1)
    world = provider_world(tmp_path, provider)
    world.submit()
    inst = world.boot()

    def failing(records: Any) -> Any:
        raise ProviderError("DescribeInstances: throttled")

    provider.query = failing  # type: ignore[method-assign]
    provider.vanish(inst.id)
    world.scheduler.tick()
    assert world.fleet.instance(inst.id).state is InstanceState.READY  # type: ignore[union-attr]


def test_prices_follow_the_offers_of_any_priced_provider(tmp_path: Path) -> None:
    provider = ShippedFakeProvider(max_instances=1)  # prices, no simulated market
    world = provider_world(tmp_path, provider, scheduler={"triggers_interval_seconds": 0})
    world.submit()
    inst = world.boot()
    assert inst.price_per_hour == 0.05
    provider.offer_list = [
        Offer(
            instance_type=o.instance_type,
            market=o.market,
            zone=o.zone,
            price_per_hour=0.07 if o.market == "spot" else 0.1,
            cpu_cores=4,
            ram_gb=8,
            disk_gb=100,
        )
        for o in provider.offer_list
    ]
    world.scheduler.tick()
    assert world.fleet.instance(inst.id).price_per_hour == 0.07  # type: ignore[union-attr]


def test_interrupt_needs_the_simulation_capability(tmp_path: Path) -> None:
    from gateway.providers.base import Unsupported, interrupter

    plain = ShippedFakeProvider(capabilities=frozenset({Capability.ON_DEMAND}))
    with pytest.raises(Unsupported, match="cannot simulate interruptions"):
        interrupter(plain)
    assert interrupter(ShippedFakeProvider()) is not None


def test_a_simulating_provider_draws_its_own_reclaims(tmp_path: Path) -> None:
    class Reclaiming(ShippedFakeProvider):
        armed = False

        def reclaims(self, instances: Any, dt_seconds: float) -> list[tuple[Any, float]]:
            return [(i, 30.0) for i in instances] if self.armed else []

    provider = Reclaiming(max_instances=1)  # no market: the provider decides alone
    world = provider_world(tmp_path, provider)
    t = world.submit()
    inst = world.boot()
    world.scheduler.tick()
    aid = world.poll(inst).assign[0].attempt_id
    world.report(inst, aid, "running")
    provider.armed = True
    world.clock.advance(1)  # reclaims are drawn for the time since the last tick
    world.scheduler.tick()
    row = world.fleet.instance(inst.id)
    assert row is not None and row.data.interruption is not None
    assert row.data.interruption.action == "terminate"
    assert world.fleet.attempt(aid).data.checkpoint.reason == "reclaim"  # type: ignore[union-attr]
    assert world.state(t) is State.RUNNING


def test_silence_counts_only_from_when_the_gateway_could_hear(world: World) -> None:
    """An agent whose last heartbeat is old when this scheduler starts (a gateway restart, or the
    end of a database outage) gets the whole heartbeat timeout from then before it is lost."""
    world.submit()
    inst = world.boot()
    timeout = world.cfg.scheduler.heartbeat_timeout_seconds
    world.clock.advance(10 * timeout)  # its heartbeat is long stale by then
    fresh = world.new_scheduler(world.provider)
    fresh.tick()
    assert world.fleet.instance(inst.id).state is InstanceState.READY  # type: ignore[union-attr]
    world.clock.advance(timeout + 1)
    fresh.tick()
    assert world.fleet.instance(inst.id).state is InstanceState.LOST  # type: ignore[union-attr]


class AdoptingProvider(FakeProvider):
    """A provider that finds the agents an earlier gateway process left (`left`)."""

    def __init__(self, left: set[str], cloud: FakeCloud) -> None:
        super().__init__()
        self.cloud = cloud  # the same machines the earlier process started
        self.max_instances = 2
        self.left = left

    def adopt(self, instance: Instance) -> bool:
        if instance.id not in self.left:
            return False
        self.launched.append(instance.id)
        return True


def test_restart_adopts_live_agents_and_loses_the_gone(tmp_path: Path) -> None:
    """A gateway that starts again keeps the instances whose agents still run: their attempts
    stay live and unchanged, and the downtime does not count against the heartbeat; an instance
    whose agent is gone is LOST and its task goes on elsewhere."""
    two = {"providers": {"local": {"max_instances": 2}}}
    w = World(tmp_path, **two)
    w.provider.max_instances = 2
    t1, t2 = w.submit(cpu_cores=4), w.submit(cpu_cores=4)
    kept = w.boot()
    w.scheduler.tick()
    [a1] = w.poll(kept).assign
    w.report(kept, a1.attempt_id, "running")
    gone = w.boot()
    assert gone.id != kept.id
    w.scheduler.tick()
    assert w.poll(gone).assign
    # the gateway was down longer than the heartbeat timeout
    again = World(tmp_path, **two)
    again.clock.advance(w.cfg.scheduler.heartbeat_timeout_seconds * 3)  # it starts that later
    provider = AdoptingProvider({kept.id}, w.provider.cloud)
    again.provider, again.scheduler = provider, again.new_scheduler(provider)
    again.scheduler._recover_on_start()
    losses.expire(again.scheduler, again.clock())
    assert again.fleet.instance(kept.id).state is InstanceState.READY  # type: ignore[union-attr]
    assert again.fleet.instance(gone.id).state is InstanceState.LOST  # type: ignore[union-attr]
    assert again.state(t1) is State.RUNNING
    assert [a.reason for a in again.fleet.attempts_of(t1)] == ["first"]
    assert again.fleet.attempts_of(t1)[0].phase is AttemptPhase.RUNNING
    assert [a.reason for a in again.fleet.attempts_of(t2)] == ["first", "lost"]
    # the adopted agent's reports go on against the new process, under the same attempt
    again.report(kept, a1.attempt_id, "complete")
    assert again.state(t1) is State.COMPLETE
