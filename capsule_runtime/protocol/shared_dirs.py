"""Which of a task's local inputs and outputs are bind-mounted from a shared directory, not copied.

An admin lists `storage.shared_dirs`: local directories every instance sees at the same path (a
shared file system on a cloud; this machine's own directories for the local provider). They are
advertised in service-info `storage` as `file://` prefixes, so a client such as Toil's TES
plugin mounts its file job store only where tescape can give it one. A task's input or output
(DIRECTORY or FILE) whose URL names a path inside a shared directory *and* whose container path
is that same path is mounted read-write at that path: the task reads and writes it in place,
and nothing is staged or uploaded. Any other use of a shared directory (another container path)
is an ordinary local path: copied in, copied out, as under `storage.allowed_dirs`.

The deny-list still holds (a shared mount never is, nor contains, tescape's own state or code),
and the mounted path must be the path itself: no symlink on the way (the engine would mount
what the link points to). Nothing else of the task may lie inside a shared mount (a copied
input, a volume, an executor's stdio file): the tree's mount under it would hide the shared
data, or the shared mount would hide the copy.

Checked twice, as local paths are: the gateway refuses a task at create (400, naming the field)
and the agent again before mounting (links can change in between). A capsule does not carry the
shared data: a restore needs the same directory at the same path on the target instance.
A leaf: the standard library and the task's own models.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from capsule_runtime.protocol.errors import FieldError
from capsule_runtime.protocol.local_paths import LocalPathRules, inside, real, url_local_path
from capsule_runtime.protocol.tes import TesInput, TesOutput, TesTask


@dataclass(frozen=True)
class SharedMount:
    """One path mounted from a shared directory: the host path is the container path."""

    path: str  # normalised absolute path
    is_dir: bool
    output: bool  # declared as an output: created when missing (a directory, or an empty file)


def _norm(path: str) -> str:
    return os.path.normpath(path) if path.startswith("/") else path


def shared_path(item: TesInput | TesOutput, rules: LocalPathRules) -> str | None:
    """The path an input or output is mounted at from a shared directory, or None when it is
    staged as usual: its URL names a local path inside a shared directory (lexically; the
    symlink check is `mount_refusal`'s) and its container path is that same path."""
    url, path = item.url, item.path
    if not rules.shared or url is None:
        return None
    if isinstance(item, TesInput) and item.content:  # a non-empty content wins: never a mount
        return None
    try:
        local = url_local_path(url)
    except ValueError:
        return None
    if local is None or "\x00" in local:
        return None
    local = _norm(local)
    if local != _norm(path):
        return None
    return local if any(inside(Path(local), base) for base in rules.shared) else None


def mount_refusal(path: str, is_dir: bool, rules: LocalPathRules) -> str | None:
    """Why `path` may not be mounted from a shared directory, or None if it may."""
    why = rules.tree_refusal(path) if is_dir else rules.refusal(path)
    return why if why is not None else link_refusal(path)


def link_refusal(path: str) -> str | None:
    """Why `path` is not mounted at its own path: a symlink on the way, or None."""
    resolved = real(path)
    if str(resolved) != _norm(path):
        return (
            f"{path} leads through a symlink to {resolved}; a shared directory's path is mounted "
            "at that same path only, never through a link"
        )
    return None


def shared_mounts(task: TesTask, rules: LocalPathRules) -> list[SharedMount]:
    """The task's shared mounts, outermost only (one inside another is carried by it), sorted;
    a path declared both as input and output is one mount."""
    found: dict[str, SharedMount] = {}
    for _, item in task.files():
        path = shared_path(item, rules)
        if path is None:
            continue
        is_dir = item.type == "DIRECTORY"
        output = isinstance(item, TesOutput)
        old = found.get(path)
        if old is not None:
            is_dir, output = old.is_dir or is_dir, old.output or output
        found[path] = SharedMount(path, is_dir, output)
    outer = [
        m for m in found.values() if not any(o != m.path and inside_str(m.path, o) for o in found)
    ]
    return sorted(outer, key=lambda m: m.path)


def inside_str(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip("/") + "/")


def _others(task: TesTask, rules: LocalPathRules) -> Iterator[tuple[str, str]]:
    """(field, container path) of everything else of the task that lives in its tree."""
    for field, item in task.files():
        if shared_path(item, rules) is None:
            yield f"{field}.path", item.path
    for i, volume in enumerate(task.volumes or []):
        yield f"volumes[{i}]", volume
    for i, ex in enumerate(task.executors):
        for key, value in (("stdin", ex.stdin), ("stdout", ex.stdout), ("stderr", ex.stderr)):
            if value is not None:
                yield f"executors[{i}].{key}", value


def shared_errors(task: TesTask, rules: LocalPathRules) -> list[FieldError]:
    """Every shared input or output whose path leads through a symlink, and everything else of
    the task that lies inside a shared mount (the deny-list is task_path_errors' part: a shared
    input or output is a local path like any other there)."""
    errors = []
    for field, item in task.files():
        path = shared_path(item, rules)
        if path is None:
            continue
        why = link_refusal(path)
        if why is not None:
            errors.append(FieldError(f"{field}.url", why))
    mounts = shared_mounts(task, rules)
    for name, path in _others(task, rules):
        for mount in mounts:
            if path.startswith("/") and inside_str(_norm(path), mount.path):
                errors.append(
                    FieldError(
                        name,
                        f"{path} lies inside {mount.path}, which is mounted from a shared "
                        "directory (storage.shared_dirs): name it at its own path in the shared "
                        "directory, or use a container path outside the mount",
                    )
                )
                break
    return errors
