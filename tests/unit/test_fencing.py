"""Fencing and delivery in the dispatcher, in-process (the scripted agent of test_scheduler):
a superseded attempt, another instance's attempt or a LOST instance is refused; a resent report is
applied once; concurrent duplicates create one restore attempt; orders are sent again until the
agent acknowledges them; STARTING and CHECKPOINTING have deadlines."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from capsule_runtime.protocol.messages import (
    AttemptReport,
    CapsuleReport,
    Poll,
    Registration,
    Resources,
)
from gateway.dispatch import Fenced
from gateway.migration import Migrations
from gateway.scheduler.losses import OVERDUE_EVERY
from gateway.store.fleet import LIVE_PHASES, Instance, InstanceState
from gateway.tes.states import AttemptPhase, State
from tests.fixtures.world import World, running_with


@pytest.fixture
def world(tmp_path: Path) -> World:
    # agents never fall silent here: the deadlines under test are the attempts' own
    return World(tmp_path, scheduler={"heartbeat_timeout_seconds": 10**6})


def live(world: World, task_id: str) -> list[str]:
    return [a.id for a in world.fleet.attempts_of(task_id) if a.phase in LIVE_PHASES]


def migrating(world: World) -> tuple[str, Instance, str]:
    """A RUNNING task whose attempt checkpointed into a capsule to move (about to report
    `interrupted`)."""
    inst, aid = running_with(world)
    task_id = world.fleet.attempt(aid).task_id  # type: ignore[union-attr]
    request = Migrations(world.tasks, world.fleet, world.wakeups).request(task_id, stop=True)
    [order] = world.poll(inst, [aid]).checkpoint
    assert order.request_id == request["request_id"]
    world.dispatch.capsule(
        inst,
        aid,
        CapsuleReport(
            state="complete",
            capsule_id="c1",
            sequence=1,
            request_id=order.request_id,
            stop=True,
            reason="manual",
            manifest_key="k",
            manifest_sha256="0" * 64,
        ),
    )
    return task_id, inst, aid


def interrupted(report_id: str | None = None) -> AttemptReport:
    return AttemptReport(
        status="interrupted", task_log={"logs": [], "outputs": []}, report_id=report_id
    )


def test_a_resent_interrupted_creates_one_restore_attempt(world: World) -> None:
    task_id, inst, aid = migrating(world)
    world.dispatch.report(inst, aid, interrupted("r1"))
    world.dispatch.report(inst, aid, interrupted("r1"))  # its answer was lost: sent again
    attempts = world.fleet.attempts_of(task_id)
    assert len(attempts) == 2 and attempts[1].data.restore is True
    with pytest.raises(Fenced):  # another report for the settled attempt
        world.dispatch.report(inst, aid, interrupted("r2"))
    assert len(world.fleet.attempts_of(task_id)) == 2


@pytest.mark.parametrize("same_id", [True, False])
def test_concurrent_interrupted_reports_create_one_restore_attempt(
    world: World, same_id: bool
) -> None:
    task_id, inst, aid = migrating(world)
    outcomes: list[str] = []
    start = threading.Barrier(6)

    def send(n: int) -> None:
        start.wait()
        try:
            world.dispatch.report(inst, aid, interrupted("dup" if same_id else f"r{n}"))
            outcomes.append("ok")
        except Fenced:
            outcomes.append("fenced")

    threads = [threading.Thread(target=send, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    attempts = world.fleet.attempts_of(task_id)
    assert len(attempts) == 2, [a.reason for a in attempts]
    assert len(live(world, task_id)) == 1
    assert outcomes.count("ok") == (6 if same_id else 1)
    assert world.state(task_id) is State.RUNNING


def test_a_stale_complete_after_recovery_is_refused(world: World) -> None:
    """The instance was given up on (LOST) and the task recovered elsewhere: the old agent's
    late `complete` must not end the task whose recovery attempt is live."""
    inst, aid = running_with(world)
    task_id = world.fleet.attempt(aid).task_id  # type: ignore[union-attr]
    world.provider.vanish(inst.id)
    world.scheduler.tick()
    [recovery] = live(world, task_id)
    assert recovery != aid
    with pytest.raises(Fenced):
        world.report(inst, aid, "complete")
    assert world.state(task_id) is State.RUNNING
    assert live(world, task_id) == [recovery]
    with pytest.raises(Fenced):  # nor may it register again and take work
        world.dispatch.register(
            inst,
            Registration(
                agent_version="t",
                hostname="h",
                capacity=Resources(cpu_cores=4, ram_gb=8, disk_gb=1),
            ),
        )
    assert world.fleet.instance(inst.id).state is InstanceState.LOST  # type: ignore[union-attr]
    assert world.poll(inst).shutdown


def test_another_instances_attempt_is_refused(world: World) -> None:
    _, aid = running_with(world)
    task_id = world.fleet.attempt(aid).task_id  # type: ignore[union-attr]
    other = world.fleet.add_instance(
        provider="fake", instance_type="x", market="spot", zone="z1", price_per_hour=None,
        token_sha256="0" * 64,
    )  # fmt: skip
    for call in (
        lambda: world.report(other, aid, "complete"),
        lambda: world.dispatch.capsule(other, aid, CapsuleReport(state="failed", capsule_id="x")),
        lambda: world.dispatch.save_stream(other, aid, 0, "stdout", iter([b"x"])),
    ):
        with pytest.raises(Fenced):
            call()
    assert world.state(task_id) is State.RUNNING
    world.dispatch.poll(other, Poll(usage={aid: {"cpu_cores": 9.0}}, wait_seconds=0))
    assert world.fleet.attempt(aid).data.usage == []  # type: ignore[union-attr]


def test_a_capsule_from_a_superseded_attempt_is_refused(world: World) -> None:
    task_id, inst, aid = migrating(world)
    world.dispatch.report(inst, aid, interrupted())
    with pytest.raises(Fenced):
        world.dispatch.capsule(
            inst,
            aid,
            CapsuleReport(
                state="complete", capsule_id="late", manifest_key="k", manifest_sha256="1" * 64
            ),
        )
    assert [c.id for c in world.fleet.capsules_of(task_id)] == ["c1"]


def test_a_lost_assignment_is_sent_again_until_acknowledged(world: World) -> None:
    t = world.submit()
    inst = world.boot()
    world.scheduler.tick()
    [first] = world.poll(inst).assign  # this answer never reaches the agent
    [again] = world.poll(inst).assign
    assert again.attempt_id == first.attempt_id and world.state(t) is State.INITIALIZING
    assert world.poll(inst, [first.attempt_id]).assign == []  # acknowledged
    assert world.poll(inst).assign == []  # delivered: never again, even when not listed
    assert world.fleet.attempt(first.attempt_id).data.delivered  # type: ignore[union-attr]


def test_an_unacknowledged_assignment_is_recovered_elsewhere(
    world: World,
) -> None:
    t = world.submit()
    inst = world.boot()
    world.scheduler.tick()
    [lost] = world.poll(inst).assign
    world.clock.advance(world.cfg.scheduler.delivery_timeout_seconds + 1)
    world.scheduler.tick()
    assert world.fleet.instance(inst.id).state is InstanceState.READY  # type: ignore[union-attr]
    attempts = world.fleet.attempts_of(t)
    assert attempts[0].phase is AttemptPhase.DONE and attempts[1].reason == "lost"
    assert attempts[1].data.exclude == [inst.id]
    assert world.state(t) is State.INITIALIZING
    with pytest.raises(Fenced):  # the first agent's late start is refused
        world.report(inst, lost.attempt_id, "running")
    # and its poll tells it to stop the superseded attempt
    assert world.poll(inst, [lost.attempt_id]).cancel == [lost.attempt_id]


def test_a_checkpoint_order_is_sent_again_and_times_out(
    world: World,
) -> None:
    inst, aid = running_with(world)
    task_id = world.fleet.attempt(aid).task_id  # type: ignore[union-attr]
    Migrations(world.tasks, world.fleet, world.wakeups).request(task_id, stop=False)
    [order] = world.poll(inst, [aid]).checkpoint
    [again] = world.poll(inst, [aid]).checkpoint
    assert again.request_id == order.request_id
    assert world.poll(inst, [aid], [order.request_id]).checkpoint == []
    world.clock.advance(world.cfg.scheduler.checkpoint_timeout_seconds + 1)
    world.scheduler.tick()
    attempt = world.fleet.attempt(aid)
    assert attempt is not None and attempt.phase is AttemptPhase.RUNNING
    assert attempt.data.checkpoint is None
    events = [e for e in world.tasks.events(task_id) if e["kind"] == "checkpoint_failed"]
    assert events and "not answered" in events[-1]["message"]
    rec = world.tasks.get(task_id)
    assert rec and rec.logs and "not answered" in rec.logs[-1]["system_logs"][-1]
    # a late answer to the forgotten order is recorded and settles nothing
    world.dispatch.capsule(
        inst,
        aid,
        CapsuleReport(state="failed", capsule_id="x", request_id=order.request_id, error="slow"),
    )
    assert world.fleet.attempt(aid).phase is AttemptPhase.RUNNING  # type: ignore[union-attr]
    world.report(inst, aid, "complete")
    assert world.state(task_id) is State.COMPLETE


def test_an_acknowledged_cancel_does_not_cut_the_long_poll_short(world: World) -> None:
    inst, aid = running_with(world)
    task_id = world.fleet.attempt(aid).task_id  # type: ignore[union-attr]
    assert world.tasks.transition(task_id, State.CANCELING).applied
    began = time.monotonic()
    orders = world.dispatch.poll(inst, Poll(running=[aid], wait_seconds=5))
    assert orders.cancel == [aid] and time.monotonic() - began < 4  # news: at once
    began = time.monotonic()
    orders = world.dispatch.poll(inst, Poll(running=[aid], received=[aid], wait_seconds=0.5))
    assert orders.cancel == [aid] and time.monotonic() - began >= 0.45  # known: held


def test_attempts_of_a_restarted_agent_go_on_elsewhere(
    world: World,
) -> None:
    """An agent registers once per process: one that registers again holds nothing it was
    sent before, so those attempts are recovered instead of waiting forever."""
    inst, aid = running_with(world)
    task_id = world.fleet.attempt(aid).task_id  # type: ignore[union-attr]
    world.clock.advance(1)  # the new agent process registers after the attempt was sent
    world.dispatch.register(
        inst,
        Registration(
            agent_version="t", hostname="h", capacity=Resources(cpu_cores=4, ram_gb=8, disk_gb=1)
        ),
    )
    world.clock.advance(OVERDUE_EVERY + 1)  # the next look for overdue work
    world.scheduler.tick()
    attempts = world.fleet.attempts_of(task_id)
    assert attempts[0].phase is AttemptPhase.DONE and attempts[1].reason == "lost"
    assert world.state(task_id) is State.RUNNING
    with pytest.raises(Fenced):
        world.report(inst, aid, "complete")
