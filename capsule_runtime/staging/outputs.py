"""upload_outputs: find a task's declared outputs in its workspace tree, upload them, and return
the TES OutputFileLogs and the lines for system_logs.

Never raises for a single output: a missing output, a pattern that matches nothing, a directory
declared FILE (uploaded as a directory), an empty directory, a FIFO, or a failed upload each become
a system_logs line, and the other outputs go on. Run it whether or not an executor failed (the
caller decides; `.command.err`, `.exitcode` and Cromwell's `rc` are outputs of failed tasks too).

- FILE: one OutputFileLog, `url` as declared.
- DIRECTORY (or a directory found where a FILE was declared): one OutputFileLog per regular file
  below it, at `url` + '/' + its path below the directory (object stores have no directories;
  empty directories are not recreated).
- Wildcard path: each match (a file, or a directory flattened as above) goes to
  `url` + '/' + its path below `path_prefix`.

An output named at its own path in a shared directory (storage.shared_dirs) was written in
place through its mount: it is not uploaded, and gets its OutputFileLogs (a FILE, or each regular
file below a DIRECTORY, symlinks not followed) as they are.

An s3:// output URL the staging policy refuses as a whole (the capsule store or a prefix above
it, outside the allow-list) is a failed upload before anything under it is looked at; every
object URL is checked again by the storage.

Symlinks the task made are followed inside the tree only (see Layout.resolve); `size_bytes` is a
string, as the spec says.
"""

from __future__ import annotations

import os
import stat as st
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from capsule_runtime.protocol.shared_dirs import shared_path
from capsule_runtime.protocol.tes import FileType, TesOutput
from capsule_runtime.staging.errors import StagingError
from capsule_runtime.staging.layout import normalise
from capsule_runtime.staging.pool import run_all
from capsule_runtime.staging.urls import child_url
from capsule_runtime.staging.wildcard import expand, has_wildcard, literal_base, output_url
from capsule_runtime.staging.workspace import Workspace

FAILED = "output upload failed"  # how a failed upload's system_logs line starts


@dataclass(frozen=True)
class OutputFile:
    path: str  # the file's container path
    host: Path  # where it is in the tree
    url: str


@dataclass
class OutputReport:
    outputs: list[dict[str, str]] = field(default_factory=list)  # TES OutputFileLogs
    system_logs: list[str] = field(default_factory=list)
    failed: int = 0  # uploads that failed (missing outputs are not failures)

    def as_tuple(self) -> tuple[list[dict[str, str]], list[str]]:
        return self.outputs, self.system_logs


class _Finder:
    """Turns declared outputs into the files to upload, noting what is skipped and why."""

    def __init__(self, workspace: Workspace):
        self.ws = workspace
        self.layout = workspace.layout
        self.notes: list[str] = []

    def _list_dir(self, path: str) -> list[str] | None:
        host = self.layout.resolve(path)
        return os.listdir(host) if host is not None and host.is_dir() else None

    def _exists(self, path: str) -> bool:
        host = self.layout.resolve(path)
        return host is not None and os.path.exists(host) and not self.layout.is_placeholder(path)

    def declared(self, out: TesOutput) -> list[OutputFile]:
        path, url = out.path, out.url
        if not has_wildcard(path):
            return self.one(normalise(path), url, out.type or "FILE")
        prefix = out.path_prefix or literal_base(path)
        matches = expand(path, self._list_dir, self._exists)
        if not matches:
            self.notes.append(f"output {path} matched no file; skipped")
        found: list[OutputFile] = []
        for match in matches:
            found += self.one(match, output_url(url, match, prefix), None)
        return found

    def one(self, path: str, url: str, declared: FileType | None) -> list[OutputFile]:
        host = self.layout.resolve(path)
        if host is None:
            self.notes.append(f"output {path} is a symlink loop; skipped")
            return []
        try:
            mode = host.stat().st_mode
        except OSError:
            mode = None
        if mode is None or self.layout.is_placeholder(path):
            self.notes.append(f"output {path} does not exist; skipped")
            return []
        if st.S_ISREG(mode):
            if declared == "DIRECTORY":
                self.notes.append(f"output {path} was declared DIRECTORY but is a file; uploaded")
            return [OutputFile(path, host, url)]
        if not st.S_ISDIR(mode):
            self.notes.append(f"output {path} is not a regular file or directory; skipped")
            return []
        if declared == "FILE":
            self.notes.append(
                f"output {path} was declared FILE but is a directory; uploaded it as a directory"
            )
        files = [
            OutputFile(f"{path.rstrip('/')}/{rel}", file_host, child_url(url, rel))
            for rel, file_host in self._walk(path, host, {self._key(host)}, "")
        ]
        if not files:
            self.notes.append(f"output directory {path} has no files; nothing uploaded")
        return files

    @staticmethod
    def _key(host: Path) -> tuple[int, int]:
        info = host.stat()
        return info.st_dev, info.st_ino

    def _walk(
        self, path: str, host: Path, seen: set[tuple[int, int]], rel: str
    ) -> Iterator[tuple[str, Path]]:
        """(path below the output directory, host path) of every regular file, sorted."""
        for name in sorted(os.listdir(host)):
            child_rel = f"{rel}/{name}" if rel else name
            child = host / name
            if child.is_symlink():
                resolved = self.layout.resolve(f"{path}/{child_rel}")
                if resolved is None or not resolved.exists():
                    self.notes.append(f"output {path}/{child_rel} is a broken symlink; skipped")
                    continue
                child = resolved
            mode = child.stat().st_mode
            if st.S_ISDIR(mode):
                key = self._key(child)
                if key in seen:
                    continue  # a symlink back up the tree
                yield from self._walk(path, child, seen | {key}, child_rel)
            elif st.S_ISREG(mode):
                yield child_rel, child


