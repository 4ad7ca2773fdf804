"""Cheap decisions about a chunk before the compressor sees it: all zeros, or not worth compressing.

Memory images are full of both: pages a program zeroed (a calloc'ed or `np.zeros` buffer) and
pages of data that is already compressed or random (model weights, encrypted or packed data),
on which zstd spends its time to emit the same bytes. So:

- `is_zero(data)` is one memcmp (the first bytes are checked first, so data that is not zero
  costs almost nothing). A zero chunk is neither hashed nor compressed: its
  id is computed once per size (`ZeroIds`), and the manifest marks it (`ChunkRef.zero`) so a
  restore writes zeros without fetching anything. It is still stored once per task (under its
  id, as any chunk), so a reader that does not know the mark restores it as before.
- `sample_ratio(data, compress)` compresses a few samples spread over the chunk; when they
  shrink by less than `MIN_SAVING`, the chunk (if longer than SAMPLED: a small one is simply
  compressed) is stored as `raw_frame(data)`; when they keep at least `FAST_RATIO` of their
  size, it is compressed at zstd's fast level `FAST_LEVEL` (`level_for`). A raw frame is a
  valid zstd frame of raw blocks (content size in the header, no checksum — a plain chunk's
  sha256 is verified on every read, a sealed one's tag), which every zstd decoder, hence every
  earlier tescape reader, decodes. `raw_payload` takes such a frame apart without zstd, so a
  sealed chunk is decrypted straight into its bytes (crypto.SealedCodec.open_raw).
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable

from capsule_runtime.capsules.heap import uninitialized

# read(n, into): the frame's next n bytes into into[:n] (into has _SLACK bytes more, which a
# cipher's update_into needs)
RawReader = Callable[[int, memoryview], None]

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
RAW_BLOCK_MAX = 128 * 1024  # zstd's largest block
# frame header descriptor: 8-byte content size (flag 3), single segment, no checksum, no dict
_SINGLE_SEGMENT_FCS8 = 0xE0
SAMPLES = 4
SAMPLE_BYTES = 32 * 1024
MIN_SAVING = 0.05  # compress when the samples shrink by at least 5%
# A chunk whose samples keep at least FAST_RATIO of their size is mostly incompressible bytes
# with runs between them (zeros, repeats): zstd's fast level FAST_LEVEL finds those as well as
# level 1 does and skips the rest 2-3 times faster (measured on 4 MiB chunks, this VM,
# 2026-12-03: half random/half zero pages 0.505 of the size either way, 1.06 → 0.55 core-s
# per GiB; 3/4 random 0.754 either way, 1.44 → 0.57). On more compressible data (text, a
# Python heap, code) level 1 compresses clearly better for about the same CPU, so it keeps it.
FAST_RATIO = 0.45
FAST_LEVEL = -1
_PROBE = 256  # zero check: these first bytes before the full comparison


def is_zero(data: bytes | memoryview) -> bool:
    """Whether `data` is non-empty and all zero bytes. Compares with `bytes(n)`: calloc'ed, so
    its pages are the kernel's shared zero page and the comparison is one memcmp (a view is
    copied first, only when its first bytes are zero: comparing a memoryview with bytes goes
    byte by byte)."""
    n = len(data)
    if not n:
        return False
    probe = min(n, _PROBE)
    if bytes(data[:probe]) != bytes(probe):
        return False
    return (data if isinstance(data, bytes) else bytes(data)) == bytes(n)


class ZeroIds:
    """The id of an all-zero chunk of each size, computed once per size with `chunk_id`
    (sha256, or the HMAC of an encrypted chain)."""

    def __init__(self, chunk_id: Callable[[bytes], str]):
        self._chunk_id = chunk_id
        self._ids: dict[int, str] = {}
        self._lock = threading.Lock()

    def __call__(self, size: int) -> str:
        with self._lock:
            found = self._ids.get(size)
        if found is None:
            found = self._chunk_id(bytes(size))
            with self._lock:
                self._ids[size] = found
        return found


SAMPLED = SAMPLES * SAMPLE_BYTES  # smaller chunks are simply compressed (zstd's own raw blocks)


def sample_ratio(data: bytes | memoryview, compress: Callable[[bytes], bytes]) -> float:
    """What zstd (`compress`) leaves of `data`, judged from SAMPLES slices of SAMPLE_BYTES spread
    evenly over it (all of it when it is no longer than SAMPLED): compressed / original."""
    n = len(data)
    if n <= SAMPLED:
        samples = [bytes(data)]
    else:
        step = (n - SAMPLE_BYTES) // (SAMPLES - 1)
        view = memoryview(data)
        samples = [bytes(view[i * step : i * step + SAMPLE_BYTES]) for i in range(SAMPLES)]
    raw = sum(len(s) for s in samples)
    packed = sum(len(compress(s)) for s in samples)
    return packed / raw if raw else 1.0


def worth_compressing(data: bytes | memoryview, compress: Callable[[bytes], bytes]) -> bool:
    """Whether zstd would save at least MIN_SAVING of `data` (sample_ratio)."""
    return sample_ratio(data, compress) <= 1 - MIN_SAVING


def level_for(ratio: float, level: int) -> int | None:
    """The zstd level for a chunk whose samples compress to `ratio` at `level`: None when it is
    not worth compressing (stored raw); FAST_LEVEL when little of it compresses (see FAST_RATIO);
    else `level`."""
    if ratio > 1 - MIN_SAVING:
        return None
    if ratio >= FAST_RATIO and level > FAST_LEVEL:
        return FAST_LEVEL
    return level


def raw_frame_pieces(data: bytes | memoryview) -> list[bytes | memoryview]:
    """`data` as a zstd frame of raw (stored) blocks, in pieces: the frame header, then each
    block's 3-byte header and a view of its bytes (nothing copied; SealedCodec encrypts the
    pieces into one buffer, PlainCodec joins them)."""
    n = len(data)
    pieces: list[bytes | memoryview] = [
        ZSTD_MAGIC + bytes([_SINGLE_SEGMENT_FCS8]) + struct.pack("<Q", n)
    ]
    view = memoryview(data)
    offset = 0
    while True:
        size = min(RAW_BLOCK_MAX, n - offset)
        last = offset + size >= n
        # block header, 3 bytes little-endian: last-block bit, type 0 (raw), size << 3
        pieces.append((int(last) | size << 3).to_bytes(3, "little"))
        pieces.append(view[offset : offset + size])
        offset += size
        if last:
            return pieces


def raw_frame(data: bytes | memoryview) -> bytes:
    """`data` as a zstd frame of raw (stored) blocks: one copy, no compression."""
    return b"".join(raw_frame_pieces(data))


RAW_HEADER = ZSTD_MAGIC + bytes([_SINGLE_SEGMENT_FCS8])
RAW_HEADER_BYTES = len(RAW_HEADER) + 8
_BLOCK_HEADER = 3
_SLACK = 15  # what a cipher's update_into needs beyond the bytes it writes


def raw_payload(read: RawReader, frame_size: int) -> bytearray | None:
    """The bytes of a frame of `frame_size` bytes in raw_frame's layout (header with an 8-byte
    content size, then raw blocks only, the last one marked), read through `read` straight into
    one buffer: no copy of the frame, no zstd. None as soon as the frame is seen not to be in
    that layout (another block type, sizes that do not add up): the caller decodes it with zstd
    instead."""
    if frame_size < RAW_HEADER_BYTES:  # never asks `read` for more than the frame holds
        return None
    head = bytearray(RAW_HEADER_BYTES + _SLACK)
    read(RAW_HEADER_BYTES, memoryview(head))
    if head[: len(RAW_HEADER)] != RAW_HEADER:
        return None
    size = struct.unpack_from("<Q", head, len(RAW_HEADER))[0]
    if size > frame_size - RAW_HEADER_BYTES:
        return None
    out = uninitialized(size + _SLACK)  # every byte of [:size] is read into, or it is dropped
    view = memoryview(out)
    block = bytearray(_BLOCK_HEADER + _SLACK)
    pos, left = 0, frame_size - RAW_HEADER_BYTES
    try:
        while True:
            if left < _BLOCK_HEADER:
                return None
            read(_BLOCK_HEADER, memoryview(block))
            left -= _BLOCK_HEADER
            value = int.from_bytes(block[:_BLOCK_HEADER], "little")
            last, kind, n = value & 1, (value >> 1) & 3, value >> 3
            if kind != 0 or n > RAW_BLOCK_MAX or pos + n > size or n > left:
                return None
            if n:
                read(n, view[pos : pos + n + _SLACK])
            pos += n
            left -= n
            if last:
                break
    finally:
        view.release()
    if pos != size or left:
        return None
    del out[size:]
    return out
