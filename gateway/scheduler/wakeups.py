"""Wake-ups between threads of the gateway: the API wakes the scheduler when a task is created or
cancelled; the scheduler wakes an instance's long poll when it has orders for it."""

from __future__ import annotations

import threading
from collections import defaultdict


class Wakeups:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._versions: defaultdict[str, int] = defaultdict(int)

    def notify(self, key: str) -> None:
        with self._cond:
            self._versions[key] += 1
            self._cond.notify_all()

    def version(self, key: str) -> int:
        with self._cond:
            return self._versions[key]

    def wait(self, key: str, seen: int, timeout: float) -> int:
        """Block until `key` moves past version `seen` or `timeout` passes; return the version."""
        with self._cond:
            self._cond.wait_for(lambda: self._versions[key] != seen, timeout=timeout)
            return self._versions[key]
