"""Byte progress of a staging phase, summed over parallel transfers and reported at a bounded rate.

Storages call `add(n)` from any thread as bytes arrive or leave; the meter calls the agent's
`on_progress(TransferProgress)` at most once per `interval` seconds, and always once at `finish()`.
`add` is also where a long transfer notices cancellation: it raises StagingCancelled, which every
storage lets through (the local copy every 64 MiB, http every 1 MiB, s3 every part's progress).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from capsule_runtime.staging.errors import StagingCancelled

Phase = Literal["inputs", "outputs"]
ByteCallback = Callable[[int], None]  # what a Storage calls: bytes moved since its last call


@dataclass(frozen=True)
class TransferProgress:
    phase: Phase
    bytes_done: int
    files_done: int
    files_total: int
    finished: bool = False


ProgressCallback = Callable[[TransferProgress], None]


class ProgressMeter:
    def __init__(
        self,
        phase: Phase,
        files_total: int,
        on_progress: ProgressCallback | None = None,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        cancelled: Callable[[], bool] | None = None,
    ):
        self.phase: Phase = phase
        self.files_total = files_total
        self._on_progress = on_progress
        self._interval = interval
        self._clock = clock
        self._cancelled = cancelled
        self._lock = threading.Lock()
        self._bytes = 0
        self._files = 0
        self._last = clock()

    def add(self, nbytes: int) -> None:
        """Count `nbytes` more bytes moved (a `ByteCallback`); raises StagingCancelled once the
        phase is cancelled."""
        self.check_cancelled()
        with self._lock:
            self._bytes += nbytes
        self._maybe_report()

    def check_cancelled(self) -> None:
        if self._cancelled is not None and self._cancelled():
            raise StagingCancelled(f"{self.phase} staging was cancelled")

    def file_done(self) -> None:
        with self._lock:
            self._files += 1
        self._maybe_report()

    def snapshot(self, finished: bool = False) -> TransferProgress:
        with self._lock:
            return TransferProgress(
                self.phase, self._bytes, self._files, self.files_total, finished
            )

    def finish(self) -> TransferProgress:
        final = self.snapshot(finished=True)
        if self._on_progress is not None:
            self._on_progress(final)
        return final

    def _maybe_report(self) -> None:
        if self._on_progress is None:
            return
        now = self._clock()
        with self._lock:
            if now - self._last < self._interval:
                return
            self._last = now
        self._on_progress(self.snapshot())
