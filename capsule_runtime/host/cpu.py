"""The machine's CPU as a restore cares about it: its architecture and the instruction-set
features its processes may use. CRIU restores a process only onto a CPU that has the features
the process was dumped with (a program that picked AVX-512 at start crashes without it), so
every capsule records the profile of the CPU it was taken on and the gateway restores only onto
instances whose CPU has at least those features (gateway.scheduler.placement)."""

from __future__ import annotations

import platform
from pathlib import Path

from capsule_runtime.protocol.messages import CpuProfile

CPUINFO = Path("/proc/cpuinfo")


def cpu_profile(path: Path = CPUINFO) -> CpuProfile:
    """This machine's profile from /proc/cpuinfo (its first processor: they are alike on one
    machine); only the architecture when the file cannot be read."""
    arch = platform.machine()
    try:
        text = path.read_text()
    except OSError:
        return CpuProfile(arch=arch)
    model, flags = "", ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:  # x86 | arm64
            flags = value
        if not line.strip() and (model or flags):  # the end of the first processor
            break
    return CpuProfile(arch=arch, model=model, flags=sorted(set(flags.split())))
