"""The "images" checkpoint path's parts, without podman: PageCutter cuts a growing file exactly
as tar_chunks cuts the finished member, PagesFollower reads images while they grow and unlinks
them when done, and write_capsule puts chunks given out of order in their keys' order."""

from __future__ import annotations

import io
import os
import random
import tarfile
import threading
import time
from pathlib import Path

import pytest

from capsule_runtime.capsules import FileStore, PartSource, restore_part, write_capsule
from capsule_runtime.capsules.chunker import BufferPool, PageCutter, archive_end, tar_chunks
from capsule_runtime.capsules.follow_pages import (
    PagesFollower,
    member_header,
    padding,
    remove_stale,
)
from capsule_runtime.checkpointing import _image_chunks
from capsule_runtime.engine.freeze import FreezeGate

KiB, MiB = 1 << 10, 1 << 20
CHUNK = 64 * KiB


def pages(seed: int, n: int) -> bytes:
    """n pages: random ones, repeated ones and zero ones, as a process's memory has."""
    rng = random.Random(seed)
    kinds = [rng.randbytes(4096), bytes(4096)]
    return b"".join(
        rng.randbytes(4096) if rng.random() < 0.6 else rng.choice(kinds) for _ in range(n)
    )


def member_chunks(data: bytes) -> list[bytes]:
    """The chunks tar_chunks cuts the data of a one-member tar into (header chunk dropped)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("pages-1.img")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    chunks = list(tar_chunks(io.BytesIO(out.getvalue()), CHUNK))
    joined = b""
    body = []
    for chunk in chunks[1:]:
        if joined == data:
            break
        body.append(chunk)
        joined += chunk
    return body


@pytest.mark.parametrize("piece", [1, 4096, 5000, 300 * KiB, 10 * MiB])
def test_cutter_cuts_pieces_as_tar_chunks_cuts_the_whole(piece: int) -> None:
    data = pages(1, 200)
    cutter = PageCutter(CHUNK)
    got: list[bytes | memoryview] = []
    for start in range(0, len(data), piece):
        got += cutter.feed(data[start : start + piece])
    got += cutter.finish()
    assert b"".join(got) == data
    assert got == member_chunks(data)


def test_follower_reads_a_growing_image_then_unlinks_it(tmp_path: Path) -> None:
    stale = tmp_path / "pages-9.img"
    stale.write_bytes(b"old" * 4096)
    remove_stale(tmp_path)
    assert not stale.exists()
    data = pages(2, 100)
    image = tmp_path / "pages-1.img"
    other = tmp_path / "pagemap-1.img"
    other.write_bytes(b"map")
    follower = PagesFollower(tmp_path, CHUNK)
    got: list[tuple[int, int, bytes | memoryview]] = []
    with image.open("wb") as out:
        for start in range(0, len(data), 37 * 4096):
            out.write(data[start : start + 37 * 4096])
            out.flush()
            while (step := follower.poll()) is not None:
                got += step
    assert got, "chunks come while the file grows"
    follower.detach()
    assert not image.exists() and other.exists()  # only pages images are taken
    got += follower.finish()
    assert [(n, i) for n, i, _ in got] == [(1, i) for i in range(len(got))]
    assert b"".join(c for _, _, c in got) == data
    assert [c for _, _, c in got] == member_chunks(data)
    (done,) = follower.done
    assert (done.number, done.name, done.size) == (1, "pages-1.img", len(data))
    header = member_header(done)
    info = tarfile.TarInfo.frombuf(header[-512:], tarfile.ENCODING, "surrogateescape")
    assert (info.name, info.size) == ("checkpoint/pages-1.img", len(data))
    assert padding(len(data)) == b"" and padding(5) == bytes(507)


def test_read_buffers_are_reused_only_once_no_chunk_of_them_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The follower's chunks are views of pooled read buffers: a chunk still held keeps its
    buffer from being read into, one let go frees it for the next read."""
    monkeypatch.setattr("capsule_runtime.capsules.follow_pages.READ", 96 * KiB)
    data = pages(5, 600)
    (tmp_path / "pages-1.img").write_bytes(data)
    follower = PagesFollower(tmp_path, CHUNK)
    follower.detach()
    want = member_chunks(data)
    held: list[memoryview] = []
    got = 0
    for _, index, view in follower.finish():
        assert view.readonly
        held.append(view)
        if len(held) > 3:  # later reads have happened since: the oldest must be intact
            oldest = held.pop(0)
            assert bytes(oldest) == want[index - 3]
        got += 1
    assert [bytes(v) for v in held] == want[-len(held) :] and got == len(want)
    assert 2 <= len(follower.pool._buffers) <= 6, "buffers were reused, not one per read"


def test_buffer_pool_hands_out_a_buffer_again_only_when_unreferenced() -> None:
    pool = BufferPool(1024, keep=2)
    first = pool.get(100)
    view = memoryview(first)[10:20]
    first_id = id(first)
    del first
    second = pool.get(100)
    assert id(second) != first_id  # a view of the first is alive
    assert len(pool.get(100)) == 100  # both pooled ones in use, the pool full: a fresh one
    view.release()
    assert id(pool.get(100)) == first_id  # no view left: the first is handed out again
    assert len(pool.get(2000)) == 2000  # larger than the pool's buffers: a fresh one


