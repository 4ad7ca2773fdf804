"""Cutting a part's byte stream into chunks whose concatenation is exactly the stream.

`tar_chunks` reads a tar stream one 512-byte header at a time (never the whole stream) and cuts
so that chunks line up with the archive's members: a member whose data is at least
`chunk_size // 4` gets a cut where its data starts, then cuts at page boundaries chosen by the
pages' content (`_page_chunks`, about every `chunk_size`), so a big file changed in a few places
(CRIU's pages-*.img) yields mostly the same chunks — hence the same sha256s, which the pipeline
does not upload again — even when earlier members changed size or the process's memory grew.
Headers and small members are batched up to `chunk_size`. pax headers ('x' carries the next
member's size when it exceeds the ustar field), GNU long names and sparse extension blocks are
followed; after the end-of-archive zero block, or at anything that is not a valid header, the
rest is cut at fixed offsets. Parsing only decides where to cut, never what is emitted, so a
stream that is not a tar at all still comes back whole.

`fixed_chunks` cuts any stream every `chunk_size` bytes.
"""

from __future__ import annotations

import sys
import tarfile
import zlib
from collections.abc import Iterator
from typing import BinaryIO

MiB = 1 << 20
DEFAULT_CHUNK_SIZE = 4 * MiB
BLOCK = tarfile.BLOCKSIZE  # 512
_PAX_PARSE_LIMIT = 1 * MiB  # larger pax headers pass through unparsed
_HEADER_ONLY = {
    tarfile.LNKTYPE,
    tarfile.SYMTYPE,
    tarfile.CHRTYPE,
    tarfile.BLKTYPE,
    tarfile.DIRTYPE,
    tarfile.FIFOTYPE,
}
_META = {tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK}
_ZERO_BLOCK = bytes(BLOCK)
PAGE = 4096  # CRIU's pages-*.img hold whole pages
_SIGNATURE = 64  # bytes of a page hashed to decide a cut


