"""`PodmanEngine`: the ContainerEngine over the podman CLI (rootful, runc, private config)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import resource
import secrets
import stat
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from capsule_runtime.engine import cgroup_parent as archived_cgroups
from capsule_runtime.engine import freeze, launcher
from capsule_runtime.engine.errors import (
    ContainerNotFound,
    EngineError,
    EngineTimeout,
    EngineUnavailable,
    ImageNotFound,
    WaitTimeout,
)
from capsule_runtime.engine.podman_cli import PodmanCli, classify
from capsule_runtime.engine.protocol import ContainerEngine
from capsule_runtime.engine.spec import (
    TASK_LABEL,
    CheckpointOptions,
    ContainerInfo,
    ContainerSpec,
    ContainerState,
    Mount,
)
from capsule_runtime.host import podman as host_podman

_STATES = {
    "configured": ContainerState.CREATED,
    "created": ContainerState.CREATED,
    "initialized": ContainerState.CREATED,
    "running": ContainerState.RUNNING,
    "stopping": ContainerState.RUNNING,
    "paused": ContainerState.PAUSED,
    "exited": ContainerState.EXITED,
    "stopped": ContainerState.EXITED,
    "removing": ContainerState.EXITED,
}
QUICK_WAIT_SECONDS = 3.0  # how long `wait` polls fast before settling to podman's pace
DEFAULT_GRAPHROOT = Path("/var/lib/containers/storage")  # rootful podman's default store
_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]+")
# How many times `podman container restore --import ARCHIVE` opens ARCHIVE, by podman version
# (`strace -f -e trace=openat`, 2026-12-03: twice for config.dump and spec.dump alone, then once
# for everything). Only these versions are served through a FIFO (capsule_runtime/restore_fifo).
IMPORT_OPENS = {"4.3.1": 3}
_UNKNOWN = object()


class PodmanEngine(ContainerEngine):
    """Containers through `podman`. `labels` go on every container created and select the ones
    `list_containers` returns (tests use a per-session label to find only their own)."""

    def __init__(
        self,
        cli: PodmanCli | None = None,
        *,
        labels: Mapping[str, str] | None = None,
        busybox: Path = launcher.DEFAULT_BUSYBOX,
        pull_timeout: float = 1800.0,
        checkpoint_timeout: float = 1800.0,
        criu_dir: Path | None = None,
        cgroup_parent: str | None = None,
    ) -> None:
        """`cgroup_parent` (default: $TESCAPE_CGROUP_PARENT, which a local instance's agent
        gets): the cgroup every container is created, and restored, under."""
        self.cli = cli or PodmanCli()
        self.cgroup_parent = cgroup_parent or os.environ.get(archived_cgroups.ENV) or None
        self.labels = dict(labels or {})
        self.busybox = busybox
        self.pull_timeout = pull_timeout
        self.checkpoint_timeout = checkpoint_timeout
        self.criu_config = freeze.ensure_installed(criu_dir or freeze.CRIU_DIR)
        self._import_opens: object = _UNKNOWN

    # images
    def has_image(self, ref: str) -> bool:
        try:
            self._image_id(ref)
        except ImageNotFound:
            return False
        return True

    def ensure_image(self, ref: str, auth_file: Path | None = None, tls_verify: bool = True) -> str:
        try:
            return self._image_id(ref)
        except ImageNotFound:
            pass
        args = ["pull", "--quiet"]
        if auth_file is not None:
            args += ["--authfile", str(auth_file)]
        if not tls_verify:
            args.append("--tls-verify=false")
        self.cli.run(*args, "--", ref, timeout=self.pull_timeout)  # "--": a ref is never a flag
        return self._image_id(ref)

    def load_archive(self, path: Path) -> list[str]:
        out = self.cli.run("load", "--quiet", "--input", str(path), timeout=self.pull_timeout)
        return _loaded(out.stdout)

    def _image_id(self, ref: str) -> str:
        out = self.cli.run("image", "inspect", "--format", "{{.Id}}", "--", ref)
        return out.stdout.strip()

    # containers
    def create(self, spec: ContainerSpec) -> str:
        argv, mounts = spec.argv, spec.mounts
        if launcher.needs_launcher(spec):
            if not launcher.is_static_executable(self.busybox):
                raise EngineUnavailable(
                    f"{self.busybox} is not a static executable: install busybox-static "
                    "(python3 -m capsule_runtime.host.setup)"
                )
            _prepare_stdio(spec)
            launch = launcher.plan(spec, self.busybox)
            argv, mounts = launch.argv, (*mounts, *launch.mounts)
        args = ["create", "--pull=never", "--name", spec.name or _default_name(spec.task_id)]
        for key, value in {**self.labels, **spec.all_labels}.items():
            args += ["--label", f"{key}={value}"]
        args += ["--network", str(spec.network)]
        for key, value in spec.env.items():
            args += ["--env", f"{key}={value}"]
        if spec.workdir:
            args += ["--workdir", spec.workdir]
        for mount in mounts:
            args += ["--volume", _volume(mount)]
        if spec.memory_bytes is not None:
            args += ["--memory", str(spec.memory_bytes)]
        if spec.cpu_cores is not None:
            args += ["--cpus", f"{spec.cpu_cores:g}"]
        if self.cgroup_parent:
            args += ["--cgroup-parent", self.cgroup_parent]
        args += _ulimits()
        args += HARDENING
        # CRIU's action script (the freeze gate) for consistent checkpoints; see freeze.py
        args += ["--annotation", f"{freeze.ANNOTATION}={self.criu_config}"]
        # "--" ends podman's options: no image reference (the task's) can be read as a flag
        args += ["--entrypoint", json.dumps(list(argv)), "--", spec.image]
        out = self.cli.run(*args)
        return out.stdout.strip().splitlines()[-1]

    def start(self, container_id: str) -> None:
        # conmon (2.1.6, cgroup v1) writes its OOM marker into its working directory, and podman
        # looks for it in the container's static dir: start from there, or OOMKilled stays false.
        self.cli.run("start", container_id, timeout=120, cwd=self._static_dir(container_id))

    def _static_dir(self, container_id: str) -> Path:
        """The container's static dir: where podman's default store puts it (saving a podman
        call on every start), else what `podman inspect` says."""
        guess = DEFAULT_GRAPHROOT / "overlay-containers" / container_id / "userdata"
        if len(container_id) == 64 and guess.is_dir():
            return guess
        return Path(
            self.cli.run(
                "container", "inspect", "--format", "{{.StaticDir}}", container_id
            ).stdout.strip()
        )

    def wait(self, container_id: str, timeout: float | None = None) -> int:
        """podman polls the container's state (every 250 ms by default): poll every 10 ms for
        the first seconds, so a short task is seen to end at once, then at the default pace."""
        limit = math.inf if timeout is None else timeout
        quick = min(QUICK_WAIT_SECONDS, limit)
        try:
            return self._wait(container_id, quick, "10ms")
        except WaitTimeout:
            if limit <= quick:
                raise
        return self._wait(container_id, limit - quick, "250ms")

    def _wait(self, container_id: str, limit: float, interval: str) -> int:
        try:
            out = self.cli.run("wait", "--interval", interval, container_id, timeout=limit)
        except EngineTimeout as exc:
            info = self.inspect(container_id)  # it may have ended just now (or timeout was ~0)
            if info.state is ContainerState.EXITED and info.exit_code is not None:
                return info.exit_code
            raise WaitTimeout(
                f"container {container_id} still running after {limit:g} s", argv=exc.argv
            ) from None
        return int(out.stdout.strip().splitlines()[-1])

    def stop(self, container_id: str, grace: float = 10.0) -> None:
        seconds = max(0, math.ceil(grace))
        self.cli.run("stop", "--time", str(seconds), container_id, timeout=seconds + 60)

    def remove(self, container_id: str) -> None:
        self.cli.run("rm", "--force", "--ignore", "--time", "0", container_id, timeout=120)

    def update(
        self, container_id: str, cpu_cores: float | None = None, memory_bytes: int | None = None
    ) -> None:
        args: list[str] = []
        if cpu_cores is not None:
            args += ["--cpus", f"{cpu_cores:g}"]
        if memory_bytes is not None:
            args += ["--memory", str(memory_bytes)]
        if args:
            self.cli.run("update", *args, container_id, timeout=60)

    def inspect(self, container_id: str) -> ContainerInfo:
        out = self.cli.run("container", "inspect", container_id)
        return _info(json.loads(out.stdout)[0])

    # checkpoint / restore (CRIU through runc)
    def checkpoint(
        self,
        container_id: str,
        export: Path,
        options: CheckpointOptions,
        *,
        leave_running: bool = False,
    ) -> dict[str, Any]:
        args = ["container", "checkpoint", "--export", str(export), "--compress", "none"]
        args += ["--print-stats", *_criu_flags(options)]
        if leave_running:
            args.append("--leave-running")
        args.append(container_id)
        started = time.monotonic()
        proc = self.cli.popen(*args)
        try:
            out, err = proc.communicate(timeout=self.checkpoint_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise EngineTimeout(
                f"podman checkpoint took longer than {self.checkpoint_timeout:g} s",
                argv=[self.cli.executable, *args],
            ) from None
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        if proc.returncode != 0:
            raise classify([self.cli.executable, *args], proc.returncode, err)
        return _checkpoint_stats(out, time.monotonic() - started)

    def checkpoint_dir(self, container_id: str) -> Path | None:
        """userdata/checkpoint: runc's --image-path (podman 4.3.1, verified 2026-12-03)."""
        return self._static_dir(container_id) / "checkpoint"

    def import_opens(self) -> int | None:
        """How often `restore --import` of this podman opens its archive (IMPORT_OPENS, by
        version, asked once); None for a version not measured (a scratch file then)."""
        if self._import_opens is _UNKNOWN:
            try:
                out = self.cli.run("version", "--format", "{{.Client.Version}}", timeout=30)
                version = out.stdout.strip()
            except EngineError:
                version = ""
            self._import_opens = IMPORT_OPENS.get(version)
        return self._import_opens  # type: ignore[return-value]

    def restore(
        self, archive: Path, name: str, options: CheckpointOptions
    ) -> tuple[str, dict[str, Any]]:
        # under this instance's cgroup, not the one it was dumped in; a FIFO's writer rewrites
        # the members as it streams them (restore_fifo), and a FIFO can be read only once
        if self.cgroup_parent and not _is_fifo(archive):
            archived_cgroups.retarget(archive, self.cgroup_parent)
        args = ["container", "restore", "--import", str(archive), "--print-stats"]
        if not options.tcp_established:  # podman 4.3 refuses --name with --tcp-established:
            args += ["--name", name]  # the container then keeps its checkpointed name
        args += _criu_flags(options)
        started = time.monotonic()
        try:
            out = self.cli.run(*args, timeout=self.checkpoint_timeout)
        except EngineError as exc:
            # a failed restore may leave a created container behind (its name is in the error)
            for found in re.findall(r"[0-9a-f]{64}", exc.stderr or ""):
                self.remove(found)
            self.remove(name)
            raise
        stats = _checkpoint_stats(out.stdout, time.monotonic() - started)
        found = stats.pop("container_id", None)
        return str(found or self._container_id(name)), stats

    def _container_id(self, name: str) -> str:
        return self.cli.run("container", "inspect", "--format", "{{.Id}}", name).stdout.strip()

    def list_containers(self) -> list[ContainerInfo]:
        args = ["ps", "--all", "--quiet", "--no-trunc", "--filter", f"label={TASK_LABEL}"]
        for key, value in self.labels.items():
            args += ["--filter", f"label={key}={value}"]
        ids = self.cli.run(*args).stdout.split()
        if not ids:
            return []
        try:
            out = self.cli.run("container", "inspect", *ids)
            return [_info(item) for item in json.loads(out.stdout)]
        except ContainerNotFound:  # one went away meanwhile: ask one by one
            found = []
            for container_id in ids:
                try:
                    found.append(self.inspect(container_id))
                except ContainerNotFound:
                    continue
            return found


