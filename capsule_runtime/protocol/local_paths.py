"""Which host paths a task's bare paths and file:// URLs may name.

A local path must lie inside one of `storage.allowed_dirs` or `storage.shared_dirs` (none by
default; a shared directory is also mounted in place, see shared_dirs.py) and never inside
tescape's own state or code — the data directory, the capsule store, the database, the install
tree, the virtualenv, an agent's work folder — even when an allowed directory is a parent of them.
Both checks are made after symlinks and `..` are resolved, and a directory (an input copied whole,
an output written into) must not contain a forbidden one either.

The same rules run twice: the gateway refuses a task at create (400, naming the field), and the
agent's StagingPolicy checks again while staging, because links can change between the two and a
directory walk meets links the gateway never saw. A leaf: the standard library only.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from capsule_runtime.protocol.errors import FieldError
from capsule_runtime.protocol.tes import TesOutput, TesTask

FORBIDDEN = "tescape's own state or code, which tasks may never use"


def real(path: str | os.PathLike[str]) -> Path:
    """`path` with symlinks and `..` resolved (the parts that exist; the rest lexically)."""
    return Path(os.path.realpath(path))


def inside(path: Path, base: Path) -> bool:
    return path == base or base in path.parents


def install_dirs() -> list[Path]:
    """Where tescape's code runs from: the directories holding the gateway and capsule_runtime
    packages (a source checkout or site-packages) and the virtualenv, if it runs in one. The
    gateway denies its own; an agent adds its own (on another machine they differ)."""
    dirs = []
    for name in ("gateway", "capsule_runtime"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin:
            dirs.append(Path(spec.origin).resolve().parent.parent)
    if sys.prefix != sys.base_prefix:
        dirs.append(Path(sys.prefix).resolve())
    return dirs


def url_local_path(url: str) -> str | None:
    """The path a bare absolute path or a file:// URL names; None for every other URL.

    Raises ValueError for a file:// URL the agent cannot use (a host name, no absolute path)."""
    if url.startswith("/"):
        return url
    parts = urlsplit(url)
    if parts.scheme.lower() != "file":
        return None
    if parts.netloc not in ("", "localhost"):
        raise ValueError(f"file:// URLs naming a host ({parts.netloc}) are not supported")
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise ValueError("the file:// URL has no absolute path")
    return path


@dataclass(frozen=True)
class LocalPathRules:
    allowed: tuple[Path, ...] = ()
    denied: tuple[Path, ...] = ()
    shared: tuple[Path, ...] = ()  # storage.shared_dirs: allowed, and mounted in place

    @classmethod
    def create(
        cls,
        allowed: Iterable[str | os.PathLike[str]] = (),
        denied: Iterable[str | os.PathLike[str]] = (),
        shared: Iterable[str | os.PathLike[str]] = (),
    ) -> LocalPathRules:
        return cls(
            tuple(real(d) for d in allowed),
            tuple(dict.fromkeys(real(d) for d in denied)),
            tuple(real(d) for d in shared),
        )

    def refusal(self, path: str) -> str | None:
        """Why a task may not use `path` (a file it reads or writes), or None if it may."""
        if not os.path.isabs(path):
            return f"{path!r} is not an absolute path"
        if "\x00" in path:
            return "a local path must not contain NUL characters"
        resolved = real(path)
        same = str(resolved) == os.path.normpath(path)
        shown = path if same else f"{path} (resolves to {resolved})"
        for base in self.denied:
            if inside(resolved, base):
                return f"local path {shown} is inside {base}: {FORBIDDEN}"
        # allowed dirs are resolved again: one may have become a link since the rules were made
        if any(inside(resolved, real(base)) for base in (*self.allowed, *self.shared)):
            return None
        allowed = ", ".join(str(d) for d in self.allowed) or "none are configured"
        shared = f"; storage.shared_dirs: {', '.join(str(d) for d in self.shared)}"
        return (
            f"local path {shown} is outside the directories tasks may use "
            f"(storage.allowed_dirs: {allowed}{shared if self.shared else ''})"
        )

    def tree_refusal(self, path: str) -> str | None:
        """As `refusal`, for a directory used whole: it must not contain a forbidden one."""
        why = self.refusal(path)
        if why is not None:
            return why
        resolved = real(path)
        for base in self.denied:
            if inside(base, resolved):
                return f"local directory {path} contains {base}: {FORBIDDEN}"
        return None


def task_path_errors(task: TesTask, rules: LocalPathRules) -> list[FieldError]:
    """Every input and output URL of a (validated) task that names a local path the rules refuse.

    A directory input, a directory output and a wildcard output's URL are used whole, so they
    must not contain a forbidden directory either."""
    errors = []
    for field, item in task.files():
        if item.url is None:
            continue
        name = f"{field}.url"
        try:
            path = url_local_path(item.url)
        except ValueError as exc:
            errors.append(FieldError(name, str(exc)))
            continue
        if path is None:
            continue
        whole = item.type == "DIRECTORY" or (
            isinstance(item, TesOutput) and item.path_prefix is not None
        )
        why = rules.tree_refusal(path) if whole else rules.refusal(path)
        if why is not None:
            errors.append(FieldError(name, why))
    return errors
