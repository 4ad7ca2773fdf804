"""capsule_runtime/capsules/heap.py: glibc's thresholds set once, the heap trimmed when the last
pipeline ends (not while another one runs)."""

from __future__ import annotations

import ctypes
import platform
from typing import Any

import pytest

from capsule_runtime.capsules import heap


class FakeLibc:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    @property
    def mallopt(self) -> Any:
        def mallopt(param: int, value: int) -> int:
            self.calls.append(("mallopt", param, value))
            return 1

        return _Fn(mallopt)

    @property
    def malloc_trim(self) -> Any:
        def malloc_trim(pad: int) -> int:
            self.calls.append(("trim", pad))
            return 1

        return _Fn(malloc_trim)


class _Fn:
    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.argtypes: list[Any] = []

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeLibc:
    libc = FakeLibc()
    monkeypatch.setattr(heap.ctypes, "CDLL", lambda _name: libc)
    monkeypatch.setattr(heap, "_tuned", None)
    monkeypatch.setattr(heap, "_libc", None)
    monkeypatch.setattr(heap, "_running", 0)
    return libc


def test_thresholds_are_set_once_and_the_heap_trimmed_after_the_last_pipeline(
    fake: FakeLibc,
) -> None:
    with heap.pipeline_heap():
        assert fake.calls == [
            ("mallopt", heap.M_MMAP_THRESHOLD, 64 << 20),
            ("mallopt", heap.M_TRIM_THRESHOLD, 512 << 20),
        ]
        with heap.pipeline_heap():  # a restore while a capsule is written
            pass
        assert ("trim", 0) not in fake.calls, "not while another pipeline runs"
    assert fake.calls[-1] == ("trim", 0) and heap.tuned()
    with heap.pipeline_heap():
        pass
    assert [c[0] for c in fake.calls].count("mallopt") == 2


def test_without_glibc_nothing_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap.ctypes, "CDLL", lambda _name: object())  # no mallopt
    monkeypatch.setattr(heap, "_tuned", None)
    monkeypatch.setattr(heap, "_libc", None)
    with heap.pipeline_heap():
        pass
    assert not heap.tuned()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_the_real_glibc_takes_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "_tuned", None)
    with heap.pipeline_heap():
        assert heap.tuned()
    assert isinstance(heap._libc, ctypes.CDLL)


def test_an_uninitialized_buffer_has_its_size_and_is_a_bytearray() -> None:
    for n in (0, 1, 4096, 4 << 20):
        buf = heap.uninitialized(n)
        assert isinstance(buf, bytearray) and len(buf) == n
        buf[:] = bytes(n)  # writable, resizable as any bytearray
        del buf[n // 2 :]
        assert len(buf) == n // 2
