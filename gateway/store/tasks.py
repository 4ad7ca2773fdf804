"""The task repository: create, read, list (keyset pages), and the one compare-and-swap that
changes a task's state and records the event.

Every state change in tescape goes through `TaskStore.transition`: it checks the transition table
(`gateway.tes.states`), updates the row only if its version is still the one it read, and writes
an `events` row in the same transaction. A lost race is retried against the new state.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from sqlalchemy import Connection, Engine, and_, bindparam, exists, insert, select, text, update

from capsule_runtime.protocol.redact import redact_lines
from capsule_runtime.protocol.tasklog import drop_unstarted
from capsule_runtime.protocol.tes import TesTask
from capsule_runtime.protocol.times import Clock, rfc3339, utcnow
from gateway.store.database import Database
from gateway.store.events import read_events, write_event
from gateway.store.group_commit import GroupCommit
from gateway.store.ids import new_id
from gateway.store.schema import events, task_tags, tasks
from gateway.tes.states import State, can_transition

CAS_RETRIES = 8
# Statements built once: building `select(...).where(...)` or `.values(...)` per call costs about
# as much CPU as running it. Executed with a list of rows, each is one multi-row statement.
_INSERT_TASKS = insert(tasks).returning(tasks.c.id, tasks.c.seq)
_INSERT_TAGS = insert(task_tags)
_INSERT_EVENTS = insert(events)  # the rows `write_event` would write, several at once
# PostgreSQL: a batch in one statement, its rows passed as JSON arrays. Run in autocommit mode,
# where one statement is one transaction, it costs one round trip instead of five (BEGIN, tasks,
# tags, events, COMMIT), each of which costs the server more CPU than SQLite's whole insert.
_INSERT_TASKS_POSTGRESQL = text(
    """
WITH t AS (
  INSERT INTO tasks (id, owner, name, state, creation_time, updated_time, spec, logs)
  SELECT * FROM json_to_recordset(CAST(:tasks AS json)) AS r(id text, owner text, name text,
    state text, creation_time text, updated_time text, spec text, logs text)
  RETURNING id, seq
), tags AS (
  INSERT INTO task_tags (task_seq, key, value)
  SELECT t.seq, g.key, g.value
  FROM json_to_recordset(CAST(:tags AS json)) AS g(id text, key text, value text) JOIN t USING (id)
), events AS (
  INSERT INTO events (task_id, time, kind, to_state, message)
  SELECT * FROM json_to_recordset(CAST(:events AS json)) AS e(task_id text, time text, kind text,
    to_state text, message text)
)
SELECT id, seq FROM t
"""
)
_MINIMAL = (tasks.c.seq, tasks.c.id, tasks.c.state, tasks.c.owner)
_GET_MINIMAL = select(*_MINIMAL).where(tasks.c.id == bindparam("id"))
_GET_FULL = select(
    *_MINIMAL, tasks.c.name, tasks.c.creation_time, tasks.c.spec, tasks.c.logs
).where(tasks.c.id == bindparam("id"))

_CAS_READ = select(tasks.c.state, tasks.c.version, tasks.c.logs).where(
    tasks.c.id == bindparam("id")
)
_CAS_WRITE = update(tasks).where(
    tasks.c.id == bindparam("cas_id"), tasks.c.version == bindparam("cas_version")
)
_IN_STATE = (
    select(*_MINIMAL, tasks.c.name, tasks.c.creation_time, tasks.c.spec, tasks.c.logs)
    .where(tasks.c.state == bindparam("state"))
    .order_by(tasks.c.seq)
    .limit(bindparam("limit"))
)


class TaskNotFound(LookupError):
    pass


@dataclass(frozen=True)
class TaskRecord:
    seq: int
    id: str
    state: State
    owner: str = ""
    name: str | None = None
    creation_time: str | None = None
    spec: dict[str, Any] | None = None  # the stored document, as the API echoes it
    logs: list[dict[str, Any]] | None = None

    @cached_property
    def task(self) -> TesTask | None:
        """The task document, typed: what the scheduler and the dispatcher read (None when
        this record was read without it)."""
        return TesTask.model_validate(self.spec) if self.spec is not None else None


@dataclass(frozen=True)
class Transition:
    """What `transition` did. `applied` is False when the table or `expect` refused it."""

    applied: bool
    task_id: str
    from_state: State
    to_state: State


@dataclass(frozen=True)
class _NewTask:
    row: dict[str, Any]  # the `tasks` row
    tags: dict[str, str]
    warnings: tuple[str, ...]


def _insert_tasks(conn: Connection, new: list[_NewTask]) -> list[int]:
    """Insert tasks with their tags and events in the caller's transaction; their seqs."""
    seqs = {r.id: r.seq for r in conn.execute(_INSERT_TASKS, [t.row for t in new])}
    tags, evs = _tags_and_events(new, seqs)
    if tags:
        conn.execute(_INSERT_TAGS, tags)
    conn.execute(_INSERT_EVENTS, evs)
    return [seqs[t.row["id"]] for t in new]


