"""Checkpoint a task's running container into a capsule, and restore one (the agent's side).

A capsule of a task holds two parts, written in this order by one streaming pipeline
(capsule_runtime.capsules.pipeline: chunk → zstd → sha256 → store, manifest last):

    workspace   a tar of the task's directory on the instance (its file tree: inputs, outputs,
                work dirs, stdio files), captured while the container is frozen
    container   podman's checkpoint archive (CRIU images, rootfs changes, container config),
                streamed from `podman container checkpoint --export <fifo>` (never a file)

The order of one checkpoint:

    1. the freeze gate is opened for the container's init process (engine/freeze.py)
    2. `podman container checkpoint --export FIFO` starts in a thread; CRIU freezes the task and
       dumps its memory; its post-dump action script holds the task frozen
    3. the workspace part is read from the frozen file tree; then the gate thaws (with
       `--leave-running` the task resumes; otherwise CRIU ends it)
    4. podman writes the archive into the FIFO; the pipeline streams it into the container part
    5. the manifest is written last; a checkpoint that failed anywhere has no manifest

With `capsules.checkpoint_via: images` (and an engine that says where CRIU writes), CRIU's
pages images are read and stored while CRIU writes them, unlinked at post-dump so podman's
export leaves them out, and appended to the container part as tar members of their own
(`_image_chunks`; docs/capsules.md, "Checkpoint without podman's serial export").

A restore reads and verifies the manifest, streams the workspace part back into the same host
path (podman's config names the bind mounts by host path), and runs `podman container restore
--import`. With podman 4.3.1 the archive it imports is a FIFO served from the store as podman
reads it (restore_fifo: podman opens it three times, and only the last open needs more than
the first chunk); with any other engine, or when that cannot serve a restore, the container
part is fetched into a scratch file while the workspace is extracted. Each part's chunks are
fetched, opened, decoded and checked in parallel and written in order (capsules.reader).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import select
import shutil
import stat
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from capsule_runtime.capsules.chunker import archive_end, tar_chunks
from capsule_runtime.capsules.crypto import CapsuleKeyError, KeyWrapper, wrapper_from_settings
from capsule_runtime.capsules.errors import CapsuleCorrupt
from capsule_runtime.capsules.follow_pages import (
    PagesFollower,
    member_header,
    padding,
    remove_stale,
)
from capsule_runtime.capsules.manifest import Manifest
from capsule_runtime.capsules.pipeline import (
    PartSource,
    read_manifest,
    restore_part,
    write_capsule,
)
from capsule_runtime.capsules.reader import chunk_codec, open_part
from capsule_runtime.capsules.store import CapsuleStore
from capsule_runtime.capsules.workspace_tar import extract_directory, tar_directory
from capsule_runtime.capsules.writer import KeyedChunk
from capsule_runtime.engine.errors import EngineError
from capsule_runtime.engine.freeze import FreezeGate
from capsule_runtime.engine.protocol import ContainerEngine
from capsule_runtime.engine.spec import CheckpointOptions
from capsule_runtime.host.cpu import cpu_profile
from capsule_runtime.host.versions import host_versions
from capsule_runtime.protocol.messages import (
    CapsuleRef,
    CapsuleSettings,
    CpuProfile,
    HostVersions,
)
from capsule_runtime.restore_fifo import ExtraOpen, FifoUnsupported, restore_through_fifo
from capsule_runtime.staging.confined import has_symlink

MiB = 1 << 20
log = logging.getLogger(__name__)


class CheckpointFailed(RuntimeError):
    pass


@dataclass
class Checkpoint:
    """A finished checkpoint: its manifest and where it lies, with step durations."""

    manifest: Manifest
    key: str
    sha256: str
    seconds: dict[str, float] = field(default_factory=dict)
    engine_stats: dict[str, Any] = field(default_factory=dict)


def keys_of(settings: CapsuleSettings) -> KeyWrapper | None:
    """What encrypts this task's capsules at rest (None: written in the clear); a setting this
    agent cannot use is a CapsuleKeyError (no capsule of it can be written or read here)."""
    try:
        return wrapper_from_settings(settings.encryption)
    except ValueError as exc:
        raise CapsuleKeyError(f"capsules.encryption: {exc}") from None


def options_of(settings: CapsuleSettings) -> CheckpointOptions:
    return CheckpointOptions(
        tcp_established=settings.tcp_established, file_locks=settings.file_locks
    )


class _Thawing:
    """A reader of the workspace tar that thaws the gate when the tar has been read (or closed)."""

    def __init__(self, inner: BinaryIO, gate: FreezeGate):
        self.inner = inner
        self.gate = gate

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(size)
        if not data and size != 0:
            self.gate.thaw()
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            self.gate.thaw()


class _Podman(threading.Thread):
    """`engine.checkpoint` in a thread; its result or error kept for the readers."""

    def __init__(
        self,
        engine: ContainerEngine,
        container_id: str,
        fifo: Path,
        options: CheckpointOptions,
        leave_running: bool,
    ):
        super().__init__(name=f"checkpoint-{container_id[:12]}", daemon=True)
        self.args = (engine, container_id, fifo, options, leave_running)
        self.stats: dict[str, Any] = {}
        self.error: BaseException | None = None

    def run(self) -> None:
        engine, cid, fifo, options, leave_running = self.args
        try:
            self.stats = engine.checkpoint(cid, fifo, options, leave_running=leave_running)
        except BaseException as exc:
            self.error = exc
        finally:
            _release_fifo(fifo)  # a reader still waiting for a writer gets EOF

    def failed(self) -> BaseException | None:
        self.join()
        return self.error


def _release_fifo(fifo: Path) -> None:
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return  # no reader waiting
    os.close(fd)


def _drain(fifo: Path, podman: _Podman) -> None:
    """Read the FIFO and drop what comes, in a thread, until podman has ended: podman, blocked
    opening or writing its export, then finishes instead of waiting for a reader."""

    def run() -> None:
        try:
            fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            return
        try:
            while True:
                try:
                    data = os.read(fd, 1 << 20)
                except BlockingIOError:  # a writer, nothing written yet
                    select.select([fd], [], [], 0.1)
                    continue
                if data:
                    continue
                if not podman.is_alive():  # no writer (yet, or any more)
                    return
                time.sleep(0.05)
        finally:
            os.close(fd)

    threading.Thread(target=run, name="drain-export", daemon=True).start()


class _FifoReader:
    """The read side of the export FIFO. Opening does not block on a writer that never comes;
    EOF is only accepted once podman has finished without error (else the read raises, so the
    pipeline fails before it writes a manifest)."""

    def __init__(self, fifo: Path, podman: _Podman, timeout: float):
        deadline = time.monotonic() + timeout
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLHUP)
        while not poller.poll(100):
            if not podman.is_alive() and not poller.poll(0):
                os.close(fd)
                raise CheckpointFailed(f"podman checkpoint failed: {podman.failed()}")
            if time.monotonic() > deadline:
                os.close(fd)
                raise CheckpointFailed("podman never wrote the checkpoint archive")
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        self.file = os.fdopen(fd, "rb", buffering=0)
        self.podman = podman

    def read(self, size: int = -1) -> bytes:
        if size == 0:
            return b""
        data = self.file.read(size)
        if not data and (error := self.podman.failed()) is not None:
            raise CheckpointFailed(f"podman checkpoint failed: {error}")
        return data or b""

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.file.close()


def _wait_frozen(gate: FreezeGate, podman: _Podman, timeout: float) -> None:
    """Until CRIU has frozen the task (its files may be read now); CheckpointFailed saying
    why not, with podman's own error when podman has ended."""
    try:
        gate.wait_frozen(alive=podman.is_alive, timeout=timeout)
    except Exception as exc:
        error = podman.failed() if not podman.is_alive() else None
        raise CheckpointFailed(f"{exc}: {error}" if error else str(exc)) from None


