"""capsule_runtime.host.meminfo: the one /proc/meminfo parser (agent, local provider, benches)."""

from __future__ import annotations

from pathlib import Path

from capsule_runtime.host.meminfo import meminfo_kib, memory_gb

SAMPLE = """MemTotal:       16384000 kB
MemFree:         1000000 kB
MemAvailable:    8192000 kB
HugePages_Total:       0
"""


def test_fields_in_kib_and_the_total_in_gib(tmp_path: Path) -> None:
    path = tmp_path / "meminfo"
    path.write_text(SAMPLE)
    assert meminfo_kib("MemAvailable", path) == 8192000
    assert meminfo_kib("HugePages_Total", path) == 0
    assert meminfo_kib("Mem", path) is None  # whole names only
    assert memory_gb(path) == 16384000 / (1 << 20)


def test_no_meminfo_falls_back_to_one_gib(tmp_path: Path) -> None:
    assert meminfo_kib("MemTotal", tmp_path / "missing") is None
    assert memory_gb(tmp_path / "missing") == 1.0


def test_this_machine_has_memory() -> None:
    assert memory_gb() > 0
