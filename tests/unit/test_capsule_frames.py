"""The cheap paths of the capsule pipeline (frames.py): zero chunks marked and never fetched,
incompressible chunks stored as raw zstd frames without compressing them, and the restore that
fetches and checks chunks in parallel but writes them in order — corruption still caught on
each path, and what the writer stores still readable by a reader that ignores the new marks."""

from __future__ import annotations

import io
import random
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import zstandard

from capsule_runtime import checkpointing
from capsule_runtime.capsules import (
    CapsuleCorrupt,
    FileStore,
    Manifest,
    MemoryStore,
    PartSource,
    chunk_key,
    restore_part,
    verify_capsule,
    write_capsule,
)
from capsule_runtime.capsules.crypto import LocalKeyWrapper
from capsule_runtime.capsules.frames import (
    FAST_LEVEL,
    FAST_RATIO,
    RAW_BLOCK_MAX,
    SAMPLED,
    ZSTD_MAGIC,
    is_zero,
    level_for,
    raw_frame,
    sample_ratio,
    worth_compressing,
)
from capsule_runtime.protocol.messages import CapsuleRef, CapsuleSettings
from tests.fixtures.capsule_runs import task_capsule

KiB, MiB = 1 << 10, 1 << 20
CHUNK = 256 * KiB  # > SAMPLED: chunks are sampled


