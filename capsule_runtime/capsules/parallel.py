"""An ordered, bounded parallel map: the shape of both capsule pipelines."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Executor, Future
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(
    pool: Executor, fn: Callable[[T], R], items: Iterable[T], window: int
) -> Generator[R, None, None]:
    """fn(item) for each item, run in `pool`, yielded in the items' order. At most `window` items
    are submitted and not yet yielded, so memory stays bounded however long `items` is; `items`
    is consumed lazily (reading ahead while the pool works). The first exception (from `items`
    or from fn) propagates; closing the iterator cancels what has not started."""
    inflight: deque[Future[R]] = deque()
    try:
        for item in items:
            while len(inflight) >= window:
                yield inflight.popleft().result()
            inflight.append(pool.submit(fn, item))
        while inflight:
            yield inflight.popleft().result()
    finally:
        for future in inflight:
            future.cancel()
