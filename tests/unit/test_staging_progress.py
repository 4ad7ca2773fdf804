"""ProgressMeter: sums bytes from many threads, reports at a bounded rate, always at the end."""

from __future__ import annotations

import threading

from capsule_runtime.staging.progress import ProgressMeter, TransferProgress


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_reports_at_most_once_per_interval_and_at_finish() -> None:
    clock, seen = Clock(), list[TransferProgress]()
    meter = ProgressMeter("inputs", 3, seen.append, interval=1.0, clock=clock)
    meter.add(10)
    meter.add(10)
    assert seen == []
    clock.now = 1.5
    meter.add(5)
    meter.file_done()
    assert seen == [TransferProgress("inputs", 25, 0, 3)]
    clock.now = 3.0
    meter.file_done()
    assert seen[-1] == TransferProgress("inputs", 25, 2, 3)
    meter.finish()
    assert seen[-1] == TransferProgress("inputs", 25, 2, 3, finished=True)


def test_counts_from_many_threads() -> None:
    meter = ProgressMeter("outputs", 8)

    def work() -> None:
        for _ in range(1000):
            meter.add(3)
        meter.file_done()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert meter.finish() == TransferProgress("outputs", 24000, 8, 8, finished=True)
