"""Writing a capsule: parts → chunks → id + zstd (+ AES-GCM) → store, then the manifest, last.

One thread (the caller's) opens each part in turn and cuts it into chunks; a pool of `workers`
threads hashes, compresses (zstandard and hashlib release the GIL) and puts each chunk, at most
`2 * workers` chunks in flight, so memory stays near `2 * workers * chunk_size` whatever the
capsule's size. A chunk's id is its sha256, or with `keys` (encryption at rest, crypto.py) its
HMAC under the chain's name key, and the stored frame is sealed (AES-256-GCM). A chunk whose id
the parent manifest or `known` names, or that appeared earlier in this capsule, is not written
again (counted in `reused_chunks`). A chunk of zero bytes is neither hashed nor compressed (its
id is computed once per size) and is marked `zero` in the manifest; a chunk whose samples do not
compress is stored as a raw zstd frame without running the compressor over it, and one that
compresses little at zstd's fast level (frames.py: `sample_ratio`, `level_for`,
`raw_frame_pieces`). Only when every chunk
is stored is the manifest put; any failure raises CapsuleWriteError and leaves no manifest
(orphan chunks are harmless: the next capsule reuses them, task deletion removes them), and the
part being read is closed at once (a writer feeding it through a pipe gets EPIPE).

`Manifest.timings` (seconds): read (the calling thread, reading and cutting), hash, compress and
upload (summed over the workers, so they may exceed the wall time), total (wall time up to the
manifest's put).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Collection, Generator, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from typing import Any, BinaryIO

import zstandard

from capsule_runtime.capsules.chunker import DEFAULT_CHUNK_SIZE, fixed_chunks, tar_chunks
from capsule_runtime.capsules.crypto import (
    CapsuleKeyError,
    ChunkCodec,
    Data,
    Frame,
    KeyWrapper,
    PlainCodec,
    SealedCodec,
    encryption_record,
    new_data_key,
    sealed_codec,
)
from capsule_runtime.capsules.errors import CapsuleWriteError
from capsule_runtime.capsules.frames import (
    FAST_LEVEL,
    FAST_RATIO,
    SAMPLED,
    ZeroIds,
    is_zero,
    level_for,
    raw_frame_pieces,
    sample_ratio,
)
from capsule_runtime.capsules.heap import pipeline_heap
from capsule_runtime.capsules.keys import chunk_key, manifest_key
from capsule_runtime.capsules.manifest import (
    ENCRYPTED_FORMAT,
    FORMAT,
    ChunkRef,
    Manifest,
    Part,
    rfc3339_now,
)
from capsule_runtime.capsules.parallel import ordered_map
from capsule_runtime.capsules.store import CapsuleStore

DEFAULT_LEVEL = 1
DEFAULT_WORKERS = 4


@dataclass
class PartSource:
    """One part of a capsule: `open()` is called inside the pipeline, and the stream it returns
    is closed there (errors surfacing at close, as from tar_directory, fail the write).
    `tar=True` chunks at tar member boundaries, else at fixed offsets."""

    name: str
    open: Callable[[], BinaryIO]
    tar: bool = True


# A chunk given out of order (write_capsule's `keyed`): its part's index, its place in the part
# (chunks of a part are ordered by this key in the manifest), its bytes.
KeyedChunk = tuple[int, tuple[int, ...], Data]


@dataclass
class _Chunk:
    part: int
    data: Data
    key: tuple[int, ...] = ()


@dataclass
class _Stored:
    part: int
    sha: str
    size: int
    stored_size: int
    uploaded: bool
    seconds: dict[str, float]
    zero: bool = False
    raw: bool = False
    fast: bool = False  # compressed at frames.FAST_LEVEL
    key: tuple[int, ...] = ()


class _ChunkWriter:
    """The workers' side: hash, decide, compress, seal, put. Thread-safe."""

    def __init__(
        self,
        store: CapsuleStore,
        task_id: str,
        level: int,
        known: dict[str, int | None],
        codec: ChunkCodec,
        sampled: bool = True,
    ):
        self.store = store
        self.codec = codec
        self.sampled = sampled  # sample each chunk: raw, fast level or `level` (frames.level_for)
        self.zero_id = ZeroIds(codec.chunk_id)
        self.task_id = task_id
        self.level = level
        self.known = known  # sha → stored size (None: in the store, size unknown)
        # sha → its stored size, set by the one worker that stores (or measures) it
        self._claims: dict[str, Future[int]] = {}
        self._lock = threading.Lock()
        self._local = threading.local()

    def _compressor(self, level: int) -> zstandard.ZstdCompressor:
        """This thread's compressor at `level` (one per level and thread: a ZstdCompressor is
        not safe to share between threads)."""
        cctxs: dict[int, zstandard.ZstdCompressor] | None = getattr(self._local, "cctxs", None)
        if cctxs is None:
            cctxs = self._local.cctxs = {}
        cctx = cctxs.get(level)
        if cctx is None:
            cctx = cctxs[level] = zstandard.ZstdCompressor(
                level=level, write_checksum=True, write_content_size=True
            )
        return cctx

    def _sampler(self) -> zstandard.ZstdCompressor:
        sctx = getattr(self._local, "sctx", None)
        if sctx is None:
            sctx = self._local.sctx = zstandard.ZstdCompressor(level=self.level)
        return sctx

    def _frame(self, data: Data, zero: bool) -> tuple[Frame, int | None]:
        """The chunk's zstd frame (a raw one in pieces, never joined), and the level it was
        compressed at (None: raw, stored uncompressed)."""
        level: int | None = self.level
        if self.sampled and not zero and len(data) > SAMPLED:
            level = level_for(sample_ratio(data, self._sampler().compress), self.level)
        if level is None:
            return raw_frame_pieces(data), None
        compressed: bytes = self._compressor(level).compress(data)
        return compressed, level

    def __call__(self, chunk: _Chunk) -> _Stored:
        t0 = time.perf_counter()
        size = len(chunk.data)
        zero = is_zero(chunk.data)
        sha = self.zero_id(size) if zero else self.codec.chunk_id(chunk.data)
        t1 = time.perf_counter()
        seconds = {"hash": t1 - t0, "compress": 0.0, "upload": 0.0}
        with self._lock:
            known_size = self.known.get(sha)
            upload = sha not in self.known
            claim = self._claims.get(sha)
            owner = claim is None and known_size is None
            if claim is None:
                claim = self._claims[sha] = Future()
        if known_size is not None:
            return _Stored(chunk.part, sha, size, known_size, False, seconds, zero, key=chunk.key)
        if not owner:  # the same bytes are being stored (or measured) by another worker
            stored = claim.result()
            return _Stored(chunk.part, sha, size, stored, False, seconds, zero, key=chunk.key)
        try:
            frame, level = self._frame(chunk.data, zero)
            compressed = self.codec.seal(sha, frame)
            t2 = time.perf_counter()
            seconds["compress"] = t2 - t1
            if upload:
                self.store.put(chunk_key(self.task_id, sha), compressed)
                seconds["upload"] = time.perf_counter() - t2
        except BaseException as exc:
            claim.set_exception(exc)
            raise
        claim.set_result(len(compressed))
        return _Stored(
            chunk.part,
            sha,
            size,
            len(compressed),
            upload,
            seconds,
            zero,
            raw=level is None,
            fast=level is not None and level != self.level,
            key=chunk.key,
        )


