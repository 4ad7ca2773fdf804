"""The bounded thread pool that runs a staging phase's file transfers side by side."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import TypeVar

T = TypeVar("T")


def run_all(jobs: Sequence[Callable[[], T]], workers: int) -> list[T | Exception]:
    """Run every job; each result or the Exception it raised, in the jobs' order."""
    if not jobs:
        return []
    if workers <= 1 or len(jobs) == 1:
        return [_call(job) for job in jobs]
    with ThreadPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
        futures = [pool.submit(_call, job) for job in jobs]
        return [f.result() for f in futures]


def run_until_error(jobs: Sequence[Callable[[], T]], workers: int) -> list[T]:
    """Run every job, stopping at the first exception: jobs not yet started are cancelled, those
    running are waited for, and the first exception is raised."""
    if workers <= 1 or len(jobs) <= 1:
        return [job() for job in jobs]
    with ThreadPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
        futures: list[Future[T]] = [pool.submit(job) for job in jobs]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in futures if f in done and f.exception() is not None]
        if failed:
            for f in futures:
                f.cancel()
            raise failed[0].exception()  # type: ignore[misc]
        return [f.result() for f in futures]


def _call(job: Callable[[], T]) -> T | Exception:
    try:
        return job()
    except Exception as exc:
        return exc