def find_outputs(
    task_outputs: Sequence[TesOutput], workspace: Workspace
) -> tuple[list[OutputFile], list[str]]:
    """The files to upload for the declared outputs, and the notes on what was skipped."""
    finder = _Finder(workspace)
    files: list[OutputFile] = []
    for out in task_outputs:
        try:
            files += finder.declared(out)
        except (OSError, StagingError) as exc:
            finder.notes.append(f"output {out.path} could not be collected: {exc}")
    return files, finder.notes


def _check_s3(
    task_outputs: Sequence[TesOutput], workspace: Workspace
) -> tuple[list[TesOutput], list[str]]:
    """(the outputs whose s3 URL the policy allows as a whole, or that are not s3; a failure
    line for each refused one)."""
    policy = workspace.storages.policy
    allowed: list[TesOutput] = []
    refused: list[str] = []
    for out in task_outputs:
        url = out.url
        try:
            if url[:5].lower() == "s3://":
                policy.check_s3(url)
        except StagingError as exc:
            refused.append(f"{FAILED}: {out.path} to {url}: {exc}")
            continue
        allowed.append(out)
    return allowed, refused


def _in_place(
    task_outputs: Sequence[TesOutput], workspace: Workspace
) -> tuple[list[TesOutput], OutputReport]:
    """(the outputs to upload; the logs of those written in place in a shared directory)."""
    report = OutputReport()
    rest: list[TesOutput] = []
    rules = workspace.storages.policy.rules
    for out in task_outputs:
        path = shared_path(out, rules)
        if path is None:
            rest.append(out)
            continue
        try:
            info = os.lstat(path)
        except OSError:
            report.system_logs.append(f"output {path} (in a shared directory) does not exist")
            continue
        url = out.url
        if st.S_ISREG(info.st_mode):
            report.outputs.append({"url": url, "path": path, "size_bytes": str(info.st_size)})
        elif st.S_ISDIR(info.st_mode):
            for top, _, names in os.walk(path):
                for name in sorted(names):
                    child = os.path.join(top, name)
                    child_info = os.lstat(child)
                    if st.S_ISREG(child_info.st_mode):
                        rel = os.path.relpath(child, path)
                        report.outputs.append(
                            {
                                "url": child_url(url, rel),
                                "path": child,
                                "size_bytes": str(child_info.st_size),
                            }
                        )
    return rest, report


def upload_outputs_report(task_outputs: Sequence[TesOutput], workspace: Workspace) -> OutputReport:
    """Upload every output that exists; see the module docstring. Never raises for an output."""
    to_upload, in_place = _in_place(task_outputs, workspace)
    allowed, refused = _check_s3(to_upload, workspace)
    files, notes = find_outputs(allowed, workspace)
    report = OutputReport(
        outputs=in_place.outputs,
        system_logs=[*in_place.system_logs, *refused, *notes],
        failed=len(refused),
    )
    meter = workspace.meter("outputs", len(files))

    def upload(item: OutputFile) -> int:
        meter.check_cancelled()
        size = workspace.storages.for_url(item.url).put(item.host, item.url, meter.add)
        meter.file_done()
        return size

    results = run_all([partial(upload, f) for f in files], workspace.parallel_files)
    for item, result in zip(files, results, strict=True):
        if isinstance(result, Exception):
            report.failed += 1
            report.system_logs.append(f"{FAILED}: {item.path} to {item.url}: {result}")
        else:
            report.outputs.append({"url": item.url, "path": item.path, "size_bytes": str(result)})
    meter.finish()
    return report


def upload_outputs(
    task_outputs: Sequence[TesOutput], workspace: Workspace
) -> tuple[list[dict[str, str]], list[str]]:
    """(OutputFileLogs, system_logs lines); see the module docstring."""
    return upload_outputs_report(task_outputs, workspace).as_tuple()
