"""write_capsule → restore_part through a FileStore: exact bytes back, incremental reuse against
a parent, corruption and missing chunks detected, the manifest only after every chunk."""

from __future__ import annotations

import io
import random
import tarfile
import threading
from pathlib import Path
from typing import Any

import pytest

from capsule_runtime.capsules import (
    CapsuleCorrupt,
    CapsuleMissing,
    CapsuleStoreError,
    CapsuleWriteError,
    ChunkMissing,
    FileStore,
    Manifest,
    MemoryStore,
    PartSource,
    chunk_key,
    delete_task_capsules,
    known_chunks,
    list_manifests,
    manifest_key,
    read_manifest,
    restore_part,
    verify_capsule,
    write_capsule,
)

KiB, MiB = 1 << 10, 1 << 20
CHUNK = 64 * KiB


def checkpoint_tar(rng: random.Random, pages: bytes, core: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("core-1.img", core), ("pages-1.img", pages), ("tail", b"z" * 99)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def source(name: str, data: bytes, tar: bool = True) -> PartSource:
    return PartSource(name, lambda: io.BytesIO(data), tar=tar)


def restore(store: FileStore | MemoryStore, m: Manifest, name: str, workers: int = 4) -> bytes:
    sink = io.BytesIO()
    n = restore_part(store, m, name, sink, workers=workers)
    assert n == len(sink.getvalue())
    return sink.getvalue()


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "capsules")


@pytest.fixture
def parts() -> dict[str, bytes]:
    rng = random.Random(7)
    pages = rng.randbytes(1 * MiB) + bytes(512 * KiB)  # random, then zero pages
    return {
        "checkpoint": checkpoint_tar(rng, pages, b"c" * 3000),
        "config": b'{"image": "busybox"}',
        "empty": b"",
    }


def write(
    store: FileStore | MemoryStore, parts: dict[str, bytes], seq: int = 1, **kw: Any
) -> Manifest:
    return write_capsule(
        store,
        task_id="task1",
        attempt_id="att1",
        sequence=seq,
        parts=[source(n, d, tar=(n == "checkpoint")) for n, d in parts.items()],
        chunk_size=CHUNK,
        workers=2,
        **kw,
    )


def test_round_trip_is_exact(store: FileStore, parts: dict[str, bytes]) -> None:
    seen: list[int] = []
    m = write(store, parts, meta={"criu": "4.2"}, progress=seen.append)
    assert m.key == manifest_key("task1", "att1", 1) and store.exists(m.key)
    assert m.sha256 is not None and m.parent is None
    assert sum(seen) == m.size_bytes == sum(len(d) for d in parts.values())
    assert [p.name for p in m.parts] == list(parts)
    assert m.meta["criu"] == "4.2" and m.meta["chunking"]["chunk_size"] == CHUNK
    assert {"read", "hash", "compress", "upload", "total"} <= set(m.timings)
    # the zero pages repeat: stored once, counted as reused
    assert m.reused_chunks > 0 and m.uploaded_chunks + m.reused_chunks == sum(
        len(p.chunks) for p in m.parts
    )
    assert m.uploaded_bytes < m.stored_bytes
    loaded = read_manifest(store, m.key, sha256=m.sha256)
    assert loaded == m and loaded.sha256 == m.sha256
    for name, data in parts.items():
        assert restore(store, loaded, name, workers=3) == data
    verify_capsule(store, loaded)
    assert list_manifests(store, "task1") == [m.key]