def half(rng: random.Random, n: int) -> bytes:
    """Each 4 KiB page: 2 KiB random, 2 KiB zeros (zstd stores about half)."""
    return b"".join(rng.randbytes(2048) + bytes(2048) for _ in range(n // 4096))


def write(store: Any, data: bytes, **kw: Any) -> Manifest:
    return write_capsule(
        store,
        task_id="t1",
        attempt_id="a1",
        sequence=kw.pop("sequence", 1),
        parts=[PartSource("blob", lambda: io.BytesIO(data), tar=False)],
        chunk_size=CHUNK,
        workers=3,
        **kw,
    )


def read(store: Any, m: Manifest, workers: int = 4, keys: Any = None) -> bytes:
    sink = io.BytesIO()
    restore_part(store, m, "blob", sink, workers=workers, keys=keys)
    return sink.getvalue()


class CountingStore(MemoryStore):
    """Counts gets per key; `delay(key)` seconds before each get returns; tracks concurrency."""

    def __init__(self, delay: Any = None) -> None:
        super().__init__()
        self.gets: dict[str, int] = {}
        self.delay = delay
        self.active = self.most_active = 0
        self._count = threading.Lock()

    def get(self, key: str) -> bytes:
        with self._count:
            self.gets[key] = self.gets.get(key, 0) + 1
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        try:
            if self.delay is not None:
                time.sleep(self.delay(key))
            return super().get(key)
        finally:
            with self._count:
                self.active -= 1


# -- the frames themselves ----------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 4095, RAW_BLOCK_MAX, RAW_BLOCK_MAX + 1, 3 * MiB + 7])
def test_a_raw_frame_is_a_zstd_frame_any_decoder_reads(size: int) -> None:
    data = random.Random(size).randbytes(size)
    frame = raw_frame(data)
    assert frame.startswith(ZSTD_MAGIC)
    assert zstandard.frame_content_size(frame) == size
    assert zstandard.ZstdDecompressor().decompress(frame) == data
    blocks = max(1, -(-size // RAW_BLOCK_MAX))
    assert len(frame) == size + 4 + 1 + 8 + 3 * blocks  # magic, descriptor, size, block headers


def test_zero_detection() -> None:
    assert is_zero(bytes(CHUNK)) and is_zero(b"\0")
    assert not is_zero(b"")
    assert not is_zero(bytes(CHUNK - 1) + b"\1")  # the last byte counts
    assert not is_zero(b"\1" + bytes(CHUNK - 1))


def test_sampling_tells_incompressible_from_compressible() -> None:
    rng = random.Random(2)
    compress = zstandard.ZstdCompressor(level=1).compress
    assert not worth_compressing(rng.randbytes(MiB), compress)
    assert worth_compressing(half(rng, MiB), compress)
    assert worth_compressing(b"line of text\n" * 80_000, compress)
    assert not worth_compressing(rng.randbytes(100), compress)  # small: all of it is the sample
    assert SAMPLED < CHUNK


def test_the_level_follows_what_the_samples_say() -> None:
    rng = random.Random(3)
    compress = zstandard.ZstdCompressor(level=1).compress
    assert level_for(sample_ratio(rng.randbytes(MiB), compress), 1) is None  # raw
    assert level_for(sample_ratio(half(rng, MiB), compress), 1) == FAST_LEVEL
    assert level_for(sample_ratio(b"line of text\n" * 80_000, compress), 3) == 3
    assert level_for(FAST_RATIO, 1) == FAST_LEVEL
    assert level_for(FAST_RATIO - 0.01, 1) == 1
    assert level_for(FAST_RATIO, FAST_LEVEL) == FAST_LEVEL  # never slower than asked


def test_fast_chunks_compress_as_well_and_read_back() -> None:
    """Mostly random pages with zero runs: the fast level stores them as small as level 1 does
    (the chunk ids are the plaintext's, so deduplication does not see the level); compressible
    text keeps level 1. Both read back, encrypted or not."""
    rng = random.Random(9)
    data = half(rng, 4 * CHUNK) + b"".join(b"line %d of text\n" % i for i in range(60_000))
    data = data[: 8 * CHUNK]
    for keys in (None, LocalKeyWrapper(bytes(range(32)))):
        store = MemoryStore()
        m = write_capsule(
            store,
            task_id="t1",
            attempt_id="a1",
            sequence=1,
            parts=[PartSource("blob", lambda: io.BytesIO(data), tar=False)],
            chunk_size=CHUNK,
            keys=keys,
        )
        assert m.fast_chunks == 4 and m.raw_chunks == 0
        refs = m.part("blob").chunks
        level1 = zstandard.ZstdCompressor(level=1)
        for i, ref in enumerate(refs[:4]):
            chunk = data[i * CHUNK : (i + 1) * CHUNK]
            assert ref.stored_size <= len(level1.compress(chunk)) * 1.02 + 64
        assert m.meta["chunking"]["zstd_fast"] == {"level": FAST_LEVEL, "from_ratio": FAST_RATIO}
        assert read(store, m, keys=keys) == data


def test_chunks_no_longer_than_the_samples_are_simply_compressed() -> None:
    data = random.Random(1).randbytes(SAMPLED)
    m = write_capsule(
        MemoryStore(),
        task_id="t1",
        attempt_id="a1",
        sequence=1,
        parts=[PartSource("blob", lambda: io.BytesIO(data), tar=False)],
        chunk_size=SAMPLED,
    )
    assert m.raw_chunks == 0 and len(m.part("blob").chunks) == 1


# -- zero chunks --------------------------------------------------------------------------------


def test_zero_chunks_are_marked_stored_once_and_never_fetched() -> None:
    rng = random.Random(3)
    data = rng.randbytes(2 * CHUNK) + bytes(5 * CHUNK) + rng.randbytes(CHUNK)
    store = CountingStore()
    m = write(store, data)
    refs = m.part("blob").chunks
    zero = [r for r in refs if r.zero]
    assert len(zero) == m.zero_chunks == 5 and len({r.sha256 for r in zero}) == 1
    assert not any(r.zero for r in refs[:2] + refs[-1:])
    zero_key = chunk_key("t1", zero[0].sha256)
    assert store.exists(zero_key)  # stored once, for readers that do not know the mark
    assert read(store, m) == data
    verify_capsule(store, m)
    assert store.gets.get(zero_key, 0) == 0  # written as zeros, never fetched
    # a reader that ignores the mark (the previous version) fetches the stored chunk instead
    plain = Manifest.model_validate_json(m.to_bytes().replace(b',"zero":true', b""))
    assert not any(r.zero for r in plain.part("blob").chunks)
    assert read(store, plain) == data
    assert store.gets[zero_key] == 5
    # the manifest of a capsule without zero chunks does not mention the mark
    assert b'"zero"' not in write(MemoryStore(), rng.randbytes(CHUNK)).to_bytes()


def test_a_chunk_falsely_marked_zero_is_corrupt() -> None:
    store = MemoryStore()
    m = write(store, random.Random(4).randbytes(3 * CHUNK))
    doc = m.model_copy(deep=True)
    doc.part("blob").chunks[1].zero = True
    with pytest.raises(CapsuleCorrupt, match=r"chunk 1 of part blob .* marked zero"):
        read(store, doc)


def test_zero_chunks_of_an_encrypted_capsule() -> None:
    keys = LocalKeyWrapper(bytes(range(32)))
    store = CountingStore()
    data = bytes(3 * CHUNK) + random.Random(5).randbytes(CHUNK)
    m = write(store, data, keys=keys)
    zero = [r for r in m.part("blob").chunks if r.zero]
    assert len(zero) == 3
    import hashlib

    assert zero[0].sha256 != hashlib.sha256(bytes(CHUNK)).hexdigest()  # an HMAC, not a sha256
    assert read(store, m, keys=keys) == data
    assert store.gets.get(chunk_key("t1", zero[0].sha256), 0) == 0


# -- incompressible chunks ----------------------------------------------------------------------


def test_incompressible_chunks_are_stored_raw_without_compressing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(6)
    data = rng.randbytes(4 * CHUNK) + half(rng, 4 * CHUNK)
    compressed: list[int] = []
    real = zstandard.ZstdCompressor.compress

    def counting(self: zstandard.ZstdCompressor, chunk: bytes) -> bytes:
        compressed.append(len(chunk))
        return real(self, chunk)

    monkeypatch.setattr(zstandard.ZstdCompressor, "compress", counting)
    store = MemoryStore()
    m = write(store, data)
    refs = m.part("blob").chunks
    assert m.raw_chunks == 4 and m.meta["chunking"]["sampled"] is True
    assert m.fast_chunks == 4  # half: little compresses, so at the fast level
    for ref in refs[:4]:  # random: a raw frame, a few bytes more than the data
        stored = store.get(chunk_key("t1", ref.sha256))
        assert stored[4] == 0xE0 and ref.size < ref.stored_size <= ref.size + 32
    for ref in refs[4:]:  # half: compressed
        assert ref.stored_size < 0.6 * ref.size
    # only the samples and the compressible chunks went through the compressor
    assert compressed.count(CHUNK) == 4
    assert read(store, m) == data
    # sampled=False: the previous pipeline, every chunk compressed (zstd's own raw blocks)
    old = write(MemoryStore(), data, sampled=False)
    assert old.raw_chunks == 0 and old.fast_chunks == 0
    assert old.meta["chunking"]["sampled"] is False
    assert [r.sha256 for r in old.part("blob").chunks] == [r.sha256 for r in refs]


def test_a_raw_chunk_with_a_flipped_byte_is_corrupt(tmp_path: Path) -> None:
    """A raw frame has no zstd checksum: the id check is what catches it."""
    store = FileStore(tmp_path / "capsules")
    m = write(store, random.Random(7).randbytes(6 * CHUNK))
    assert m.raw_chunks == 6
    ref = m.part("blob").chunks[3]
    path = store.root / chunk_key("t1", ref.sha256)
    stored = bytearray(path.read_bytes())
    stored[-100] ^= 0x40
    path.write_bytes(bytes(stored))
    with pytest.raises(CapsuleCorrupt, match=r"chunk 3 of part blob .* does not match its id"):
        read(store, m)
    with pytest.raises(CapsuleCorrupt, match="part blob"):
        verify_capsule(store, m)


def test_encrypted_raw_chunks_round_trip_and_a_tampered_one_fails_its_tag() -> None:
    keys = LocalKeyWrapper(bytes(range(32)))
    store = MemoryStore()
    data = random.Random(8).randbytes(3 * CHUNK)
    m = write(store, data, keys=keys)
    assert m.raw_chunks == 3 and m.encryption is not None
    assert read(store, m, keys=keys) == data
    key = chunk_key("t1", m.part("blob").chunks[1].sha256)
    stored = bytearray(store.get(key))
    stored[50] ^= 1
    store.put(key, bytes(stored))
    with pytest.raises(CapsuleCorrupt, match="authentication tag"):
        read(store, m, keys=keys)


# -- parallel, in-order restore -----------------------------------------------------------------


def test_restore_fetches_in_parallel_and_writes_in_order() -> None:
    rng = random.Random(9)
    data = rng.randbytes(12 * CHUNK) + half(rng, 4 * CHUNK)
    store = CountingStore()
    m = write(store, data)
    order = {r.sha256: i for i, r in enumerate(m.part("blob").chunks)}

    def delay(key: str) -> float:  # earlier chunks come back later than their successors
        index = order.get(key.rsplit("/", 1)[-1].split(".")[0], 0)
        return 0.02 * (4 - index % 4)

    store.delay = delay
    assert read(store, m, workers=4) == data
    assert store.most_active > 1  # fetched in parallel


def test_corruption_in_the_parallel_path_stops_before_the_bad_chunk() -> None:
    rng = random.Random(10)
    data = rng.randbytes(10 * CHUNK)
    store = MemoryStore()
    m = write(store, data)
    refs = m.part("blob").chunks
    bad = 6
    key = chunk_key("t1", refs[bad].sha256)
    store.put(key, raw_frame(rng.randbytes(refs[bad].size)))  # a valid frame, other bytes
    sink = io.BytesIO()
    with pytest.raises(CapsuleCorrupt, match=f"chunk {bad} of part blob"):
        restore_part(store, m, "blob", sink, workers=4)
    # the chunks before it were written, in order; nothing from the bad one on
    assert sink.getvalue() == data[: sum(r.size for r in refs[:bad])]


# -- checkpointing.restore: workspace and container part fetched at once ------------------------


class FakeEngine:
    def __init__(self) -> None:
        self.archives: list[bytes] = []

    def restore(self, archive: Path, name: str, options: Any) -> tuple[str, dict[str, Any]]:
        self.archives.append(archive.read_bytes())
        return "cid-" + name, {}


def container_tar(rng: random.Random) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, body in (("config.dump", b"{}"), ("checkpoint/pages-1.img", rng.randbytes(MiB))):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return out.getvalue()


@pytest.fixture
def capsule(tmp_path: Path) -> tuple[FileStore, Manifest, bytes, CapsuleSettings]:
    rng = random.Random(11)
    work = tmp_path / "task"
    (work / "outputs").mkdir(parents=True)
    (work / "outputs" / "log.txt").write_text("line\n" * 1000)
    (work / "data.bin").write_bytes(half(rng, 256 * KiB))
    container = container_tar(rng)
    store = FileStore(tmp_path / "capsules")
    m = task_capsule(store, work, container, CHUNK)
    settings = CapsuleSettings(store=str(store.root), workers=3)
    return store, m, container, settings


def ref_of(m: Manifest) -> CapsuleRef:
    assert m.sha256 is not None
    return CapsuleRef(
        capsule_id=m.capsule_id, sequence=1, manifest_key=m.key, manifest_sha256=m.sha256
    )


@pytest.mark.parametrize("overlap", [True, False])
def test_restore_fetches_the_container_part_while_the_workspace_comes(
    tmp_path: Path, capsule: tuple[FileStore, Manifest, bytes, CapsuleSettings], overlap: bool
) -> None:
    store, m, container, settings = capsule
    engine = FakeEngine()
    dest, scratch = tmp_path / "restored", tmp_path / "scratch"
    done = checkpointing.restore(
        engine,  # type: ignore[arg-type]
        store,
        settings,
        ref_of(m),
        task_dir=dest,
        scratch=scratch,
        name="n",
        overlap=overlap,
    )
    assert engine.archives == [container]
    assert (dest / "outputs" / "log.txt").read_text() == "line\n" * 1000
    assert done.container_id == "cid-n"
    assert done.seconds["fetch_container_total"] > 0
    assert list(scratch.iterdir()) == []  # the scratch archive is gone


@pytest.mark.parametrize("part", ["workspace", "container"])
def test_a_corrupt_part_fails_the_restore_and_leaves_no_archive(
    tmp_path: Path, capsule: tuple[FileStore, Manifest, bytes, CapsuleSettings], part: str
) -> None:
    store, m, _, settings = capsule
    ref = [c for c in m.part(part).chunks if not c.zero][-1]  # zero chunks are never read
    path = store.root / chunk_key("t1", ref.sha256)
    stored = bytearray(path.read_bytes())
    stored[len(stored) // 2] ^= 1
    path.write_bytes(bytes(stored))
    engine = FakeEngine()
    scratch = tmp_path / "scratch"
    with pytest.raises(CapsuleCorrupt, match=f"part {part}"):
        checkpointing.restore(
            engine,  # type: ignore[arg-type]
            store,
            settings,
            ref_of(m),
            task_dir=tmp_path / "restored",
            scratch=scratch,
            name="n",
        )
    assert engine.archives == []
    assert list(scratch.iterdir()) == []
