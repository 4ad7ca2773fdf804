"""Instances and attempts: where tasks run, and each placement of a task on an instance.

An attempt's phase changes only through `FleetStore.set_phase`, a compare-and-swap against the
attempt-phase table in gateway.tes.states that records an event, like task states.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from gateway.store.database import Database
from gateway.store.events import write_event
from gateway.store.ids import new_id
from gateway.store.schema import attempts, capsules, instances, tasks
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


class CapsuleConflict(ValueError):
    """A capsule id that another capsule holds already (not a resend of the same report)."""


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
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Capsule:
    id: str
    task_id: str
    attempt_id: str | None
    sequence: int
    state: str  # complete | corrupt | deleted
    store_key: str  # the manifest's key
    size_bytes: int | None
    manifest_sha256: str | None
    parent_id: str | None
    created_time: str
    data: dict[str, Any]


def _capsule(row: Any) -> Capsule:
    return Capsule(
        id=row.id,
        task_id=row.task_id,
        attempt_id=row.attempt_id,
        sequence=row.sequence,
        state=row.state,
        store_key=row.store_key,
        size_bytes=row.size_bytes,
        manifest_sha256=row.manifest_sha256,
        parent_id=row.parent_id,
        created_time=row.created_time,
        data=json.loads(row.data) if row.data else {},
    )


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
        data=json.loads(row.data) if row.data else {},
    )


_LIVE_LOAD = (
    select(attempts, tasks.c.spec)
    .join(tasks, tasks.c.id == attempts.c.task_id)
    .where(
        attempts.c.phase.in_([p.value for p in LIVE_PHASES]),
        attempts.c.instance_id.is_not(None),
    )
    .order_by(attempts.c.start_time)
)


_TOP_NUMBER = select(func.max(attempts.c.number)).where(attempts.c.task_id == bindparam("task_id"))
_INSERT_ATTEMPT = insert(attempts)  # values as parameters: built once, not per call


def _next_number(conn: Connection, task_id: str) -> int:
    top = conn.execute(_TOP_NUMBER, {"task_id": task_id}).scalar()
    return int(top or 0) + 1


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

    def set_price(self, instance_id: str, price_per_hour: float) -> None:
        """A Spot instance's price moved (the market's price of its pool)."""
        with self.db.engine.begin() as conn:
            conn.execute(
                update(instances)
                .where(instances.c.id == instance_id)
                .values(price_per_hour=price_per_hour)
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
        self,
        conn: Connection,
        task_id: str,
        instance: Instance | None,
        reason: str = "first",
        data: dict[str, Any] | None = None,
        message: str | None = None,
    ) -> str:
        """Create the next attempt of a task, inside the caller's transaction: on `instance`, or
        (None) waiting for the scheduler to place it (a restore, a recovery)."""
        number = _next_number(conn, task_id)
        attempt_id = new_id("a-")
        now = self.now()
        placement = (
            {
                "instance_id": instance.id,
                "market": instance.market,
                "instance_type": instance.instance_type,
                "zone": instance.zone,
                "price_per_hour": instance.price_per_hour,
            }
            if instance is not None
            else {"instance_id": None}
        )
        conn.execute(
            _INSERT_ATTEMPT,
            {
                "id": attempt_id,
                "task_id": task_id,
                "number": number,
                "phase": AttemptPhase.PROVISIONING.value,
                "reason": reason,
                "start_time": now,
                "data": json.dumps(data) if data is not None else None,
                **placement,
            },
        )
        where = f"on {instance.id}" if instance is not None else "waits for an instance"
        self._event(
            conn,
            task_id,
            "attempt",
            attempt_id=attempt_id,
            instance_id=placement["instance_id"],
            phase=AttemptPhase.PROVISIONING,
            message=message or f"attempt {number} ({reason}) {where}",
            data=data,
            now=now,
        )
        return attempt_id

    def add_pending_attempt(
        self, task_id: str, reason: str, data: dict[str, Any], message: str | None = None
    ) -> str:
        """The next attempt of a task, not yet on an instance (a restore the scheduler places)."""
        with self.db.engine.begin() as conn:
            return self.add_attempt(conn, task_id, None, reason, data, message)

    def unplaced_attempts(self) -> list[Attempt]:
        query = (
            select(attempts)
            .where(
                attempts.c.phase == AttemptPhase.PROVISIONING.value,
                attempts.c.instance_id.is_(None),
            )
            .order_by(attempts.c.start_time)
        )
        with self.db.engine.connect() as conn:
            return [_attempt(r) for r in conn.execute(query)]

    def place_attempt(self, attempt_id: str, instance: Instance) -> bool:
        """Put an unplaced attempt on an instance (compare-and-swap on the empty instance)."""
        with self.db.engine.begin() as conn:
            result = conn.execute(
                update(attempts)
                .where(attempts.c.id == attempt_id, attempts.c.instance_id.is_(None))
                .values(
                    instance_id=instance.id,
                    start_time=self.now(),  # billed from here, at this instance's price
                    market=instance.market,
                    instance_type=instance.instance_type,
                    zone=instance.zone,
                    price_per_hour=instance.price_per_hour,
                )
            )
            if result.rowcount != 1:
                return False
            task_id = conn.execute(
                select(attempts.c.task_id).where(attempts.c.id == attempt_id)
            ).scalar()
            self._event(
                conn,
                task_id,
                "attempt",
                attempt_id=attempt_id,
                instance_id=instance.id,
                message=f"placed on {instance.id} ({instance.instance_type}, {instance.market})",
            )
        return True

    def update_attempt_data(self, attempt_id: str, **changes: Any) -> dict[str, Any]:
        """Merge `changes` into the attempt's data (a key set to None is removed)."""
        with self.db.engine.begin() as conn:
            raw = conn.execute(select(attempts.c.data).where(attempts.c.id == attempt_id)).scalar()
            data = json.loads(raw) if raw else {}
            for key, value in changes.items():
                if value is None:
                    data.pop(key, None)
                else:
                    data[key] = value
            conn.execute(
                update(attempts).where(attempts.c.id == attempt_id).values(data=json.dumps(data))
            )
        return data

    # -- capsules -----------------------------------------------------------------------------

    def add_capsule(
        self,
        *,
        capsule_id: str,
        task_id: str,
        attempt_id: str,
        sequence: int,
        store_key: str,
        manifest_sha256: str,
        size_bytes: int,
        parent_id: str | None,
        data: dict[str, Any],
    ) -> bool:
        """Record a complete capsule. False: this very capsule (same id, task, attempt and
        manifest) is recorded already, a report sent again; CapsuleConflict: the id is taken by
        another capsule."""
        try:
            with self.db.engine.begin() as conn:
                conn.execute(
                    insert(capsules).values(
                        id=capsule_id,
                        task_id=task_id,
                        attempt_id=attempt_id,
                        sequence=sequence,
                        state="complete",
                        store_key=store_key,
                        size_bytes=size_bytes,
                        manifest_sha256=manifest_sha256,
                        parent_id=parent_id,
                        created_time=self.now(),
                        data=json.dumps(data),
                    )
                )
        except IntegrityError:
            with self.db.engine.connect() as conn:
                row = conn.execute(select(capsules).where(capsules.c.id == capsule_id)).first()
            if row is None:
                raise  # not the id: another constraint
            same = (row.task_id, row.attempt_id, row.store_key, row.manifest_sha256)
            if same == (task_id, attempt_id, store_key, manifest_sha256):
                return False
            raise CapsuleConflict(capsule_id) from None
        return True

    def capsules_of(self, task_id: str, states: set[str] | None = None) -> list[Capsule]:
        """Newest first."""
        query = select(capsules).where(capsules.c.task_id == task_id)
        if states is not None:
            query = query.where(capsules.c.state.in_(sorted(states)))
        with self.db.engine.connect() as conn:
            rows = conn.execute(query.order_by(capsules.c.sequence.desc())).all()
        return [_capsule(r) for r in rows]

    def set_capsule_state(self, capsule_id: str, state: str) -> None:
        with self.db.engine.begin() as conn:
            conn.execute(update(capsules).where(capsules.c.id == capsule_id).values(state=state))

    def next_capsule_sequence(self, task_id: str) -> int:
        with self.db.engine.connect() as conn:
            top = conn.execute(
                select(func.max(capsules.c.sequence)).where(capsules.c.task_id == task_id)
            ).scalar()
        return int(top or 0) + 1

    def tasks_with_capsules_to_delete(self, terminal: set[str], limit: int = 100) -> list[str]:
        """Tasks in a terminal state that still have capsules in the store."""
        query = (
            select(capsules.c.task_id)
            .join(tasks, tasks.c.id == capsules.c.task_id)
            .where(capsules.c.state != "deleted", tasks.c.state.in_(sorted(terminal)))
            .distinct()
            .limit(limit)
        )
        with self.db.engine.connect() as conn:
            return [r.task_id for r in conn.execute(query)]

    def mark_capsules_deleted(self, task_id: str) -> None:
        with self.db.engine.begin() as conn:
            conn.execute(
                update(capsules).where(capsules.c.task_id == task_id).values(state="deleted")
            )

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

    def live_load(
        self, instance_id: str | None = None
    ) -> list[tuple[Attempt, dict[str, Any] | None]]:
        """Every live attempt on an instance (on `instance_id`, when given) with its task's spec,
        in one query (what the scheduler counts against each instance's capacity), oldest
        first."""
        query = _LIVE_LOAD
        if instance_id is not None:
            query = query.where(attempts.c.instance_id == instance_id)
        with self.db.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [(_attempt(r), json.loads(r.spec) if r.spec else None) for r in rows]

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
