"""Limits with the aws provider (moto in server mode, the real scheduler on a ManualClock):
`max_instances` counts every live machine with this gateway's tag, rows or not;
`max_hourly_spend` holds the fleet at what it may cost (the scheduler launches no more, and a
launch beyond it is refused with the reason); an instance idle for `idle_seconds` is stopped and
its machine terminated."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from gateway.providers.base import CapacityUnavailable, LaunchSpec, ProviderError
from gateway.store.fleet import InstanceState
from gateway.tes.states import State
from tests.fixtures.aws_world import AwsWorld
from tests.fixtures.moto_server import MotoServer

pytestmark = pytest.mark.timeout(180)
WHOLE_MACHINE = {"cpu_cores": 2}  # an m5.large each


def world_with(tmp_path: Path, moto: MotoServer, **aws: Any) -> AwsWorld:
    return AwsWorld(tmp_path, moto, **aws)


def submit_whole(world: AwsWorld) -> str:
    task = {"executors": [{"image": "alpine", "command": ["true"]}], "resources": WHOLE_MACHINE}
    return world.tasks.create(task).id


def live_machines(world: AwsWorld) -> set[str]:
    return {i["InstanceId"] for i in world.tagged()}


def run_ticks(world: AwsWorld, credentials: dict[str, str], n: int = 4) -> None:
    """Ticks 2 s apart; every READY instance's agent polls between them, and a launched one
    registers with its user-data's token."""
    for _ in range(n):
        for inst in world.fleet.instances({InstanceState.LAUNCHING}):
            if inst.provider_id is not None and inst.id not in credentials:
                answer = world.register(inst, world.token_of(inst))
                credentials[inst.id] = answer.get_json()["token"]
        for inst in world.fleet.instances({InstanceState.READY}):
            world.poll(inst, credentials[inst.id])
        world.scheduler.tick()
        world.clock.advance(2)


def test_the_spend_limit_holds_the_fleet(
    tmp_path: Path, moto: MotoServer, worlds: list[AwsWorld], caplog: pytest.LogCaptureFixture
) -> None:
    # m5.large on demand: 0.096 USD/hour (the built-in list price); two would cost 0.192
    world = world_with(tmp_path, moto, max_instances=4, max_hourly_spend=0.15)
    worlds.append(world)
    for _ in range(3):
        submit_whole(world)
    credentials: dict[str, str] = {}
    with caplog.at_level(logging.WARNING, logger="gateway.providers.aws.provider"):
        run_ticks(world, credentials, 6)
    assert len(live_machines(world)) == 1
    assert len(world.tasks.ids_in_state(State.QUEUED, limit=10)) == 2  # waiting, not failed
    assert world.provider.hourly_spend() == pytest.approx(0.096)
    assert world.provider.max_instances == 1
    assert "would exceed providers.aws.max_hourly_spend (0.15)" in caplog.text
    offer = next(o for o in world.provider.offers() if o.market == "on-demand")
    with pytest.raises(CapacityUnavailable, match=r"max_hourly_spend is 0\.15"):
        world.provider.launch(LaunchSpec("inst-over", "tok", offer))
    assert len(live_machines(world)) == 1  # refused before RunInstances


def test_the_count_limit_counts_machines_without_rows(
    tmp_path: Path, moto: MotoServer, worlds: list[AwsWorld]
) -> None:
    world = world_with(tmp_path, moto, max_instances=2)
    worlds.append(world)
    for _ in range(3):
        submit_whole(world)
    credentials: dict[str, str] = {}
    run_ticks(world, credentials, 8)
    assert len(live_machines(world)) == 2  # the scheduler's own count (rows)
    # a machine with this gateway's tag and no row (an orphan within its grace) counts too
    fresh = world.new_provider()
    offer = next(o for o in fresh.offers() if o.market == "on-demand")
    with pytest.raises(ProviderError, match="max_instances is 2"):
        fresh.launch(LaunchSpec("inst-third", "tok", offer))
    assert len(live_machines(world)) == 2


def test_an_idle_instance_is_terminated_after_idle_seconds(
    tmp_path: Path, moto: MotoServer, worlds: list[AwsWorld]
) -> None:
    world = world_with(tmp_path, moto, idle_seconds=100)
    worlds.append(world)
    world.submit()
    inst, credential = world.boot()
    world.scheduler.tick()
    (order,) = world.poll(inst, credential).get_json()["assign"]
    done = {"status": "complete", "task_log": {"logs": [], "outputs": []}}
    assert (
        world.call(inst, credential, f"/attempts/{order['attempt_id']}/report", done).status_code
        == 200
    )
    for _ in range(2):  # 98 s idle: kept
        world.clock.advance(49)
        assert world.poll(inst, credential).get_json()["shutdown"] is False
        world.scheduler.tick()
    assert world.fleet.instance(inst.id).state is InstanceState.READY  # type: ignore[union-attr]
    world.clock.advance(3)
    world.scheduler.tick()
    assert world.fleet.instance(inst.id).state is InstanceState.TERMINATING  # type: ignore[union-attr]
    assert world.poll(inst, credential).get_json()["shutdown"] is True
    # the agent would power the machine off; it does not here, so the scheduler terminates it
    world.clock.advance(61)
    world.scheduler.tick()
    assert world.fleet.instance(inst.id).state is InstanceState.TERMINATED  # type: ignore[union-attr]
    assert live_machines(world) == set()
