"""A local instance's own cgroup: its type's CPU and memory (scaled to this machine) as the ceiling
of every container it runs, as a machine of that size would be.

The agent's podman creates each container under it (`--cgroup-parent /tescape/<instance id>`,
capsule_runtime/engine/podman.py); a container restored on another instance is moved under that
one's (capsule_runtime/engine/cgroup_parent.py). Only with podman's cgroupfs manager (systemd's
wants slices) and on cgroup v1 or v2 file systems this process may write.

    group = InstanceCgroup("i-…", cpu_cores=2, ram_gb=8)
    group.create()      # /sys/fs/cgroup/{memory,cpu}/tescape/i-… (v1) or /sys/fs/cgroup/tescape/i-…
    group.parent        # "/tescape/i-…", for podman
    group.remove()      # once its containers are gone
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

from capsule_runtime.host.podman import CONTAINERS_CONF

log = logging.getLogger(__name__)
ROOT = Path("/sys/fs/cgroup")
TOP = "tescape"
CPU_PERIOD_US = 100_000


def why_unsupported(root: Path = ROOT, conf: Path = CONTAINERS_CONF) -> str | None:
    """None when instances can have cgroups of their own here, else why not."""
    try:
        if 'cgroup_manager = "cgroupfs"' not in conf.read_text():
            return "podman does not use the cgroupfs manager"
    except OSError:
        return f"{conf} is missing"
    if os.geteuid() != 0:
        return "not root"
    if (root / "cgroup.controllers").is_file():
        controllers = (root / "cgroup.controllers").read_text().split()
        if not {"cpu", "memory"} <= set(controllers):
            return "the cpu and memory controllers are not available"
        return None
    if (root / "memory" / "memory.limit_in_bytes").is_file() and (root / "cpu").is_dir():
        return None
    return f"no cgroup file system at {root}"


class InstanceCgroup:
    def __init__(self, instance_id: str, cpu_cores: float, ram_gb: float, root: Path = ROOT):
        self.instance_id = instance_id
        self.cpu_cores = cpu_cores
        self.ram_gb = ram_gb
        self.root = root
        self.v2 = (root / "cgroup.controllers").is_file()

    @property
    def parent(self) -> str:
        return f"/{TOP}/{self.instance_id}"

    def _dirs(self) -> list[Path]:
        if self.v2:
            return [self.root / TOP / self.instance_id]
        return [self.root / c / TOP / self.instance_id for c in ("memory", "cpu")]

    def exists(self) -> bool:
        return any(d.is_dir() for d in self._dirs())

    def create(self) -> None:
        """The instance's cgroup with its limits. Raises OSError."""
        memory = str(int(self.ram_gb * 2**30))
        quota = str(max(1000, int(self.cpu_cores * CPU_PERIOD_US)))
        if self.v2:
            top = self.root / TOP
            top.mkdir(exist_ok=True)
            group = top / self.instance_id
            group.mkdir(exist_ok=True)
            for d in (self.root, top, group):  # the controllers reach the containers' groups
                _enable(d)
            (group / "memory.max").write_text(memory)
            (group / "cpu.max").write_text(f"{quota} {CPU_PERIOD_US}")
            return
        mem, cpu = self._dirs()
        for d in (mem, cpu):
            d.mkdir(parents=True, exist_ok=True)
        (mem / "memory.limit_in_bytes").write_text(memory)
        (cpu / "cpu.cfs_period_us").write_text(str(CPU_PERIOD_US))
        (cpu / "cpu.cfs_quota_us").write_text(quota)

    def remove(self, wait: float = 10.0) -> None:
        """Remove the cgroup and what podman left under it (conmon's and the containers'
        groups, empty a moment after the containers are gone: tried again for up to `wait`
        seconds); what is still in use then stays, with a warning."""
        deadline = time.monotonic() + wait
        while True:
            try:
                self._remove()
                return
            except OSError as exc:
                if time.monotonic() >= deadline:
                    log.warning("cgroup %s stays: %s", self.parent, exc)
                    return
            time.sleep(0.2)

    def _remove(self) -> None:
        """rmdir of the groups podman left (conmon's, the containers'), then of the instance's
        own in every hierarchy (podman creates it in every v1 controller, not only ours).
        Raises OSError while one is still in use."""
        if self.v2:
            found = self._dirs()
        else:
            found = [
                c / TOP / self.instance_id
                for c in self.root.iterdir()
                if c.is_dir() and not c.is_symlink()
            ]
        for d in (d for d in found if d.is_dir()):
            for child in (c for c in d.iterdir() if c.is_dir()):
                child.rmdir()
            d.rmdir()


def _enable(group: Path) -> None:
    """cgroup v2: let the children of `group` use the cpu and memory controllers."""
    with contextlib.suppress(OSError):
        (group / "cgroup.subtree_control").write_text("+cpu +memory")
