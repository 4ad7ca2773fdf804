"""Group commit: writes that arrive together share one transaction.

Callers of `GroupCommit.write` queue their item; one of them, the leader, takes everything queued,
writes it in one transaction, commits, and wakes each caller with its own result. Whoever queued
meanwhile waits for that commit, and the first of them leads the next batch. A caller returns only
after its item is committed (durability is that of a transaction per call), but concurrent writers
share one BEGIN/COMMIT and a handful of multi-row statements, and on SQLite they no longer fight
over the write lock (whose busy handler sleeps for milliseconds at a time).

If a batch fails, each of its items is retried in a transaction of its own, so a bad item fails
only its own caller, with its own error.

    1: A queues, leads [A], begins           3: A commits; wakes A; B leads [B, C]
    2: B, C queue while A's batch is written  4: B commits; wakes B and C; nobody leads
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from sqlalchemy import Connection, Engine

T = TypeVar("T")
R = TypeVar("R")


class _Waiter(Generic[T, R]):
    __slots__ = ("done", "error", "item", "lead", "result")

    def __init__(self, item: T):
        self.item = item
        self.done = threading.Event()  # committed (or failed), or promoted to leader
        self.lead = False
        self.result: R | None = None
        self.error: BaseException | None = None

    def outcome(self) -> R:
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]


class GroupCommit(Generic[T, R]):
    """`write(conn, items)` returns one result per item, in order, inside the open transaction."""

    def __init__(
        self,
        engine: Engine,
        write: Callable[[Connection, list[T]], list[R]],
        max_batch: int = 64,
    ):
        self.engine = engine
        self._write = write
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Waiter[T, R]] = []
        self._leading = False  # the queue is empty whenever nobody leads

    def write(self, item: T) -> R:
        """Write `item` with whatever else is queued; return its result once committed."""
        me: _Waiter[T, R] = _Waiter(item)
        with self._lock:
            self._queue.append(me)
            lead, self._leading = not self._leading, True
        if not lead:
            me.done.wait()
            if not me.lead:
                return me.outcome()
        # Leading: `me` is at the head of the queue, so it is in this batch.
        with self._lock:
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
        try:
            self._commit(batch)
        finally:
            with self._lock:
                if self._queue:
                    self._queue[0].lead = True
                    self._queue[0].done.set()
                else:
                    self._leading = False
        return me.outcome()

    def _commit(self, batch: list[_Waiter[T, R]]) -> None:
        try:
            with self.engine.begin() as conn:
                results = self._write(conn, [w.item for w in batch])
        except Exception as exc:
            if len(batch) > 1:
                for waiter in batch:
                    self._commit([waiter])
                return
            batch[0].error = exc
        else:
            for waiter, result in zip(batch, results, strict=True):
                waiter.result = result
        for waiter in batch:
            waiter.done.set()
