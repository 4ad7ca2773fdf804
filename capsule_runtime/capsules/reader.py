"""Reading capsules: the manifest (its digest checked), a part's bytes back in order, and a full
check of every chunk; plus listing and deleting a task's capsules.

`restore_part` fetches chunks in parallel (`workers` threads, at most `2 * workers` chunks read
ahead), opens a sealed chunk of an encrypted capsule (its GCM tag checked, crypto.py), checks
each zstd frame's declared size before decoding it, decodes (the frame's own checksum is checked
too), compares size and id (sha256, or the keyed hash when encrypted) with the manifest, and
writes the chunks to the sink in order (while later chunks are still being fetched and checked).
A chunk the manifest marks `zero` is not fetched: its id must be the id of that many zero bytes
(computed once per size), and zeros are written. A chunk that is absent raises ChunkMissing (a
CapsuleCorrupt and a CapsuleMissing); any other mismatch raises CapsuleCorrupt naming the part
and chunk index; a data key that does not unwrap here raises CapsuleKeyError (a CapsuleCorrupt)
saying which key.
Store failures stay CapsuleStoreError.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from typing import BinaryIO

import pydantic
import zstandard

from capsule_runtime.capsules.crypto import (
    ChunkCodec,
    KeyWrapper,
    PlainCodec,
    sealed_codec,
)
from capsule_runtime.capsules.errors import CapsuleCorrupt, CapsuleMissing, ChunkMissing
from capsule_runtime.capsules.frames import ZeroIds
from capsule_runtime.capsules.heap import pipeline_heap
from capsule_runtime.capsules.keys import chunk_key, is_manifest_key, task_prefix
from capsule_runtime.capsules.manifest import (
    ENCRYPTED_FORMAT,
    FORMATS,
    ChunkRef,
    Manifest,
    manifest_sha256,
)
from capsule_runtime.capsules.parallel import ordered_map
from capsule_runtime.capsules.store import CapsuleStore

DEFAULT_WORKERS = 4


def read_manifest(store: CapsuleStore, key: str, sha256: str | None = None) -> Manifest:
    """The manifest at `key` (CapsuleMissing when absent). With `sha256`, the bytes must have
    that digest; a digest mismatch, an unparsable document or an unknown format → CapsuleCorrupt."""
    data = store.get(key)
    digest = manifest_sha256(data)
    if sha256 is not None and digest != sha256.lower():
        raise CapsuleCorrupt(f"manifest {key}: sha256 {digest} is not the expected {sha256}")
    try:
        manifest = Manifest.from_bytes(data, digest)
    except pydantic.ValidationError as exc:
        raise CapsuleCorrupt(f"manifest {key} is not a valid capsule manifest: {exc}") from exc
    if manifest.format not in FORMATS:
        raise CapsuleCorrupt(f"manifest {key}: unsupported capsule format {manifest.format}")
    if (manifest.format == ENCRYPTED_FORMAT) != (manifest.encryption is not None):
        raise CapsuleCorrupt(f"manifest {key}: format {manifest.format} and encryption disagree")
    return manifest


def chunk_codec(manifest: Manifest, keys: KeyWrapper | None) -> ChunkCodec:
    """How the manifest's chunks are read: plain, or sealed with the data key `keys` unwraps
    (CapsuleKeyError when it cannot; a KMS wrapper would cache what it unwrapped)."""
    if manifest.encryption is None:
        return PlainCodec()
    return sealed_codec(manifest.encryption, keys, manifest.task_id)


class _ChunkReader:
    """The workers' side: get, open, decode, check. Thread-safe."""

    def __init__(self, store: CapsuleStore, task_id: str, codec: ChunkCodec):
        self.store = store
        self.codec = codec
        self.task_id = task_id
        self.zero_id = ZeroIds(codec.chunk_id)
        self._local = threading.local()

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        dctx = getattr(self._local, "dctx", None)
        if dctx is None:
            dctx = self._local.dctx = zstandard.ZstdDecompressor()
        return dctx

    def __call__(self, item: tuple[str, int, ChunkRef]) -> bytes | bytearray:
        part, index, ref = item
        where = f"chunk {index} of part {part}"
        key = chunk_key(self.task_id, ref.sha256)
        if ref.zero:
            if self.zero_id(ref.size) != ref.sha256:
                raise CapsuleCorrupt(f"{where} ({key}) is marked zero but its id is not")
            return bytes(ref.size)
        try:
            data = self.store.get(key)
        except CapsuleMissing as exc:
            raise ChunkMissing(f"{where} missing ({key})") from exc
        label = f"{where} ({key})"
        raw = self.codec.open_raw(ref.sha256, data, label)
        if raw is not None:  # sealed, uncompressed: decrypted into place, the tag checked
            if len(raw) != ref.size:
                raise CapsuleCorrupt(f"{label} has {len(raw)} bytes, not {ref.size}")
            return raw
        return self._decoded(where, key, ref, self.codec.open(ref.sha256, data, label))

    def _decoded(self, where: str, key: str, ref: ChunkRef, data: bytes) -> bytes:
        try:
            declared = zstandard.frame_content_size(data)
        except zstandard.ZstdError as exc:
            raise CapsuleCorrupt(f"{where} ({key}) is not a zstd frame: {exc}") from exc
        if declared != ref.size:
            raise CapsuleCorrupt(f"{where} ({key}) declares {declared} bytes, not {ref.size}")
        try:
            raw: bytes = self._decompressor().decompress(data)
        except zstandard.ZstdError as exc:
            raise CapsuleCorrupt(f"{where} ({key}) does not decode: {exc}") from exc
        if len(raw) != ref.size:
            raise CapsuleCorrupt(f"{where} ({key}) has {len(raw)} bytes, not {ref.size}")
        # a sealed chunk's tag binds its id: computing the keyed id again would check nothing
        if not self.codec.encrypted and self.codec.chunk_id(raw) != ref.sha256:
            raise CapsuleCorrupt(f"{where} ({key}) does not match its id (sha256)")
        return raw


