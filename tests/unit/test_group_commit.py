"""Group commit: concurrent writes share transactions, each caller gets its own result only once it
is committed, and a failing item fails only its own caller."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Column, Connection, Engine, Integer, MetaData, String, Table, insert, select

from gateway.store.database import create_db_engine
from gateway.store.group_commit import GroupCommit

metadata = MetaData()
items = Table(
    "items",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(32), nullable=False, unique=True),
)


class Writer:
    """Inserts names; the first batch waits at a gate so that the others queue behind it."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = threading.Event()

    def __call__(self, conn: Connection, names: list[str]) -> list[int]:
        if not self.batches:
            self.gate.wait(10)
        self.batches.append(list(names))
        if "bad" in names:
            raise ValueError("bad item")
        rows = conn.execute(
            insert(items).returning(items.c.id, items.c.name), [{"name": n} for n in names]
        )
        ids = {r.name: r.id for r in rows}
        return [ids[n] for n in names]


def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def _run(group: GroupCommit[str, int], names: list[str]) -> dict[str, int | Exception]:
    results: dict[str, int | Exception] = {}

    def write(name: str) -> None:
        try:
            results[name] = group.write(name)
        except Exception as exc:
            results[name] = exc

    threads = [threading.Thread(target=write, args=(n,)) for n in names]
    writer = group._write
    assert isinstance(writer, Writer)
    threads[0].start()
    _until(lambda: group._leading)  # the first caller leads, and waits at the gate
    for t in threads[1:]:
        t.start()
    _until(lambda: len(group._queue) == len(names) - 1)  # the others queue behind it
    writer.gate.set()
    for t in threads:
        t.join(10)
    return results


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'g.db'}")
    metadata.create_all(engine)
    yield engine
    engine.dispose()


def test_concurrent_writes_share_a_transaction(engine: Engine) -> None:
    writer = Writer()
    group = GroupCommit(engine, writer)
    names = [f"n{i}" for i in range(12)]
    results = _run(group, names)
    assert writer.batches[0] == ["n0"]
    assert sorted(writer.batches[1]) == sorted(names[1:])  # all queued ones in one batch
    with engine.connect() as conn:
        stored = {r.name: r.id for r in conn.execute(select(items.c.name, items.c.id))}
    assert results == stored  # every caller got its own row, committed when it returned
    assert not group._leading and not group._queue


def test_a_failing_item_fails_only_its_caller(engine: Engine) -> None:
    writer = Writer()
    group = GroupCommit(engine, writer)
    results = _run(group, ["first", "a", "bad", "b"])
    assert isinstance(results["bad"], ValueError)
    with engine.connect() as conn:
        stored = {r.name: r.id for r in conn.execute(select(items.c.name, items.c.id))}
    assert set(stored) == {"first", "a", "b"}
    assert all(results[n] == stored[n] for n in stored)
    # the failed batch of three was retried one item per transaction
    assert sorted(writer.batches[1]) == ["a", "b", "bad"]
    assert sorted(map(tuple, writer.batches[2:])) == [("a",), ("b",), ("bad",)]


def test_a_database_error_reaches_the_caller(engine: Engine) -> None:
    group: GroupCommit[str, int] = GroupCommit(
        engine,
        lambda conn, names: [
            conn.execute(insert(items).values(name=n).returning(items.c.id)).scalar_one()
            for n in names
        ],
    )
    group.write("same")
    with pytest.raises(Exception, match="UNIQUE"):
        group.write("same")
    assert group.write("other") > 0  # the group still works after a failure
