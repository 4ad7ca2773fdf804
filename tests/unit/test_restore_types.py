"""Compatible instance types chosen before a launch (gateway.scheduler.compat.restore_types): a
provider that knows its types' processors (the fake one here, from a table; aws from
DescribeInstanceTypes) names those that can restore a capsule taken on the source's type, and
the scheduler launches, plans and moves only onto those; a restore none of the offered types
can take is said once in the task's events, and nothing is launched for it."""

from __future__ import annotations

from pathlib import Path

from capsule_runtime.protocol.messages import CapsuleReport
from gateway.providers.base import Offer
from gateway.providers.fake import FakeProvider
from gateway.tes.states import MarketType
from tests.fixtures.world import World, running_with

INTEL = "intel.large"
GRAVITON = "graviton.large"
COMPATIBLE = {INTEL: frozenset({INTEL}), GRAVITON: frozenset({GRAVITON})}


def spot(itype: str, price: float, zone: str = "fake-1a") -> Offer:
    return Offer(
        instance_type=itype,
        market=MarketType.SPOT,
        zone=zone,
        price_per_hour=price,
        cpu_cores=4,
        ram_gb=8,
        disk_gb=100,
    )


def world(tmp: Path, **cfg: object) -> tuple[World, FakeProvider]:
    """A world whose provider offers an Intel type (cheapest at first) and a Graviton one, and
    knows which restores which; and that provider."""
    w = World(tmp, **cfg)
    fake = FakeProvider(
        offers=[spot(INTEL, 0.05), spot(GRAVITON, 0.08)], max_instances=3, compatible=COMPATIBLE
    )
    w.provider = fake  # type: ignore[assignment]  # the shipped one, with prices
    w.scheduler = w.new_scheduler(fake)
    return w, fake


def moved(w: World) -> str:
    """A task ran on an Intel instance, left capsule c1 and moved: it waits to be restored
    elsewhere. Its id."""
    first, aid = running_with(w)
    assert first.instance_type == INTEL
    w.dispatch.capsule(
        first,
        aid,
        CapsuleReport(
            state="complete", capsule_id="c1", sequence=1, manifest_key="k", manifest_sha256="s"
        ),
    )
    w.report(first, aid, "interrupted")
    return w.fleet.attempt(aid).task_id  # type: ignore[union-attr]


def test_a_restore_launches_only_a_type_that_can_run_its_capsule(tmp_path: Path) -> None:
    w, fake = world(tmp_path)
    task_id = moved(w)
    # Graviton is the cheapest now: a fresh task would go there, the restore may not
    fake.offer_list = [spot(INTEL, 0.09), spot(GRAVITON, 0.01)]
    before = len(fake.specs)
    w.scheduler.tick()
    launched = fake.specs[before:]
    assert [s.offer.instance_type for s in launched] == [INTEL]
    assert launched[0].types == frozenset({INTEL})  # a provider choosing types keeps to them
    assert not [e for e in w.tasks.events(task_id) if e["kind"] == "no_compatible_offer"]


def test_no_compatible_offer_is_said_once_and_nothing_launched(tmp_path: Path) -> None:
    w, fake = world(tmp_path)
    task_id = moved(w)
    fake.offer_list = [spot(GRAVITON, 0.01)]
    before = len(fake.specs)
    for _ in range(3):
        w.scheduler.tick()
        w.clock.advance(5)
    assert fake.specs[before:] == []  # no machine that could not restore it
    [said] = [e for e in w.tasks.events(task_id) if e["kind"] == "no_compatible_offer"]
    assert INTEL in said["message"] and "nothing is launched" in said["message"]
    # a compatible type offered again: the restore launches there
    fake.offer_list = [spot(GRAVITON, 0.01), spot(INTEL, 0.2, "fake-1b")]
    w.scheduler.tick()
    assert [s.offer.instance_type for s in fake.specs[before:]] == [INTEL]


def test_a_provider_that_cannot_tell_launches_the_cheapest(tmp_path: Path) -> None:
    w, fake = world(tmp_path)
    fake.compatible = None  # local and fake by default: the agent's CPU check only
    moved(w)
    fake.offer_list = [spot(INTEL, 0.09), spot(GRAVITON, 0.01)]
    before = len(fake.specs)
    w.scheduler.tick()
    launched = fake.specs[before:]
    assert [(s.offer.instance_type, s.types) for s in launched] == [(GRAVITON, None)]


def test_a_cost_move_goes_only_to_a_compatible_pool(tmp_path: Path) -> None:
    w, fake = world(
        tmp_path,
        scheduler={
            "cost_migration": {"enabled": True, "min_interval_seconds": 0, "max_price": 0.1},
            "rightsizing": {"enabled": False},
        },
    )
    inst, aid = running_with(w)
    assert inst.instance_type == INTEL
    # its pool's price rises above max_price; only Graviton is cheaper: no move
    fake.offer_list = [spot(INTEL, 0.5), spot(GRAVITON, 0.02)]
    w.clock.advance(2)
    w.poll(inst, running=[aid])
    w.scheduler.tick()
    attempt = w.fleet.attempt(aid)
    assert attempt is not None and attempt.data.checkpoint is None
    assert w.fleet.instance(inst.id).price_per_hour == 0.5  # type: ignore[union-attr]
    # a cheaper Intel pool appears: the move goes there
    fake.offer_list.append(spot(INTEL, 0.04, "fake-1b"))
    w.clock.advance(2)
    w.poll(inst, running=[aid])
    w.scheduler.tick()
    attempt = w.fleet.attempt(aid)
    assert attempt is not None and attempt.data.checkpoint is not None
    plan = attempt.data.checkpoint.plan
    assert plan is not None and (plan.instance_type, plan.zone) == (INTEL, "fake-1b")
