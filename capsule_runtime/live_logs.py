"""Live logs: while an executor runs, its stdout and stderr are pushed to the gateway as they
grow, every few seconds, so `tescape tasks logs -f` and the dashboard follow a running task (the
full streams are still uploaded whole once the task has ended, and replace what was pushed).

A stream is read either from the agent's own file (under the task's `streams` folder, which no
container sees: opened by path on each push) or, for a file the task named, from a descriptor the
runner opened while no container of the task ran — never by the task-controlled path again,
so a symlink the task puts there later leads nowhere.

Pushes are best effort: one try each, the next carries the same bytes; a push the gateway
refuses for good (409: the attempt was superseded) ends the pushing.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Protocol

from capsule_runtime.client import Fenced, GatewayUnreachable

log = logging.getLogger(__name__)

PUSH_EVERY_SECONDS = 2.0
PUSH_MAX_BYTES = 1 << 20  # per stream and push: a flood catches up over several pushes
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class Pusher(Protocol):
    def push_stream(
        self, attempt_id: str, executor: int, stream: str, offset: int, data: bytes
    ) -> int: ...


def open_stream(path: Path) -> int | None:
    """A read descriptor of a stream file, or None when it cannot be opened (yet)."""
    try:
        return os.open(path, _OPEN_FLAGS)
    except OSError:
        return None


class LiveStreams:
    """Pushes one executor's streams while it runs. `sources`: stream name → an open descriptor
    (owned from then on: closed by `stop`) or the path of the agent's own file."""

    def __init__(
        self,
        client: Pusher,
        attempt_id: str,
        executor: int,
        sources: dict[str, int | Path],
        every: float = PUSH_EVERY_SECONDS,
    ) -> None:
        self.client, self.attempt_id, self.executor = client, attempt_id, executor
        self.sources = sources
        self.every = every
        self.offsets = dict.fromkeys(sources, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"live-{attempt_id}-{executor}", daemon=True
        )

    def start(self) -> LiveStreams:
        if self.sources:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=60)
        for source in self.sources.values():
            if isinstance(source, int):
                os.close(source)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.push_once()
            except Fenced:
                return  # the attempt was superseded: the runner is being stopped
            except Exception:  # live logs must never take the task down
                log.exception("live logs of %s stopped", self.attempt_id)
                return

    def push_once(self) -> None:
        for stream, source in self.sources.items():
            data = self._read(source, self.offsets[stream])
            if not data:
                continue
            try:
                self.offsets[stream] = self.client.push_stream(
                    self.attempt_id, self.executor, stream, self.offsets[stream], data
                )
            except Fenced:
                raise
            except GatewayUnreachable as exc:
                log.debug("live %s of %s not pushed: %s", stream, self.attempt_id, exc)

    @staticmethod
    def _read(source: int | Path, offset: int) -> bytes:
        if isinstance(source, int):
            return os.pread(source, PUSH_MAX_BYTES, offset)
        fd = open_stream(source)
        if fd is None:
            return b""
        try:
            return os.pread(fd, PUSH_MAX_BYTES, offset)
        finally:
            os.close(fd)