def read_exact(stream: BinaryIO, n: int) -> bytes:
    """Up to `n` bytes; fewer only at end of stream (pipes return short reads)."""
    data = stream.read(n)
    if not data or len(data) == n:
        return data or b""
    parts = [data]
    got = len(data)
    while got < n:
        more = stream.read(n - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def fixed_chunks(stream: BinaryIO, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    while True:
        chunk = read_exact(stream, chunk_size)
        if not chunk:
            return
        yield chunk


def _pax_size(records: bytes) -> int | None:
    """The "size" record of a pax extended header, if any."""
    size = None
    pos = 0
    while pos < len(records):
        space = records.find(b" ", pos)
        try:
            length = int(records[pos:space]) if space > pos else 0
        except ValueError:
            break
        if length <= 0:
            break
        key, _, value = records[space + 1 : pos + length - 1].partition(b"=")
        if key == b"size":
            try:
                size = int(value)
            except ValueError:
                size = None
        pos += length
    return size


def _page_chunks(stream: BinaryIO, size: int, chunk_size: int) -> Iterator[bytes | None]:
    """A big member's data (`size` bytes), cut at 4 KiB page boundaries chosen by the pages'
    content: a cut goes before a page whose first bytes hash to 0 modulo a divisor, no sooner
    than chunk_size/4 and no later than 1.5 x chunk_size after the previous cut (about
    chunk_size on average; a forced cut is still relative to the content-chosen one before it).
    CRIU writes a process's pages in address order, so when memory grows or shrinks somewhere,
    every later page moves: cuts that follow content find the same chunks again, where cuts at
    fixed offsets would change all of them. Reads a window of several chunks at a time and
    carries only the uncut tail over. Yields None last if the stream ended early."""
    low = max(chunk_size // 4 // PAGE * PAGE, PAGE)
    high = max(chunk_size * 3 // 2 // PAGE * PAGE, PAGE)  # cuts stay on page boundaries
    divisor = max(1, (chunk_size - low) // PAGE)
    window = high + max(chunk_size, PAGE)  # > high: the uncut tail never fills it
    tail = b""
    left = size
    while left or tail:
        want = min(window - len(tail), left)
        data = read_exact(stream, want) if want > 0 else b""
        left -= len(data)
        truncated = len(data) < want
        buf = tail + data if tail else data
        tail = data = b""  # only `buf` holds the bytes now
        view = memoryview(buf)
        pos, end = 0, len(buf)
        while end - pos > high or ((not left or truncated) and pos < end):
            cut = min(end - pos, high)
            for offset in range(pos + low, min(end, pos + high) - PAGE + 1, PAGE):
                if zlib.crc32(view[offset : offset + _SIGNATURE]) % divisor == 0:
                    cut = offset - pos
                    break
            yield buf[pos : pos + cut]
            pos += cut
        tail = buf[pos:]
        view.release()
        if truncated:
            if tail:
                yield tail
            yield None
            return


class BufferPool:
    """Read buffers of `size` bytes, reused once nothing refers to them. Every memoryview of a
    buffer (and every slice of those) holds it through one shared reference, so a buffer that
    only this pool refers to has no view alive and may be written again. A fresh buffer costs
    more than the read that fills it on this kind of VM (bytearray(n) zero-fills pages the
    kernel first has to fault in: about 0.3 core-s per GiB read, docs/benchmarks.md); at most
    `keep` are kept, a request beyond them or larger than `size` gets a fresh one."""

    def __init__(self, size: int, keep: int = 12):
        self.size = size
        self.keep = keep
        self._buffers: list[bytearray] = []

    def get(self, n: int) -> bytearray:
        if n <= self.size:
            for i in range(len(self._buffers)):
                if sys.getrefcount(self._buffers[i]) == 2:  # the list's, and the argument
                    return self._buffers[i]
            if len(self._buffers) < self.keep:
                self._buffers.append(bytearray(self.size))
                return self._buffers[-1]
        return bytearray(n)


class PageCutter:
    """`_page_chunks`' cuts over data that arrives piece by piece (a pages-*.img that CRIU is
    still writing): the chunks whose cut is already final (more than 1.5 x chunk_size of data
    after the previous cut decides it) come back as each piece arrives, `finish` gives the rest
    once the file is complete. The chunks are those `_page_chunks` yields for the whole file,
    whatever the pieces, so a capsule taken this way shares its page chunks with one taken from
    the tar.

    Nothing is copied but the uncut tail: a piece is read straight into `space(n)` (a fresh
    buffer that begins with the tail), `filled(n)` cuts it, and the chunks are read-only views
    of that buffer (taken from `pool` when given, which reuses it once no chunk of it is left).
    """

    def __init__(self, chunk_size: int = DEFAULT_CHUNK_SIZE, pool: BufferPool | None = None):
        self.low = max(chunk_size // 4 // PAGE * PAGE, PAGE)
        self.high = max(chunk_size * 3 // 2 // PAGE * PAGE, PAGE)
        self.divisor = max(1, (chunk_size - self.low) // PAGE)
        self.pool = pool
        self.tail: bytes | memoryview = b""
        self._buffer: bytearray | None = None

    def space(self, n: int) -> memoryview:
        """A writable view of `n` bytes for the next piece; call `filled` with how many of them
        were written (release the view first)."""
        tail = len(self.tail)
        buffer = self.pool.get(tail + n) if self.pool is not None else bytearray(tail + n)
        buffer[:tail] = self.tail
        self._buffer = buffer
        return memoryview(buffer)[tail : tail + n]

    def filled(self, n: int) -> list[memoryview]:
        """The chunks final once the first `n` bytes of `space`'s view hold the next piece."""
        buffer, self._buffer = self._buffer, None
        if buffer is None:
            raise RuntimeError("filled() without space()")
        view = memoryview(buffer).toreadonly()[: len(self.tail) + n]
        return self._cut(view, final=False)

    def feed(self, data: bytes | memoryview) -> list[memoryview]:
        space = self.space(len(data))
        space[:] = data
        space.release()
        return self.filled(len(data))

    def finish(self) -> list[memoryview]:
        return self._cut(memoryview(self.tail).toreadonly(), final=True)

    def _cut(self, view: memoryview, final: bool) -> list[memoryview]:
        out: list[memoryview] = []
        pos, end = 0, len(view)
        while end - pos > self.high or (final and pos < end):
            cut = min(end - pos, self.high)
            for offset in range(pos + self.low, min(end, pos + self.high) - PAGE + 1, PAGE):
                if zlib.crc32(view[offset : offset + _SIGNATURE]) % self.divisor == 0:
                    cut = offset - pos
                    break
            out.append(view[pos : pos + cut])
            pos += cut
        self.tail = view[pos:]
        return out


def tar_chunks(stream: BinaryIO, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
    if chunk_size < BLOCK:
        raise ValueError(f"chunk_size must be at least {BLOCK}")
    big = max(chunk_size // 4, BLOCK)
    pending = bytearray()
    pax_size: int | None = None
    while True:
        header = read_exact(stream, BLOCK)
        if len(header) < BLOCK or header == _ZERO_BLOCK:
            pending += header
            break
        try:
            info = tarfile.TarInfo.frombuf(header, tarfile.ENCODING, "surrogateescape")
        except tarfile.HeaderError:
            pending += header
            break
        head = header
        if info.type == tarfile.GNUTYPE_SPARSE and header[482]:
            extension = b"\x01" * BLOCK
            while len(extension) == BLOCK and extension[504]:
                extension = read_exact(stream, BLOCK)
                head += extension
        size = _data_size(info, pax_size)
        if info.type not in _META:
            pax_size = None
        if size < 0:
            pending += head
            break
        padded = -(-size // BLOCK) * BLOCK
        if padded >= big:  # cut where its data starts, then where its pages say
            pending += head
            yield bytes(pending)
            pending.clear()
            complete = True
            for piece in _page_chunks(stream, padded, chunk_size):
                complete = piece is not None
                if piece:
                    yield piece
            if not complete:  # truncated archive
                return
            continue
        if pending and len(pending) + len(head) + padded > chunk_size:
            yield bytes(pending)
            pending.clear()
        pending += head
        data = read_exact(stream, padded)
        pending += data
        if len(data) < padded:
            break
        if info.type == tarfile.XHDTYPE and size <= _PAX_PARSE_LIMIT:
            pax_size = _pax_size(data[:size])
    # the end-of-archive blocks, record padding, trailing bytes, or whatever was not a header
    while True:
        want = chunk_size - len(pending)
        more = read_exact(stream, want) if want > 0 else b""
        pending += more
        if pending and (len(pending) >= chunk_size or len(more) < want):
            yield bytes(pending)
            pending.clear()
        if len(more) < want:
            return


def _data_size(info: tarfile.TarInfo, pax_size: int | None) -> int:
    """How many data bytes follow a member's header: none for links and devices, the size a
    preceding pax header gave (for a member that is not itself a header), else the header's."""
    if info.type in _HEADER_ONLY:
        return 0
    if info.type not in _META and pax_size is not None:
        return pax_size
    return info.size


def archive_end(data: bytes) -> int | None:
    """Where the end-of-archive (the first all-zero header block) is in `data`, which starts at
    a member's header, as the last chunk `tar_chunks` cuts does; None when `data` holds no end.
    What follows it (the second zero block, a writer's record padding) is not archive."""
    pos = 0
    pax_size: int | None = None
    while pos + BLOCK <= len(data):
        header = data[pos : pos + BLOCK]
        if header == _ZERO_BLOCK:
            return pos
        try:
            info = tarfile.TarInfo.frombuf(header, tarfile.ENCODING, "surrogateescape")
        except tarfile.HeaderError:
            return None
        pos += BLOCK
        if info.type == tarfile.GNUTYPE_SPARSE and header[482]:
            return None  # not written by podman; not followed here
        size = _data_size(info, pax_size)
        if info.type not in _META:
            pax_size = None
        elif info.type == tarfile.XHDTYPE:
            pax_size = _pax_size(data[pos : pos + size])
        pos += -(-size // BLOCK) * BLOCK
    return None
