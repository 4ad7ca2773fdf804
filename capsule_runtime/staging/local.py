"""Local storage: bare absolute paths and file:// URLs, limited to the policy's allowed_dirs.

Files are copied with copy_file_range (in-kernel, and a reflink on file systems that share blocks),
in chunks so progress is reported; directories are copied recursively. A symlink inside an input
directory is followed only to a target inside allowed_dirs and outside the denied dirs (anything
else is refused, so a link cannot smuggle a host file into the task); a dangling one is kept as a
link only when it points down into its own directory (so no later write through it leaves the
task's tree), else refused. FIFOs are recreated, sockets and devices skipped.
Outputs are written to a temporary name beside the target and renamed over it, so a reader never
sees half a file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat as st
import uuid
from pathlib import Path

from capsule_runtime.protocol.tes import FileType
from capsule_runtime.staging.errors import AccessRefused, SourceMissing, StagingError
from capsule_runtime.staging.policy import StagingPolicy
from capsule_runtime.staging.progress import ByteCallback
from capsule_runtime.staging.storage import Stat
from capsule_runtime.staging.urls import local_path

COPY_CHUNK = 64 << 20  # bytes per copy_file_range call: one progress report each
BUFFER = 1 << 20  # the read/write fallback's buffer
_FALLBACK_ERRNOS = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM}


def copy_file(src: Path, dest: Path, progress: ByteCallback | None = None) -> int:
    """Copy one regular file's bytes and mode; streams. Returns the bytes copied."""
    total = 0
    with open(src, "rb") as fin, open(dest, "wb") as fout:
        use_range = hasattr(os, "copy_file_range")
        while True:
            if use_range:
                try:
                    n = os.copy_file_range(fin.fileno(), fout.fileno(), COPY_CHUNK)
                except OSError as exc:
                    if exc.errno not in _FALLBACK_ERRNOS or total:
                        raise
                    use_range = False
                    continue
            else:
                chunk = fin.read(BUFFER)
                n = len(chunk)
                if n:
                    fout.write(chunk)
            if n == 0:
                break
            total += n
            if progress is not None:
                progress(n)
    shutil.copymode(src, dest)
    return total


def _dangling_target(link: Path) -> str:
    """The target of a dangling symlink in an input directory, kept as a link only when it
    points down from where it is (relative, no '..'): followed by anyone, on the host or in the
    container, it then stays inside the copied directory. Any other dangling link could lead a
    later write out of the task's tree (an absolute one means the host's path to the agent and
    the image's to the task), so it is refused."""
    target = os.readlink(link)
    if target.startswith("/") or ".." in target.split("/"):
        raise AccessRefused(
            f"symlink {link} points to {target}, which does not exist; a dangling link is "
            "copied only when it points down into its own directory (relative, without '..')"
        )
    return target


class LocalStorage:
    def __init__(self, policy: StagingPolicy):
        self.policy = policy

    def stat(self, url: str) -> Stat | None:
        path = self.policy.local_path(local_path(url))
        try:
            info = path.stat()
        except FileNotFoundError:
            return None
        if st.S_ISDIR(info.st_mode):
            return Stat(is_dir=True, size=None)
        return Stat(is_dir=False, size=info.st_size)

    def get(
        self, url: str, dest: Path, kind: FileType, progress: ByteCallback | None = None
    ) -> int:
        src = self.policy.local_path(local_path(url))
        try:
            mode = src.stat().st_mode
        except FileNotFoundError:
            raise SourceMissing(f"{url} does not exist") from None
        except OSError as exc:
            raise StagingError(f"{url}: {exc.strerror}") from None
        try:
            if st.S_ISDIR(mode):
                self.policy.local_tree(str(src))  # never a parent of tescape's own state
                dest.mkdir(parents=True, exist_ok=True)
                return self._copy_tree(src, dest, progress, chain=(src,))
            if not st.S_ISREG(mode):
                raise StagingError(f"{url} is not a regular file or directory")
            return copy_file(src, dest, progress)
        except OSError as exc:
            raise StagingError(f"copying {url}: {exc}") from None

    def _copy_tree(
        self, src: Path, dest: Path, progress: ByteCallback | None, chain: tuple[Path, ...]
    ) -> int:
        total = 0
        with os.scandir(src) as entries:
            for entry in entries:
                target = dest / entry.name
                if target.is_symlink():  # an earlier input's: never write through it
                    target.unlink()
                source = Path(entry.path)
                if entry.is_symlink():
                    real = Path(os.path.realpath(source))
                    if not real.exists():
                        os.symlink(_dangling_target(source), target)
                        continue
                    try:
                        self.policy.local_tree(str(real))
                    except AccessRefused as exc:
                        raise AccessRefused(f"symlink {source} points to {real}: {exc}") from None
                    source = real
                mode = source.stat().st_mode
                if st.S_ISDIR(mode):
                    real_dir = Path(os.path.realpath(source))
                    if real_dir in chain:
                        raise StagingError(f"symlink loop at {entry.path}")
                    target.mkdir(exist_ok=True)
                    total += self._copy_tree(source, target, progress, (*chain, real_dir))
                elif st.S_ISREG(mode):
                    total += copy_file(source, target, progress)
                elif st.S_ISFIFO(mode):
                    os.mkfifo(target, st.S_IMODE(mode))
                # sockets and devices are not data: skipped
        return total

    def put(self, src: Path, url: str, progress: ByteCallback | None = None) -> int:
        dest = self.policy.local_path(local_path(url))
        if dest.is_dir():
            raise StagingError(f"{url} is an existing directory; cannot write a file there")
        tmp = dest.parent / f".{dest.name}.tescape-{uuid.uuid4().hex[:12]}"
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            size = copy_file(src, tmp, progress)
            os.replace(tmp, dest)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if isinstance(exc, OSError):
                raise StagingError(f"writing {url}: {exc}") from None
            raise
        return size
