"""The scheduler lease with a fake clock: one leader, renewal, takeover after expiry with a new
epoch, fencing of a deposed leader's writes, a restarted gateway taking its own lease back."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from capsule_runtime.protocol.times import utcnow
from gateway.scheduler.leadership import LostLeadership, SchedulerLease, gateway_id
from gateway.store import open_database
from gateway.store.database import Database


class FakeClock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return open_database(f"sqlite:///{tmp_path / 't.db'}")


def test_one_leader_renews_and_the_other_takes_over_after_expiry(db: Database) -> None:
    clock = FakeClock()
    a = SchedulerLease(db, "g-a", 10, clock)
    b = SchedulerLease(db, "g-b", 10, clock)
    assert a.hold() and a.epoch == 1
    assert not b.hold() and not b.leading
    for _ in range(5):  # renewed each tick: never expires while a ticks
        clock.advance(6)
        assert a.hold() and not b.hold()
    clock.advance(10.5)  # a stopped ticking (killed)
    assert b.hold() and b.epoch == 2
    assert not a.hold() and not a.leading  # a comes back: b leads


def test_a_deposed_leader_is_fenced(db: Database) -> None:
    clock = FakeClock()
    a = SchedulerLease(db, "g-a", 10, clock)
    b = SchedulerLease(db, "g-b", 10, clock)
    assert a.hold()
    with db.engine.begin() as conn:
        a.fence(conn)  # leads: passes
    clock.advance(11)  # a stalls past its lease; b takes over
    assert b.hold()
    with pytest.raises(LostLeadership), db.engine.begin() as conn:
        a.fence(conn)
    assert not a.leading
    with pytest.raises(LostLeadership), db.engine.begin() as conn:
        a.fence(conn)  # stays refused until it holds the lease again
    with db.engine.begin() as conn:
        b.fence(conn)


def test_a_restarted_gateway_takes_its_own_lease_back_at_once(db: Database) -> None:
    clock = FakeClock()
    assert SchedulerLease(db, "g-a", 10, clock).hold()
    again = SchedulerLease(db, "g-a", 10, clock)  # the same data dir, a new process
    assert again.hold() and again.epoch == 2
    assert not SchedulerLease(db, "g-b", 10, clock).hold()


def test_release_hands_over_at_the_next_tick(db: Database) -> None:
    clock = FakeClock()
    a = SchedulerLease(db, "g-a", 10, clock)
    b = SchedulerLease(db, "g-b", 10, clock)
    assert a.hold()
    a.release()
    assert b.hold() and b.epoch == 2


def test_gateway_id_is_kept(tmp_path: Path) -> None:
    first = gateway_id(tmp_path)
    assert first.startswith("g-") and gateway_id(tmp_path) == first


def test_a_deposed_scheduler_places_nothing(tmp_path: Path) -> None:
    """The scheduler of a gateway that lost the lease (stalled past it while another took over)
    has its placement rolled back: the task stays QUEUED for the new leader."""
    from gateway.tes.states import State
    from tests.fixtures.world import World

    w = World(tmp_path)
    clock = FakeClock()
    w.scheduler.lease = SchedulerLease(w.db, "g-a", 10, clock)
    assert w.scheduler._lead()
    first = w.submit()
    inst = w.boot()
    assert inst.owner == "g-a"
    w.scheduler.tick()
    assert w.state(first) is State.INITIALIZING  # placed while it led
    clock.advance(11)
    assert SchedulerLease(w.db, "g-b", 10, clock).hold()
    task = w.submit()
    with pytest.raises(LostLeadership):
        w.scheduler.tick()
    assert w.state(task) is State.QUEUED
    assert not w.fleet.attempts_of(task)
    assert not w.scheduler._lead()  # it follows from now on


def test_a_deposed_scheduler_retires_nothing(tmp_path: Path) -> None:
    """An idle instance is stopped only by the leader: a deposed scheduler's retire is rolled
    back (the new leader decides)."""
    from gateway.store.fleet import InstanceState
    from tests.fixtures.world import World

    w = World(tmp_path)
    clock = FakeClock()
    w.scheduler.lease = SchedulerLease(w.db, "g-a", 10, clock)
    assert w.scheduler._lead()
    w.submit()
    inst = w.boot()
    w.scheduler.tick()
    aid = w.poll(inst).assign[0].attempt_id
    w.report(inst, aid, "complete")
    w.clock.advance(w.cfg.scheduler.idle_timeout_seconds + 1)
    w.fleet.heartbeat(inst.id)  # the agent kept polling
    clock.advance(11)
    assert SchedulerLease(w.db, "g-b", 10, clock).hold()
    with pytest.raises(LostLeadership):
        w.scheduler.tick()
    assert w.fleet.instance(inst.id).state is InstanceState.READY  # type: ignore[union-attr]
