"""Workspace: one task's staging area on the host — its tree and mounts (a `Layout`), the storages
its URLs go through, and how transfers run (parallelism, progress).

    <root>/fs/...     the task's tree (see layout.py); the only thing under <root> it sees

Inputs and outputs named at their own path inside a shared directory (storage.shared_dirs,
capsule_runtime.protocol.shared_dirs) are not in the tree: they are bind-mounted in place, beside
the tree's mounts, and neither staged nor uploaded.

Create it once per attempt with the whole task document (mounts depend on inputs, outputs,
volumes and stdio paths), call `stage_inputs`, run the executors with `mounts()`, then call
`upload_outputs`, and `close()` it (or use it as a context manager). Deleting <root> is the
caller's business.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from capsule_runtime.engine.spec import Mount
from capsule_runtime.protocol.shared_dirs import SharedMount, shared_errors, shared_mounts
from capsule_runtime.protocol.tes import TesTask
from capsule_runtime.staging import confined
from capsule_runtime.staging.errors import PathEscapes, SourceMissing, StagingError
from capsule_runtime.staging.layout import PLACEHOLDER_MTIME, Layout, path_parts
from capsule_runtime.staging.policy import StagingPolicy
from capsule_runtime.staging.progress import Phase, ProgressCallback, ProgressMeter
from capsule_runtime.staging.router import StorageRouter
from capsule_runtime.staging.s3 import S3Config
from capsule_runtime.staging.storage import Storage
from capsule_runtime.staging.wildcard import has_wildcard, literal_base

Mounts = tuple[Mount, ...]


def check_shared_mounts(task: TesTask, policy: StagingPolicy) -> None:
    """Before a restore: a task's shared mounts (storage.shared_dirs) are external to its
    capsule, so each must be on this instance, at the same path, and pass the same checks as at
    the first start; StagingError says which does not."""
    rules = policy.rules
    errors = shared_errors(task, rules)
    if errors:
        raise StagingError("; ".join(f"{e.field}: {e.message}" for e in errors))
    for mount in shared_mounts(task, rules):
        if not os.path.lexists(mount.path):
            raise SourceMissing(
                f"{mount.path} (in a shared directory) is not on this instance; the capsule "
                "does not carry it"
            )
        policy.shared_mount(mount.path, os.path.isdir(mount.path))


class Workspace:
    def __init__(
        self,
        root: Path,
        task: TesTask,
        storages: StorageRouter,
        on_progress: ProgressCallback | None = None,
        parallel_files: int = 8,
        progress_interval: float = 1.0,
    ):
        self.root = root
        self.fs = root / "fs"
        self.task = task
        rules = storages.policy.rules
        errors = shared_errors(task, rules)
        if errors:
            raise StagingError("; ".join(f"{e.field}: {e.message}" for e in errors))
        self.shared: tuple[SharedMount, ...] = tuple(shared_mounts(task, rules))
        self.layout = Layout.for_task(self.fs, task, (m.path for m in self.shared))
        self.storages = storages
        self.on_progress = on_progress
        self.parallel_files = max(1, parallel_files)
        self.progress_interval = progress_interval
        self._cancel = threading.Event()

    @classmethod
    def create(
        cls,
        root: Path,
        task: TesTask,
        policy: StagingPolicy,
        s3: S3Config | None = None,
        on_progress: ProgressCallback | None = None,
        parallel_files: int = 8,
        extra_storages: Mapping[str, Storage] | None = None,
    ) -> Workspace:
        """The usual way in: storages for file, http(s) and s3 under `policy`."""
        router = StorageRouter(policy, s3, extra_storages)
        return cls(root, task, router, on_progress, parallel_files)

    # -- paths ----------------------------------------------------------------------------------

    def mounts(self) -> Mounts:
        """The bind mounts for every executor of the task (all read-write). The engine follows a
        symlink in a mount's source, so a source with one on the way (a link an input or a
        restored workspace put there) is refused with PathEscapes instead. Shared mounts come
        after the tree's (so one inside a tree mount is mounted over it; nothing of the tree
        lies inside a shared mount), each checked again (deny-list, no symlink; AccessRefused)."""
        mounts = self.layout.mounts()
        for mount in mounts:
            link = confined.has_symlink(self.fs, mount.host)
            if link is not None:
                raise PathEscapes(
                    f"cannot mount {mount.container}: {link} in the task's tree is a symlink"
                )
        shared = tuple(self.shared_mount(m) for m in self.shared)
        return (*mounts, *shared)

    def shared_mount(self, mount: SharedMount) -> Mount:
        """The bind mount of one shared path, which must exist now (outputs are created by
        `prepare`): a directory, or a regular file."""
        try:
            info = os.lstat(mount.path)
        except FileNotFoundError:
            raise SourceMissing(
                f"{mount.path} (in a shared directory) does not exist on this instance"
            ) from None
        is_dir = stat.S_ISDIR(info.st_mode)
        host = self.storages.policy.shared_mount(mount.path, is_dir)
        if not (is_dir or stat.S_ISREG(info.st_mode)):
            raise StagingError(f"{mount.path} (in a shared directory) is not a file or directory")
        return Mount(host, mount.path)

    def tree_path(self, container_path: str) -> Path:
        """The host path of a container path, lexically; for files the agent itself creates."""
        return self.layout.tree_path(container_path)

    def host_path(self, container_path: str) -> Path | None:
        """The host path of a container path after the task ran: symlinks it made resolved inside
        the tree (never to a host file); None for a symlink loop."""
        return self.layout.resolve(container_path)

    def confined_path(self, container_path: str) -> Path:
        """The host path of a file a task named (stdio), for the agent to open or hand to the
        engine: symlinks the task made are resolved inside the tree, and a path that leads
        outside the mounted directories or loops raises PathEscapes. The result has no symlink
        on the way as the tree is now — so use it only while no container of the task runs."""
        return self.tree_path(self.layout.confine(container_path))

    def create_file(self, container_path: str) -> Path:
        """Create (truncate) the file a task named, and its missing directories, inside the tree
        (confined_path), never through a symlink; its host path."""
        resolved = self.layout.confine(container_path)
        confined.create_file(self.fs, path_parts(resolved))
        return self.tree_path(resolved)

    def existing_file(self, container_path: str) -> Path:
        """The host path of an existing regular file a task named (stdin), inside the tree
        (confined_path); FileNotFoundError when it is missing, StagingError when it is not a
        regular file or a symlink stands in the way."""
        resolved = self.layout.confine(container_path)
        confined.check_regular_file(self.fs, path_parts(resolved))
        return self.tree_path(resolved)

    # -- the tree -------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Create the tree: mount point directories, volumes, workdirs under a mount point, and
        the parents of output and stdio files (the task writes them; directory outputs themselves
        are left for the task to create)."""
        self.fs.mkdir(parents=True, exist_ok=True)
        dirs: list[str] = [p.container for p in self.layout.points if not p.is_file]
        dirs += list(self.task.volumes or [])
        for out in self.task.outputs or []:
            path = out.path
            dirs.append(literal_base(path) if has_wildcard(path) else os.path.dirname(path))
        for ex in self.task.executors:
            dirs += [os.path.dirname(f) for f in (ex.stdin, ex.stdout, ex.stderr) if f is not None]
            if ex.workdir is not None:
                dirs.append(ex.workdir)
        for container in dirs:
            if self.layout.mount_for(container) is not None:
                self._shared_dir(self.tree_path(container))
        for point in self.layout.points:
            if point.is_file:
                self.tree_path(point.container).parent.mkdir(parents=True, exist_ok=True)
        for mount in self.shared:
            if mount.output:
                self._shared_output(mount)

    def _shared_output(self, mount: SharedMount) -> None:
        """Create a shared output that is missing (a directory, or an empty file: a mount needs
        a source), after the same checks as its mount; its parents too."""
        if os.path.lexists(mount.path):
            return
        path = self.storages.policy.shared_mount(mount.path, mount.is_dir)
        if mount.is_dir:
            path.mkdir(parents=True, exist_ok=True)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        self.storages.policy.shared_mount(mount.path, False)  # no link appeared meanwhile
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, flags, 0o666))

    def _shared_dir(self, path: Path) -> None:
        """Create `path` and its missing parents writable by every user: a container whose image
        runs as a non-root USER can still write its outputs, volumes and work dir."""
        missing = [p for p in (path, *path.parents) if p != self.fs and self.fs in p.parents]
        missing = [p for p in missing if not p.exists()]
        path.mkdir(parents=True, exist_ok=True)
        for p in missing:
            p.chmod(0o777)

    def create_placeholders(self) -> None:
        """A file mount needs a source: create each one that staging did not (empty, mtime 0)."""
        for point in self.layout.points:
            if not point.is_file:
                continue
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL  # never onto what is there
            try:
                fd = confined.open_beneath(self.fs, path_parts(point.container), flags)
            except FileExistsError:
                continue
            try:
                os.utime(fd, (PLACEHOLDER_MTIME, PLACEHOLDER_MTIME))
            finally:
                os.close(fd)

    def cancel(self) -> None:
        """Stop staging soon, from any thread: stage_inputs raises StagingCancelled (within one
        chunk of each running transfer); upload_outputs notes the uploads it did not finish."""
        self._cancel.set()

    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def meter(self, phase: Phase, files_total: int) -> ProgressMeter:
        """The progress meter of one phase, reporting to on_progress and watching cancel()."""
        return ProgressMeter(
            phase, files_total, self.on_progress, self.progress_interval, cancelled=self.cancelled
        )

    def close(self) -> None:
        self.storages.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
