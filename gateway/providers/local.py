"""The `local` provider: each instance is a worker agent process on this machine.

The embedded default a new user meets. Capacity defaults to this machine's own; the Spot-market
simulation (prices, interruptions, namespaces) builds on this in a later issue.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from gateway.config import LocalProviderConfig
from gateway.providers.base import Offer, ProviderError
from gateway.store.fleet import Instance

log = logging.getLogger(__name__)
STOP_GRACE = 30  # seconds an agent gets to stop its containers


def host_memory_gb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    return 1.0


class LocalProvider:
    name = "local"

    def __init__(self, cfg: LocalProviderConfig, gateway_url: str, work_root: Path):
        self.cfg = cfg
        self.gateway_url = gateway_url
        self.work_root = work_root
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def offers(self) -> list[Offer]:
        self.work_root.mkdir(parents=True, exist_ok=True)
        disk = shutil.disk_usage(self.work_root).free / 1e9
        return [
            Offer(
                instance_type=self.cfg.instance_type,
                market="on-demand",
                zone="local",
                price_per_hour=0.0,
                cpu_cores=self.cfg.cpu_cores or float(os.cpu_count() or 1),
                ram_gb=self.cfg.ram_gb or round(host_memory_gb(), 2),
                disk_gb=self.cfg.disk_gb or round(disk, 1),
            )
        ]

    def launch(self, instance: Instance, token: str) -> None:
        work = self.work_root / instance.id
        work.mkdir(parents=True, exist_ok=True)
        offer = self.offers()[0]
        cmd = [
            sys.executable,
            "-m",
            "capsule_runtime.agent",
            "--gateway",
            self.gateway_url,
            "--instance-id",
            instance.id,
            "--work-dir",
            str(work),
            "--tasks-dir",  # shared by the local instances: a capsule restores at the same path
            str(self.work_root / "tasks"),
            "--cpu-cores",
            str(offer.cpu_cores),
            "--ram-gb",
            str(offer.ram_gb),
            "--disk-gb",
            str(offer.disk_gb),
        ]
        env = dict(os.environ, TESCAPE_AGENT_TOKEN=token)
        try:
            with open(work / "agent.log", "ab") as out:
                proc = subprocess.Popen(
                    cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
                )
        except OSError as exc:
            raise ProviderError(f"cannot start a local agent: {exc}") from exc
        self.processes[instance.id] = proc
        log.info("launched local instance %s (agent pid %d)", instance.id, proc.pid)

    def terminate(self, instance_id: str) -> None:
        self._stop([instance_id])

    def _stop(self, instance_ids: list[str]) -> None:
        """SIGTERM every agent at once (each stops its containers and exits), then wait for all
        of them together; SIGKILL what is left after the grace period."""
        procs = [p for i in instance_ids if (p := self.processes.pop(i, None)) is not None]
        live = [p for p in procs if p.poll() is None]
        for proc in live:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for proc in live:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("agent pid %d did not stop in %ds; killing it", proc.pid, STOP_GRACE)
                proc.kill()
                proc.wait()

    def alive(self, instance_id: str) -> bool:
        proc = self.processes.get(instance_id)
        return proc is not None and proc.poll() is None

    def log_hint(self, instance_id: str) -> str:
        return str(self.work_root / instance_id / "agent.log")

    def close(self) -> None:
        self._stop(list(self.processes))
