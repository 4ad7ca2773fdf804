"""Capsule stores: a flat key → bytes interface with atomic puts, and its implementations.

`FileStore` (a directory; a key is a relative path, written 0600 to a temporary file and renamed
into place, directories 0700), `MemoryStore` (a dict, for tests) and `S3Store` (a bucket and
prefix through boto3, in `s3store`). `open_store(settings)` picks one from a URL. Every store is
safe to use from many threads at once: the pipelines put and get chunks in parallel.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit

from capsule_runtime.capsules.errors import CapsuleMissing, CapsuleStoreError
from capsule_runtime.capsules.keys import TMP_MARK as _TMP_MARK
from capsule_runtime.capsules.keys import check_key
from capsule_runtime.capsules.s3store import S3Store
from capsule_runtime.staging.s3 import S3Config

__all__ = [
    "CapsuleMissing",
    "CapsuleStore",
    "CapsuleStoreError",
    "FileStore",
    "MemoryStore",
    "S3Store",
    "check_key",
    "open_store",
]


def private_dirs(path: Path) -> None:
    """Create `path` and its missing parents with mode 0700: a capsule holds a task's whole
    memory, so only this user may list or read the store (files are written 0600)."""
    missing = []
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)


@runtime_checkable
class CapsuleStore(Protocol):
    def put(self, key: str, data: bytes | bytearray) -> None:
        """Store `data` under `key`, replacing any object; readers never see a partial object."""

    def get(self, key: str) -> bytes:
        """The object's bytes; CapsuleMissing when there is none."""
        ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> list[str]:
        """Every key that starts with `prefix` (a plain string prefix), sorted."""
        ...

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key that starts with `prefix`; the number deleted."""
        ...

    def describe(self) -> str:
        """Where the store is, for logs: "file:/path", "s3://bucket/prefix", "memory:"."""
        ...


def _drop_cache(fd: int) -> None:
    """Drop a written, fsync'ed file's pages from the page cache. A capsule is written once and
    read on another instance (if ever): caching it only pushes out what the host uses, and the
    pages freed are reused by the next chunk's write instead of fresh ones (which this kind of VM
    faults in slowly: docs/benchmarks.md, Capsules 2026-12-02)."""
    with contextlib.suppress(OSError, AttributeError):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


class FileStore:
    """A directory tree: key "a/b/c" is the file root/a/b/c. A put writes a temporary file beside
    the target, fsyncs it (unless `fsync=False`; then drops it from the page cache) and renames
    it into place."""

    def __init__(self, root: Path, *, fsync: bool = True, drop_cache: bool = True):
        self.root = Path(root).absolute()
        self.fsync = fsync
        self.drop_cache = drop_cache  # after the fsync (False: the bench's old path)

    def describe(self) -> str:
        return f"file:{self.root}"

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, data: bytes | bytearray) -> None:
        path = self._path(key)
        tmp = path.with_name(f"{_TMP_MARK}{uuid.uuid4().hex}.{path.name}")
        for attempt in range(10):  # a delete_prefix may remove the empty directory under us
            try:
                private_dirs(path.parent)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    if self.fsync:
                        f.flush()
                        os.fsync(f.fileno())
                        if self.drop_cache:
                            _drop_cache(f.fileno())
                os.replace(tmp, path)
                return
            except OSError as exc:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                retry = isinstance(exc, FileNotFoundError | FileExistsError) and attempt < 9
                if not retry:
                    raise CapsuleStoreError(
                        f"{self.describe()}: cannot write {key}: {exc}"
                    ) from exc

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise CapsuleMissing(f"{self.describe()}: no object {key}") from exc
        except OSError as exc:
            raise CapsuleStoreError(f"{self.describe()}: cannot read {key}: {exc}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        # walk the deepest directory the prefix names fully, then filter by the string prefix
        base = posixpath.dirname(prefix)
        if base:
            check_key(base)
        top = self.root / base if base else self.root
        keys: list[str] = []
        try:
            for dirpath, dirnames, filenames in os.walk(top):
                rel = os.path.relpath(dirpath, self.root)
                rel = "" if rel == "." else rel.replace(os.sep, "/") + "/"
                dirnames[:] = [
                    d
                    for d in dirnames
                    if (rel + d + "/").startswith(prefix) or prefix.startswith(rel + d + "/")
                ]
                keys.extend(
                    rel + name
                    for name in filenames
                    if not name.startswith(_TMP_MARK) and (rel + name).startswith(prefix)
                )
        except OSError as exc:
            raise CapsuleStoreError(f"{self.describe()}: cannot list {prefix}: {exc}") from exc
        return sorted(keys)

    def delete_prefix(self, prefix: str) -> int:
        count = 0
        dirs: set[Path] = set()
        for key in self.list(prefix):
            path = self._path(key)
            try:
                path.unlink()
                count += 1
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise CapsuleStoreError(f"{self.describe()}: cannot delete {key}: {exc}") from exc
            dirs.update(p for p in path.parents if p != self.root and self.root in p.parents)
        for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):  # not empty (other keys, a put under way): keep
                d.rmdir()
        return count


class MemoryStore:
    """A dict of bytes behind a lock, for tests. `puts` counts successful puts."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.puts = 0
        self._lock = threading.Lock()

    def describe(self) -> str:
        return "memory:"

    def put(self, key: str, data: bytes | bytearray) -> None:
        check_key(key)
        with self._lock:
            self.objects[key] = bytes(data)
            self.puts += 1

    def get(self, key: str) -> bytes:
        with self._lock:
            try:
                return self.objects[check_key(key)]
            except KeyError:
                raise CapsuleMissing(f"memory: no object {key}") from None

    def exists(self, key: str) -> bool:
        with self._lock:
            return check_key(key) in self.objects

    def list(self, prefix: str) -> list[str]:
        with self._lock:
            return sorted(k for k in self.objects if k.startswith(prefix))

    def delete_prefix(self, prefix: str) -> int:
        with self._lock:
            doomed = [k for k in self.objects if k.startswith(prefix)]
            for k in doomed:
                del self.objects[k]
            return len(doomed)


def open_store(settings: Mapping[str, Any]) -> CapsuleStore:
    """The store a URL names: {"url": "file:///abs/dir" | "/abs/dir" | "s3://bucket/prefix",
    "s3": {S3Config keys}}; "memory:" gives a new, empty MemoryStore."""
    url = str(settings.get("url") or "")
    parts = urlsplit(url)
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ValueError(f"capsule store URL without a bucket: {url!r}")
        s3 = S3Config.from_mapping(settings.get("s3") or {})
        return S3Store(parts.netloc, unquote(parts.path).strip("/"), s3=s3)
    if parts.scheme == "memory":
        return MemoryStore()
    if parts.scheme == "file" and parts.netloc in ("", "localhost"):
        path = unquote(parts.path)
    elif parts.scheme == "" and url:
        path = url
    else:
        raise ValueError(
            f"unsupported capsule store URL {url!r} (file://, /path, s3:// or memory:)"
        )
    if not os.path.isabs(path):
        raise ValueError(f"capsule store path must be absolute: {url!r}")
    return FileStore(Path(path))
