"""The scheduler lease on SQLite and PostgreSQL: of many gateways taking an expired lease at once
exactly one wins, and a takeover waits for the deposed leader's fenced transaction to end (so
no write of the old epoch lands after the new leader's first)."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest

from capsule_runtime.protocol.times import utcnow
from gateway.scheduler.leadership import LostLeadership, SchedulerLease
from gateway.store import open_database

GATEWAYS = 8


def test_one_of_many_takes_an_expired_lease(db_url: str) -> None:
    db = open_database(db_url)
    try:
        start = utcnow()
        assert SchedulerLease(db, "g-old", 5, lambda: start).hold()
        later: datetime = start + timedelta(seconds=6)
        leases = [SchedulerLease(db, f"g-{i}", 5, lambda: later) for i in range(GATEWAYS)]
        barrier = threading.Barrier(GATEWAYS)
        won: list[bool] = [False] * GATEWAYS

        def take(i: int) -> None:
            barrier.wait()
            won[i] = leases[i].hold()

        threads = [threading.Thread(target=take, args=(i,)) for i in range(GATEWAYS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sum(won) == 1
        assert [lease.epoch for lease in leases if lease.leading] == [2]
    finally:
        db.close()


def test_a_takeover_waits_for_the_fenced_transaction(db_url: str) -> None:
    db = open_database(db_url)
    try:
        start = utcnow()
        old = SchedulerLease(db, "g-old", 5, lambda: start)
        new = SchedulerLease(db, "g-new", 5, lambda: start + timedelta(seconds=6))
        assert old.hold()
        taken = threading.Event()
        with db.engine.begin() as conn:
            old.fence(conn)  # still the holder of epoch 1: its write goes ahead

            def take() -> None:
                if new.hold():
                    taken.set()

            taker = threading.Thread(target=take)
            taker.start()
            taker.join(0.5)
            assert not taken.is_set()  # waits for the lease row
        taker.join(60)
        assert taken.is_set() and new.epoch == 2
        with pytest.raises(LostLeadership), db.engine.begin() as conn:
            old.fence(conn)
    finally:
        db.close()
