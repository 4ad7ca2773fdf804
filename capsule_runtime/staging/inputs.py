"""stage_inputs: copy a task's inputs into its workspace tree and return the mounts to run with.

Inputs named at their own path in a shared directory are mounted, not copied (workspace.py).
Order: the tree's directories first (workspace.prepare), then DIRECTORY inputs one at a time,
shallowest first (a file input inside a directory input lands on top of it), then FILE and
`content` inputs side by side on the workspace's pool, then placeholders for file mounts. The first
failure stops the phase and is raised as a StagingError naming the input; the caller ends the
task with SYSTEM_ERROR and that message in system_logs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from capsule_runtime.protocol.tes import FileType, TesInput
from capsule_runtime.staging.content import write_content
from capsule_runtime.staging.errors import StagingError
from capsule_runtime.staging.layout import inside, normalise
from capsule_runtime.staging.pool import run_until_error
from capsule_runtime.staging.workspace import Mounts, Workspace


@dataclass(frozen=True)
class InputItem:
    path: str  # normalised container path
    dest: Path  # where it goes in the tree
    kind: FileType
    url: str | None = None
    content: str | None = None  # set (even empty) when the input is inline


def plan_inputs(task_inputs: Sequence[TesInput], workspace: Workspace) -> list[InputItem]:
    """One item per container path (a later declaration of the same path wins), in the order
    they are staged: directories shallowest first, then files. Inputs mounted from a shared
    directory are not staged."""
    by_path: dict[str, InputItem] = {}
    for inp in task_inputs:
        path = normalise(inp.path)
        if any(inside(path, m.path) for m in workspace.shared):
            continue
        if workspace.layout.mount_for(path) is None:
            raise StagingError(f"input {path} is not under any mount point of this workspace")
        content, url = inp.content, inp.url
        if content or url is None:  # spec: a non-empty content wins over url
            item = InputItem(path, workspace.tree_path(path), "FILE", content=content or "")
        else:
            item = InputItem(path, workspace.tree_path(path), inp.type or "FILE", url=url)
        by_path.pop(path, None)
        by_path[path] = item
    items = list(by_path.values())
    dirs = sorted((i for i in items if i.kind == "DIRECTORY"), key=lambda i: i.path.count("/"))
    return dirs + [i for i in items if i.kind != "DIRECTORY"]


def stage_inputs(task_inputs: Sequence[TesInput], workspace: Workspace) -> Mounts:
    """Stage every input into the workspace's tree; returns the mounts for the executors."""
    items = plan_inputs(task_inputs, workspace)
    meter = workspace.meter("inputs", len(items))
    workspace.prepare()

    fs = os.path.realpath(workspace.fs)

    def stage(item: InputItem) -> int:
        meter.check_cancelled()
        try:
            item.dest.parent.mkdir(parents=True, exist_ok=True)
            # a symlink copied in by an earlier directory input must not redirect this write
            if os.path.commonpath([fs, os.path.realpath(item.dest.parent)]) != fs:
                raise StagingError("its directory leads out of the workspace through a symlink")
            if item.dest.is_symlink():
                item.dest.unlink()
            if item.content is not None:
                size = write_content(item.content, item.dest)
                meter.add(size)
            else:
                assert item.url is not None
                storage = workspace.storages.for_url(item.url)
                size = storage.get(item.url, item.dest, item.kind, meter.add)
        except StagingError as exc:
            raise type(exc)(f"input {item.path}: {exc}") from None
        except OSError as exc:
            raise StagingError(f"input {item.path}: {exc}") from None
        meter.file_done()
        return size

    dirs = [i for i in items if i.kind == "DIRECTORY"]
    for item in dirs:
        stage(item)
    files = items[len(dirs) :]
    run_until_error([partial(stage, i) for i in files], workspace.parallel_files)
    workspace.create_placeholders()
    meter.finish()
    return workspace.mounts()
