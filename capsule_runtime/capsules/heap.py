"""glibc's malloc, kept from handing the pipelines' buffers back to the kernel chunk by chunk.

Every chunk the capsule pipelines handle is a few MiB (read, sealed, fetched, decrypted,
decoded), allocated and freed by the thousand per GiB. glibc serves allocations that large with
a fresh `mmap` and unmaps them on free (or trims the heap's top), so each chunk's pages are
faulted in and zeroed again by the kernel: on this kind of VM that costs more than the copy
itself (docs/benchmarks.md, "2026-12-03: fewer copies, cheaper ids": with the settings below a
restore took 2.15 → 1.83 core-s per GiB of random memory, 1.46 → 1.20 of half).

`pipeline_heap()` wraps a pipeline: on first use it raises glibc's mmap threshold to 64 MiB and
its trim threshold to 512 MiB (`mallopt`; process-wide, so freed chunks are reused from the
heap), and when the last pipeline running ends it calls `malloc_trim(0)`, so the agent does not
keep the pipelines' peak (their window of chunks: tens of MiB) between capsules while the task
needs the memory. Where the C library is not glibc (no `mallopt`), nothing changes.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from collections.abc import Callable, Iterator

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 64 << 20
TRIM_THRESHOLD = 512 << 20

_lock = threading.Lock()
_running = 0
_tuned: bool | None = None  # None: not tried yet; False: not glibc (or it refused)
_libc: ctypes.CDLL | None = None


def _tune() -> bool:
    global _libc
    try:
        libc = ctypes.CDLL(None)
        mallopt, trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    trim.argtypes = [ctypes.c_size_t]
    if not (
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    ):
        return False
    _libc = libc
    return True


@contextlib.contextmanager
def pipeline_heap() -> Iterator[None]:
    global _running, _tuned
    with _lock:
        if _tuned is None:
            _tuned = _tune()
        _running += 1
    try:
        yield
    finally:
        with _lock:
            _running -= 1
            if _running == 0 and _libc is not None:
                _libc.malloc_trim(0)


def tuned() -> bool:
    """Whether the settings took (after a first pipeline); for tests and the bench's report."""
    return bool(_tuned)


def _uninitialized_maker() -> Callable[[int], bytearray] | None:
    try:
        make = ctypes.pythonapi.PyByteArray_FromStringAndSize
    except AttributeError:  # not CPython
        return None
    make.restype = ctypes.py_object
    make.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t]
    return lambda n: make(None, n)


_make_uninitialized = _uninitialized_maker()


def uninitialized(n: int) -> bytearray:
    """A bytearray of `n` bytes left as the allocator had them, for a buffer its caller writes
    whole before anything reads it (a sealed chunk, a decrypted one): `bytearray(n)` zeroes
    every byte first, a pass over cold memory as long as the copy that follows (~4% of a
    capsule's CPU here). The buffer may hold the process's earlier data until it is written,
    so a caller that fails half-way must drop it unread."""
    if _make_uninitialized is None or n <= 0:
        return bytearray(n)
    return _make_uninitialized(n)