END_OF_ARCHIVE = bytes(2 * tarfile.BLOCKSIZE)
POLL = 0.01  # seconds between looks at the growing pages images when nothing was new


def _image_chunks(
    follower: PagesFollower,
    gate: FreezeGate,
    podman: _Podman,
    fifo: Path,
    task_dir: Path,
    chunk_size: int,
    timeout: float,
    follow: bool = True,
) -> Iterator[KeyedChunk]:
    """The "images" path's chunks (write_capsule's `keyed`), in the order they can be known:

    1. with `follow`, the pages images' chunks while CRIU writes them (part 1, keys (1, N, i));
       whatever is cut when post-dump is noticed (checked before each chunk is handed on) is
       held back until the task has been thawed;
    2. at post-dump (task frozen, every image complete) the images are unlinked (kept open),
       the workspace (part 0) is read, and the gate thaws: the task is not held frozen while
       the pipeline catches up with CRIU;
    3. the rest of the pages images' chunks;
    4. podman's export of everything else (`config.dump`, `spec.dump`, the other images,
       `rootfs-diff.tar`, …: keys (0, i)) up to its end-of-archive (found by parsing its last
       chunk, which starts at a header: tar_chunks cuts there), then each pages image's
       header (1, N, -1) — its data's chunks already stored — and the end-of-archive (2,).

    So the container part is podman's export layout with the pages members moved to its end,
    and `podman container restore --import` (and restore_fifo's head) read it unchanged."""
    deadline = time.monotonic() + timeout
    frozen = gate.dir / "frozen"
    held: list[tuple[int, int, memoryview]] = []
    while follow and not frozen.exists():
        if not podman.is_alive() and not frozen.exists():
            raise CheckpointFailed(f"podman checkpoint failed: {podman.failed()}")
        if time.monotonic() > deadline:
            raise CheckpointFailed(f"the task was not frozen within {timeout:g} s")
        step = follower.poll()
        if step is None:
            time.sleep(POLL)
            continue
        for at, (number, index, view) in enumerate(step):
            if frozen.exists():
                held = step[at:]
                break
            yield 1, (1, number, index), view
    _wait_frozen(gate, podman, timeout)
    follower.detach()
    workspace = _Thawing(tar_directory(task_dir), gate)
    try:
        for index, data in enumerate(tar_chunks(workspace, chunk_size)):  # type: ignore[arg-type]
            yield 0, (index,), data
    finally:
        workspace.close()
    for number, index, view in held:
        yield 1, (1, number, index), view
    for number, index, view in follower.finish():
        yield 1, (1, number, index), view
    export = _FifoReader(fifo, podman, timeout)
    last: bytes | None = None
    index = 0
    try:
        for data in tar_chunks(export, chunk_size):  # type: ignore[arg-type]
            if last is not None:
                yield 1, (0, index), last
                index += 1
            last = data
    finally:
        export.close()
    end = archive_end(last) if last is not None else None
    if last is None or end is None:
        raise CheckpointFailed("podman's export did not end with an end-of-archive")
    if last := last[:end]:
        yield 1, (0, index), last
    for image in follower.done:
        yield 1, (1, image.number, -1), member_header(image)
        if pad := padding(image.size):
            yield 1, (1, image.number, 1 << 62), pad
    yield 1, (2,), END_OF_ARCHIVE