def _insert_tasks_postgresql(conn: Connection, new: list[_NewTask]) -> list[int]:
    """`_insert_tasks` as one statement: atomic by itself, on a connection in autocommit mode."""
    tags, evs = _tags_and_events(new, None)
    params = {"tasks": [t.row for t in new], "tags": tags, "events": evs}
    rows = conn.execute(_INSERT_TASKS_POSTGRESQL, {k: json.dumps(v) for k, v in params.items()})
    seqs = {r.id: r.seq for r in rows}
    return [seqs[t.row["id"]] for t in new]


def _tags_and_events(
    new: list[_NewTask], seqs: dict[str, int] | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Tag rows (by seq, or by task id where seqs are not known yet) and event rows."""
    tags: list[dict[str, Any]] = []
    evs: list[dict[str, Any]] = []
    for t in new:
        task_id, now = t.row["id"], t.row["creation_time"]
        ref = {"task_seq": seqs[task_id]} if seqs is not None else {"id": task_id}
        tags += [{**ref, "key": k, "value": v} for k, v in t.tags.items()]
        evs.append(_event_row(task_id, now, "created", State.QUEUED.value, None))
        evs += [_event_row(task_id, now, "warning", None, w) for w in t.warnings]
    return tags, evs


def _event_row(
    task_id: str, now: str, kind: str, to_state: str | None, message: str | None
) -> dict[str, Any]:
    return {"task_id": task_id, "time": now, "kind": kind, "to_state": to_state, "message": message}


@dataclass(frozen=True)
class TaskPage:
    records: list[TaskRecord]
    next_seq: int | None  # pass back as `before_seq` for the next page


def _record(row: Any, full: bool) -> TaskRecord:
    if not full:
        return TaskRecord(seq=row.seq, id=row.id, state=State(row.state))
    return TaskRecord(
        seq=row.seq,
        id=row.id,
        state=State(row.state),
        owner=row.owner,
        name=row.name,
        creation_time=row.creation_time,
        spec=json.loads(row.spec),
        logs=json.loads(row.logs) if row.logs else None,
    )


def _prefix_upper(prefix: str) -> str | None:
    """The smallest string greater than every string starting with `prefix` (codepoint order)."""
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        if last < 0x10FFFF:
            return "".join(chars) + chr(last + 1)
    return None


# What the store calls on the TaskLogs of a task reaching a terminal state, in the transaction
# that ends it: (conn, task_id, logs) → the logs to store (gateway.telemetry.on_task_end adds
# the task's telemetry to a task the gateway itself ends: cancelled, lost, failed to place).
FinalLogs = Callable[[Connection, str, list[dict[str, Any]]], list[dict[str, Any]]]


class TaskStore:
    def __init__(self, db: Database, clock: Clock = utcnow, on_end: FinalLogs | None = None):
        self.db = db
        self.clock = clock
        self.on_end = on_end
        self._reads: Engine
        if db.dialect == "postgresql":
            # One statement needs no BEGIN/COMMIT (or ROLLBACK) round trips around it. (SQLite
            # reads open no transaction, and switching modes would cost a PRAGMA per checkout.)
            autocommit = db.engine.execution_options(isolation_level="AUTOCOMMIT")
            self._reads = autocommit
            self._creates = GroupCommit(autocommit, _insert_tasks_postgresql)
        else:
            self._reads = db.engine
            self._creates = GroupCommit(db.engine, _insert_tasks)

    def now(self) -> str:
        return rfc3339(self.clock())

    # -- create / read ------------------------------------------------------------------------

    def create(
        self,
        spec: dict[str, Any],
        owner: str = "",
        warnings: Iterable[str] = (),
        logs: list[dict[str, Any]] | None = None,
    ) -> TaskRecord:
        """Commit a new QUEUED task with its tags, a `created` event and one `warning` event per
        warning. Concurrent creates are committed together (`GroupCommit`); this returns once
        the task is committed."""
        task_id = new_id()
        now = self.now()
        row = {
            "id": task_id,
            "owner": owner,
            "name": spec.get("name"),
            "state": State.QUEUED.value,
            "creation_time": now,
            "updated_time": now,
            "spec": json.dumps(spec, separators=(",", ":")),
            "logs": _logs_json(logs) if logs else None,
        }
        notes = tuple(redact_lines(warnings))  # events: secrets masked, as write_event does
        seq = self._creates.write(_NewTask(row, spec.get("tags") or {}, notes))
        return TaskRecord(
            seq=seq,
            id=task_id,
            state=State.QUEUED,
            owner=owner,
            name=spec.get("name"),
            creation_time=now,
            spec=spec,
            logs=logs,
        )

    def get(self, task_id: str, owner: str | None = None, full: bool = True) -> TaskRecord | None:
        """The task, or None when it does not exist or `owner` is given and is not its owner."""
        with self._reads.connect() as conn:
            row = conn.execute(_GET_FULL if full else _GET_MINIMAL, {"id": task_id}).first()
        if row is None or (owner is not None and row.owner != owner):
            return None
        return _record(row, full)

    def page(
        self,
        *,
        owner: str | None = None,
        name_prefix: str | None = None,
        state: State | None = None,
        tags: dict[str, str] | None = None,
        limit: int = 256,
        before_seq: int | None = None,
        full: bool = False,
    ) -> TaskPage:
        """Newest first. Keyset pagination: the next page starts below the last seq returned."""
        cols = [tasks.c.seq, tasks.c.id, tasks.c.state]
        if full:
            cols += [tasks.c.owner, tasks.c.name, tasks.c.creation_time, tasks.c.spec, tasks.c.logs]
        query = select(*cols)
        order = tasks.c.seq
        tags = dict(tags or {})
        lead = next((k for k, v in tags.items() if v != ""), None)
        if lead is not None:
            # Walk the tag index (key, value, task_seq) newest first and join each task: a page
            # costs the same however few or many tasks carry the tag. As an EXISTS filter, SQLite
            # scanned the whole table, newest first, for a workflow's few tasks.
            on = and_(
                task_tags.c.task_seq == tasks.c.seq,
                task_tags.c.key == lead,
                task_tags.c.value == tags.pop(lead),
            )
            query = query.select_from(tasks.join(task_tags, on))
            order = task_tags.c.task_seq
        query = query.order_by(order.desc()).limit(limit + 1)
        if owner is not None:
            query = query.where(tasks.c.owner == owner)
        if state is not None:
            query = query.where(tasks.c.state == state.value)
        if name_prefix:
            query = query.where(tasks.c.name >= name_prefix)
            upper = _prefix_upper(name_prefix)
            if upper is not None:
                query = query.where(tasks.c.name < upper)
        for key, value in tags.items():
            other = task_tags.alias()  # not the joined task_tags: EXISTS must not correlate it
            cond = and_(other.c.task_seq == tasks.c.seq, other.c.key == key)
            if value != "":
                cond = and_(cond, other.c.value == value)
            query = query.where(exists().where(cond))
        if before_seq is not None:
            query = query.where(tasks.c.seq < before_seq)
            if order is not tasks.c.seq:  # PostgreSQL does not carry the bound across the join
                query = query.where(order < before_seq)
        with self._reads.connect() as conn:
            rows = conn.execute(query).all()
        more = len(rows) > limit
        records = [_record(r, full) for r in rows[:limit]]
        return TaskPage(records, records[-1].seq if more else None)

    # -- state changes ------------------------------------------------------------------------

    def transition(
        self,
        task_id: str,
        to_state: State,
        *,
        expect: Iterable[State] | None = None,
        message: str | None = None,
        data: dict[str, Any] | None = None,
        attempt_id: str | None = None,
        instance_id: str | None = None,
        logs: list[dict[str, Any]] | None = None,
        on_apply: Callable[[Connection], None] | None = None,
        conn: Connection | None = None,
    ) -> Transition:
        """Move the task to `to_state` if the table allows it from its current state (and the
        current state is in `expect`, when given). Writes the event in the same transaction.
        `logs`, when given, replaces the stored TaskLogs atomically with the state change;
        `on_apply` runs inside the same transaction when (and only when) the change applies.
        `conn`: run in the caller's transaction (`batch`) instead of one of its own."""
        allowed = frozenset(expect) if expect is not None else None
        for _ in range(CAS_RETRIES):
            with self.db.engine.begin() if conn is None else nullcontext(conn) as conn_:
                row = conn_.execute(_CAS_READ, {"id": task_id}).first()
                if row is None:
                    raise TaskNotFound(task_id)
                src = State(row.state)
                if (allowed is not None and src not in allowed) or not can_transition(
                    src, to_state
                ):
                    return Transition(False, task_id, src, to_state)
                now = self.now()
                values: dict[str, Any] = {
                    "state": to_state.value,
                    "version": row.version + 1,
                    "updated_time": now,
                }
                final_logs = logs
                if to_state.terminal:  # a finished task shows only the executors that ran
                    current = logs if logs is not None else json.loads(row.logs or "[]")
                    final_logs = [
                        {**tl, "logs": drop_unstarted(tl.get("logs", []))} for tl in current
                    ]
                    if self.on_end is not None:
                        final_logs = self.on_end(conn_, task_id, final_logs)
                if final_logs is not None:
                    values["logs"] = _logs_json(final_logs)
                # The statement is built once; the columns to set come with the parameters.
                result = conn_.execute(
                    _CAS_WRITE, {**values, "cas_id": task_id, "cas_version": row.version}
                )
                if result.rowcount == 1:
                    if on_apply is not None:
                        on_apply(conn_)
                    self._event(
                        conn_,
                        task_id,
                        "state",
                        from_state=src,
                        to_state=to_state,
                        message=message,
                        data=data,
                        attempt_id=attempt_id,
                        instance_id=instance_id,
                        now=now,
                    )
                    return Transition(True, task_id, src, to_state)
        current = self.get(task_id, full=False)
        return Transition(False, task_id, current.state if current else State.UNKNOWN, to_state)

    @contextmanager
    def batch(self) -> Iterator[Connection]:
        """One transaction for several `transition(..., conn=conn)`: they commit together (or
        not at all). On SQLite it holds the write lock from its first change to its end: keep
        it short, and write nothing through another connection meanwhile."""
        with self.db.engine.begin() as conn:
            yield conn

    def set_logs(
        self, task_id: str, logs: list[dict[str, Any]], conn: Connection | None = None
    ) -> None:
        """Replace the TaskLogs without a state change (progress from a running attempt); in
        the caller's transaction when `conn` is given."""
        with self.db.engine.begin() if conn is None else nullcontext(conn) as conn_:
            conn_.execute(
                update(tasks)
                .where(tasks.c.id == task_id)
                .values(logs=_logs_json(logs), updated_time=self.now())
            )

    def state(self, task_id: str, conn: Connection | None = None) -> State | None:
        """The task's state now (None: no such task), read in `conn` when given: inside a
        transaction that has written, what that transaction sees."""
        with self._reads.connect() if conn is None else nullcontext(conn) as conn_:
            value = conn_.execute(_GET_MINIMAL, {"id": task_id}).first()
        return State(value.state) if value is not None else None

    def ids_in_state(self, state: State, limit: int = 1000) -> list[str]:
        """Oldest first: the scheduler's queue."""
        with self.db.engine.connect() as conn:
            rows = conn.execute(
                select(tasks.c.id)
                .where(tasks.c.state == state.value)
                .order_by(tasks.c.seq)
                .limit(limit)
            ).all()
        return [r.id for r in rows]

    def in_state(self, state: State, limit: int = 1000) -> list[TaskRecord]:
        """`ids_in_state` with the whole records, in one query: oldest first."""
        with self._reads.connect() as conn:
            rows = conn.execute(_IN_STATE, {"state": state.value, "limit": limit}).all()
        return [_record(r, True) for r in rows]

    def record(
        self, task_id: str | None, kind: str, *, conn: Connection | None = None, **fields: Any
    ) -> None:
        """Record an event that is not a state change (a step, a warning, a measurement); in
        the caller's transaction when `conn` is given."""
        with self.db.engine.begin() if conn is None else nullcontext(conn) as conn_:
            self._event(conn_, task_id, kind, **fields)

    # -- events -------------------------------------------------------------------------------

    def _event(self, conn: Connection, task_id: str | None, kind: str, **fields: Any) -> None:
        fields.setdefault("time", fields.pop("now", None) or self.now())
        write_event(conn, task_id=task_id, kind=kind, **fields)

    def events(self, task_id: str) -> list[dict[str, Any]]:
        return read_events(self.db, task_id=task_id)


def _logs_json(logs: list[dict[str, Any]]) -> str:
    """TaskLogs as stored: each system_logs line with its secrets masked
    (capsule_runtime.protocol.redact), whoever wrote it (an agent's staging error, the gateway's own
    notes)."""
    clean = [
        {**tl, "system_logs": redact_lines(tl["system_logs"])}
        if isinstance(tl, dict) and isinstance(tl.get("system_logs"), list)
        else tl
        for tl in logs
    ]
    return json.dumps(clean, separators=(",", ":"))
