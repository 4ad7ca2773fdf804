"""write_capsule's memory stays bounded by its window of chunks, not by the capsule's size: a
256 MiB generated tar (one big pages member) goes through with a small, bounded peak."""

from __future__ import annotations

import io
import resource
import struct
import tarfile
import tracemalloc
from pathlib import Path

from capsule_runtime.capsules import FileStore, PartSource, restore_part, write_capsule

MiB = 1 << 20
SIZE = 256 * MiB


class GeneratedTar(io.RawIOBase):
    """A tar of one SIZE-byte member made on the fly: each 4 KiB page holds its page number,
    so every chunk differs (nothing is deduplicated) yet compresses well (the test stays fast)."""

    def __init__(self) -> None:
        info = tarfile.TarInfo("pages-1.img")
        info.size = SIZE
        self.header = info.tobuf(tarfile.PAX_FORMAT)
        self.trailer = bytes(1024)
        self.total = len(self.header) + SIZE + len(self.trailer)
        self.pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self.total - self.pos, 4 * MiB)
        if n <= 0:
            return 0
        out = bytearray(n)  # the trailer and most of every page are zeros
        head = len(self.header)
        if self.pos < head:
            k = min(n, head - self.pos)
            out[:k] = self.header[self.pos : self.pos + k]
        start, end = max(self.pos, head), min(self.pos + n, head + SIZE)
        for page in range(-(-(start - head) // 4096), -(-(end - head) // 4096)):
            offset = head + page * 4096 - self.pos
            if offset + 8 <= n:
                struct.pack_into("<Q", out, offset, page + 1)
        buffer[:n] = out
        self.pos += n
        return n


def test_peak_memory_is_bounded_by_the_window(tmp_path: Path) -> None:
    store = FileStore(tmp_path, fsync=False)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracemalloc.start()
    try:
        m = write_capsule(
            store,
            task_id="t",
            attempt_id="a",
            sequence=1,
            parts=[PartSource("checkpoint", GeneratedTar)],  # type: ignore[arg-type]
            workers=2,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    assert m.size_bytes == GeneratedTar().total
    assert m.uploaded_chunks == len(m.parts[0].chunks) > 64
    print(f"peak {peak / MiB:.1f} MiB, rss growth {rss_growth / MiB:.1f} MiB")
    assert peak < 64 * MiB, peak  # window: 2 workers x 2 chunks x 4 MiB, plus reading
    assert rss_growth < 128 * MiB, rss_growth

    class Counter(io.RawIOBase):
        n = 0

        def writable(self) -> bool:
            return True

        def write(self, b: bytes) -> int:  # type: ignore[override]
            self.n += len(b)
            return len(b)

    sink = Counter()
    assert restore_part(store, m, "checkpoint", sink, workers=2) == m.size_bytes  # type: ignore[arg-type]
