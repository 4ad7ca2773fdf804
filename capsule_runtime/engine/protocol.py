"""The container engine interface the worker agent uses; podman and an in-memory fake implement it.

A task's executor, as the agent will drive it:

    engine.ensure_image("localhost/tescape-test/busybox:1")
    cid = engine.run(ContainerSpec(image=..., argv=("sh", "-c", "exit 3"), task_id="t1", ...))
    engine.wait(cid, timeout=3600)  # -> 3 (128 + signal if killed); WaitTimeout if still running
    engine.remove(cid)

Cancelling: `engine.stop(cid, grace=10)` (SIGTERM, then SIGKILL after `grace` seconds), then
`wait` returns at once and `remove` cleans up. Every container carries the label
`io.tescape.task=<task_id>`; `list_containers()` finds them (leak checks, cleanup after a crash).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from capsule_runtime.engine.errors import EngineError
from capsule_runtime.engine.spec import CheckpointOptions, ContainerInfo, ContainerSpec


@runtime_checkable
class ContainerEngine(Protocol):
    def has_image(self, ref: str) -> bool:
        """Whether `ref` is in the local store (never pulls)."""
        ...

    def ensure_image(self, ref: str, auth_file: Path | None = None, tls_verify: bool = True) -> str:
        """Make `ref` available locally (pull only when missing); return the image id.
        `auth_file`: a containers-auth.json with the registry's credentials, for the pull only.
        `tls_verify=False`: the registry speaks plain HTTP or has a certificate we cannot verify.
        Raises ImageNotFound, RegistryAuthFailed."""
        ...

    def load_archive(self, path: Path) -> list[str]:
        """Load a docker-archive or oci-archive (`podman save`) into the local store; return the
        references it tagged."""
        ...

    def create(self, spec: ContainerSpec) -> str:
        """Create (do not start) a container; return its id."""
        ...

    def start(self, container_id: str) -> None: ...

    def run(self, spec: ContainerSpec) -> str:
        """Create and start; a container that fails to start is removed before the error rises.
        Written once here: the engines subclass this protocol and inherit it."""
        container_id = self.create(spec)
        try:
            self.start(container_id)
        except EngineError:
            self.remove(container_id)
            raise
        return container_id

    def wait(self, container_id: str, timeout: float | None = None) -> int:
        """Block until the container exits; return its exit code. Raises WaitTimeout."""
        ...

    def stop(self, container_id: str, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds. A container that is not running is fine."""
        ...

    def remove(self, container_id: str) -> None:
        """Remove the container, killing it if needed. Removing a missing container is fine."""
        ...

    def inspect(self, container_id: str) -> ContainerInfo:
        """Raises ContainerNotFound."""
        ...

    def update(
        self, container_id: str, cpu_cores: float | None = None, memory_bytes: int | None = None
    ) -> None:
        """Change a running container's CPU and memory limits in place (None: unchanged).
        Raises ContainerNotFound, or EngineError when the limits cannot be applied."""
        ...

    def checkpoint(
        self,
        container_id: str,
        export: Path,
        options: CheckpointOptions,
        *,
        leave_running: bool = False,
    ) -> dict[str, Any]:
        """Checkpoint a running container with CRIU into an uncompressed archive at `export`
        (a file, or a FIFO another thread reads). Without `leave_running` the container ends
        (state exited). Returns statistics (seconds; CRIU's frozen time and pages written when
        the engine knows them). Raises EngineError."""
        ...

    def restore(
        self, archive: Path, name: str, options: CheckpointOptions
    ) -> tuple[str, dict[str, Any]]:
        """Recreate and resume a container from a checkpoint archive, named `name` (podman keeps
        the checkpointed name when TCP connections are restored); return its id and statistics.
        The image must be present. Raises EngineError (nothing is left behind)."""
        ...

    def checkpoint_dir(self, container_id: str) -> Path | None:
        """Where CRIU writes this container's images during `checkpoint` (podman: its
        userdata's `checkpoint/`), for an agent that follows them as they are written
        (checkpointing's "images" path); None: not known (the export alone is used)."""
        return None

    def import_opens(self) -> int | None:
        """How many times `restore` opens its archive, when the archive may be a FIFO served by
        another thread (capsule_runtime/restore_fifo); None: it must be a regular file."""
        return None

    def list_containers(self) -> list[ContainerInfo]:
        """Every container this engine's labels select (all tescape containers by default)."""
        ...
