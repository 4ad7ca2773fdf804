"""Instances and attempts: where tasks run, and each placement of a task on an instance.

An attempt's phase changes only through `FleetStore.set_phase`, a compare-and-swap against the
attempt-phase table in gateway.tes.states that records an event, like task states.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from gateway.store.database import Database
from gateway.store.events import write_event
from gateway.store.ids import new_id
from gateway.store.schema import attempts, instances
from gateway.tes.states import AttemptPhase, can_change_phase
from gateway.tes.times import Clock, rfc3339, utcnow

LIVE_PHASES = frozenset(
    {
        AttemptPhase.PROVISIONING,
        AttemptPhase.STARTING,
        AttemptPhase.RUNNING,
        AttemptPhase.CHECKPOINTING,
        AttemptPhase.RESTORING,
    }
)


class InstanceState(StrEnum):
    LAUNCHING = "LAUNCHING"  # asked of the provider, agent not registered yet
    READY = "READY"  # agent registered and polling
    TERMINATING = "TERMINATING"
    TERMINATED = "TERMINATED"
    LOST = "LOST"  # stopped answering


@dataclass(frozen=True)
class Instance:
    id: str
    provider: str
    instance_type: str
    market: str
    zone: str
    state: InstanceState
    price_per_hour: float | None
    created_time: str
    updated_time: str
    last_heartbeat: str | None
    data: dict[str, Any]


@dataclass(frozen=True)
class Attempt:
    id: str
    task_id: str
    number: int
    instance_id: str | None
    phase: AttemptPhase
    reason: str | None
    start_time: str | None
    end_time: str | None


def _instance(row: Any) -> Instance:
    return Instance(
        id=row.id,
        provider=row.provider,
        instance_type=row.instance_type,
        market=row.market,
        zone=row.zone,
        state=InstanceState(row.state),
        price_per_hour=row.price_per_hour,
        created_time=row.created_time,
        updated_time=row.updated_time,
        last_heartbeat=row.last_heartbeat,
        data=json.loads(row.data) if row.data else {},
    )


def _attempt(row: Any) -> Attempt:
    return Attempt(
        id=row.id,
        task_id=row.task_id,
        number=row.number,
        instance_id=row.instance_id,
        phase=AttemptPhase(row.phase),
        reason=row.reason,
        start_time=row.start_time,
        end_time=row.end_time,
    )


class FleetStore:
    def __init__(self, db: Database, clock: Clock = utcnow):
        self.db = db
        self.clock = clock

    def now(self) -> str:
        return rfc3339(self.clock())

    # -- instances ----------------------------------------------------------------------------

    def add_instance(
        self,
        *,
        provider: str,
        instance_type: str,
        market: str,
        zone: str,
        price_per_hour: float | None,
        token_sha256: str,
        data: dict[str, Any] | None = None,
        instance_id: str | None = None,
    ) -> Instance:
        now = self.now()
        iid = instance_id or new_id("i-")
        with self.db.engine.begin() as conn:
            conn.execute(
                insert(instances).values(
                    id=iid,
                    provider=provider,
                    instance_type=instance_type,
                    market=market,
                    zone=zone,
                    state=InstanceState.LAUNCHING.value,
                    price_per_hour=price_per_hour,
                    token_sha256=token_sha256,
                    created_time=now,
                    updated_time=now,
                    data=json.dumps(data or {}),
                )
            )
            self._event(conn, None, "instance", instance_id=iid, message="launching", now=now)
        found = self.instance(iid)
        assert found is not None
        return found

    def instance(self, instance_id: str) -> Instance | None:
        with self.db.engine.connect() as conn:
            row = conn.execute(select(instances).where(instances.c.id == instance_id)).first()
        return _instance(row) if row else None

    def token_sha256(self, instance_id: str) -> str | None:
        with self.db.engine.connect() as conn:
            return conn.execute(
                select(instances.c.token_sha256).where(instances.c.id == instance_id)
            ).scalar()

    def instances(self, states: set[InstanceState] | None = None) -> list[Instance]:
        query = select(instances).order_by(instances.c.created_time)
        if states is not None:
            query = query.where(instances.c.state.in_([s.value for s in states]))
        with self.db.engine.connect() as conn:
            return [_instance(r) for r in conn.execute(query).all()]

    def set_instance_state(
        self, instance_id: str, state: InstanceState, data: dict[str, Any] | None = None
    ) -> None:
        now = self.now()
        values: dict[str, Any] = {"state": state.value, "updated_time": now}
        if data is not None:
            values["data"] = json.dumps(data)
        with self.db.engine.begin() as conn:
            conn.execute(update(instances).where(instances.c.id == instance_id).values(**values))
            self._event(
                conn, None, "instance", instance_id=instance_id, message=state.value, now=now
            )

    def heartbeat(self, instance_id: str) -> None:
        with self.db.engine.begin() as conn:
            conn.execute(
                update(instances)
                .where(instances.c.id == instance_id)
                .values(last_heartbeat=self.now())
            )

    # -- attempts -----------------------------------------------------------------------------

    def add_attempt(
        self, conn: Connection, task_id: str, instance: Instance, reason: str = "first"
    ) -> str:
        """Create the next attempt of a task on an instance, inside the caller's transaction."""
        number = (
            conn.execute(
                select(func.max(attempts.c.number)).where(attempts.c.task_id == task_id)
            ).scalar()
            or 0
        ) + 1
        attempt_id = new_id("a-")
        now = self.now()
        conn.execute(
            insert(attempts).values(
                id=attempt_id,
                task_id=task_id,
                number=number,
                instance_id=instance.id,
                phase=AttemptPhase.PROVISIONING.value,
                reason=reason,
                market=instance.market,
                instance_type=instance.instance_type,
                zone=instance.zone,
                price_per_hour=instance.price_per_hour,
                start_time=now,
            )
        )
        self._event(
            conn,
            task_id,
            "attempt",
            attempt_id=attempt_id,
            instance_id=instance.id,
            phase=AttemptPhase.PROVISIONING,
            message=f"attempt {number} ({reason}) on {instance.id}",
            now=now,
        )
        return attempt_id

    def attempt(self, attempt_id: str) -> Attempt | None:
        with self.db.engine.connect() as conn:
            row = conn.execute(select(attempts).where(attempts.c.id == attempt_id)).first()
        return _attempt(row) if row else None

    def attempts_of(self, task_id: str) -> list[Attempt]:
        with self.db.engine.connect() as conn:
            rows = conn.execute(
                select(attempts).where(attempts.c.task_id == task_id).order_by(attempts.c.number)
            ).all()
        return [_attempt(r) for r in rows]

    def last_attempt_end(self, instance_id: str) -> str | None:
        with self.db.engine.connect() as conn:
            return conn.execute(
                select(func.max(attempts.c.end_time)).where(attempts.c.instance_id == instance_id)
            ).scalar()

    def live_attempts(self, instance_id: str | None = None) -> list[Attempt]:
        query = select(attempts).where(attempts.c.phase.in_([p.value for p in LIVE_PHASES]))
        if instance_id is not None:
            query = query.where(attempts.c.instance_id == instance_id)
        with self.db.engine.connect() as conn:
            return [_attempt(r) for r in conn.execute(query.order_by(attempts.c.start_time))]

    def set_phase(
        self,
        attempt_id: str,
        phase: AttemptPhase,
        *,
        expect: set[AttemptPhase] | None = None,
        message: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> bool:
        with self.db.engine.begin() as conn:
            row = conn.execute(
                select(attempts.c.phase, attempts.c.task_id, attempts.c.instance_id).where(
                    attempts.c.id == attempt_id
                )
            ).first()
            if row is None:
                return False
            src = AttemptPhase(row.phase)
            if (expect is not None and src not in expect) or not can_change_phase(src, phase):
                return False
            now = self.now()
            values: dict[str, Any] = {"phase": phase.value}
            if phase is AttemptPhase.DONE:
                values["end_time"] = now
            result = conn.execute(
                update(attempts)
                .where(attempts.c.id == attempt_id, attempts.c.phase == src.value)
                .values(**values)
            )
            if result.rowcount != 1:
                return False
            self._event(
                conn,
                row.task_id,
                "phase",
                attempt_id=attempt_id,
                instance_id=row.instance_id,
                phase=phase,
                message=message or f"{src.value} → {phase.value}",
                data=data,
                now=now,
            )
            return True

    def _event(self, conn: Connection, task_id: str | None, kind: str, **fields: Any) -> None:
        fields.setdefault("time", fields.pop("now", None) or self.now())
        write_event(conn, task_id=task_id, kind=kind, **fields)