def checkpoint(
    engine: ContainerEngine,
    store: CapsuleStore,
    settings: CapsuleSettings,
    *,
    container_id: str,
    task_dir: Path,
    scratch: Path,
    task_id: str,
    attempt_id: str,
    sequence: int,
    parent: Manifest | None,
    meta: dict[str, Any],
    leave_running: bool,
    freeze_timeout: float = 600.0,
    sampled: bool = True,
    follow: bool | None = None,
) -> Checkpoint:
    """Checkpoint the container (see the module docstring). Raises CheckpointFailed; a failed
    checkpoint with `leave_running` leaves the task running. `sampled=False`: compress every
    chunk (write_capsule's; the bench's old path). `follow` (checkpoint_via "images" only):
    store the pages while CRIU dumps them — for a capsule the task ends with (default: when
    not `leave_running`), not for a periodic one, whose dump it would slow on shared cores."""
    try:
        keys = keys_of(settings)  # before anything starts: a bad key setting costs nothing
    except CapsuleKeyError as exc:
        raise CheckpointFailed(str(exc)) from None
    info = engine.inspect(container_id)
    if info.pid is None:
        raise CheckpointFailed("the container is not running")
    scratch.mkdir(parents=True, exist_ok=True)
    fifo = scratch / f"export-{uuid.uuid4().hex[:8]}.fifo"
    os.mkfifo(fifo, 0o600)
    started = time.monotonic()
    podman = _Podman(engine, container_id, fifo, options_of(settings), leave_running)
    images = engine.checkpoint_dir(container_id) if settings.checkpoint_via == "images" else None
    follower: PagesFollower | None = None
    # a periodic capsule's task goes on: its dump is not slowed by the pipeline on the same
    # cores, its pages are read once the task is thawed
    following = images is not None and (not leave_running if follow is None else follow)
    try:
        if images is not None:
            remove_stale(images)
            follower = PagesFollower(images, settings.chunk_mib * MiB)
        with FreezeGate(info.pid) as gate:

            def open_workspace() -> BinaryIO:
                _wait_frozen(gate, podman, freeze_timeout)
                return _Thawing(tar_directory(task_dir), gate)  # type: ignore[return-value]

            def open_container() -> BinaryIO:
                return _FifoReader(fifo, podman, freeze_timeout)  # type: ignore[return-value]

            podman.start()
            keyed = (
                _image_chunks(
                    follower,
                    gate,
                    podman,
                    fifo,
                    task_dir,
                    settings.chunk_mib * MiB,
                    freeze_timeout,
                    follow=following,
                )
                if follower is not None
                else None
            )
            try:
                written = write_capsule(
                    store,
                    task_id=task_id,
                    attempt_id=attempt_id,
                    sequence=sequence,
                    parts=[
                        PartSource("workspace", open_workspace, tar=True),
                        PartSource("container", open_container, tar=True),
                    ],
                    parent=parent,
                    meta={
                        **meta,
                        "cpu": cpu_profile().model_dump(),
                        "host": host_versions().model_dump(),
                    },
                    chunk_size=settings.chunk_mib * MiB,
                    level=settings.compression_level,
                    workers=settings.workers,
                    capsule_id=f"{attempt_id}-{sequence}",
                    keys=keys,
                    sampled=sampled,
                    keyed=keyed,
                )
            except Exception as exc:
                gate.thaw()
                if follower is not None:  # failed before its export was read: let podman end
                    _drain(fifo, podman)
                podman.join(timeout=freeze_timeout)
                raise CheckpointFailed(str(exc)) from exc
            frozen = (
                gate.thawed_at - gate.frozen_at
                if gate.thawed_at is not None and gate.frozen_at is not None
                else None
            )
            dumped = gate.frozen_at - started if gate.frozen_at is not None else None
        if (error := podman.failed()) is not None:
            store.delete_prefix(written.key)
            raise CheckpointFailed(f"podman checkpoint failed: {error}")
    finally:
        fifo.unlink(missing_ok=True)
        if follower is not None:
            follower.close()
    seconds = {"total": round(time.monotonic() - started, 4)}
    if frozen is not None:
        seconds["files_frozen"] = round(frozen, 4)
    if "criu_frozen_time" in podman.stats:
        seconds["criu_frozen"] = podman.stats["criu_frozen_time"]
    if dumped is not None:  # to the end of CRIU's memory dump (its post-dump hook)
        seconds["dump"] = round(dumped, 4)
        if following:  # the pipeline stored the pages meanwhile (the notice budget's model)
            seconds["dump_followed"] = seconds["dump"]
    assert written.sha256 is not None
    stats = {**podman.stats, "via": "images" if follower is not None else "export"}
    return Checkpoint(written, written.key, written.sha256, seconds, stats)


