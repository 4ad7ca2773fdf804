"""What to run in a container (`ContainerSpec`) and what the engine reports (`ContainerInfo`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath

# Every container tescape creates carries this label (value: the task id), so that a leak check or
# a cleanup can find them all with one filter.
TASK_LABEL = "io.tescape.task"

# Characters podman's `--volume host:container:options` syntax cannot carry.
_MOUNT_FORBIDDEN = (":", ",", "\n", "\0")


class Network(StrEnum):
    BRIDGE = "bridge"  # podman's default network: outbound access through NAT
    NONE = "none"  # loopback only, and ~0.2 s faster to start


class ContainerState(StrEnum):
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    EXITED = "exited"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Mount:
    """A bind mount: `host` (must exist) appears at `container`, read-only or read-write."""

    host: Path
    container: str
    read_only: bool = False

    def __post_init__(self) -> None:
        if not Path(self.host).is_absolute():
            raise ValueError(f"mount source must be an absolute path: {self.host}")
        if not PurePosixPath(self.container).is_absolute():
            raise ValueError(f"mount target must be an absolute path: {self.container}")
        for path in (str(self.host), self.container):
            if any(ch in path for ch in _MOUNT_FORBIDDEN):
                raise ValueError(f"mount path with ':' or ',' is not supported: {path!r}")


@dataclass(frozen=True)
class ContainerSpec:
    """One container to create. `argv` replaces the image's entrypoint and command (TES semantics).

    `stdin`, `stdout` and `stderr` are host files: stdin is read from an existing file; stdout and
    stderr are created (truncated) and written while the container runs. The same path may be
    given for both. Without them, stdin is empty and output goes to the engine's log.
    """

    image: str
    argv: tuple[str, ...]
    task_id: str
    name: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str | None = None
    mounts: tuple[Mount, ...] = ()
    stdin: Path | None = None
    stdout: Path | None = None
    stderr: Path | None = None
    cpu_cores: float | None = None
    memory_bytes: int | None = None
    network: Network = Network.BRIDGE
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "argv", tuple(self.argv))
        object.__setattr__(self, "mounts", tuple(self.mounts))
        if not self.argv:
            raise ValueError("argv must not be empty")
        if not self.task_id:
            raise ValueError("task_id must not be empty")
        for key in self.env:
            if not key or "=" in key or "\0" in key:
                raise ValueError(f"invalid environment variable name: {key!r}")
        if self.workdir is not None and not PurePosixPath(self.workdir).is_absolute():
            raise ValueError(f"workdir must be an absolute path: {self.workdir}")
        if self.cpu_cores is not None and self.cpu_cores <= 0:
            raise ValueError("cpu_cores must be positive")
        if self.memory_bytes is not None and self.memory_bytes < 6 * 1024 * 1024:
            raise ValueError("memory_bytes must be at least 6 MiB (runc's minimum)")
        if TASK_LABEL in self.labels:
            raise ValueError(f"{TASK_LABEL} is set from task_id")

    @property
    def all_labels(self) -> dict[str, str]:
        return {**self.labels, TASK_LABEL: self.task_id}


@dataclass(frozen=True)
class ContainerInfo:
    """A container as the engine sees it now."""

    id: str
    name: str
    image: str
    state: ContainerState
    exit_code: int | None
    pid: int | None
    oom_killed: bool
    labels: Mapping[str, str]

    @property
    def task_id(self) -> str | None:
        return self.labels.get(TASK_LABEL)


@dataclass(frozen=True)
class CheckpointOptions:
    """How CRIU treats what a task holds: established TCP connections and file locks are only
    dumped when asked for (a restore must then be asked the same)."""

    tcp_established: bool = False
    file_locks: bool = False
