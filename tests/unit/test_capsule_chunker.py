"""tar_chunks / fixed_chunks: the chunks always concatenate to the input; tar members with big
data are cut where their data starts and every chunk_size after, whatever precedes them."""

from __future__ import annotations

import hashlib
import io
import random
import tarfile
from typing import BinaryIO

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capsule_runtime.capsules.chunker import PAGE, fixed_chunks, tar_chunks

KiB = 1 << 10


class Trickle(io.RawIOBase):
    """A stream that returns short reads, like a pipe."""

    def __init__(self, data: bytes, seed: int = 0):
        self._data = memoryview(data)
        self._pos = 0
        self._rng = random.Random(seed)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self._rng.randint(1, 3000), len(self._data) - self._pos)
        buffer[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


def make_tar(members: list[tuple[str, bytes]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("a-symlink")
        link.type = tarfile.SYMTYPE
        link.linkname = "x" * 150  # a long link name: pax / GNU 'K'
        tar.addfile(link)
        folder = tarfile.TarInfo("a-dir")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
    return out.getvalue()


def cut_offsets(chunks: list[bytes]) -> set[int]:
    offsets, pos = {0}, 0
    for c in chunks:
        pos += len(c)
        offsets.add(pos)
    return offsets


def check_alignment(data: bytes, chunks: list[bytes], chunk_size: int) -> None:
    offsets = cut_offsets(chunks)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar.getmembers():
            padded = -(-m.size // 512) * 512
            if m.isreg() and padded >= chunk_size // 4:
                start, end = m.offset_data, m.offset_data + padded
                assert start in offsets and end in offsets, m.name
                inner = sorted(o for o in offsets if start < o < end)
                for a, b in zip([start, *inner], [*inner, end], strict=True):
                    assert (a - start) % PAGE == 0  # cuts inside fall on page boundaries
                    assert b - a <= max(chunk_size * 3 // 2, PAGE), (m.name, a, b)


names = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=160
).map(lambda s: s.replace("/", "_").strip("\x00") or "n")
members = st.lists(st.tuples(names, st.integers(0, 40 * KiB)), max_size=8, unique_by=lambda m: m[0])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    members=members,
    fmt=st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT]),
    chunk_size=st.sampled_from([512, 4 * KiB, 16 * KiB, 64 * KiB]),
    trailing=st.binary(max_size=700),
    trickle=st.booleans(),
)
def test_concatenation_is_the_input_and_big_members_are_aligned(
    members: list[tuple[str, int]], fmt: int, chunk_size: int, trailing: bytes, trickle: bool
) -> None:
    rng = random.Random(len(members))
    data = make_tar([(n, rng.randbytes(size)) for n, size in members], fmt) + trailing
    stream: BinaryIO = Trickle(data) if trickle else io.BytesIO(data)  # type: ignore[assignment]
    chunks = list(tar_chunks(stream, chunk_size))
    assert b"".join(chunks) == data
    assert all(0 < len(c) <= max(chunk_size * 3 // 2, PAGE) + 4 * KiB for c in chunks)
    check_alignment(data, chunks, chunk_size)


@settings(max_examples=30, deadline=None)
@given(data=st.binary(max_size=20 * KiB), chunk_size=st.sampled_from([512, 1000, 4096]))
def test_any_bytes_come_back_whole(data: bytes, chunk_size: int) -> None:
    assert b"".join(tar_chunks(io.BytesIO(data), chunk_size)) == data
    fixed = list(fixed_chunks(io.BytesIO(data), chunk_size))
    assert b"".join(fixed) == data
    assert all(len(c) == chunk_size for c in fixed[:-1])


def test_empty_stream_has_no_chunks() -> None:
    assert list(tar_chunks(io.BytesIO(b""))) == []
    assert list(fixed_chunks(io.BytesIO(b""), 10)) == []


def test_truncated_tar_comes_back_whole() -> None:
    data = make_tar([("big", random.Random(1).randbytes(100 * KiB)), ("small", b"x" * 10)])
    for cut in (100, 512, 700, 30 * KiB, len(data) - 1000):
        assert b"".join(tar_chunks(io.BytesIO(data[:cut]), 8 * KiB)) == data[:cut]


def test_pax_size_record_overrides_the_ustar_field() -> None:
    """Files over 8 GiB carry their size only in a pax 'size' record; emulate one by zeroing the
    ustar size field of a 256 KiB member (tarfile itself honours the record)."""
    size = 256 * KiB
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(tarfile.TarInfo("first"), io.BytesIO(b""))
        info = tarfile.TarInfo("pages-1.img")
        info.size = size
        info.pax_headers = {"size": str(size)}
        tar.addfile(info, io.BytesIO(random.Random(2).randbytes(size)))
    data = bytearray(out.getvalue())
    with tarfile.open(fileobj=io.BytesIO(bytes(data))) as tar:
        member = tar.getmember("pages-1.img")
    header = member.offset_data - 512
    data[header + 124 : header + 136] = b"00000000000\x00"
    data[header + 148 : header + 156] = b"        "
    checksum = sum(data[header : header + 512])
    data[header + 148 : header + 156] = b"%06o\x00 " % checksum
    with tarfile.open(fileobj=io.BytesIO(bytes(data))) as tar:
        assert tar.getmember("pages-1.img").size == size
    chunks = list(tar_chunks(io.BytesIO(bytes(data)), 64 * KiB))
    assert b"".join(chunks) == data
    check_alignment(bytes(data), chunks, 64 * KiB)


def test_a_big_member_keeps_its_chunks_when_earlier_members_change() -> None:
    """Two checkpoints: an early small file grows, the big pages file changes 5% in one place.
    Most of the big file's chunks are the same; fixed-offset chunking would share none."""
    MiB = 1 << 20
    chunk_size = 256 * KiB
    rng = random.Random(3)
    pages = rng.randbytes(8 * MiB)
    region = slice(3 * MiB + 1000, 3 * MiB + 1000 + len(pages) // 20)
    changed = bytearray(pages)
    changed[region] = rng.randbytes(region.stop - region.start)
    one = make_tar([("core-1.img", b"a" * 1000), ("pages-1.img", pages), ("tail", b"t" * 300)])
    two = make_tar(
        [("core-1.img", b"b" * 5000), ("pages-1.img", bytes(changed)), ("tail", b"t" * 300)]
    )

    def shas(chunks: list[bytes]) -> list[str]:
        return [hashlib.sha256(c).hexdigest() for c in chunks]

    first = shas(list(tar_chunks(io.BytesIO(one), chunk_size)))
    second = shas(list(tar_chunks(io.BytesIO(two), chunk_size)))
    big_chunks = len(pages) // chunk_size
    shared = len(set(second) & set(first))
    # the changed 410 KiB touches at most 3 chunks of 256 KiB; the first chunk (headers) differs
    assert shared >= big_chunks - 3
    fixed_one = set(shas(list(fixed_chunks(io.BytesIO(one), chunk_size))))
    fixed_two = set(shas(list(fixed_chunks(io.BytesIO(two), chunk_size))))
    assert len(fixed_one & fixed_two) <= 1


def test_chunk_size_must_be_sane() -> None:
    with pytest.raises(ValueError):
        list(tar_chunks(io.BytesIO(b"x"), 100))
    with pytest.raises(ValueError):
        list(fixed_chunks(io.BytesIO(b"x"), 0))


def test_pages_moved_by_memory_growth_keep_their_chunks() -> None:
    """A process allocated a little between two checkpoints: CRIU's pages file gains pages near
    its start and every later page moves. Cuts chosen by content find the same chunks again."""
    MiB = 1 << 20
    chunk_size = 256 * KiB
    pages = random.Random(5).randbytes(8 * MiB)
    grown = pages[: 3 * PAGE] + random.Random(6).randbytes(16 * PAGE) + pages[3 * PAGE :]

    def chunks_of(data: bytes) -> set[bytes]:
        return set(tar_chunks(io.BytesIO(make_tar([("pages-1.img", data)])), chunk_size))

    before, after = chunks_of(pages), chunks_of(grown)
    shared = before & after
    assert len(shared) >= 0.8 * len(before), (len(shared), len(before))
