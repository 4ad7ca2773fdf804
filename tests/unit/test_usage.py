"""capsule_runtime.usage on a fake /proc and /sys/fs/cgroup (v1 and v2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from capsule_runtime import usage


def fake_v1(tmp: Path, cpu_ns: int, memory: int, limit: int) -> tuple[Path, Path]:
    proc, root = tmp / "proc", tmp / "cg"
    (proc / "42").mkdir(parents=True)
    (proc / "42" / "cgroup").write_text(
        "4:memory:/libpod_parent/libpod-x\n2:cpuacct:/libpod_parent/libpod-x\n"
        "1:cpu:/libpod_parent/libpod-x\n"
    )
    mem = root / "memory" / "libpod_parent" / "libpod-x"
    mem.mkdir(parents=True)
    (mem / "memory.usage_in_bytes").write_text(f"{memory}\n")
    (mem / "memory.limit_in_bytes").write_text(f"{limit}\n")
    (mem / "memory.stat").write_text("cache 10\ntotal_inactive_file 1000\n")
    cpu = root / "cpuacct" / "libpod_parent" / "libpod-x"
    cpu.mkdir(parents=True)
    (cpu / "cpuacct.usage").write_text(f"{cpu_ns}\n")
    return proc, root


def test_v1_memory_less_inactive_cache_and_limit(tmp_path: Path) -> None:
    proc, root = fake_v1(tmp_path, 5 * 10**9, 11000, 2**30)
    assert usage.read(42, root, proc) == (5.0, 10000, 2**30)
    proc, root = fake_v1(tmp_path / "nolimit", 0, 5000, 9223372036854771712)
    assert usage.read(42, root, proc)[2] is None


def test_v2_unified(tmp_path: Path) -> None:
    proc, root = tmp_path / "proc", tmp_path / "cg"
    (proc / "7").mkdir(parents=True)
    (proc / "7" / "cgroup").write_text("0::/machine/ctr\n")
    d = root / "machine" / "ctr"
    d.mkdir(parents=True)
    (d / "memory.current").write_text("4096\n")
    (d / "memory.max").write_text("max\n")
    (d / "memory.stat").write_text("anon 4096\ninactive_file 96\n")
    (d / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\n")
    assert usage.read(7, root, proc) == (2.5, 4000, None)


def test_sampler_turns_cpu_time_into_cores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proc, root = fake_v1(tmp_path, 0, 100, 2**30)
    clock = iter([100.0, 102.0])
    monkeypatch.setattr(usage.time, "monotonic", lambda: next(clock))
    sampler = usage.UsageSampler(root, proc)
    first = sampler.sample(42)
    assert first is not None and first.cpu_cores is None
    (root / "cpuacct" / "libpod_parent" / "libpod-x" / "cpuacct.usage").write_text(str(3 * 10**9))
    second = sampler.sample(42)
    assert second is not None and second.cpu_cores == pytest.approx(1.5)
    assert sampler.sample(999) is None  # gone
