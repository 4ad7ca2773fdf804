"""`FakeEngine`: an in-memory ContainerEngine for fast tests, with podman's lifecycle semantics.

What a started container does comes from a behaviour: `(spec) -> FakeProcess`. The default one
knows a few commands (`true`, `false`, `echo`, `cat`, `sleep`, `sh -c "exit N"`); tests pass
their own for anything else. A container whose FakeProcess has `exit_code=None` keeps running
until `stop`, `remove` or the test's `finish(cid, code)`. `wait` blocks (thread-safe) like podman's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import itertools
import json
import re
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from capsule_runtime.engine import freeze
from capsule_runtime.engine.errors import (
    ContainerNotFound,
    EngineError,
    ImageNotFound,
    WaitTimeout,
)
from capsule_runtime.engine.protocol import ContainerEngine
from capsule_runtime.engine.spec import (
    CheckpointOptions,
    ContainerInfo,
    ContainerSpec,
    ContainerState,
)

SIGTERM_EXIT = 128 + 15
SIGKILL_EXIT = 128 + 9


@dataclass(frozen=True)
class FakeProcess:
    """What a fake container does when started."""

    exit_code: int | None = 0  # None: runs until stopped or finished by the test
    stdout: bytes = b""
    stderr: bytes = b""
    ignores_sigterm: bool = False  # then `stop` ends it with SIGKILL (137), else SIGTERM (143)
    oom_killed: bool = False  # exits 137 at once with OOMKilled set


Behaviour = Callable[[ContainerSpec], FakeProcess]
_EXIT = re.compile(r"^\s*exit\s+(\d+)\s*$")


def default_behaviour(spec: ContainerSpec) -> FakeProcess:
    name, args = Path(spec.argv[0]).name, spec.argv[1:]
    if name == "true":
        return FakeProcess(0)
    if name == "false":
        return FakeProcess(1)
    if name == "echo":
        return FakeProcess(0, stdout=(" ".join(args) + "\n").encode())
    if name == "cat" and not args:
        return FakeProcess(0, stdout=Path(spec.stdin).read_bytes() if spec.stdin else b"")
    if name == "sleep":
        return FakeProcess(None, ignores_sigterm=True)  # PID 1 ignores SIGTERM without a handler
    if name in ("sh", "bash") and len(args) == 2 and args[0] == "-c":
        match = _EXIT.match(args[1])
        if match:
            return FakeProcess(int(match.group(1)))
    return FakeProcess(0)


@dataclass
class _Container:
    id: str
    name: str
    spec: ContainerSpec
    labels: dict[str, str]
    state: ContainerState = ContainerState.CREATED
    process: FakeProcess = field(default_factory=FakeProcess)
    exit_code: int | None = None
    pid: int | None = None
    oom_killed: bool = False


class FakeEngine(ContainerEngine):
    """In-memory containers. `images` are present locally; `pullable` ones appear on first
    `ensure_image` (recorded in `pulls`, and in `pull_details` with what the pull was given: the
    auth file's content and mode as they were during the pull, and tls_verify). `load_archive`
    reads the tags of a real docker-archive or oci-archive."""

    def __init__(
        self,
        behaviour: Behaviour = default_behaviour,
        *,
        images: Iterable[str] = (),
        pullable: Iterable[str] = (),
        labels: Mapping[str, str] | None = None,
    ) -> None:
        self.behaviour = behaviour
        self.images = set(images)
        self.pullable = set(pullable)
        self.labels = dict(labels or {})
        self.pulls: list[str] = []
        self.pull_details: list[dict[str, Any]] = []
        self.updates: list[tuple[str, float | None, int | None]] = []  # (id, cpu, memory)
        self._containers: dict[str, _Container] = {}
        self._changed = threading.Condition()
        self._pids = itertools.count(1000)

    # images
    def has_image(self, ref: str) -> bool:
        return ref in self.images

    def ensure_image(self, ref: str, auth_file: Path | None = None, tls_verify: bool = True) -> str:
        if ref not in self.images:
            if ref not in self.pullable:
                raise ImageNotFound(f"image {ref} not found", stderr=f"{ref}: image not known")
            self.pulls.append(ref)
            self.pull_details.append(
                {
                    "ref": ref,
                    "auth": json.loads(auth_file.read_text()) if auth_file else None,
                    "auth_mode": auth_file.stat().st_mode & 0o777 if auth_file else None,
                    "tls_verify": tls_verify,
                }
            )
            self.images.add(ref)
        return "sha256:" + hashlib.sha256(ref.encode()).hexdigest()

    def load_archive(self, path: Path) -> list[str]:
        try:
            with tarfile.open(path) as tar:
                names = set(tar.getnames())
                if "manifest.json" in names:
                    member = tar.extractfile("manifest.json")
                    manifest = json.load(member) if member else []
                    refs = [t for entry in manifest for t in entry.get("RepoTags") or []]
                elif "index.json" in names:
                    member = tar.extractfile("index.json")
                    index = json.load(member) if member else {}
                    refs = [
                        m["annotations"]["org.opencontainers.image.ref.name"]
                        for m in index.get("manifests", [])
                        if "org.opencontainers.image.ref.name" in m.get("annotations", {})
                    ]
                else:
                    raise EngineError(f"{path} is not an image archive")
        except (tarfile.TarError, OSError, ValueError) as exc:
            raise EngineError(f"podman load failed: {exc}") from None
        self.images.update(refs)
        return refs

    # containers
    def create(self, spec: ContainerSpec) -> str:
        if spec.image not in self.images:
            raise ImageNotFound(f"image {spec.image} not found", stderr="image not known")
        if spec.stdin is not None and not Path(spec.stdin).is_file():
            raise EngineError(f"stdin file {spec.stdin} does not exist")
        with self._changed:
            cid = uuid.uuid4().hex + uuid.uuid4().hex
            name = spec.name or f"tescape-{spec.task_id}-{cid[:8]}"
            if any(c.name == name for c in self._containers.values()):
                raise EngineError(f"container name {name} is already in use")
            labels = {**self.labels, **spec.all_labels}
            self._containers[cid] = _Container(cid, name, spec, labels)
        for path in (spec.stdout, spec.stderr):
            if path is not None:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                Path(path).write_bytes(b"")
        return cid

    def start(self, container_id: str) -> None:
        with self._changed:
            ctr = self._get(container_id)
            if ctr.state is ContainerState.RUNNING:
                return
            process = self.behaviour(ctr.spec)
            ctr.process, ctr.pid, ctr.exit_code = process, next(self._pids), None
            ctr.state = ContainerState.RUNNING
            _write_output(ctr.spec, process)
            if process.oom_killed:
                self._exit(ctr, SIGKILL_EXIT, oom=True)
            elif process.exit_code is not None:
                self._exit(ctr, process.exit_code)

    def wait(self, container_id: str, timeout: float | None = None) -> int:
        with self._changed:
            ended = self._changed.wait_for(
                lambda: self._get(container_id).state is ContainerState.EXITED, timeout
            )
            if not ended:
                raise WaitTimeout(f"container {container_id} still running after {timeout} s")
            code = self._get(container_id).exit_code
            assert code is not None
            return code

    def stop(self, container_id: str, grace: float = 10.0) -> None:
        with self._changed:
            ctr = self._get(container_id)
            if ctr.state is ContainerState.RUNNING:
                self._exit(ctr, SIGKILL_EXIT if ctr.process.ignores_sigterm else SIGTERM_EXIT)

    def remove(self, container_id: str) -> None:
        with self._changed:
            for key in [k for k, c in self._containers.items() if container_id in (k, c.name)]:
                del self._containers[key]
            self._changed.notify_all()

    def update(
        self, container_id: str, cpu_cores: float | None = None, memory_bytes: int | None = None
    ) -> None:
        with self._changed:
            ctr = self._get(container_id)
            changes: dict[str, object] = {}
            if cpu_cores is not None:
                changes["cpu_cores"] = cpu_cores
            if memory_bytes is not None:
                changes["memory_bytes"] = memory_bytes
            ctr.spec = dataclasses.replace(ctr.spec, **changes)  # type: ignore[arg-type]
            self.updates.append((ctr.id, cpu_cores, memory_bytes))

    def inspect(self, container_id: str) -> ContainerInfo:
        with self._changed:
            ctr = self._get(container_id)
            return ContainerInfo(
                id=ctr.id,
                name=ctr.name,
                image=ctr.spec.image,
                state=ctr.state,
                exit_code=ctr.exit_code,
                pid=ctr.pid if ctr.state is ContainerState.RUNNING else None,
                oom_killed=ctr.oom_killed,
                labels=dict(ctr.labels),
            )

    def list_containers(self) -> list[ContainerInfo]:
        with self._changed:
            ids = [
                c.id
                for c in self._containers.values()
                if all(c.labels.get(k) == v for k, v in self.labels.items())
            ]
        return [self.inspect(cid) for cid in ids]

    # checkpoint / restore: the archive is a tar of the container's spec; the freeze gate is
    # honoured as CRIU's action script would (engine/freeze.py)
    def checkpoint(
        self,
        container_id: str,
        export: Path,
        options: CheckpointOptions,
        *,
        leave_running: bool = False,
    ) -> dict[str, Any]:
        with self._changed:
            ctr = self._get(container_id)
            if ctr.state is not ContainerState.RUNNING:
                raise EngineError(f"container {container_id} is not running")
            pid = ctr.pid
        gate = freeze.GATES / str(pid)
        if gate.is_dir():
            (gate / "frozen").touch()
            deadline = time.monotonic() + 60
            while not (gate / "thaw").exists() and time.monotonic() < deadline:
                time.sleep(0.005)
        doc = json.dumps(
            {"image": ctr.spec.image, "argv": list(ctr.spec.argv), "task_id": ctr.spec.task_id}
        ).encode()
        with open(export, "wb") as out, tarfile.open(fileobj=out, mode="w|") as tar:
            info = tarfile.TarInfo("fake-checkpoint.json")
            info.size = len(doc)
            tar.addfile(info, io.BytesIO(doc))
        if not leave_running:
            with self._changed:
                self._exit(ctr, 0)
        return {"seconds": 0.0}

    def restore(
        self, archive: Path, name: str, options: CheckpointOptions
    ) -> tuple[str, dict[str, Any]]:
        try:
            with tarfile.open(archive) as tar:
                member = tar.extractfile("fake-checkpoint.json")
                doc = json.load(member) if member else {}
        except (tarfile.TarError, KeyError, ValueError) as exc:
            raise EngineError(f"podman restore failed: {exc}") from None
        spec = ContainerSpec(
            image=doc["image"], argv=tuple(doc["argv"]), task_id=doc["task_id"], name=name
        )
        with self._changed:
            cid = uuid.uuid4().hex + uuid.uuid4().hex
            ctr = _Container(cid, name, spec, {**self.labels, **spec.all_labels})
            ctr.process = FakeProcess(None)
            ctr.state, ctr.pid = ContainerState.RUNNING, next(self._pids)
            self._containers[cid] = ctr
        return cid, {"seconds": 0.0}

    # test controls
    def finish(self, container_id: str, exit_code: int) -> None:
        """Make a running container exit with `exit_code` (as if its process ended)."""
        with self._changed:
            ctr = self._get(container_id)
            if ctr.state is not ContainerState.RUNNING:
                raise EngineError(f"container {container_id} is not running")
            self._exit(ctr, exit_code)

    def set_behaviour(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour

    def _exit(self, ctr: _Container, code: int, oom: bool = False) -> None:
        ctr.state, ctr.exit_code, ctr.oom_killed = ContainerState.EXITED, code, oom
        ctr.process = replace(ctr.process, exit_code=code)
        self._changed.notify_all()

    def _get(self, container_id: str) -> _Container:
        ctr = self._containers.get(container_id)
        if ctr is None:
            ctr = next((c for c in self._containers.values() if c.name == container_id), None)
        if ctr is None:
            raise ContainerNotFound(
                f"no container {container_id}",
                stderr=f'no container with name or ID "{container_id}" found: no such container',
            )
        return ctr


def _write_output(spec: ContainerSpec, process: FakeProcess) -> None:
    if spec.stdout is not None:
        with open(spec.stdout, "ab") as f:
            f.write(process.stdout)
    if spec.stderr is not None:
        with open(spec.stderr, "ab") as f:
            f.write(process.stderr)
