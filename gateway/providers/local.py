"""The `local` provider: each instance is a worker agent process on this machine.

The embedded default a new user meets. Capacity defaults to this machine's own. Each instance
serves its own EC2-compatible metadata service (providers/imds.py), which the agent watches for
Spot interruption notices exactly as on AWS. `interrupt(id, notice_seconds)` posts a notice; at
the deadline the instance dies hard: its agent is killed (SIGKILL, whole process group) and every
container it ran is removed, as when AWS reclaims the machine. Prices and the market model build
on this in the Spot-market issue.

The agents run in sessions of their own, so a gateway that dies (SIGKILL, a crash) leaves them
running; the next gateway process on the same data dir adopts them (`adopt`: found by their
command line in /proc, driven as its own from then on) and stops the rest (`terminate`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from capsule_runtime.engine import cgroup_parent
from capsule_runtime.engine.errors import EngineError
from capsule_runtime.host.meminfo import memory_gb
from gateway.config import LocalProviderConfig
from gateway.providers.adopted import AdoptedAgent, argv_of, option
from gateway.providers.base import (
    Capability,
    CapacityUnavailable,
    CloudState,
    LaunchRecord,
    LaunchSpec,
    Offer,
    PrecheckFailed,
    Provider,
    ProviderError,
    SimulatesInterruptions,
)
from gateway.providers.cgroups import InstanceCgroup, why_unsupported
from gateway.providers.imds import InstanceMetadata, aws_time
from gateway.tes.states import MarketType

if TYPE_CHECKING:
    from gateway.market.model import Market
    from gateway.providers.registry import ProviderContext
    from gateway.store.fleet import Instance

log = logging.getLogger(__name__)
STOP_GRACE = 30  # seconds an agent gets to stop its containers
# Where an isolated instance sees its own folder (<data>/instances/<id> on this machine): the same
# path on every instance, as /var/lib/... is on every EC2 machine, so a capsule restores there.
INSTANCE_ROOT = Path("/var/lib/tescape/instance")
AGENT_UMASK = 0o022


def namespaces_possible() -> str | None:
    """None when instances can get mount namespaces of their own here, else why not."""
    if os.geteuid() != 0:
        return "not root"
    for tool in ("unshare", "nsenter", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    try:  # root without CAP_SYS_ADMIN (inside a container, say) cannot
        probe = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "--", "true"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare failed: {exc}"
    if probe.returncode != 0:
        return f"unshare failed: {probe.stderr.strip()[:200]}"
    return None


def process_start(pid: int) -> int | None:
    """When a process started (clock ticks after boot, /proc/<pid>/stat field 22): with its pid,
    it names one process, not a later one that reuses the pid. None when there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[19])


def _namespace_of(container_ids: list[str]) -> int | None:
    """A descriptor of the mount namespace that one of these containers runs in (through its
    conmon, which outlives a dead agent), or None: where their network namespaces are mounted,
    so removing them there releases their addresses."""
    for cid in container_ids:
        try:
            found = subprocess.run(
                ["podman", "container", "inspect", "--format", "{{.State.ConmonPid}}", cid],
                capture_output=True,
                text=True,
                timeout=30,
            )
            pid = int(found.stdout.strip() or 0)
            if found.returncode == 0 and pid > 0:
                return os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            continue
    return None


