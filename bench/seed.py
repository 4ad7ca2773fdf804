"""Grow a store to N tasks directly in the database, fast, without the server running.

Rows come from `bench.documents.TaskFactory` (generated in a second process while this one
inserts). SQLite: executemany in one transaction per batch. PostgreSQL: COPY through psycopg, then
the tasks sequence moved past the seeded seqs, VACUUM (ANALYZE) and CHECKPOINT. Either way the
dirty pages are synced to disk before the server starts, so that kernel writeback does not land
in the measurements. Growing is incremental: the next seq follows whatever the store already
holds, tasks created through the API included.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, func, select, text

from bench.documents import (
    ATTEMPT_COLUMNS,
    EVENT_COLUMNS,
    INSTANCE_COLUMNS,
    TAG_COLUMNS,
    TASK_COLUMNS,
    Rows,
    TaskFactory,
)
from gateway.store.schema import tasks

BATCH = 20_000
TABLES = (  # insertion order: foreign keys point backwards
    ("instances", INSTANCE_COLUMNS, "instances"),
    ("tasks", TASK_COLUMNS, "tasks"),
    ("attempts", ATTEMPT_COLUMNS, "attempts"),
    ("task_tags", TAG_COLUMNS, "tags"),
    ("events", EVENT_COLUMNS, "events"),
)


@dataclass
class SeedReport:
    tasks_before: int
    tasks_after: int
    seconds: float
    rows: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        added = self.tasks_after - self.tasks_before
        return {
            "tasks_before": self.tasks_before,
            "tasks_after": self.tasks_after,
            "added": added,
            "seconds": round(self.seconds, 1),
            "tasks_per_second": round(added / self.seconds) if self.seconds else None,
            "rows_added": self.rows,
        }


def task_count(engine: Engine) -> tuple[int, int]:
    """(number of tasks, highest seq)."""
    with engine.connect() as conn:
        count, top = conn.execute(select(func.count(), func.max(tasks.c.seq))).one()
    return int(count), int(top or 0)


_factory: TaskFactory | None = None


def _generate(job: tuple[int, int]) -> Rows:
    global _factory
    if _factory is None:
        _factory = TaskFactory()
    return _factory.batch(*job)


def _batches(first_seq: int, count: int) -> Iterator[tuple[int, int]]:
    end = first_seq + count
    for start in range(first_seq, end, BATCH):
        yield start, min(BATCH, end - start)


def grow(engine: Engine, target: int, log: Callable[[str], None] = print) -> SeedReport:
    """Add tasks until the store holds `target` (none when it already holds that many)."""
    before, top = task_count(engine)
    rows: dict[str, int] = {name: 0 for _, _, name in TABLES}
    started = time.perf_counter()
    missing = target - before
    if missing > 0:
        insert = _insert_postgres if engine.dialect.name == "postgresql" else _insert_sqlite
        done = 0
        with multiprocessing.get_context("fork").Pool(1) as pool:
            for batch in pool.imap(_generate, _batches(top + 1, missing)):
                insert(engine, batch)
                for _, _, name in TABLES:
                    rows[name] += len(getattr(batch, name))
                done += len(batch.tasks)
                rate = done / (time.perf_counter() - started)
                log(f"  seeded {before + done:>9,} tasks ({rate:,.0f}/s)")
        _finish(engine, log)
    after, _ = task_count(engine)
    return SeedReport(before, after, time.perf_counter() - started, rows)


def _insert_sqlite(engine: Engine, batch: Rows) -> None:
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("PRAGMA foreign_keys=OFF")  # consistent by construction; checks cost 2x
        cur.execute("PRAGMA synchronous=OFF")
        cur.execute("BEGIN")
        for table, columns, name in TABLES:
            marks = ",".join("?" * len(columns))
            cur.executemany(
                f"INSERT INTO {table} ({','.join(columns)}) VALUES ({marks})",
                getattr(batch, name),
            )
        cur.execute("COMMIT")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()
    finally:
        raw.close()


def _insert_postgres(engine: Engine, batch: Rows) -> None:
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cur:  # type: ignore[attr-defined]
            # Skip the per-row foreign-key triggers: the rows are consistent by construction.
            cur.execute("SET session_replication_role = replica")
            for table, columns, name in TABLES:
                with cur.copy(f"COPY {table} ({','.join(columns)}) FROM STDIN") as copy:
                    for row in getattr(batch, name):
                        copy.write_row(row)
            cur.execute("SET session_replication_role = DEFAULT")
        raw.commit()
    finally:
        raw.close()


def _finish(engine: Engine, log: Callable[[str], None]) -> None:
    started = time.perf_counter()
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(
                text(
                    "SELECT setval(pg_get_serial_sequence('tasks', 'seq'),"
                    " (SELECT max(seq) FROM tasks))"
                )
            )
            conn.commit()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM (ANALYZE)"))
            conn.execute(text("CHECKPOINT"))
        log(f"  VACUUM (ANALYZE), CHECKPOINT in {time.perf_counter() - started:.1f} s")
    else:
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        log(f"  WAL checkpoint in {time.perf_counter() - started:.1f} s")
    # Write the seeded gigabytes out now, not as kernel writeback during the measurements.
    os.sync()