def test_incremental_capsule_uploads_only_changed_chunks(store: FileStore) -> None:
    rng = random.Random(8)
    pages = rng.randbytes(2 * MiB)
    first = write(store, {"checkpoint": checkpoint_tar(rng, pages, b"a" * 1000)})
    changed = bytearray(pages)
    changed[500 * KiB : 520 * KiB] = rng.randbytes(20 * KiB)  # across two 64 KiB chunks
    # the first chunk (core-1.img) and the last (record padding after the end) differ too
    second_tar = checkpoint_tar(rng, bytes(changed), b"b" * 4000)
    second = write(store, {"checkpoint": second_tar}, seq=2, parent=first)
    assert second.parent == first.capsule_id
    total = len(second.parts[0].chunks)
    # the changed pages' chunk or two (content-chosen cuts may move inside the changed region),
    # the first chunk (core-1.img) and the last (record padding)
    assert 3 <= second.uploaded_chunks <= 5, second.uploaded_chunks
    assert second.reused_chunks == total - second.uploaded_chunks
    assert second.uploaded_bytes < 4 * CHUNK
    assert second.stored_bytes > 2 * MiB
    assert restore(store, second, "checkpoint") == second_tar
    # `known` instead of a parent: a mapping keeps stored sizes, a bare set measures them
    for known in (known_chunks([first, second]), set(known_chunks([first, second]))):
        third = write(store, {"checkpoint": second_tar}, seq=3, known=known)
        assert third.uploaded_chunks == 0
        assert third.stored_bytes == second.stored_bytes
    assert len(list_manifests(store, "task1")) == 3


def test_a_flipped_byte_is_detected(store: FileStore, parts: dict[str, bytes]) -> None:
    m = write(store, parts)
    ref = m.part("checkpoint").chunks[2]
    path = store.root / chunk_key("task1", ref.sha256)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(CapsuleCorrupt, match="chunk 2 of part checkpoint"):
        restore(store, m, "checkpoint")
    with pytest.raises(CapsuleCorrupt, match="part checkpoint"):
        verify_capsule(store, m)
    assert restore(store, m, "config") == parts["config"]


def test_bytes_that_decode_to_other_content_are_detected(store: FileStore) -> None:
    import zstandard

    m = write(store, {"blob": random.Random(1).randbytes(3 * CHUNK)})
    ref = m.part("blob").chunks[1]
    store.put(chunk_key("task1", ref.sha256), zstandard.compress(bytes(ref.size)))
    with pytest.raises(CapsuleCorrupt, match="sha256"):
        verify_capsule(store, m)
    store.put(chunk_key("task1", ref.sha256), b"not zstd at all")
    with pytest.raises(CapsuleCorrupt, match="chunk 1 of part blob"):
        restore(store, m, "blob")


def test_a_missing_chunk_is_corrupt_and_missing(store: FileStore, parts: dict[str, bytes]) -> None:
    m = write(store, parts)
    ref = m.part("checkpoint").chunks[-1]
    (store.root / chunk_key("task1", ref.sha256)).unlink()
    last = len(m.part("checkpoint").chunks) - 1
    with pytest.raises(ChunkMissing, match=f"chunk {last} of part checkpoint missing") as info:
        restore(store, m, "checkpoint")
    assert isinstance(info.value, CapsuleCorrupt) and isinstance(info.value, CapsuleMissing)
    with pytest.raises(CapsuleCorrupt):
        verify_capsule(store, m)


def test_manifest_digest_and_format_are_checked(store: FileStore, parts: dict[str, bytes]) -> None:
    m = write(store, parts)
    with pytest.raises(CapsuleCorrupt, match="sha256"):
        read_manifest(store, m.key, sha256="0" * 64)
    store.put(m.key, m.model_copy(update={"format": 2}).to_bytes())
    with pytest.raises(CapsuleCorrupt, match="format 2"):
        read_manifest(store, m.key)
    store.put(m.key, b"{not json")
    with pytest.raises(CapsuleCorrupt):
        read_manifest(store, m.key)
    with pytest.raises(CapsuleMissing):
        read_manifest(store, manifest_key("task1", "att1", 99))
    with pytest.raises(KeyError, match="no part"):
        restore(store, m, "rootfs")