def write_all(sink: BinaryIO, data: bytes | bytearray | memoryview) -> None:
    """All of `data` into `sink` (a raw file's write may take less)."""
    view = memoryview(data)
    while view:
        n = sink.write(view)
        view = view[n if n is not None else len(view) :]


@contextmanager
def open_part(
    store: CapsuleStore,
    manifest: Manifest,
    name: str,
    *,
    workers: int = DEFAULT_WORKERS,
    keys: KeyWrapper | None = None,
) -> Iterator[Iterator[bytes | bytearray]]:
    """Part `name`'s chunks, checked, in order: fetched ahead by `workers` threads from the
    moment it is entered (at most `2 * workers` chunks not yet taken), so a reader that takes
    the first chunks now and the rest later (restore_fifo) has them fetched meanwhile. KeyError
    when the manifest has no such part. The iterator may be taken by one thread at a time; it
    must not be in use when the block is left."""
    part = manifest.part(name)
    reader = _ChunkReader(store, manifest.task_id, chunk_codec(manifest, keys))
    items = [(part.name, i, ref) for i, ref in enumerate(part.chunks)]
    with (
        pipeline_heap(),
        ThreadPoolExecutor(max(1, workers), thread_name_prefix="capsule-read") as pool,
        closing(ordered_map(pool, reader, items, 2 * max(1, workers))) as chunks,
    ):
        yield chunks


def restore_part(
    store: CapsuleStore,
    manifest: Manifest,
    name: str,
    sink: BinaryIO,
    *,
    workers: int = DEFAULT_WORKERS,
    progress: Callable[[int], None] | None = None,
    keys: KeyWrapper | None = None,
) -> int:
    """Write part `name` of the capsule to `sink` (not closed); the number of bytes written.
    KeyError when the manifest has no such part. `progress(n)`: n more bytes written. `keys`:
    what unwraps an encrypted capsule's data key."""
    written = 0
    with open_part(store, manifest, name, workers=workers, keys=keys) as chunks:
        for data in chunks:
            write_all(sink, data)
            written += len(data)
            if progress is not None:
                progress(len(data))
    return written


def verify_capsule(
    store: CapsuleStore,
    manifest: Manifest,
    *,
    workers: int = DEFAULT_WORKERS,
    keys: KeyWrapper | None = None,
) -> None:
    """Fetch, decode and check every chunk of every part (each distinct chunk once); raises
    as restore_part would, for the first bad chunk in manifest order."""
    reader = _ChunkReader(store, manifest.task_id, chunk_codec(manifest, keys))
    seen: set[str] = set()
    items: list[tuple[str, int, ChunkRef]] = []
    for part in manifest.parts:
        for i, ref in enumerate(part.chunks):
            if ref.sha256 not in seen:
                seen.add(ref.sha256)
                items.append((part.name, i, ref))
    with (
        pipeline_heap(),
        ThreadPoolExecutor(max(1, workers), thread_name_prefix="capsule-verify") as pool,
        closing(ordered_map(pool, reader, items, 2 * max(1, workers))) as chunks,
    ):
        for _ in chunks:
            pass


def list_manifests(store: CapsuleStore, task_id: str) -> list[str]:
    """The manifest keys of a task's capsules, sorted (by attempt id, then sequence)."""
    return [k for k in store.list(task_prefix(task_id)) if is_manifest_key(k)]


def delete_task_capsules(store: CapsuleStore, task_id: str) -> int:
    """Delete every capsule and chunk of a task; the number of objects deleted."""
    return store.delete_prefix(task_prefix(task_id))