def _is_fifo(path: Path) -> bool:
    try:
        return stat.S_ISFIFO(path.stat().st_mode)
    except OSError:
        return False


def _criu_flags(options: CheckpointOptions) -> list[str]:
    flags = []
    if options.tcp_established:
        flags.append("--tcp-established")
    if options.file_locks:
        flags.append("--file-locks")
    return flags


def _checkpoint_stats(stdout: str, seconds: float) -> dict[str, Any]:
    """podman's `--print-stats` JSON (durations in microseconds) as seconds, plus the wall time."""
    stats: dict[str, Any] = {"seconds": round(seconds, 4)}
    try:
        raw = json.loads(stdout[stdout.index("{") :])
    except ValueError:
        return stats
    for key in ("podman_checkpoint_duration", "podman_restore_duration"):
        if key in raw:
            stats[key.removeprefix("podman_")] = raw[key] / 1e6
    items = raw.get("container_statistics") or []
    if items:
        item = items[0]
        stats["container_id"] = item.get("Id") or item.get("id")
        for key in ("runtime_checkpoint_duration", "runtime_restore_duration"):
            if key in item:
                stats[key] = item[key] / 1e6
        criu = item.get("criu_statistics") or {}
        for key, value in criu.items():
            stats[f"criu_{key}"] = value / 1e6 if key.endswith("_time") else value
    return stats