@dataclass
class Restored:
    manifest: Manifest
    container_id: str
    seconds: dict[str, float]
    engine_stats: dict[str, Any]
    via: str = "scratch"  # how the container part reached the engine: "fifo" or "scratch"


class IncompatibleHost(EngineError):
    """This machine cannot restore the capsule: its CPU, kernel, CRIU or podman (the restore is
    tried on another instance)."""


class IncompatibleCpu(IncompatibleHost):
    """This machine's CPU lacks features the capsule's processes were dumped with: CRIU would
    refuse the restore, or the task would crash at its first such instruction."""


def check_host(manifest: Manifest, here: HostVersions | None = None) -> None:
    """Raise IncompatibleHost unless this machine's kernel, CRIU and podman can restore what
    the capsule was taken with (capsules without versions, from older agents, are not
    checked)."""
    taken = manifest.meta.get("host")
    if not taken:
        return
    why = (here or host_versions()).refusal(HostVersions.model_validate(taken))
    if why is not None:
        raise IncompatibleHost(why)


def check_cpu(manifest: Manifest, here: CpuProfile | None = None) -> None:
    """Raise IncompatibleCpu unless this machine's CPU runs what the capsule was taken on
    (capsules without a profile, from older agents, are not checked)."""
    taken = manifest.meta.get("cpu")
    if not taken:
        return
    taken_on = CpuProfile.model_validate(taken)
    here = here or cpu_profile()
    if here.runs(taken_on):
        return
    if here.arch != taken_on.arch:
        raise IncompatibleCpu(
            f"the capsule was taken on {taken_on.arch}, this machine is {here.arch}"
        )
    missing = here.missing(taken_on)
    shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
    raise IncompatibleCpu(
        f"this CPU ({here.model or here.arch}) lacks features the capsule's processes were "
        f"dumped with on {taken_on.model or taken_on.arch}: {shown}"
    )