def test_keyed_chunks_are_stored_in_key_order(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "capsules")
    rng = random.Random(3)
    pieces = [rng.randbytes(rng.randrange(1, 3 * CHUNK)) for _ in range(12)]
    order = list(range(len(pieces)))
    rng.shuffle(order)
    keyed = iter([(1, (i // 4, i % 4), pieces[i]) for i in order] + [(0, (0,), b"ws")])

    def never() -> io.BytesIO:
        raise AssertionError("a keyed capsule never opens its parts")

    manifest = write_capsule(
        store,
        task_id="t",
        attempt_id="a",
        sequence=1,
        parts=[PartSource("workspace", never), PartSource("container", never)],
        chunk_size=CHUNK,
        workers=2,
        keyed=keyed,
    )
    for name, want in (("workspace", b"ws"), ("container", b"".join(pieces))):
        sink = io.BytesIO()
        restore_part(store, manifest, name, sink)
        assert sink.getvalue() == want


def test_two_chunks_with_one_key_fail_the_write(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "capsules")
    with pytest.raises(Exception, match="same key"):
        write_capsule(
            store,
            task_id="t",
            attempt_id="a",
            sequence=1,
            parts=[PartSource("container", lambda: io.BytesIO())],
            keyed=iter([(0, (1,), b"a"), (0, (1,), b"b")]),
        )
    assert not any(name.endswith(".json") for _, _, names in os.walk(store.root) for name in names)


class FakePodman(threading.Thread):
    """What podman and CRIU do to the files, in order: CRIU grows pages-1.img, reaches
    post-dump (the gate's `frozen`), waits for `thaw`, then podman writes its export (of the
    images still in the directory) into the FIFO."""

    def __init__(self, images: Path, gate: FreezeGate, fifo: Path, data: bytes):
        super().__init__(daemon=True)
        self.images, self.gate, self.fifo, self.data = images, gate, fifo, data
        self.error: BaseException | None = None

    def failed(self) -> BaseException | None:
        self.join()
        return self.error

    def run(self) -> None:
        try:
            self.images.mkdir()
            (self.images / "core-1.img").write_bytes(b"core" * 100)
            with (self.images / "pages-1.img").open("wb") as out:
                for start in range(0, len(self.data), 50 * 4096):
                    out.write(self.data[start : start + 50 * 4096])
                    out.flush()
            (self.gate.dir / "frozen").touch()
            deadline = time.monotonic() + 30
            while not (self.gate.dir / "thaw").exists():
                assert time.monotonic() < deadline, "never thawed"
                time.sleep(0.01)
            with self.fifo.open("wb") as out, tarfile.open(fileobj=out, mode="w|") as tar:
                for name, payload in (("config.dump", b"{}"), ("spec.dump", b"{ }")):
                    info = tarfile.TarInfo(name)
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
                tar.add(self.images, arcname="checkpoint")
        except BaseException as exc:
            self.error = exc


@pytest.mark.parametrize("follow", [True, False])
def test_images_path_stream_is_the_export_with_pages_at_its_end(
    tmp_path: Path, follow: bool
) -> None:
    data = pages(4, 300)
    images, fifo, task = tmp_path / "checkpoint", tmp_path / "export.fifo", tmp_path / "task"
    task.mkdir()
    (task / "out.txt").write_text("workspace")
    os.mkfifo(fifo)
    with FreezeGate(1, root=tmp_path / "gates") as gate:
        podman = FakePodman(images, gate, fifo, data)
        podman.start()
        follower = PagesFollower(images, CHUNK)
        chunks = list(_image_chunks(follower, gate, podman, fifo, task, CHUNK, 30, follow))  # type: ignore[arg-type]
    assert podman.failed() is None
    assert gate.frozen_at is not None and gate.thawed_at is not None
    parts: dict[int, list[tuple[tuple[int, ...], bytes | memoryview]]] = {0: [], 1: []}
    for part, key, chunk in chunks:
        parts[part].append((key, chunk))
    workspace = b"".join(c for _, c in sorted(parts[0]))
    with tarfile.open(fileobj=io.BytesIO(workspace)) as tar:
        assert "out.txt" in tar.getnames()
    container = b"".join(c for _, c in sorted(parts[1], key=lambda kc: kc[0]))
    with tarfile.open(fileobj=io.BytesIO(container)) as tar:
        names = tar.getnames()
        assert names[:2] == ["config.dump", "spec.dump"]  # restore_fifo's head, first
        assert names[-1] == "checkpoint/pages-1.img"  # appended after podman's members
        assert "checkpoint/core-1.img" in names and names.count("checkpoint/pages-1.img") == 1
        got = tar.extractfile("checkpoint/pages-1.img")
        assert got is not None and got.read() == data
    assert not (images / "pages-1.img").exists()


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_archive_end_is_found_past_members_that_end_in_zeros(fmt: int) -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for name, payload in (
            ("a" * (90 if fmt == tarfile.USTAR_FORMAT else 150), b"x"),
            ("rootfs-diff.tar", bytes(4096)),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        members = out.tell()
    data = out.getvalue()
    assert len(data) > members + 1024  # record padding after the two zero blocks
    assert archive_end(data) == members
    assert archive_end(data[:members]) is None
