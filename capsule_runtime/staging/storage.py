"""The `Storage` interface: one implementation per URL scheme (local, http(s), s3, memory).

An implementation moves whole files and directory trees between its URLs and host paths, streams
(never a whole file in memory), reports bytes through an optional `ByteCallback`, is safe to call
from several threads at once, and raises `StagingError` (or a named subclass) with a message fit
for the task's system_logs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from capsule_runtime.protocol.tes import FileType
from capsule_runtime.staging.progress import ByteCallback


@dataclass(frozen=True)
class Stat:
    is_dir: bool
    size: int | None  # bytes of a file; None for a directory or when the server does not say


class Storage(Protocol):
    def get(
        self, url: str, dest: Path, kind: FileType, progress: ByteCallback | None = None
    ) -> int:
        """Copy the file at `url` to `dest`, or (a directory, or a prefix for s3) the whole tree
        under it into the directory `dest`. `kind` is the task's declaration; a local directory or
        an s3 prefix declared FILE is still copied as a tree. Returns the bytes copied."""
        ...

    def put(self, src: Path, url: str, progress: ByteCallback | None = None) -> int:
        """Upload the regular file `src` to `url`, replacing what is there. Returns its size."""
        ...

    def stat(self, url: str) -> Stat | None:
        """What is at `url`, or None if nothing is."""
        ...