def restore(
    engine: ContainerEngine,
    store: CapsuleStore,
    settings: CapsuleSettings,
    ref: CapsuleRef,
    *,
    task_dir: Path,
    scratch: Path,
    name: str,
    overlap: bool = True,
    fifo: bool = True,
) -> Restored:
    """Restore the task from one capsule into `task_dir` and a new container `name`. Raises
    CapsuleCorrupt (the capsule must not be used) or EngineError/OSError. `overlap=False`:
    fetch the container part only after the workspace (the bench's old path). `fifo=False`:
    never serve the container part through a FIFO (restore_fifo), always a scratch file."""
    started = time.monotonic()
    manifest = read_manifest(store, ref.manifest_key, ref.manifest_sha256)
    check_cpu(manifest)
    check_host(manifest)
    keys = keys_of(settings)
    chunk_codec(manifest, keys)  # a key that does not fit fails here, before the task's dir goes
    shutil.rmtree(task_dir, ignore_errors=True)
    task_dir.mkdir(parents=True)
    scratch.mkdir(parents=True, exist_ok=True)
    opens = fifo_opens(engine) if fifo and overlap else None
    if opens is not None:
        streamed = _restore_streamed(
            engine, store, settings, manifest, opens, task_dir, scratch, name
        )
        if isinstance(streamed, Restored):
            streamed.seconds["total"] = round(time.monotonic() - started, 4)
            return streamed
        files_done = time.monotonic()  # the workspace is in place; only the container part left
        overlap = False
    archive = scratch / f"restore-{manifest.capsule_id}.tar"
    fetch = _ContainerFetch(store, manifest, archive, settings.workers, keys)
    try:
        if opens is None:
            if overlap:
                fetch.start()  # the container part comes while the workspace is extracted
            try:
                _restore_workspace(store, manifest, task_dir, settings.workers, keys)
            except BaseException:
                fetch.cancel()
                raise
            files_done = time.monotonic()
        if not overlap:
            fetch.start()
        fetch.result()
        fetched = time.monotonic()
        check_mount_sources(archive, task_dir)
        container_id, stats = engine.restore(archive, name, options_of(settings))
    finally:
        archive.unlink(missing_ok=True)
    done = time.monotonic()
    seconds = {
        "workspace": round(files_done - started, 4),
        "fetch_container": round(fetched - files_done, 4),  # waited for after the workspace
        "fetch_container_total": round(fetch.seconds, 4),
        "podman_restore": round(done - fetched, 4),
        "total": round(done - started, 4),
    }
    return Restored(manifest, container_id, seconds, stats)