def _read_parts(
    parts: list[PartSource], chunk_size: int, seconds: dict[str, float]
) -> Generator[_Chunk, None, None]:
    for index, source in enumerate(parts):
        t0 = time.perf_counter()
        stream = source.open()
        try:
            cut = tar_chunks if source.tar else fixed_chunks
            chunks = cut(stream, chunk_size)
            while True:
                data = next(chunks, None)
                seconds["read"] += time.perf_counter() - t0
                if data is None:
                    break
                yield _Chunk(index, data)
                t0 = time.perf_counter()
        finally:
            stream.close()


def _read_keyed(
    keyed: Iterator[KeyedChunk], seconds: dict[str, float]
) -> Generator[_Chunk, None, None]:
    try:
        while True:
            t0 = time.perf_counter()
            item = next(keyed, None)
            seconds["read"] += time.perf_counter() - t0
            if item is None:
                return
            part, key, data = item
            yield _Chunk(part, data, key)
    finally:
        close = getattr(keyed, "close", None)
        if close is not None:
            close()


def write_capsule(
    store: CapsuleStore,
    *,
    task_id: str,
    attempt_id: str,
    sequence: int,
    parts: list[PartSource],
    parent: Manifest | None = None,
    meta: dict[str, Any] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    level: int = DEFAULT_LEVEL,
    workers: int = DEFAULT_WORKERS,
    known: Collection[str] | Mapping[str, int] | None = None,
    progress: Callable[[int], None] | None = None,
    capsule_id: str | None = None,
    keys: KeyWrapper | None = None,
    sampled: bool = True,
    keyed: Iterator[KeyedChunk] | None = None,
) -> Manifest:
    """Write one capsule; the Manifest it stored, with `.key` and `.sha256` (of the manifest
    bytes) set. `known`: chunk sha256s already in the store besides the parent's — a mapping
    to stored sizes (see `known_chunks`) is best; a bare collection makes their stored size
    unknown, so those chunks are compressed (not uploaded) to measure it. `progress(n)`: n more
    uncompressed bytes stored, called from this thread. `keys`: encrypt at rest (format 2) with
    the parent's data key when `keys` unwraps it, else a new one (then nothing is reused).
    `sampled=False`: compress every chunk at `level` (no sampling, no raw frames, no fast
    level; the bench's old path).
    `keyed`: the chunks themselves, in any order, each with its part's index and its place in
    the part (the parts' `open` is then never called): so a part's later bytes can be stored
    before its earlier ones are known (checkpointing's "images" path stores CRIU's pages while
    the dump still runs, and the tar headers that precede them once their sizes are known)."""
    key = manifest_key(task_id, attempt_id, sequence)  # ValueError on unsafe ids
    names = [p.name for p in parts]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate part names: {names}")
    if workers < 1:
        raise ValueError("workers must be at least 1")
    started = time.perf_counter()
    codec, encryption, same_chain = _chain(task_id, parent, keys)
    sizes: dict[str, int | None] = {}
    if known is not None and same_chain:
        sizes.update(known.items() if isinstance(known, Mapping) else dict.fromkeys(known))
    if parent is not None and same_chain:
        sizes.update(parent.chunk_sizes())
    writer = _ChunkWriter(store, task_id, level, sizes, codec, sampled)
    seconds = {"read": 0.0, "hash": 0.0, "compress": 0.0, "upload": 0.0}
    out = [Part(name=p.name) for p in parts]
    keys_of: list[list[tuple[int, ...]]] = [[] for _ in parts]
    uploaded_chunks = reused_chunks = uploaded_bytes = zero_chunks = raw_chunks = fast_chunks = 0
    try:
        with (
            pipeline_heap(),
            ThreadPoolExecutor(workers, thread_name_prefix="capsule-write") as pool,
            closing(
                _read_parts(parts, chunk_size, seconds)
                if keyed is None
                else _read_keyed(keyed, seconds)
            ) as chunks,  # closes the part
            closing(ordered_map(pool, writer, chunks, 2 * workers)) as results,
        ):
            for done in results:
                stored_size = done.stored_size
                part = out[done.part]
                part.chunks.append(
                    ChunkRef(
                        sha256=done.sha, size=done.size, stored_size=stored_size, zero=done.zero
                    )
                )
                part.size += done.size
                keys_of[done.part].append(done.key)
                zero_chunks += done.zero
                raw_chunks += done.raw
                fast_chunks += done.fast
                if done.uploaded:
                    uploaded_chunks += 1
                    uploaded_bytes += stored_size
                else:
                    reused_chunks += 1
                for name, value in done.seconds.items():
                    seconds[name] += value
                if progress is not None:
                    progress(done.size)
        if keyed is not None:
            for part, order_keys in zip(out, keys_of, strict=True):
                if len(set(order_keys)) != len(order_keys):
                    raise ValueError(f"part {part.name}: two chunks with the same key")
                order = sorted(range(len(order_keys)), key=order_keys.__getitem__)
                part.chunks = [part.chunks[i] for i in order]
        manifest = Manifest(
            format=ENCRYPTED_FORMAT if encryption is not None else FORMAT,
            encryption=encryption,
            capsule_id=capsule_id or uuid.uuid4().hex,
            task_id=task_id,
            attempt_id=attempt_id,
            sequence=sequence,
            created=rfc3339_now(),
            parent=parent.capsule_id if parent is not None else None,
            parts=out,
            size_bytes=sum(p.size for p in out),
            stored_bytes=sum(c.stored_size for p in out for c in p.chunks),
            uploaded_bytes=uploaded_bytes,
            uploaded_chunks=uploaded_chunks,
            reused_chunks=reused_chunks,
            zero_chunks=zero_chunks,
            raw_chunks=raw_chunks,
            fast_chunks=fast_chunks,
            meta={
                **(meta or {}),
                "chunking": {
                    "chunk_size": chunk_size,
                    "zstd_level": level,
                    "zstd_fast": {"level": FAST_LEVEL, "from_ratio": FAST_RATIO},
                    "zstandard": zstandard.__version__,
                    "sampled": sampled,
                },
            },
        )
        seconds["total"] = time.perf_counter() - started
        manifest.timings = {k: round(v, 6) for k, v in seconds.items()}
        store.put(key, manifest.to_bytes())
    except Exception as exc:
        raise CapsuleWriteError(
            f"capsule {task_id}/{attempt_id}/{sequence} not written to {store.describe()}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return manifest


def _chain(
    task_id: str, parent: Manifest | None, keys: KeyWrapper | None
) -> tuple[ChunkCodec, dict[str, Any] | None, bool]:
    """The codec and `encryption` record of a new capsule, and whether it shares the parent's
    chunk namespace (then the parent's and `known` chunks are reused). Encrypted: the parent's
    data key when `keys` unwraps it (its wrapped form is copied, no new wrap), else a new key."""
    parent_record = parent.encryption if parent is not None else None
    if keys is None:
        return PlainCodec(), None, parent_record is None
    if parent_record is not None:
        try:
            codec = sealed_codec(parent_record, keys, task_id)  # the chain's own scheme
        except CapsuleKeyError:
            pass  # written under another master key (or scheme): start a new chain
        else:
            return codec, dict(parent_record), True
    data_key = new_data_key()
    record = encryption_record(keys, keys.wrap(data_key, task_id))
    return SealedCodec(data_key), record, False
