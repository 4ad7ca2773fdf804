"""FleetStore on SQLite and PostgreSQL: concurrent read-modify-writes of one attempt all survive
(each takes the row first), and a phase change is applied once however many race for it."""

from __future__ import annotations

import threading

from gateway.store import TaskStore, open_database
from gateway.store.fleet import FleetStore
from gateway.store.fleet_data import AttemptData, UsageSample
from gateway.tes.states import AttemptPhase

SPEC = {"executors": [{"image": "alpine", "command": ["true"]}]}
WRITERS, WRITES = 20, 10  # 200 read-modify-writes, each adding one sample


def test_concurrent_attempt_data_updates_are_never_lost(db_url: str) -> None:
    db = open_database(db_url)
    try:
        tasks, fleet = TaskStore(db), FleetStore(db)
        task = tasks.create(SPEC)
        aid = fleet.add_pending_attempt(task.id, reason="first", data=AttemptData())
        errors: list[BaseException] = []
        start = threading.Barrier(WRITERS)

        def write(i: int) -> None:
            start.wait()
            try:
                for j in range(WRITES):
                    with db.engine.begin() as conn:
                        taken = fleet.lock_attempt(conn, aid)
                        assert taken is not None
                        sample = UsageSample(time=f"{i}-{j}")
                        fleet.write_attempt_data(conn, taken, usage=[*taken.data.usage, sample])
            except BaseException as exc:  # reported below, with the lost writes
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(i,)) for i in range(WRITERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert errors == []
        attempt = fleet.attempt(aid)
        assert attempt is not None
        assert len({u.time for u in attempt.data.usage}) == WRITERS * WRITES
        assert attempt.version >= WRITERS * WRITES
    finally:
        db.close()


def test_a_phase_change_racing_itself_applies_once(db_url: str) -> None:
    db = open_database(db_url)
    try:
        tasks, fleet = TaskStore(db), FleetStore(db)
        task = tasks.create(SPEC)
        aid = fleet.add_pending_attempt(task.id, reason="first", data=AttemptData())
        won: list[bool] = []
        start = threading.Barrier(8)

        def change() -> None:
            start.wait()
            won.append(
                fleet.set_phase(aid, AttemptPhase.STARTING, expect={AttemptPhase.PROVISIONING})
            )

        threads = [threading.Thread(target=change) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(won) == [False] * 7 + [True]
        phases = [e for e in tasks.events(task.id) if e["kind"] == "phase"]
        assert len(phases) == 1
    finally:
        db.close()
