"""An in-memory storage for `memory://` URLs, for fast tests of staging and of the agent.

Objects are a dict from URL to bytes; a URL that is a prefix of others (followed by '/') is a
directory. Not for real data: everything is held in memory.
"""

from __future__ import annotations

import threading
from pathlib import Path

from capsule_runtime.protocol.tes import FileType
from capsule_runtime.staging.errors import SourceMissing
from capsule_runtime.staging.progress import ByteCallback
from capsule_runtime.staging.storage import Stat


class MemoryStorage:
    def __init__(self, objects: dict[str, bytes] | None = None):
        self.objects: dict[str, bytes] = dict(objects or {})
        self._lock = threading.Lock()

    def _below(self, url: str) -> dict[str, bytes]:
        prefix = url.rstrip("/") + "/"
        with self._lock:
            return {k[len(prefix) :]: v for k, v in self.objects.items() if k.startswith(prefix)}

    def stat(self, url: str) -> Stat | None:
        with self._lock:
            data = self.objects.get(url)
        if data is not None:
            return Stat(is_dir=False, size=len(data))
        return Stat(is_dir=True, size=None) if self._below(url) else None

    def get(
        self, url: str, dest: Path, kind: FileType, progress: ByteCallback | None = None
    ) -> int:
        with self._lock:
            data = self.objects.get(url)
        if data is not None and kind == "FILE":
            dest.write_bytes(data)
            if progress is not None:
                progress(len(data))
            return len(data)
        tree = self._below(url)
        if not tree:
            raise SourceMissing(f"{url} does not exist")
        total = 0
        for rel, blob in sorted(tree.items()):
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(blob)
            total += len(blob)
            if progress is not None:
                progress(len(blob))
        return total

    def put(self, src: Path, url: str, progress: ByteCallback | None = None) -> int:
        data = src.read_bytes()
        with self._lock:
            self.objects[url] = data
        if progress is not None:
            progress(len(data))
        return len(data)
