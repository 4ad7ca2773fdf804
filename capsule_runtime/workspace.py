"""A task's work area on the host: where its inputs are staged, which directories are bind-mounted
into its containers, and where its outputs are collected from.

Every container path of the task (inputs, outputs, volumes, workdirs, stdio files) lives in one
host tree, `<root>/fs/<container path>`. The tree is mounted at a few *mount points* rather than
one mount per file (Cromwell sends thousands of inputs): a path's mount point is its top-level
directory (`/work`, `/cromwell-executions`, `/home`), or its first two levels under directories an
image needs to keep (`/usr/local`, `/opt/tools`), so that hard links and FIFOs between inputs and
the execution directory work (one file system) and the image's own /usr, /etc, /bin stay visible.
Inputs are copies, so a task that writes into its inputs changes nothing at the source.
"""

from __future__ import annotations

import glob
import posixpath
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from capsule_runtime.engine.spec import Mount
from capsule_runtime.transfers import TransferError, Transfers

# Top-level directories an image needs: mount below them, never over them.
KEEP = frozenset(
    {
        "bin",
        "boot",
        "dev",
        "etc",
        "lib",
        "lib32",
        "lib64",
        "libx32",
        "opt",
        "proc",
        "run",
        "sbin",
        "srv",
        "sys",
        "usr",
        "var",
    }
)
WILDCARD = ("*", "?", "[")


def mount_point(container_path: str, is_dir: bool) -> str:
    """The directory under which `container_path` is mounted (see the module docstring)."""
    parts = [p for p in container_path.split("/") if p]
    if not is_dir:
        parts = parts[:-1]
    if not parts:
        return container_path  # a file directly under /: mounted on its own
    depth = 2 if parts[0] in KEEP else 1
    return "/" + "/".join(parts[:depth])


def _wildcard_base(path: str, prefix: str | None) -> str:
    if prefix:
        return prefix
    cut = min(path.index(c) for c in WILDCARD if c in path)
    return posixpath.dirname(path[:cut]) or "/"


class Workspace:
    def __init__(self, root: Path, transfers: Transfers, task: dict[str, Any]):
        self.root = root
        self.fs = root / "fs"
        self.transfers = transfers
        self.task = task
        self.points = self._plan()

    # -- layout ---------------------------------------------------------------------------------

    def _paths(self) -> Iterable[tuple[str, bool]]:
        for inp in self.task.get("inputs", []):
            yield inp["path"], inp.get("type") == "DIRECTORY"
        for out in self.task.get("outputs", []):
            path = out["path"]
            if any(c in path for c in WILDCARD):
                yield _wildcard_base(path, out.get("path_prefix")), True
            else:
                yield path, out.get("type") == "DIRECTORY" or path.endswith("/")
        for vol in self.task.get("volumes", []):
            yield vol, True
        for ex in self.task.get("executors", []):
            if "workdir" in ex:
                yield ex["workdir"], True
            for key in ("stdin", "stdout", "stderr"):
                if key in ex:
                    yield ex[key], False

    def _plan(self) -> list[str]:
        points = sorted({mount_point(p, d) for p, d in self._paths()})
        # a point inside another one is covered by it
        return [p for p in points if not any(p.startswith(q + "/") for q in points if q != p)]

    def host_path(self, container_path: str) -> Path:
        return self.fs / posixpath.normpath(container_path).lstrip("/")

    def mounts(self) -> list[Mount]:
        out = []
        for point in self.points:
            host = self.host_path(point)
            if not host.exists():
                host.mkdir(parents=True, exist_ok=True)
            out.append(Mount(host=host, container=point))
        return out

    # -- inputs ---------------------------------------------------------------------------------

    def stage_inputs(self) -> None:
        self.fs.mkdir(parents=True, exist_ok=True)
        for point in self.points:
            self.host_path(point).mkdir(parents=True, exist_ok=True)
        for vol in self.task.get("volumes", []):
            self.host_path(vol).mkdir(parents=True, exist_ok=True)
        for ex in self.task.get("executors", []):
            if "workdir" in ex:
                self.host_path(ex["workdir"]).mkdir(parents=True, exist_ok=True)
        for inp in self.task.get("inputs", []):
            dest = self.host_path(inp["path"])
            dest.parent.mkdir(parents=True, exist_ok=True)
            if "content" in inp:
                dest.write_text(inp["content"])
            else:
                self.transfers.get(inp["url"], dest, inp.get("type") == "DIRECTORY")
        for out in self.task.get("outputs", []):  # so the task can write its outputs' files
            path = out["path"]
            base = path if out.get("type") == "DIRECTORY" else posixpath.dirname(path)
            if not any(c in base for c in WILDCARD):
                self.host_path(base).mkdir(parents=True, exist_ok=True)

    # -- outputs --------------------------------------------------------------------------------

    def upload_outputs(self) -> tuple[list[dict[str, str]], list[str]]:
        """Upload every declared output that exists. Returns the OutputFileLogs and notes for
        system_logs (missing outputs, failures): a bad output never raises."""
        logs: list[dict[str, str]] = []
        notes: list[str] = []
        for out in self.task.get("outputs", []):
            try:
                if any(c in out["path"] for c in WILDCARD):
                    self._wildcard(out, logs, notes)
                else:
                    self._one(out["path"], out["url"], out.get("type", "FILE"), logs, notes)
            except TransferError as exc:
                notes.append(f"output {out['path']} was not uploaded: {exc}")
        return logs, notes

    def _one(
        self, path: str, url: str, kind: str, logs: list[dict[str, str]], notes: list[str]
    ) -> None:
        host = self.host_path(path)
        if not host.exists():
            notes.append(f"output {path} does not exist; skipped")
            return
        if host.is_dir():
            if kind == "FILE":
                notes.append(f"output {path} was declared FILE but is a directory; uploaded as one")
            files = sorted(p for p in host.rglob("*") if p.is_file())
            for file in files:
                rel = file.relative_to(host).as_posix()
                self._upload(file, f"{path.rstrip('/')}/{rel}", f"{url.rstrip('/')}/{rel}", logs)
            return
        self._upload(host, path, url, logs)

    def _wildcard(self, out: dict[str, Any], logs: list[dict[str, str]], notes: list[str]) -> None:
        prefix = out["path_prefix"].rstrip("/")
        matches = sorted(glob.glob(str(self.host_path(out["path"]))))
        if not matches:
            notes.append(f"output {out['path']} matched no file; skipped")
        for match in matches:
            container = "/" + Path(match).relative_to(self.fs).as_posix()
            rel = container[len(prefix) :].lstrip("/")
            self._one(container, f"{out['url'].rstrip('/')}/{rel}", "FILE", logs, notes)

    def _upload(self, host: Path, path: str, url: str, logs: list[dict[str, str]]) -> None:
        self.transfers.put(host, url)
        logs.append({"url": url, "path": path, "size_bytes": str(host.stat().st_size)})