_fifo_off = threading.Event()  # an engine opened the archive more often than planned


def fifo_opens(engine: ContainerEngine) -> int | None:
    """How many times this engine's restore opens its archive, when a FIFO can serve it (None:
    a scratch file; also for every restore after one where the engine opened it once more)."""
    if _fifo_off.is_set():
        return None
    known = getattr(engine, "import_opens", None)  # engines of tests may not have it
    return known() if callable(known) else None


def _restore_streamed(
    engine: ContainerEngine,
    store: CapsuleStore,
    settings: CapsuleSettings,
    manifest: Manifest,
    opens: int,
    task_dir: Path,
    scratch: Path,
    name: str,
) -> Restored | str:
    """The workspace, then the container part through a FIFO (restore_fifo), its first chunks
    fetched while the workspace is extracted. Returns why the scratch file must be used instead
    when the FIFO cannot serve this restore (the workspace is then in place, nothing else)."""
    started = time.monotonic()
    keys = keys_of(settings)
    parent = getattr(engine, "cgroup_parent", None)
    fifo = scratch / f"restore-{manifest.capsule_id}-{uuid.uuid4().hex[:8]}.fifo"
    with open_part(store, manifest, "container", workers=settings.workers, keys=keys) as chunks:
        _restore_workspace(store, manifest, task_dir, settings.workers, keys)
        files_done = time.monotonic()
        try:
            container_id, stats, steps = restore_through_fifo(
                engine,
                chunks,
                opens=opens,
                parent=parent if isinstance(parent, str) and parent else None,
                fifo=fifo,
                name=name,
                options=options_of(settings),
                check_spec=lambda spec: check_bind_sources(_bind_sources_of(spec), task_dir),
            )
        except ExtraOpen as exc:
            _fifo_off.set()  # this engine is not the one the plan was measured on
            log.warning("restore through a FIFO failed (%s): a scratch file from now on", exc)
            return str(exc)
        except FifoUnsupported as exc:
            log.info("restore through a scratch file: %s", exc)
            return str(exc)
        finally:
            fifo.unlink(missing_ok=True)
    done = time.monotonic()
    seconds = {
        "workspace": round(files_done - started, 4),
        "fetch_container": 0.0,  # streamed into podman's import as podman read it
        "fetch_container_total": steps["fifo_stream"],
        "fifo_head": steps["fifo_head"],
        "podman_restore": round(done - files_done, 4),
    }
    return Restored(manifest, container_id, seconds, stats, via="fifo")


class _Cancelled(Exception):
    pass


class _ContainerFetch(threading.Thread):
    """The container part written to the scratch archive, in a thread; `result()` joins it and
    raises what it raised. `cancel()` stops it at its next chunk and waits for it."""

    def __init__(
        self,
        store: CapsuleStore,
        manifest: Manifest,
        archive: Path,
        workers: int,
        keys: KeyWrapper | None,
    ):
        super().__init__(name="restore-container", daemon=True)
        self.args = (store, manifest, archive, workers, keys)
        self.error: BaseException | None = None
        self.seconds = 0.0
        self._cancelled = threading.Event()

    def run(self) -> None:
        store, manifest, archive, workers, keys = self.args
        started = time.monotonic()
        try:
            with open(archive, "wb") as sink:
                restore_part(
                    store,
                    manifest,
                    "container",
                    sink,
                    workers=workers,
                    keys=keys,
                    progress=self._check,
                )
        except BaseException as exc:
            self.error = exc
        self.seconds = time.monotonic() - started

    def _check(self, _: int) -> None:
        if self._cancelled.is_set():
            raise _Cancelled

    def cancel(self) -> None:
        self._cancelled.set()
        if self.ident is not None:
            self.join()

    def result(self) -> None:
        self.join()
        if self.error is not None:
            raise self.error


