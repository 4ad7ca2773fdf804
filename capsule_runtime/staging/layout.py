"""The host layout of a task: every container path lives in one host tree, mounted at a few points.

    <workspace>/fs/<container path>      e.g. /work/.command.sh  →  <workspace>/fs/work/.command.sh

Inputs, outputs, volumes, workdirs and executor stdio files all live in this one tree, so outputs
are collected from where the task wrote them, a path that is both an input and an output is one
file, and hard links and FIFOs between inputs and the work dir work (one file system, one mount).
Inputs are copies, writable, so a task that writes into an input changes nothing at the source.

Mount points are computed from *anchors* — the directory each declared path needs (a file's
parent; a directory, volume or wildcard pattern's literal base itself) — not one per path, so
Cromwell's 2,000 inputs make one mount, not 2,000:

- Ordinary top-level directories (/work, /data, /home, /tmp, /cromwell-executions, ...): one
  directory mount per top-level name, at the deepest directory common to all its anchors
  (/work; /home/u/proj; /cromwell-executions/wf/<id>/call-x), so the rest of the image's
  /home or /data stays visible.
- The image's own directories (/usr /etc /bin /sbin /lib* /opt /var /root /run /srv /boot), and
  files directly under /: each file gets its own file mount and each directory anchor its own
  directory mount, so /usr/local/bin/tool does not hide the image's other tools. A file output
  there is pre-created empty with mtime 0 (a mount needs a source); still so after the run, it
  counts as missing. Hard links across separate mounts fail (EXDEV), as they would anywhere.
- Refused: / itself, /dev, /proc, /sys, and a directory mount over /usr, /etc, /bin, /sbin, /lib*.
- A mount point never contains ':' or ',' (podman's --volume syntax cannot carry them): an
  ordinary group's mount moves up to the deepest ancestor without them.
- A mount point inside another one is dropped (the outer one carries it).

The workdir is not an anchor (mounting an empty directory over an image's WORKDIR would hide the
image's own files); when it lies under a mount point it is created in the tree.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from capsule_runtime.engine.spec import Mount
from capsule_runtime.protocol.tes import TesTask
from capsule_runtime.staging.errors import PathEscapes, StagingError
from capsule_runtime.staging.wildcard import has_wildcard, literal_base

CORE_DIRS = frozenset({"bin", "etc", "lib", "lib32", "lib64", "libx32", "sbin", "usr"})
IMAGE_DIRS = CORE_DIRS | {"boot", "opt", "root", "run", "srv", "var"}
KERNEL_DIRS = frozenset({"dev", "proc", "sys"})
MOUNT_UNSAFE = (":", ",", "\n")  # what podman's --volume host:container:opts cannot carry
MAX_SYMLINKS = 40
PLACEHOLDER_MTIME = 0


def path_parts(path: str) -> list[str]:
    """The components of a POSIX path ('.' and empty ones dropped, '..' kept)."""
    return [p for p in path.split("/") if p and p != "."]


def normalise(path: str) -> str:
    """`path` as an absolute container path without '.', '..', or repeated or trailing slashes."""
    if not path.startswith("/"):
        raise StagingError(f"container path {path!r} is not absolute")
    parts = path_parts(path)
    if ".." in parts:
        raise StagingError(f"container path {path!r} contains '..'")
    return "/" + "/".join(parts)


def inside(path: str, base: str) -> bool:
    """Is the normalised container path `path` equal to or below `base`?"""
    return base == "/" or path == base or path.startswith(base + "/")


@dataclass(frozen=True)
class Anchor:
    path: str  # normalised container path
    is_dir: bool  # a directory that must be in the tree; else a file whose parent must be


@dataclass(frozen=True, order=True)
class MountPoint:
    container: str
    is_file: bool = False


def anchors_of(task: TesTask, shared: Iterable[str] = ()) -> list[Anchor]:
    """The anchors of a normalised task document (see the module docstring); inputs and outputs
    inside one of the `shared` mounts (staging.workspace) are not in the tree."""
    mounted = tuple(shared)
    out: list[Anchor] = []
    for inp in task.inputs or []:
        path = normalise(inp.path)
        if not any(inside(path, m) for m in mounted):
            out.append(Anchor(path, inp.type == "DIRECTORY"))
    for o in task.outputs or []:
        if has_wildcard(o.path):
            out.append(Anchor(normalise(literal_base(o.path)), True))
        elif not any(inside(normalise(o.path), m) for m in mounted):
            out.append(Anchor(normalise(o.path), o.type == "DIRECTORY"))
    for vol in task.volumes or []:
        out.append(Anchor(normalise(vol), True))
    for ex in task.executors:
        for stdio in (ex.stdin, ex.stdout, ex.stderr):
            if stdio is not None:
                out.append(Anchor(normalise(stdio), False))
    return out


def _common(dirs: list[list[str]]) -> list[str]:
    first = dirs[0]
    n = min(len(d) for d in dirs)
    i = 0
    while i < n and all(d[i] == first[i] for d in dirs):
        i += 1
    return first[:i]


def _unsafe(path: str) -> bool:
    return any(c in path for c in MOUNT_UNSAFE)


def plan_mounts(anchors: Iterable[Anchor]) -> list[MountPoint]:
    """The mount points covering every anchor (see the module docstring), sorted."""
    points: set[MountPoint] = set()
    groups: dict[str, list[list[str]]] = {}
    for a in anchors:
        parts = path_parts(a.path)
        if not parts:
            raise StagingError("cannot stage a directory at / itself")
        top = parts[0]
        if top in KERNEL_DIRS:
            raise StagingError(f"{a.path}: cannot stage under /{top} (the kernel's own)")
        needed = parts if a.is_dir else parts[:-1]
        if not needed:  # a file directly under /
            points.add(MountPoint(a.path, is_file=True))
        elif top in IMAGE_DIRS:
            if a.is_dir and len(parts) == 1 and top in CORE_DIRS:
                raise StagingError(
                    f"{a.path}: a directory mounted over the image's /{top} would hide its files"
                )
            points.add(MountPoint(a.path, is_file=not a.is_dir))
        else:
            groups.setdefault(top, []).append(needed)
    for dirs in groups.values():
        common = _common(dirs)
        while len(common) > 1 and _unsafe("/".join(common)):
            common.pop()
        points.add(MountPoint("/" + "/".join(common)))
    for point in points:
        if _unsafe(point.container):
            raise StagingError(f"{point.container}: a path with ':' or ',' cannot be mounted")
    dir_points = [p.container for p in points if not p.is_file]
    kept = [
        p
        for p in points
        if not any(inside(p.container, d) and (p.container != d or p.is_file) for d in dir_points)
    ]
    return sorted(kept)


class Layout:
    """Container paths ↔ host paths in one task's tree, and the mounts that expose it."""

    def __init__(self, fs: Path, points: Iterable[MountPoint]):
        self.fs = fs
        self.points = sorted(points)

    @classmethod
    def for_task(cls, fs: Path, task: TesTask, shared: Iterable[str] = ()) -> Layout:
        return cls(fs, plan_mounts(anchors_of(task, shared)))

    def tree_path(self, container_path: str) -> Path:
        """Where `container_path` lives in the tree, lexically (symlinks not followed)."""
        rel = normalise(container_path).lstrip("/")
        return self.fs / rel if rel else self.fs

    def mount_for(self, container_path: str) -> MountPoint | None:
        path = normalise(container_path)
        for point in self.points:
            if inside(path, point.container):
                return point
        return None

    def mounts(self) -> tuple[Mount, ...]:
        return tuple(Mount(self.tree_path(p.container), p.container) for p in self.points)

    def resolve(self, container_path: str) -> Path | None:
        """The host path `container_path` names as the container sees it (see resolve_within);
        None after more than 40 symlinks (a loop)."""
        try:
            return self.tree_path(self.resolve_within(container_path))
        except PathEscapes:
            return None

    def resolve_within(self, container_path: str) -> str:
        """The container path `container_path` names once the symlinks in the tree are followed
        the container's way: an absolute target starts again at the tree's root and '..' stops
        there, so the result is always inside the tree — a task cannot make the agent reach a
        host file. No component of the result's tree path is a symlink (as the tree is now).
        PathEscapes after more than 40 symlinks (a loop)."""
        pending = path_parts(container_path)
        pending.reverse()
        done: list[str] = []
        links = 0
        while pending:
            name = pending.pop()
            if name == "..":
                if done:
                    done.pop()
                continue
            candidate = self.fs.joinpath(*done, name)
            if candidate.is_symlink():
                links += 1
                if links > MAX_SYMLINKS:
                    raise PathEscapes(f"{container_path}: too many levels of symbolic links")
                target = os.readlink(candidate)
                if target.startswith("/"):
                    done = []
                pending.extend(reversed(path_parts(target)))
                continue
            done.append(name)
        return "/" + "/".join(done)

    def confine(self, container_path: str) -> str:
        """`container_path` resolved (resolve_within), and refused with PathEscapes unless the
        result lies under one of the mount points: a link to /etc/cron.d/x means the image's own
        /etc/cron.d/x to the task, which the agent can neither reach nor stand in for."""
        resolved = self.resolve_within(container_path)
        if self.mount_for(resolved) is None:
            via = (
                ""
                if resolved == normalise(container_path)
                else f" leads through a symlink to {resolved}, which"
            )
            raise PathEscapes(f"{container_path}{via} is outside the task's mounted directories")
        return resolved

    def is_placeholder(self, container_path: str) -> bool:
        """Is `container_path` a file mount's placeholder the task never wrote (still empty, mtime
        still 0)?"""
        point = self.mount_for(container_path)
        if point is None or not point.is_file or point.container != normalise(container_path):
            return False
        try:
            info = self.tree_path(container_path).stat()
        except OSError:
            return False
        return info.st_size == 0 and int(info.st_mtime) == PLACEHOLDER_MTIME
