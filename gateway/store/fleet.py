"""Instances and attempts: where tasks run, and each placement of a task on an instance.

An attempt's phase changes only through `FleetStore.change_phase` (or `set_phase`, its own
transaction), checked against the attempt-phase table in gateway.tes.states and recorded as an
event, like task states.

Every change of an attempt row first takes the row (`lock_attempt`: an UPDATE that bumps its
`version`), then reads it: on PostgreSQL that holds the row lock, on SQLite the database's write
lock, until the transaction ends. So a read-modify-write of an attempt (its data, its phase, an
agent report with the task transition and the next attempt it causes) is never interleaved with
another: no lost update, and the checks made on what was read still hold at commit.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import lru_cache
from typing import Any, Unpack

from sqlalchemy import Connection, bindparam, func, insert, select, update

from capsule_runtime.protocol.tes import TesTask
from capsule_runtime.protocol.times import Clock, rfc3339, utcnow
from gateway.store.database import Database
from gateway.store.events import write_event
from gateway.store.fleet_data import AttemptChanges, AttemptData, InstanceData, changed
from gateway.store.ids import new_id
from gateway.store.schema import attempts, capsules, instances, tasks
from gateway.tes.states import AttemptPhase, CapsuleState, can_change_phase

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
    data: InstanceData
    # what the provider returned at launch (None/empty until then, and on rows from before)
    provider_id: str | None = None
    provider_data: dict[str, Any] = field(default_factory=dict)
    owner: str | None = None  # the gateway that launched or adopted it (scheduler leadership)


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
    data: AttemptData = field(default_factory=AttemptData)
    version: int = 0
    report_ids: tuple[str, ...] = ()

    @property
    def live(self) -> bool:
        return self.phase in LIVE_PHASES


@dataclass(frozen=True)
class Capsule:
    id: str
    task_id: str
    attempt_id: str | None
    sequence: int
    state: CapsuleState
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
        state=CapsuleState(row.state),
        store_key=row.store_key,
        size_bytes=row.size_bytes,
        manifest_sha256=row.manifest_sha256,
        parent_id=row.parent_id,
        created_time=row.created_time,
        data=json.loads(row.data) if row.data else {},
    )


# The scheduler reads every live instance and attempt each tick, and most rows' JSON has not
# changed since the last one: each distinct document is parsed once. The models are frozen (a
# change is a new row value, never an edit in place), so sharing one parse is safe. Bounded:
# an attempt's data holds at most USAGE_SAMPLES usage samples (a few KiB), so a few thousand
# entries stay within tens of MiB.
@lru_cache(maxsize=4096)
def _instance_data(raw: str) -> InstanceData:
    return InstanceData.model_validate_json(raw)


@lru_cache(maxsize=4096)
def _attempt_data(raw: str) -> AttemptData:
    return AttemptData.model_validate_json(raw)


@lru_cache(maxsize=2048)
def _task_document(raw: str) -> TesTask:
    return TesTask.model_validate_json(raw)


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
        data=_instance_data(row.data) if row.data else InstanceData(),
        provider_id=row.provider_id,
        provider_data=json.loads(row.provider_data) if row.provider_data else {},
        owner=row.owner,
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
        data=_attempt_data(row.data) if row.data else AttemptData(),
        version=row.version,
        report_ids=tuple(json.loads(row.report_ids)) if row.report_ids else (),
    )


REPORT_IDS_KEPT = 64  # report ids remembered per attempt (an agent retries one report at a time)

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
_LOCK_ATTEMPT = (
    update(attempts)
    .where(attempts.c.id == bindparam("lock_id"))
    .values(version=attempts.c.version + 1)
)
_GET_ATTEMPT = select(attempts).where(attempts.c.id == bindparam("id"))


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
        data: InstanceData | None = None,
        instance_id: str | None = None,
        owner: str | None = None,
        conn: Connection | None = None,
    ) -> Instance:
        """A LAUNCHING instance (in the caller's transaction, `conn`, when given: the scheduler
        fences it with its leadership epoch)."""
        now = self.now()
        iid = instance_id or new_id("i-")
        with self.db.engine.begin() if conn is None else nullcontext(conn) as conn:
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
                    data=json.dumps(data.dump() if data is not None else {}),
                    owner=owner,
                )
            )
            self._event(conn, None, "instance", instance_id=iid, message="launching", now=now)
            row = conn.execute(select(instances).where(instances.c.id == iid)).first()
        return _instance(row)

    def set_owner(self, instance_id: str, owner: str | None) -> None:
        """The gateway that drives the instance from now on (it adopted it)."""
        with self.db.engine.begin() as conn:
            conn.execute(update(instances).where(instances.c.id == instance_id).values(owner=owner))

    def instance(self, instance_id: str) -> Instance | None:
        with self.db.engine.connect() as conn:
            row = conn.execute(select(instances).where(instances.c.id == instance_id)).first()
        return _instance(row) if row else None

    def instance_state(self, conn: Connection, instance_id: str) -> InstanceState | None:
        """The instance's state as the caller's transaction sees it (None: no such instance)."""
        value = conn.execute(
            select(instances.c.state).where(instances.c.id == instance_id)
        ).scalar()
        return InstanceState(value) if value is not None else None

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
        self,
        instance_id: str,
        state: InstanceState,
        data: InstanceData | None = None,
        *,
        expect: set[InstanceState] | None = None,
        conn: Connection | None = None,
        token_sha256: str | None = None,
    ) -> bool:
        """Set the instance's state (only from a state in `expect`, when given: a
        compare-and-swap; in the caller's transaction, `conn`, when given). False when
        `expect` refused it. `token_sha256`: the instance's token changes with it (a one-time
        registration token exchanged for the agent's credential)."""
        now = self.now()
        values: dict[str, Any] = {"state": state.value, "updated_time": now}
        if data is not None:
            values["data"] = json.dumps(data.dump())
        if token_sha256 is not None:
            values["token_sha256"] = token_sha256
        query = update(instances).where(instances.c.id == instance_id)
        if expect is not None:
            query = query.where(instances.c.state.in_(sorted(s.value for s in expect)))
        with self.db.engine.begin() if conn is None else nullcontext(conn) as conn:
            if conn.execute(query.values(**values)).rowcount != 1:
                return False
            self._event(
                conn, None, "instance", instance_id=instance_id, message=state.value, now=now
            )
        return True

    def set_launch_record(
        self, instance_id: str, provider_id: str, zone: str, provider_data: dict[str, Any]
    ) -> None:
        """Keep what the provider returned at launch (its id, the zone it chose, its data): a
        later gateway process finds, queries and terminates the machine with it."""
        with self.db.engine.begin() as conn:
            conn.execute(
                update(instances)
                .where(instances.c.id == instance_id)
                .values(
                    provider_id=provider_id,
                    zone=zone,
                    provider_data=json.dumps(provider_data),
                )
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
        data: AttemptData | None = None,
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
                "data": json.dumps(data.dump()) if data is not None else None,
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
            data=data.dump() if data is not None else None,
            now=now,
        )
        return attempt_id

    def add_pending_attempt(
        self,
        task_id: str,
        reason: str,
        data: AttemptData,
        message: str | None = None,
        conn: Connection | None = None,
    ) -> str:
        """The next attempt of a task, not yet on an instance (a restore the scheduler places);
        in the caller's transaction when `conn` is given."""
        if conn is not None:
            return self.add_attempt(conn, task_id, None, reason, data, message)
        with self.db.engine.begin() as own:
            return self.add_attempt(own, task_id, None, reason, data, message)

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

    def place_attempt(
        self, attempt_id: str, instance: Instance, conn: Connection | None = None
    ) -> bool:
        """Put an unplaced attempt on an instance (compare-and-swap on the empty instance); in
        the caller's transaction, `conn`, when given."""
        with self.db.engine.begin() if conn is None else nullcontext(conn) as conn:
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

    def update_attempt_data(
        self,
        attempt_id: str,
        *,
        conn: Connection | None = None,
        **changes: Unpack[AttemptChanges],
    ) -> AttemptData:
        """Set fields of the attempt's data (one set to None is removed), with the row taken
        first (`lock_attempt`): concurrent updates of different fields all survive. In the
        caller's transaction when `conn` is given. Returns the data written (empty and nothing
        written when the attempt does not exist)."""
        if conn is None:
            with self.db.engine.begin() as own:
                return self.update_attempt_data(attempt_id, conn=own, **changes)
        attempt = self.lock_attempt(conn, attempt_id)
        if attempt is None:
            return AttemptData()
        return self.write_attempt_data(conn, attempt, **changes)

    def write_attempt_data(
        self, conn: Connection, attempt: Attempt, **changes: Unpack[AttemptChanges]
    ) -> AttemptData:
        """`update_attempt_data` on an attempt already taken in this transaction."""
        data = changed(attempt.data, changes)
        conn.execute(
            update(attempts).where(attempts.c.id == attempt.id).values(data=json.dumps(data.dump()))
        )
        return data

    def lock_attempt(self, conn: Connection, attempt_id: str) -> Attempt | None:
        """Take the attempt's row for the rest of `conn`'s transaction (bumping its version),
        then read it: what this returns stays true until the transaction ends."""
        if conn.execute(_LOCK_ATTEMPT, {"lock_id": attempt_id}).rowcount != 1:
            return None
        row = conn.execute(_GET_ATTEMPT, {"id": attempt_id}).first()
        return _attempt(row) if row else None

    def remember_report(self, conn: Connection, attempt: Attempt, report_id: str) -> None:
        """Note that the agent report `report_id` was applied to `attempt` (taken in `conn`)."""
        kept = [*attempt.report_ids, report_id][-REPORT_IDS_KEPT:]
        conn.execute(
            update(attempts).where(attempts.c.id == attempt.id).values(report_ids=json.dumps(kept))
        )

    def newest_attempt_number(self, conn: Connection, task_id: str) -> int:
        return _next_number(conn, task_id) - 1

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
        conn: Connection | None = None,
    ) -> bool:
        """Record a complete capsule (in the caller's transaction, `conn`, when given). False:
        this very capsule (same id, task, attempt and manifest) is recorded already, a report
        sent again; CapsuleConflict: the id is taken by another capsule. The caller holds its
        attempt's row lock, so one attempt's reports cannot race each other here."""
        with self.db.engine.begin() if conn is None else nullcontext(conn) as conn_:
            row = conn_.execute(select(capsules).where(capsules.c.id == capsule_id)).first()
            if row is not None:
                same = (row.task_id, row.attempt_id, row.store_key, row.manifest_sha256)
                if same == (task_id, attempt_id, store_key, manifest_sha256):
                    return False
                raise CapsuleConflict(capsule_id)
            conn_.execute(
                insert(capsules).values(
                    id=capsule_id,
                    task_id=task_id,
                    attempt_id=attempt_id,
                    sequence=sequence,
                    state=CapsuleState.COMPLETE.value,
                    store_key=store_key,
                    size_bytes=size_bytes,
                    manifest_sha256=manifest_sha256,
                    parent_id=parent_id,
                    created_time=self.now(),
                    data=json.dumps(data),
                )
            )
        return True

    def capsules_of(self, task_id: str, states: set[CapsuleState] | None = None) -> list[Capsule]:
        """Newest first."""
        query = select(capsules).where(capsules.c.task_id == task_id)
        if states is not None:
            query = query.where(capsules.c.state.in_(sorted(s.value for s in states)))
        with self.db.engine.connect() as conn:
            rows = conn.execute(query.order_by(capsules.c.sequence.desc())).all()
        return [_capsule(r) for r in rows]

    def set_capsule_state(
        self, capsule_id: str, state: CapsuleState, conn: Connection | None = None
    ) -> None:
        with self.db.engine.begin() if conn is None else nullcontext(conn) as conn_:
            conn_.execute(
                update(capsules).where(capsules.c.id == capsule_id).values(state=state.value)
            )

    def capsule_exists(self, conn: Connection, capsule_id: str) -> bool:
        query = select(capsules.c.id).where(capsules.c.id == capsule_id)
        return conn.execute(query).first() is not None

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
            .where(
                capsules.c.state != CapsuleState.DELETED.value, tasks.c.state.in_(sorted(terminal))
            )
            .distinct()
            .limit(limit)
        )
        with self.db.engine.connect() as conn:
            return [r.task_id for r in conn.execute(query)]

    def mark_capsules_deleted(self, task_id: str) -> None:
        with self.db.engine.begin() as conn:
            conn.execute(
                update(capsules)
                .where(capsules.c.task_id == task_id)
                .values(state=CapsuleState.DELETED.value)
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

    def live_load(self, instance_id: str | None = None) -> list[tuple[Attempt, TesTask | None]]:
        """Every live attempt on an instance (on `instance_id`, when given) with its task,
        in one query (what the scheduler counts against each instance's capacity), oldest
        first."""
        query = _LIVE_LOAD
        if instance_id is not None:
            query = query.where(attempts.c.instance_id == instance_id)
        with self.db.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [(_attempt(r), _task_document(r.spec) if r.spec else None) for r in rows]

    def set_phase(
        self,
        attempt_id: str,
        phase: AttemptPhase,
        *,
        expect: set[AttemptPhase] | None = None,
        message: str | None = None,
        data: dict[str, Any] | None = None,
        conn: Connection | None = None,
    ) -> bool:
        """Move the attempt to `phase` if the table allows it (and its phase is in `expect`,
        when given), in its own transaction or the caller's `conn`. False: refused."""
        if conn is None:
            with self.db.engine.begin() as own:
                return self.set_phase(
                    attempt_id, phase, expect=expect, message=message, data=data, conn=own
                )
        attempt = self.lock_attempt(conn, attempt_id)
        if attempt is None or (expect is not None and attempt.phase not in expect):
            return False
        return self.change_phase(conn, attempt, phase, message=message, data=data) is not None

    def change_phase(
        self,
        conn: Connection,
        attempt: Attempt,
        phase: AttemptPhase,
        *,
        message: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> Attempt | None:
        """Move an attempt taken in this transaction (`lock_attempt`) to `phase`, with its event;
        the attempt as it is now, or None when the table refuses the change."""
        src = attempt.phase
        if not can_change_phase(src, phase):
            return None
        now = self.now()
        values: dict[str, Any] = {"phase": phase.value}
        if phase is AttemptPhase.DONE:
            values["end_time"] = now
        conn.execute(update(attempts).where(attempts.c.id == attempt.id).values(**values))
        self._event(
            conn,
            attempt.task_id,
            "phase",
            attempt_id=attempt.id,
            instance_id=attempt.instance_id,
            phase=phase,
            message=message or f"{src.value} → {phase.value}",
            data=data,
            now=now,
        )
        return replace(attempt, phase=phase, end_time=values.get("end_time", attempt.end_time))

    def _event(self, conn: Connection, task_id: str | None, kind: str, **fields: Any) -> None:
        fields.setdefault("time", fields.pop("now", None) or self.now())
        write_event(conn, task_id=task_id, kind=kind, **fields)
