"""The machine's memory, from /proc/meminfo: one parser for the agent (the capacity it
registers), the local provider (the size of its simulated instances) and the benchmarks."""

from __future__ import annotations

from pathlib import Path

MEMINFO = Path("/proc/meminfo")
KIB_PER_GIB = 1 << 20


def meminfo_kib(field: str, path: Path = MEMINFO) -> int | None:
    """A /proc/meminfo value (`MemTotal`, `MemAvailable`, …) in KiB; None when absent."""
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name == field:
            return int(rest.split()[0])
    return None


def memory_gb(path: Path = MEMINFO) -> float:
    """The machine's total memory in GiB; 1.0 when /proc/meminfo cannot say."""
    total = meminfo_kib("MemTotal", path)
    return total / KIB_PER_GIB if total is not None else 1.0