class UnsafeWorkspace(CapsuleCorrupt):
    """A capsule whose restored task directory has a symlink (or a FIFO, a device) where the
    container's bind mounts take their source: podman would mount what the link points to — a
    host file — into the task. The task made it (`rm /work/o; ln -s /etc/x /work/o` while its
    stdout went to /work/o); the capsule can never be restored safely."""


def check_mount_sources(archive: Path, task_dir: Path) -> None:
    """Refuse (UnsafeWorkspace) a checkpoint archive whose bind mounts from `task_dir` would
    go through a symlink or onto anything but a regular file or directory, as the restored
    `task_dir` is now. The mounts are read from podman's spec.dump (OCI runtime spec); an
    archive without one (another engine) has nothing to check."""
    check_bind_sources(_bind_sources(archive), task_dir)


def check_bind_sources(sources: list[str], task_dir: Path) -> None:
    """check_mount_sources of bind-mount sources already read (restore_fifo: from the head)."""
    roots = {task_dir, Path(os.path.realpath(task_dir))}
    for source in sources:
        path = Path(os.path.normpath(source))
        root = next((r for r in roots if path == r or r in path.parents), None)
        if root is None:
            continue  # the agent's own (the launcher's busybox)
        link = has_symlink(root, path)
        if link is not None:
            raise UnsafeWorkspace(f"bind-mount source {link} is a symlink in the task's directory")
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            continue  # podman says so itself
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise UnsafeWorkspace(f"bind-mount source {path} is not a regular file or directory")


def _bind_sources(archive: Path) -> list[str]:
    try:
        with tarfile.open(archive, "r:") as tar:
            member = tar.extractfile("spec.dump")
            spec = json.load(member) if member is not None else {}
    except KeyError:
        return []
    except (tarfile.TarError, ValueError) as exc:
        raise CapsuleCorrupt(f"checkpoint archive unreadable: {exc}") from None
    return _bind_sources_of(spec)


def _bind_sources_of(spec: Any) -> list[str]:
    """The bind-mount sources of a parsed spec.dump (none for anything else)."""
    mounts = (spec.get("mounts") or []) if isinstance(spec, dict) else []
    return [
        str(m["source"])
        for m in mounts
        if isinstance(m, dict) and m.get("type") == "bind" and isinstance(m.get("source"), str)
    ]


def _restore_workspace(
    store: CapsuleStore, manifest: Manifest, dest: Path, workers: int, keys: KeyWrapper | None
) -> None:
    """Stream the workspace part through a pipe into the extractor (no temporary file)."""
    read_fd, write_fd = os.pipe()
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            with open(write_fd, "wb") as sink:
                restore_part(store, manifest, "workspace", sink, workers=workers, keys=keys)
        except BaseException as exc:
            errors.append(exc)

    producer = threading.Thread(target=produce, name="restore-workspace", daemon=True)
    producer.start()
    source = open(read_fd, "rb")  # noqa: SIM115 - closed below, before the join
    try:
        # the task's own symlinks may point anywhere in its container (never followed here)
        extract_directory(source, dest, keep_outside_symlinks=True)
        while source.read(1 << 20):  # drain what follows the archive, so the producer ends
            pass
    except Exception as exc:
        source.close()  # the producer's next write fails instead of blocking forever
        producer.join()
        if errors:
            raise errors[0] from exc
        raise
    source.close()
    producer.join()
    if errors:
        raise errors[0]
