"""Files in a task's tree opened without ever following a symlink on the host.

A task can leave symlinks anywhere it may write (`ln -s /etc/cron.d/x /work/o`), and the agent
runs as root: opening `<tree>/work/o` the ordinary way would create or read a host file. So every
file the agent opens at a path a task chose goes through `open_beneath`, which walks the path one
component at a time from a descriptor of the tree's root with O_NOFOLLOW: a symlink anywhere on
the way (one the caller did not resolve first with `Layout.resolve_within`, or one that appeared
meanwhile) fails with `PathEscapes` instead of being followed.

The tree's root itself is the agent's own directory and is trusted.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from capsule_runtime.staging.errors import PathEscapes, StagingError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # no FIFO may block the agent
_LINK_ERRNOS = {errno.ELOOP, errno.ENOTDIR}  # a symlink (or a non-directory) on the way


def open_beneath(
    root: Path,
    parts: Sequence[str],
    flags: int,
    mode: int = 0o666,
    *,
    make_dirs: bool = False,
    dir_mode: int = 0o777,
) -> int:
    """A descriptor of the regular file `root`/`parts` opened with `flags` (O_NOFOLLOW,
    O_NONBLOCK and O_CLOEXEC added), reached without following any symlink; an existing entry
    that is not a regular file is refused (StagingError) before it is opened. With `make_dirs`,
    missing parent directories are created with `dir_mode` (not masked by the umask: task
    containers may run as any user).
    `parts` are plain names (no '', '.', '..', '/'); raises PathEscapes for a symlink on the way
    and OSError for anything else (FileNotFoundError for a missing parent or file)."""
    if not parts or any(p in ("", ".", "..") or "/" in p for p in parts):
        raise ValueError(f"not a relative path of plain names: {list(parts)!r}")
    shown = "/".join(parts)
    fd = os.open(root, _DIR_FLAGS)
    try:
        for name in parts[:-1]:
            if make_dirs:
                _mkdir_at(fd, name, dir_mode)
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in _LINK_ERRNOS:
                    raise PathEscapes(f"{shown}: {name} is a symlink or not a directory") from None
                raise
            os.close(fd)
            fd = child
        _refuse_special(fd, parts[-1], shown)
        try:
            opened = os.open(parts[-1], flags | _FILE_FLAGS, mode, dir_fd=fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise PathEscapes(f"{shown} is a symlink") from None
            raise
        if not stat.S_ISREG(os.fstat(opened).st_mode):  # replaced meanwhile
            os.close(opened)
            raise StagingError(f"{shown} is not a regular file")
        return opened
    finally:
        os.close(fd)


def _refuse_special(parent: int, name: str, shown: str) -> None:
    """Refuse an existing entry that is not a regular file before opening it: opening a FIFO
    blocks and opening a device node the task made would reach the host's device."""
    try:
        info = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        raise PathEscapes(f"{shown} is a symlink")
    if not stat.S_ISREG(info.st_mode):
        raise StagingError(f"{shown} exists and is not a regular file")


def _mkdir_at(parent: int, name: str, mode: int) -> None:
    try:
        os.mkdir(name, mode, dir_fd=parent)
    except FileExistsError:
        return
    child = os.open(name, _DIR_FLAGS, dir_fd=parent)
    try:
        os.fchmod(child, mode)
    finally:
        os.close(child)


def create_file(root: Path, parts: Sequence[str], mode: int = 0o666) -> None:
    """Create (or truncate) the regular file `root`/`parts` and its missing parents, never
    through a symlink. `mode` is masked by the umask, as an ordinary create is."""
    fd = open_beneath(root, parts, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode, make_dirs=True)
    os.close(fd)


def check_regular_file(root: Path, parts: Sequence[str]) -> None:
    """Raise unless `root`/`parts` is an existing regular file reached without a symlink
    (FileNotFoundError when it is missing, PathEscapes for a symlink, StagingError otherwise)."""
    os.close(open_beneath(root, parts, os.O_RDONLY))


def has_symlink(root: Path, path: Path) -> Path | None:
    """The first symlink on the way from `root` down to `path` (itself included), or None; for
    paths the agent hands to others (bind-mount sources), which would follow it. `path` must lie
    below `root` lexically."""
    rel = path.relative_to(root)
    current = root
    for name in rel.parts:
        current = current / name
        if current.is_symlink():
            return current
    return None