class FailingStore(MemoryStore):
    """Puts fail after `allowed` successful ones."""

    def __init__(self, allowed: int):
        super().__init__()
        self.allowed = allowed
        self._count = threading.Lock()

    def put(self, key: str, data: bytes | bytearray) -> None:
        with self._count:
            if self.allowed <= 0:
                raise CapsuleStoreError(f"injected failure writing {key}")
            self.allowed -= 1
        super().put(key, data)


@pytest.mark.parametrize("allowed", [0, 3, 10_000])
def test_manifest_is_written_last(parts: dict[str, bytes], allowed: int) -> None:
    chunks = MemoryStore()
    m = write(chunks, parts)
    needed = m.uploaded_chunks  # the manifest is put after these
    store = FailingStore(min(allowed, needed))
    with pytest.raises(CapsuleWriteError, match="injected failure") as info:
        write(store, parts)
    assert isinstance(info.value.__cause__, CapsuleStoreError)
    assert not list_manifests(store, "task1")
    assert all("/chunks/" in k for k in store.objects)


def test_a_store_failure_closes_the_part_at_once() -> None:
    opened: list[io.BytesIO] = []

    def open_part() -> io.BytesIO:
        opened.append(io.BytesIO(random.Random(3).randbytes(40 * CHUNK)))
        return opened[-1]

    with pytest.raises(CapsuleWriteError) as info:
        write_capsule(
            FailingStore(2),
            task_id="t",
            attempt_id="a",
            sequence=1,
            parts=[PartSource("big", open_part, tar=False)],
            chunk_size=CHUNK,
            workers=2,
        )
    assert opened[0].closed  # while the traceback (and the pipeline's frame) still lives
    del info


class BrokenStream(io.RawIOBase):
    def __init__(self, good: int):
        self.left = good
        self.closed_by_pipeline = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self.left <= 0:
            raise OSError("disk on fire")
        n = min(len(buffer), self.left)
        buffer[:n] = b"x" * n
        self.left -= n
        return n

    def close(self) -> None:
        self.closed_by_pipeline = True
        super().close()


def test_a_read_error_fails_the_write_and_closes_the_stream(store: FileStore) -> None:
    broken = BrokenStream(5 * CHUNK)
    with pytest.raises(CapsuleWriteError, match="disk on fire"):
        write_capsule(
            store,
            task_id="task1",
            attempt_id="att1",
            sequence=1,
            parts=[
                source("ok", b"fine", tar=False),
                PartSource("bad", lambda: broken, tar=False),  # type: ignore[arg-type,return-value]
            ],
            chunk_size=CHUNK,
        )
    assert broken.closed_by_pipeline
    assert not list_manifests(store, "task1")


def test_bad_arguments_are_refused_before_writing(store: FileStore) -> None:
    with pytest.raises(ValueError, match="workers"):
        write_capsule(store, task_id="t", attempt_id="a", sequence=1, parts=[], workers=0)
    with pytest.raises(ValueError, match="attempt id"):
        write_capsule(store, task_id="t", attempt_id="../x", sequence=1, parts=[])
    with pytest.raises(ValueError, match="duplicate"):
        write_capsule(
            store,
            task_id="t",
            attempt_id="a",
            sequence=1,
            parts=[source("p", b""), source("p", b"")],
        )
    assert store.list("") == []


def test_delete_task_capsules_removes_only_that_task(
    store: FileStore, parts: dict[str, bytes]
) -> None:
    write(store, parts)
    other = write_capsule(
        store, task_id="task2", attempt_id="a", sequence=0, parts=[source("p", b"x")]
    )
    removed = delete_task_capsules(store, "task1")
    assert removed > 2
    assert store.list("task1") == []
    assert read_manifest(store, other.key).task_id == "task2"


def test_sink_receives_in_order_even_with_one_worker(store: FileStore) -> None:
    data = random.Random(5).randbytes(10 * CHUNK + 17)
    m = write(store, {"blob": data})
    for workers in (1, 8):
        assert restore(store, m, "blob", workers=workers) == data