class LocalProvider(Provider, SimulatesInterruptions):
    name = "local"

    def __init__(
        self,
        cfg: LocalProviderConfig,
        gateway_url: str,
        work_root: Path,
        market: Market | None = None,
        gateway_lost_seconds: float = 0.0,
    ):
        self.cfg = cfg
        self.gateway_lost_seconds = gateway_lost_seconds  # agent.gateway_lost_seconds
        self.market = market
        self.gateway_url = gateway_url
        self.work_root = work_root
        # the agents this process started, and those it adopted from an earlier gateway process
        self.processes: dict[str, subprocess.Popen[bytes] | AdoptedAgent] = {}
        self.metadata: dict[str, InstanceMetadata] = {}
        self._deadlines: dict[str, threading.Timer] = {}
        self.cgroups: dict[str, InstanceCgroup] = {}
        # the instances folder of each adopted agent another gateway's data dir holds (a
        # scheduler takeover on this machine): where its ledger and log are
        self.roots: dict[str, Path] = {}
        self.isolated = self._isolation()
        # where this gateway is now: read by agents that cannot reach the URL they were started
        # with (a gateway restarted on another port finds the agents it adopts again)
        self.url_file = work_root / "gateway.url"
        work_root.mkdir(parents=True, exist_ok=True)
        self.url_file.write_text(gateway_url + "\n")
        # an isolated instance also gets a cgroup of its type's size, when podman allows
        self.cgroups_unsupported = why_unsupported() if self.isolated else "not isolated"
        if self.isolated and self.cgroups_unsupported:
            log.warning(
                "local instances have no cgroups of their own (%s)", self.cgroups_unsupported
            )
        self.max_instances = cfg.max_instances
        self.no_capacity: set[str] = set(cfg.no_capacity)  # type/zone[/market] entries
        caps = {Capability.ON_DEMAND, Capability.INTERRUPT_SIMULATION, Capability.EPHEMERAL}
        if market is not None:  # the simulated market: Spot at moving prices
            caps |= {Capability.SPOT, Capability.PRICES}
        if self.isolated:
            caps.add(Capability.INSTANCE_NAMESPACES)
        self.capabilities = frozenset(caps)

    def _isolation(self) -> bool:
        if self.cfg.isolation == "none":
            return False
        why_not = namespaces_possible()
        if why_not is None:
            try:
                INSTANCE_ROOT.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                why_not = f"cannot create {INSTANCE_ROOT}: {exc}"
        if why_not is None:
            return True
        if self.cfg.isolation == "namespace":
            raise PrecheckFailed(f"providers.local.isolation is namespace, but {why_not}")
        log.warning("local instances share this machine's file view (%s)", why_not)
        return False

    def offers(self) -> list[Offer]:
        """The market's offers (every type and zone, Spot and on-demand, at current prices); with
        the market off, one on-demand instance of this machine's size at no price."""
        if self.market is not None:
            return self.market.offers()
        return self.machine_offers()

    def machine_offers(self) -> list[Offer]:
        self.work_root.mkdir(parents=True, exist_ok=True)
        disk = shutil.disk_usage(self.work_root).free / 1e9
        return [
            Offer(
                instance_type=self.cfg.instance_type,
                market=MarketType.ON_DEMAND,
                zone="local",
                price_per_hour=0.0,
                cpu_cores=self.cfg.cpu_cores or float(os.cpu_count() or 1),
                ram_gb=self.cfg.ram_gb or round(memory_gb(), 2),
                disk_gb=self.cfg.disk_gb or round(disk, 1),
            )
        ]

    def launch(self, spec: LaunchSpec) -> LaunchRecord:
        """Start the instance's agent (in its own mount namespace when isolated). The record's
        data names the agent's process (pid and start time), so a later gateway process finds
        it again."""
        instance_id, offer, token = spec.instance_id, spec.offer, spec.token
        pool = f"{offer.instance_type}/{offer.zone}"
        if pool in self.no_capacity or f"{pool}/{offer.market}" in self.no_capacity:
            raise CapacityUnavailable(offer.instance_type, offer.zone, offer.market)
        work = self.work_root / instance_id
        work.mkdir(parents=True, exist_ok=True)
        # isolated: its own folder at the standard path, in its own mount namespace; else the
        # instances share one tasks folder so that a capsule restores at the same path
        seen = INSTANCE_ROOT if self.isolated else work
        cmd = [
            sys.executable,
            "-m",
            "capsule_runtime.agent",
            "--gateway",
            self.gateway_url,
            "--instance-id",
            instance_id,
            "--work-dir",
            str(seen),
            "--tasks-dir",
            str(seen / "tasks" if self.isolated else self.work_root / "tasks"),
            "--cpu-cores",
            str(offer.cpu_cores),
            "--ram-gb",
            str(offer.ram_gb),
            "--disk-gb",
            str(offer.disk_gb),
            "--gateway-lost-seconds",
            str(self.gateway_lost_seconds),
            "--gateway-file",
            str(self.url_file),
        ]
        meta = InstanceMetadata(instance_id, offer.instance_type, offer.zone)
        self.metadata[instance_id] = meta
        cmd += ["--imds-url", meta.url, "--imds-interval", str(self.cfg.interruption_poll_seconds)]
        if self.isolated:
            # a private copy of every mount; the instance's folder bound over the standard path
            # in it alone, then the agent (podman, conmon, CRIU and the containers inherit it)
            mount = 'mount --bind "$1" "$2" && shift 2 && exec "$@"'
            cmd = [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                mount,
                "instance",
                str(work),
                str(INSTANCE_ROOT),
                *cmd,
            ]
        env = dict(os.environ, TESCAPE_AGENT_TOKEN=token)
        if not self.cgroups_unsupported:
            group = InstanceCgroup(instance_id, offer.cpu_cores, offer.ram_gb)
            try:
                group.create()
            except OSError as exc:  # the instance runs on, its containers held by their own
                log.warning("instance %s gets no cgroup of its own: %s", instance_id, exc)
                group.remove(wait=0)
            else:
                self.cgroups[instance_id] = group
                env[cgroup_parent.ENV] = group.parent
        try:
            with open(work / "agent.log", "ab") as out:
                # the gateway runs with umask 0077; a task's own files get the usual 0022 (its
                # folder lies inside the private data dir, and the capsule store is 0600 itself)
                proc = subprocess.Popen(
                    cmd,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                    umask=AGENT_UMASK,
                )
        except OSError as exc:
            self._forget(instance_id)
            self._drop_cgroup(instance_id)
            raise ProviderError(f"cannot start a local agent: {exc}") from exc
        self.processes[instance_id] = proc
        log.info("launched local instance %s (agent pid %d)", instance_id, proc.pid)
        data = {"pid": proc.pid, "started": process_start(proc.pid), "work_dir": str(work)}
        return LaunchRecord(instance_id, offer.zone, data)

    def query(self, records: Sequence[LaunchRecord]) -> dict[str, CloudState | None]:
        """RUNNING while the agent process lives; TERMINATED once an agent this process started
        has exited; None for one it does not know. An agent an earlier gateway process started
        is found by the pid and start time in its record."""
        states: dict[str, CloudState | None] = {}
        for record in records:
            proc = self.processes.get(record.provider_id)
            if proc is not None:
                states[record.provider_id] = (
                    CloudState.RUNNING if proc.poll() is None else CloudState.TERMINATED
                )
            else:
                found = self._recorded_pid(record) is not None
                states[record.provider_id] = CloudState.RUNNING if found else None
        return states

    def _recorded_pid(self, record: LaunchRecord) -> int | None:
        """The agent process a launch record names, when it still runs (same pid, same start
        time, an agent of this instance and this data dir)."""
        data: dict[str, Any] = record.provider_data
        pid = data.get("pid")
        if not isinstance(pid, int) or pid <= 0:
            return None
        if data.get("started") is None or process_start(pid) != data["started"]:
            return None
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        if record.provider_id.encode() not in argv or not self._ours(argv):
            return None
        return pid

    def adopt(self, instance: Instance) -> bool:
        """Take over the agent of `instance` that an earlier gateway process of this data dir
        started and left running (it died: SIGKILL, a crash): from now on it is driven as if
        this process had started it (`alive`, `terminate`, `interrupt`), its metadata service
        answers again on the port the agent watches, and its cgroup is removed with it. False
        when no such agent runs (it is gone: the instance is lost)."""
        if instance.id in self.processes:
            return self._running(instance.id)
        pid = self.orphan_pid(instance.id, anywhere=True)
        argv = argv_of(pid) if pid is not None else None
        if pid is None or argv is None:
            return False
        agent = AdoptedAgent(pid, argv)
        if not agent.running():
            return False
        self.processes[instance.id] = agent
        self._redirect(instance.id, option(argv, "--gateway-file"))
        imds = option(argv, "--imds-url")
        if imds and instance.id not in self.metadata:
            port = int(imds.rpartition(":")[2] or 0)
            try:
                meta = InstanceMetadata(instance.id, instance.instance_type, instance.zone, port)
            except OSError as exc:  # the agent runs on; only simulated reclaims miss it
                log.warning(
                    "instance %s: no metadata service on port %d: %s", instance.id, port, exc
                )
            else:
                self.metadata[instance.id] = meta
        if not self.cgroups_unsupported:
            group = InstanceCgroup(instance.id, 0.0, 0.0)
            if group.exists():
                self.cgroups[instance.id] = group
        log.warning(
            "instance %s: adopted the agent an earlier gateway left (pid %d)", instance.id, pid
        )
        return True

    def _redirect(self, instance_id: str, url_file: str | None) -> None:
        """An agent another gateway started (it led the scheduler and died): note where its
        folder is, and write this gateway's URL into the file it rereads when its own gateway
        cannot be reached, so it polls here from now on."""
        if not url_file or Path(url_file) == self.url_file:
            return
        self.roots[instance_id] = Path(url_file).parent
        try:
            Path(url_file).write_text(self.gateway_url + "\n")
        except OSError as exc:
            log.warning(
                "instance %s: cannot tell its agent where this gateway is: %s", instance_id, exc
            )

    def _root(self, instance_id: str) -> Path:
        return self.roots.get(instance_id, self.work_root)

    def terminate(self, record: LaunchRecord) -> None:
        instance_id = record.provider_id
        if instance_id not in self.processes:
            # an agent an earlier gateway process left (not adopted), or the containers of one
            # that died as well: none may run its tasks on while they are recovered elsewhere
            # (never two live copies of one task)
            pid = self._recorded_pid(record) or self.orphan_pid(instance_id)
            if pid is not None or self._recorded(instance_id):
                log.warning("instance %s: stopping what an earlier gateway left", instance_id)
                self._kill_agent(instance_id, pid)
        self._stop([instance_id])
        self._forget(instance_id)
        self._drop_cgroup(instance_id)

    def _drop_cgroup(self, instance_id: str, wait: bool = False) -> None:
        """Remove the instance's cgroup once conmon and the containers have left it: in the
        background (it may take a moment), or before returning (`wait`: gateway shutdown)."""
        if (group := self.cgroups.pop(instance_id, None)) is None:
            return
        if wait:
            group.remove()
        else:
            threading.Thread(target=group.remove, name=f"cgroup-{instance_id}", daemon=True).start()

    def interrupt(self, record: LaunchRecord, notice_seconds: float) -> str:
        """Post a Spot interruption notice; the instance dies hard `notice_seconds` later.
        Returns the deadline (RFC 3339). Raises ProviderError for an instance not running."""
        instance_id = record.provider_id
        meta = self.metadata.get(instance_id)
        if meta is None or not self._running(instance_id):
            raise ProviderError(f"instance {instance_id} is not running here")
        deadline = datetime.now(UTC) + timedelta(seconds=notice_seconds)
        meta.notice(deadline)
        timer = threading.Timer(notice_seconds, self.kill_hard, args=(instance_id,))
        timer.daemon = True
        if (old := self._deadlines.pop(instance_id, None)) is not None:
            old.cancel()
        self._deadlines[instance_id] = timer
        timer.start()
        log.warning("instance %s: interruption notice, reclaimed at %s", instance_id, deadline)
        return aws_time(deadline)

    def reclaims(
        self, instances: Sequence[Instance], dt_seconds: float
    ) -> list[tuple[Instance, float]]:
        """The simulated market's reclaims (its interruption buckets) among `instances`."""
        if self.market is None:
            return []
        notice = self.market.config.notice_seconds
        return [(i, notice) for i in self.market.draw_interruptions(instances, dt_seconds)]

    def kill_hard(self, instance_id: str) -> None:
        """The reclaim itself: no grace (see `_kill_agent`)."""
        proc = self.processes.get(instance_id)
        alive = proc is not None and proc.poll() is None
        self._kill_agent(instance_id, proc.pid if proc is not None and alive else None)
        if proc is not None and alive:
            proc.wait()

    def _kill_agent(self, instance_id: str, pid: int | None) -> None:
        """The agent's process group is frozen (SIGSTOP) and then killed (SIGKILL) with
        everything it started: a checkpoint in progress (podman, CRIU, the freeze hook) dies with
        it, so it cannot hold its container's lock and block the removal. Then every container the
        agent recorded (<work>/containers/<id>) is removed from inside the instance's mount
        namespace, where its network namespace and root file system are mounted; the namespace is
        held open by a descriptor taken before the kill."""
        namespace: int | None = None
        ids: list[str] = []
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGSTOP)
            if self.isolated:
                with contextlib.suppress(OSError):
                    namespace = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        try:
            ledger = self._root(instance_id) / instance_id / "containers"
            ids = [p.name for p in ledger.iterdir()] if ledger.is_dir() else []
            if ids and namespace is None and self.isolated:
                namespace = _namespace_of(ids)  # the agent died before: its containers hold it
            if ids:
                from capsule_runtime.engine.podman import PodmanEngine
                from capsule_runtime.engine.podman_cli import PodmanCli

                inside = (
                    ["nsenter", f"--mount=/proc/{os.getpid()}/fd/{namespace}", "--"]
                    if namespace is not None
                    else []
                )
                engine = PodmanEngine(PodmanCli(prefix=inside))
                for cid in ids:
                    try:
                        engine.remove(cid)
                    except EngineError as exc:  # the next container still goes
                        log.error("instance %s: removing %s: %s", instance_id, cid, exc)
                    (ledger / cid).unlink(missing_ok=True)
        finally:
            if namespace is not None:
                os.close(namespace)
        self._drop_cgroup(instance_id)
        log.warning(
            "instance %s reclaimed: agent killed, %d containers removed", instance_id, len(ids)
        )

    def _recorded(self, instance_id: str) -> bool:
        """Whether the instance's agent recorded containers it has not removed."""
        ledger = self._root(instance_id) / instance_id / "containers"
        return ledger.is_dir() and any(ledger.iterdir())

    def orphan_pid(self, instance_id: str, anywhere: bool = False) -> int | None:
        """The process group of an agent of `instance_id` that an earlier gateway process started
        and left behind (a SIGKILLed gateway's agents live on in sessions of their own), found by
        its command line; None when there is none. `anywhere`: of any data dir (instance ids
        are unique, and one in this database is this database's: another gateway on it, which
        led the scheduler, started it)."""
        needle = [b"capsule_runtime.agent", b"--instance-id", instance_id.encode()]
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                if all(n in argv for n in needle) and (anywhere or self._ours(argv)):
                    return os.getpgid(int(entry.name))
            except (OSError, ProcessLookupError):
                continue
        return None

    def _ours(self, argv: list[bytes]) -> bool:
        """An agent of this data dir: its --work-dir or --tasks-dir lies under our work root
        (isolated agents see the standard path; their unshare wrapper names our folder)."""
        root = str(self.work_root).encode()
        return any(arg.startswith(root) for arg in argv) or (
            self.isolated and str(INSTANCE_ROOT).encode() in argv
        )

    def _forget(self, instance_id: str) -> None:
        if (timer := self._deadlines.pop(instance_id, None)) is not None:
            timer.cancel()
        if (meta := self.metadata.pop(instance_id, None)) is not None:
            meta.close()

    def _stop(self, instance_ids: list[str]) -> None:
        """SIGTERM every agent at once (each stops its containers and exits), then wait for all
        of them together. An agent left after the grace period (hung, frozen, cut off) is
        killed with everything it started, and its containers are removed (`_kill_agent`): a
        stopped instance runs no copy of a task on, as a terminated machine would not."""
        procs = [(i, p) for i in instance_ids if (p := self.processes.pop(i, None)) is not None]
        live = [(i, p) for i, p in procs if p.poll() is None]
        for _, proc in live:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for instance_id, proc in live:
            try:
                # a frozen agent (SIGSTOP: cut off, being debugged) cannot act on SIGTERM
                grace = 0.1 if _frozen(proc.pid) else max(0.1, deadline - time.monotonic())
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                log.warning("agent pid %d did not stop in %ds; killing it", proc.pid, STOP_GRACE)
                self._kill_agent(instance_id, proc.pid)
                proc.wait()

    def _running(self, instance_id: str) -> bool:
        proc = self.processes.get(instance_id)
        return proc is not None and proc.poll() is None

    def log_hint(self, record: LaunchRecord) -> str:
        return str(self._root(record.provider_id) / record.provider_id / "agent.log")

    def close(self) -> None:
        ids = list(self.processes)
        self._stop(ids)
        for instance_id in list(self.metadata):
            self._forget(instance_id)
        for instance_id in list(self.cgroups):
            self._drop_cgroup(instance_id, wait=True)


def _frozen(pid: int) -> bool:
    """Whether the process is stopped (state T in /proc/<pid>/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["T"]


def from_context(context: ProviderContext) -> LocalProvider:
    """`providers.default: local` (registry): agents under <data dir>/instances."""
    cfg = context.config
    return LocalProvider(
        cfg.providers.local,
        context.gateway_url,
        cfg.data_path / "instances",
        market=context.market,
        gateway_lost_seconds=cfg.agent.gateway_lost_seconds,
    )
