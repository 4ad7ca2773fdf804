"""An agent cut off from the gateway (a partition) while its machine runs on: the gateway gives
the instance up, but starts no second copy of its tasks until the machine is confirmed stopped
or its agent must have stopped them itself (agent.gateway_lost_seconds), and nothing the cut-off
agent says afterwards counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from capsule_runtime.protocol.messages import CapsuleReport
from gateway.dispatch import Fenced
from gateway.providers.base import CloudState, LaunchRecord
from gateway.scheduler.losses import fence_seconds
from gateway.store.fleet import InstanceState
from gateway.tes.states import AttemptPhase, State
from tests.fixtures.world import FakeProvider, World, running_with


class UnstoppableProvider(FakeProvider):
    """A cloud whose terminate calls do not take (yet): the machine keeps running."""

    def __init__(self) -> None:
        super().__init__()
        self.stoppable = False
        self.terminations = 0

    def terminate(self, record: LaunchRecord) -> None:
        self.terminations += 1
        if self.stoppable:
            super().terminate(record)


@pytest.fixture
def world(tmp_path: Path) -> World:
    w = World(tmp_path)
    w.provider = UnstoppableProvider()
    w.scheduler = w.new_scheduler(w.provider)
    return w


def unstoppable(world: World) -> UnstoppableProvider:
    assert isinstance(world.provider, UnstoppableProvider)
    return world.provider


def cut_off(world: World) -> tuple[str, str, str]:
    """A running task whose agent then falls silent past the heartbeat timeout."""
    inst, aid = running_with(world)
    task_id = world.fleet.attempt(aid).task_id  # type: ignore[union-attr]
    world.clock.advance(world.cfg.scheduler.heartbeat_timeout_seconds + 1)
    world.scheduler.tick()
    assert world.fleet.instance(inst.id).state is InstanceState.LOST  # type: ignore[union-attr]
    return inst.id, aid, task_id


def test_no_second_copy_while_the_machine_may_still_run_it(world: World) -> None:
    _, aid, task_id = cut_off(world)
    for _ in range(3):
        world.clock.advance(10)
        world.scheduler.tick()
    attempts = world.fleet.attempts_of(task_id)
    assert [a.id for a in attempts] == [aid]  # no recovery attempt yet
    assert attempts[0].phase is AttemptPhase.RUNNING
    assert world.state(task_id) is State.RUNNING
    assert unstoppable(world).terminations >= 2  # asked again while it runs
    events = [e for e in world.tasks.events(task_id) if e["kind"] == "fencing"]
    assert events and "never two copies" in events[0]["message"]


def test_recovered_as_soon_as_the_machine_is_stopped(world: World) -> None:
    inst_id, _, task_id = cut_off(world)
    unstoppable(world).stoppable = True
    world.clock.advance(10)
    world.scheduler.tick()
    attempts = world.fleet.attempts_of(task_id)
    assert attempts[0].phase is AttemptPhase.DONE
    assert [a.reason for a in attempts] == ["first", "lost"]
    assert attempts[1].data.exclude == [inst_id]


def test_recovered_once_the_agent_has_stopped_by_itself(world: World) -> None:
    _, _, task_id = cut_off(world)
    world.clock.advance(fence_seconds(world.scheduler) - 30)
    world.scheduler.tick()
    assert len(world.fleet.attempts_of(task_id)) == 1
    world.clock.advance(60)
    world.scheduler.tick()
    attempts = world.fleet.attempts_of(task_id)
    assert [a.reason for a in attempts] == ["first", "lost"]
    assert any(
        "stopped its tasks by now" in (e.get("message") or "") for e in world.tasks.events(task_id)
    )


def test_a_provider_that_cannot_be_asked_does_not_count_as_stopped(world: World) -> None:
    unstoppable(world).stoppable = True  # the terminate takes, but nobody can confirm it
    world.provider.cloud.machines.clear()  # (a query would say: gone)

    def broken(records: object) -> dict[str, CloudState | None]:
        from gateway.providers.base import ProviderError

        raise ProviderError("the cloud's API is down")

    world.provider.query = broken  # type: ignore[method-assign]
    _, aid, task_id = cut_off(world)
    world.clock.advance(10)
    world.scheduler.tick()
    assert [a.id for a in world.fleet.attempts_of(task_id)] == [aid]


def test_agents_that_never_give_up_are_not_waited_for(tmp_path: Path) -> None:
    """agent.gateway_lost_seconds 0: waiting would not end the copy; recovered at once."""
    w = World(tmp_path, agent={"gateway_lost_seconds": 0})
    w.provider = UnstoppableProvider()
    w.scheduler = w.new_scheduler(w.provider)
    _, _, task_id = cut_off(w)
    assert [a.reason for a in w.fleet.attempts_of(task_id)] == ["first", "lost"]


def test_nothing_a_lost_instances_agent_reports_counts(world: World) -> None:
    inst_id, aid, task_id = cut_off(world)
    inst = world.fleet.instance(inst_id)
    assert inst is not None
    with pytest.raises(Fenced, match="given up on"):
        world.report(inst, aid, "complete")
    with pytest.raises(Fenced, match="given up on"):
        world.dispatch.capsule(
            inst, aid, CapsuleReport(state="failed", capsule_id="c1", report_id="r1")
        )
    assert world.state(task_id) is State.RUNNING
    assert world.poll(inst).shutdown  # and its polls are told to stop


def test_a_long_poll_never_outwaits_the_heartbeat_timeout(tmp_path: Path) -> None:
    """A long poll records no heartbeat while it waits: it is cut to a third of the heartbeat
    timeout, so an agent waiting for orders is never taken for a silent one."""
    import time

    from capsule_runtime.protocol.messages import Poll

    w = World(tmp_path, scheduler={"heartbeat_timeout_seconds": 0.6})
    w.submit()
    inst = w.boot()
    started = time.monotonic()
    w.dispatch.poll(inst, Poll(running=[], received=[], wait_seconds=30))
    assert time.monotonic() - started < 5  # 0.2 s, not 30