def _loaded(stdout: str) -> list[str]:
    """The references in `podman load`'s "Loaded image: a" / "Loaded image(s): a,b" lines."""
    refs: list[str] = []
    for line in stdout.splitlines():
        _, sep, names = line.partition(":")
        if sep and line.startswith("Loaded image"):
            refs += [name.strip() for name in names.split(",") if name.strip()]
    return refs


# Every task container: no privilege gain through setuid binaries or file capabilities, a cap on
# its process count (a fork bomb stays inside), and no capability to grant capabilities — on top
# of podman's own defaults (no NET_RAW, MKNOD, AUDIT_WRITE, SYS_ADMIN). CRIU checkpoints and
# restores such containers unchanged (it runs on the host; no_new_privs and the capability sets
# are part of what it dumps). See docs/security.md.
PIDS_LIMIT = 4096
DROPPED_CAPABILITIES = ("SETFCAP", "SETPCAP")
HARDENING = [
    "--security-opt",
    "no-new-privileges",
    "--pids-limit",
    str(PIDS_LIMIT),
    *(arg for cap in DROPPED_CAPABILITIES for arg in ("--cap-drop", cap)),
]


def _ulimits() -> list[str]:
    """The containers.conf limits, recomputed for this process: podman inherits our hard limits,
    which may be lower than those of the shell that ran the host setup."""
    nofile = host_podman.nofile_limit(resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    nproc = host_podman.nproc_limit(resource.getrlimit(resource.RLIMIT_NPROC)[1])
    return ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={nproc}:{nproc}"]


def _default_name(task_id: str) -> str:
    safe = _NAME_UNSAFE.sub("-", task_id).strip("-.")[:40] or "task"
    return f"tescape-{safe}-{secrets.token_hex(4)}"


def _volume(mount: Mount) -> str:
    return f"{mount.host}:{mount.container}:{'ro' if mount.read_only else 'rw'}"


def _prepare_stdio(spec: ContainerSpec) -> None:
    """A bind mount needs its source: check stdin, create (truncate) stdout and stderr. None of
    them may be a symlink (it is neither followed nor mounted: the caller resolves links)."""
    if spec.stdin is not None:
        try:
            mode = os.lstat(spec.stdin).st_mode
        except FileNotFoundError:
            raise EngineError(f"stdin file {spec.stdin} does not exist") from None
        if not stat.S_ISREG(mode):
            raise EngineError(f"stdin file {spec.stdin} is not a regular file")
    for path in (spec.stdout, spec.stderr):
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                if not stat.S_ISREG(os.lstat(path).st_mode):
                    raise EngineError(f"{path} exists and is not a regular file")
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK
            try:
                os.close(os.open(path, flags | os.O_CLOEXEC, 0o666))
            except OSError as exc:
                raise EngineError(f"{path}: {exc.strerror}") from None


def _info(raw: dict[str, Any]) -> ContainerInfo:
    state = raw.get("State") or {}
    status = str(state.get("Status", "unknown")).lower()
    parsed = _STATES.get(status, ContainerState.UNKNOWN)
    pid = int(state.get("Pid") or 0)
    return ContainerInfo(
        id=str(raw["Id"]),
        name=str(raw.get("Name", "")).lstrip("/"),
        image=str(raw.get("ImageName") or raw.get("Image") or ""),
        state=parsed,
        exit_code=int(state.get("ExitCode", 0)) if parsed is ContainerState.EXITED else None,
        pid=pid or None,
        oom_killed=bool(state.get("OOMKilled", False)),
        labels=dict((raw.get("Config") or {}).get("Labels") or {}),
    )
