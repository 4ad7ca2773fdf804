"""Reconciliation by tag with the aws provider (moto in server mode), at the scheduler level: a
gateway killed without stopping anything (SIGKILL: no park, no terminate, the provider object
and its memory gone) is replaced by a new scheduler and provider over the same database; it keeps
the machines whose agents run, gives up those that are gone, terminates the tagged machines no
row names, and launches nothing twice. Then the periodic sweep: a machine tagged with this
gateway's id that no row names is terminated after `orphan_grace_seconds`, not at once and not
only at start.

The invariant checked after every step: the live machines tagged with this gateway's id are
exactly the ones the live instance rows name (no leak, no duplicate)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.providers.aws import AwsProvider
from gateway.providers.base import LaunchRecord, LaunchSpec
from gateway.store.fleet import InstanceState
from gateway.tes.states import State
from tests.fixtures.aws_world import AwsWorld
from tests.fixtures.moto_server import MotoServer

pytestmark = pytest.mark.timeout(180)
TWO_CORES = {"cpu_cores": 2}  # an m5.large each


@pytest.fixture
def world(tmp_path: Path, moto: MotoServer) -> Iterator[AwsWorld]:
    w = AwsWorld(tmp_path, moto, orphan_grace_seconds=120, idle_seconds=3600)
    yield w
    w.close()


def live_rows(world: AwsWorld) -> set[str]:
    rows = world.fleet.instances({InstanceState.LAUNCHING, InstanceState.READY})
    return {r.provider_id or r.id for r in rows}


def live_machines(world: AwsWorld) -> set[str]:
    return {i["InstanceId"] for i in world.tagged()}


def submit(world: AwsWorld) -> str:
    return world.tasks.create({**world_task(), "resources": TWO_CORES}).id


def world_task() -> dict[str, object]:
    return {"executors": [{"image": "alpine", "command": ["sleep", "600"]}]}


def stray(world: AwsWorld, name: str, gateway_id: str | None = None) -> str:
    """A machine launched with this gateway's tag (or another's) that no row names."""
    other = world.new_provider()
    if gateway_id is not None:
        other.gateway_id = gateway_id
    offer = next(o for o in other.offers() if o.market == "on-demand")
    return other.launch(LaunchSpec(name, "tok", offer)).provider_id


def test_a_restarted_scheduler_adopts_the_live_and_terminates_the_orphans(
    world: AwsWorld,
) -> None:
    running_task = submit(world)
    a, credential = world.boot()
    world.scheduler.tick()
    (order,) = world.poll(a, credential).get_json()["assign"]
    world.call(
        a,
        credential,
        f"/attempts/{order['attempt_id']}/report",
        {"status": "running", "task_log": {"logs": [], "outputs": []}},
    )
    assert world.tasks.get(running_task, full=False).state is State.RUNNING  # type: ignore[union-attr]
    waiting_task = submit(world)  # does not fit beside the first: a second machine
    b = world.launching()
    assert live_machines(world) == live_rows(world) == {a.provider_id, b.provider_id}

    # SIGKILL: the old scheduler and provider are dropped as they are. Meanwhile B's machine
    # died before its agent registered, a machine launched without a stored row is left, and
    # another gateway's machine runs in the same account.
    assert b.provider_id is not None
    world.moto.client().terminate_instances(InstanceIds=[b.provider_id])
    orphan = stray(world, "inst-unstored")
    foreign = stray(world, "inst-foreign", gateway_id="gw-other")

    provider = world.new_provider()
    world.scheduler = world.new_scheduler(provider)
    world.clock.advance(5)
    world.scheduler._recover_on_start()
    assert world.fleet.instance(a.id).state is InstanceState.READY  # type: ignore[union-attr]
    assert world.fleet.instance(b.id).state is InstanceState.LOST  # type: ignore[union-attr]
    states = {
        i["InstanceId"]: i["State"]["Name"] for i in world.tagged(("shutting-down", "terminated"))
    }
    assert orphan in states
    assert foreign not in states and _state(world, foreign) == "running"  # not ours to end

    # the agent on A never noticed: its credential still works, its task runs on
    answer = world.poll(a, credential, running=[order["attempt_id"]])
    assert answer.status_code == 200 and answer.get_json()["shutdown"] is False
    assert world.tasks.get(running_task, full=False).state is State.RUNNING  # type: ignore[union-attr]

    # ticks: the waiting task gets one new machine (B's replacement), nothing else is launched
    for _ in range(5):
        world.clock.advance(2)
        world.poll(a, credential, running=[order["attempt_id"]])
        world.scheduler.tick()
    assert live_machines(world) == live_rows(world)
    assert len(live_machines(world)) == 2 and a.provider_id in live_machines(world)
    replacement = live_machines(world) - {a.provider_id}
    row = next(r for r in world.fleet.instances() if r.provider_id in replacement)
    assert row.id != b.id and world.tasks.get(waiting_task, full=False) is not None
    launched = {i["InstanceId"] for i in world.tagged(("pending", "running", "terminated"))}
    assert len(launched) == 4  # A, B, the orphan, and B's one replacement


def _state(world: AwsWorld, instance_id: str) -> str:
    (reservation,) = world.moto.client().describe_instances(InstanceIds=[instance_id])[
        "Reservations"
    ]
    return str(reservation["Instances"][0]["State"]["Name"])


def test_the_periodic_sweep_terminates_orphans_after_the_grace(world: AwsWorld) -> None:
    submit(world)
    a, credential = world.boot()
    world.scheduler._recover_on_start()  # the start-up sweep has run; the orphan comes later
    orphan = stray(world, "inst-late-orphan")
    foreign = stray(world, "inst-foreign", gateway_id="gw-other")
    for step in (0, 60, 59):  # 119 s: within the grace, the machine is left alone
        world.clock.advance(step)
        world.poll(a, credential)
        world.scheduler.tick()
        assert orphan in live_machines(world)
    world.clock.advance(2)
    world.poll(a, credential)
    world.scheduler.tick()
    assert live_machines(world) == live_rows(world) == {a.provider_id}
    assert _state(world, foreign) == "running"


def test_a_machine_named_by_a_record_is_never_swept(world: AwsWorld) -> None:
    """A launch whose row is not stored yet, or a caller that queries only some instances: a
    machine launched or named within the grace stays."""
    p: AwsProvider = world.new_provider()
    offer = next(o for o in p.offers() if o.market == "on-demand")
    kept = p.launch(LaunchSpec("inst-kept", "tok", offer))
    fresh = p.launch(LaunchSpec("inst-fresh", "tok", offer))
    for _ in range(4):  # 4 times 100 s: `kept` is named every time, `fresh` only at launch
        world.clock.advance(100)
        p.query([LaunchRecord("inst-kept", kept.zone, {})])  # named by its tag
    machines = live_machines(world)
    assert kept.provider_id in machines and fresh.provider_id not in machines
