"""What a running container uses: CPU (cores busy) and memory, read from its cgroup (v1 or v2).

    sampler = UsageSampler()
    sampler.sample(pid)   # -> Usage(cpu_cores=0.97, memory_bytes=..., memory_limit_bytes=...)

The first sample of a process has no CPU rate yet (cpu_cores None): the rate is the CPU time used
between two samples over the wall time between them. Reading a few small files costs microseconds,
unlike `podman stats`. The gateway's rightsizing and OOM-protection triggers read these reports.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
UNLIMITED = 1 << 62  # cgroup v1 reports "no limit" as a huge number


@dataclass(frozen=True)
class Usage:
    cpu_cores: float | None  # cores busy on average since the previous sample
    memory_bytes: int
    memory_limit_bytes: int | None  # None: no limit

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "cpu_cores": None if self.cpu_cores is None else round(self.cpu_cores, 3),
            "memory_bytes": self.memory_bytes,
            "memory_limit_bytes": self.memory_limit_bytes,
        }


def cgroup_paths(pid: int, proc: Path = Path("/proc")) -> dict[str, str]:
    """controller → path from /proc/<pid>/cgroup ("" is the v2 unified hierarchy)."""
    paths: dict[str, str] = {}
    for line in (proc / str(pid) / "cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            paths[name] = path
    return paths


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def read(
    pid: int, root: Path = CGROUP_ROOT, proc: Path = Path("/proc")
) -> tuple[float, int, int | None]:
    """(CPU seconds used so far, memory bytes, memory limit) of `pid`'s cgroup."""
    paths = cgroup_paths(pid, proc)
    memory_dir = root / "memory" / paths.get("memory", "").lstrip("/")
    if "memory" in paths and memory_dir.is_dir():  # cgroup v1
        memory = _read_int(memory_dir / "memory.usage_in_bytes") or 0
        cache = _inactive_file(memory_dir / "memory.stat", "total_inactive_file")
        limit = _read_int(memory_dir / "memory.limit_in_bytes")
        cpuacct = root / "cpuacct" / paths.get("cpuacct", "").lstrip("/")
        cpu_ns = _read_int(cpuacct / "cpuacct.usage") or 0
        cpu = cpu_ns / 1e9
    else:  # cgroup v2
        unified = root / paths.get("", "").lstrip("/")
        memory = _read_int(unified / "memory.current") or 0
        cache = _inactive_file(unified / "memory.stat", "inactive_file")
        limit = _read_int(unified / "memory.max")
        cpu = _cpu_stat_usec(unified / "cpu.stat") / 1e6
    if limit is not None and limit >= UNLIMITED:
        limit = None
    return cpu, max(0, memory - cache), limit


def _inactive_file(stat: Path, key: str) -> int:
    """Page cache the kernel can drop at once: not counted as the task's memory (as docker and
    podman stats do)."""
    try:
        for line in stat.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _cpu_stat_usec(stat: Path) -> int:
    try:
        for line in stat.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == "usage_usec":
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


class UsageSampler:
    """Keeps each process's previous reading to turn CPU time into a rate."""

    def __init__(self, root: Path = CGROUP_ROOT, proc: Path = Path("/proc")):
        self.root, self.proc = root, proc
        self._last: dict[int, tuple[float, float]] = {}  # pid → (monotonic time, cpu seconds)

    def sample(self, pid: int) -> Usage | None:
        """None when the process (or its cgroup) is gone."""
        try:
            cpu, memory, limit = read(pid, self.root, self.proc)
        except (OSError, ValueError):
            self._last.pop(pid, None)
            return None
        now = time.monotonic()
        previous = self._last.get(pid)
        self._last[pid] = (now, cpu)
        rate = None
        if previous is not None and now > previous[0]:
            rate = max(0.0, (cpu - previous[1]) / (now - previous[0]))
        return Usage(rate, memory, limit)

    def forget(self, pid: int) -> None:
        self._last.pop(pid, None)
