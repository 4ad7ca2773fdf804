"""A directory as a tar stream and back, for the capsule part that holds a task's workspace.

`tar_directory(path)` returns a readable stream of a pax tar of the directory's contents ("."
first, then every entry in sorted order): modes, numeric owners (no user or group names),
mtimes, symlinks as links, hard links as links, empty directories, FIFOs. A thread writes it into
an os.pipe(), so nothing is buffered beyond the pipe and no temporary file is made; an error in
that thread is raised by the stream's read (at the end of the data) or close. Closing the stream
early stops the thread.

`extract_directory(stream, dest)` reads such a tar sequentially (mode 'r|') into `dest`, keeping
modes, owners (when run as root) and mtimes (directories' are set last). It refuses, with
UnsafeArchive, any member that would land outside `dest`: absolute names, '..', a path through a
symlink, a hard link to something outside, device nodes, and — unless `keep_outside_symlinks` —
symlinks whose target is absolute or leaves `dest`. Such links are never followed while
extracting either way.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import posixpath
import tarfile
import threading
from pathlib import Path
from typing import Any, BinaryIO

PIPE_SIZE = 1 << 20
_BUFFER = 1 << 20


class UnsafeArchive(ValueError):
    """A tar member that would be written outside the destination directory."""


class _PipeReader(io.RawIOBase):
    """The read end of the pipe a tar-writing thread fills; its error comes out of read/close."""

    def __init__(self, fd: int, thread: threading.Thread, errors: list[BaseException]):
        self._fd = fd
        self._thread = thread
        self._errors = errors
        self._reported = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = os.readv(self._fd, [buffer])
        if n == 0:
            self._thread.join()
            self._raise()
        return n

    def _raise(self) -> None:
        if self._errors and not self._reported:
            self._reported = True
            error = self._errors[0]
            raise OSError(f"writing the tar stream failed: {error}") from error

    def close(self) -> None:
        if self.closed:
            return
        os.close(self._fd)  # a writer still at work now gets EPIPE and stops
        super().close()
        self._thread.join()
        if self._errors and not isinstance(self._errors[0], BrokenPipeError):
            self._raise()


def _numeric(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uname = info.gname = ""
    return info


def _write_tar(root: Path, fd: int, errors: list[BaseException]) -> None:
    try:
        with (
            open(fd, "wb", buffering=_BUFFER) as out,
            tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar,
        ):
            tar.add(root, arcname=".", recursive=False, filter=_numeric)
            for name in sorted(os.listdir(root)):
                tar.add(root / name, arcname=name, recursive=True, filter=_numeric)
    except BaseException as exc:
        errors.append(exc)


def tar_directory(path: Path) -> BinaryIO:
    root = Path(path)
    if not root.is_dir():
        raise NotADirectoryError(f"not a directory: {root}")
    r, w = os.pipe()
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    errors: list[BaseException] = []
    thread = threading.Thread(
        target=_write_tar, args=(root, w, errors), name=f"tar {root}", daemon=True
    )
    thread.start()
    return io.BufferedReader(_PipeReader(r, thread, errors), buffer_size=_BUFFER)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _check_member(member: tarfile.TarInfo, dest: str, keep_outside_symlinks: bool) -> str:
    """The member's target path under `dest`, or UnsafeArchive."""
    name = member.name.rstrip("/")
    norm = posixpath.normpath(name) if name else "."
    if name.startswith("/") or norm == ".." or norm.startswith("../") or "\0" in name:
        raise UnsafeArchive(f"tar member {member.name!r} leaves the destination")
    if member.ischr() or member.isblk():
        raise UnsafeArchive(f"tar member {member.name!r} is a device node")
    target = os.path.join(dest, norm) if norm != "." else dest
    parent = os.path.realpath(os.path.dirname(target)) if norm != "." else dest
    if not _inside(parent, dest):
        raise UnsafeArchive(f"tar member {member.name!r} goes through a link out of {dest}")
    if member.islnk():
        link = posixpath.normpath(member.linkname)
        source = os.path.realpath(os.path.join(dest, link))
        if member.linkname.startswith("/") or link.startswith("../") or not _inside(source, dest):
            raise UnsafeArchive(f"hard link {member.name!r} → {member.linkname!r} leaves {dest}")
    if member.issym() and not keep_outside_symlinks:
        pointed = posixpath.normpath(posixpath.join(posixpath.dirname(norm), member.linkname))
        if member.linkname.startswith("/") or pointed == ".." or pointed.startswith("../"):
            raise UnsafeArchive(f"symlink {member.name!r} → {member.linkname!r} leaves {dest}")
    return target


def extract_directory(stream: BinaryIO, dest: Path, *, keep_outside_symlinks: bool = False) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    root = os.path.realpath(dest)
    directories: list[tuple[tarfile.TarInfo, str]] = []
    with tarfile.open(fileobj=stream, mode="r|", bufsize=_BUFFER) as tar:
        for member in tar:
            target = _check_member(member, root, keep_outside_symlinks)
            is_dir = os.path.isdir(target) and not os.path.islink(target)
            if os.path.lexists(target) and not is_dir:
                os.unlink(target)  # never write through what was there
            if member.isdir():
                os.makedirs(target, exist_ok=True)
                directories.append((member, target))
                continue
            tar.extract(member, root, set_attrs=True, numeric_owner=True, filter="fully_trusted")
    for member, target in reversed(directories):  # deepest last-seen first: mtimes stick
        if os.geteuid() == 0:
            os.chown(target, member.uid, member.gid)
        os.chmod(target, member.mode)
        os.utime(target, (member.mtime, member.mtime))
