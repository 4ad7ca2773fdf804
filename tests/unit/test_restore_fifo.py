"""Restore through a FIFO (capsule_runtime/restore_fifo.py): an engine that opens its archive
as podman 4.3.1 does (three times) gets the head twice and the whole container part once; one
that opens it a fourth time fails cleanly and the restore falls back to the scratch file; a
corrupt chunk midway leaves the engine a stream no tar reader accepts, at whatever point it
breaks; an engine that exits early leaves no writer blocked. The engine here is a fake that
opens and reads the FIFO like podman; tests/integration (test_capsules, test_capsule_restore)
restore through real podman."""

from __future__ import annotations

import io
import json
import os
import random
import stat
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from capsule_runtime import checkpointing, restore_fifo
from capsule_runtime.capsules import (
    CapsuleCorrupt,
    FileStore,
    Manifest,
    chunk_key,
)
from capsule_runtime.engine.cgroup_parent import retarget
from capsule_runtime.engine.errors import EngineError
from capsule_runtime.protocol.messages import CapsuleRef, CapsuleSettings
from capsule_runtime.restore_fifo import BAD_HEADER, TarStream, member_editor
from tests.fixtures.capsule_runs import task_capsule

KiB, MiB = 1 << 10, 1 << 20
CHUNK = 64 * KiB
OLD = "/tescape/i-" + "a" * 26
NEW = "/tescape/i-" + "b" * 26


def go_tar(data: bytes) -> list[tuple[str, bytes]]:
    """The members of `data` as Go's archive/tar (podman's reader) takes them: ValueError where
    it fails. Like Go, an EOF where a header would begin, or inside the padding after a member's
    data, ends the archive cleanly."""
    members: list[tuple[str, bytes]] = []
    at = 0
    while at < len(data):
        block = data[at : at + 512]
        if len(block) < 512:
            raise ValueError("unexpected EOF in a header")
        at += 512
        if block == bytes(512):
            second = data[at : at + 512]
            if second in (b"", bytes(512)):
                return members
            raise ValueError("unexpected EOF" if len(second) < 512 else "invalid header")
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.HeaderError as exc:
            raise ValueError(f"invalid header: {exc}") from None
        size = info.size if info.isreg() or info.type not in tarfile.SUPPORTED_TYPES else 0
        body = data[at : at + size]
        if len(body) < size:
            raise ValueError("unexpected EOF in a member's data")
        members.append((info.name, body))
        at += -(-size // 512) * 512
    return members


def member(tar: tarfile.TarFile, name: str, body: bytes | None) -> None:
    info = tarfile.TarInfo(name)
    if body is None:
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        return
    info.size = len(body)
    tar.addfile(info, io.BytesIO(body))


def container_tar(
    rng: random.Random, mounts: list[str] | None = None, pages: int = MiB, rootfs: int = 200 * KiB
) -> bytes:
    """podman's export layout: metadata first, then checkpoint/ (CRIU's images), the rootfs."""
    spec = {
        "linux": {"cgroupsPath": OLD + "/libpod-x"},
        "mounts": [{"type": "bind", "source": s, "destination": "/m"} for s in mounts or []],
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        member(tar, "artifacts", None)
        member(tar, "config.dump", f'{{"cgroupParent": "{OLD}"}}'.encode())
        member(tar, "spec.dump", json.dumps(spec).encode())
        member(tar, "network.status", b"[]")
        member(tar, "checkpoint", None)
        member(tar, "checkpoint/cgroup.img", b"x" * 300 + OLD[1:].encode() + b"y" * 300)
        member(tar, "checkpoint/pages-1.img", rng.randbytes(pages) + OLD.encode())
        member(tar, "checkpoint/" + "long-name-" * 12 + ".img", b"z" * 1000)
        member(tar, "rootfs-diff.tar", rng.randbytes(rootfs + 7))
    return out.getvalue()


# -- TarStream ----------------------------------------------------------------------------------


def pieces(data: bytes, rng: random.Random) -> Iterator[bytes]:
    at = 0
    while at < len(data):
        n = rng.choice([1, 7, 512, 600, 5000, 70000])
        yield data[at : at + n]
        at += n


def test_the_stream_is_passed_on_unchanged_and_the_head_found() -> None:
    rng = random.Random(1)
    data = container_tar(rng)
    tar = TarStream()
    out = b"".join(bytes(p) for c in pieces(data, rng) for p in tar.feed(c))
    assert out == data
    names = [name for name, _ in tar.entries]
    assert names[:5] == ["artifacts", "config.dump", "spec.dump", "network.status", "checkpoint"]
    assert "checkpoint/" + "long-name-" * 12 + ".img" in names  # its pax path, not the header's
    at = tar.first("checkpoint")
    assert at is not None and [n for n, _ in go_tar(data[:at])][-1] == "network.status"


def test_held_members_are_rewritten_as_retarget_rewrites_the_file(tmp_path: Path) -> None:
    rng = random.Random(2)
    data = container_tar(rng)
    captured: dict[str, bytes] = {}
    tar = TarStream(*member_editor(NEW, captured))
    out = b"".join(bytes(p) for c in pieces(data, rng) for p in tar.feed(c))
    archive = tmp_path / "a.tar"
    archive.write_bytes(data)
    assert retarget(archive, NEW) == 3
    assert out == archive.read_bytes()  # config.dump, spec.dump, cgroup.img; never the pages
    assert b"cgroupsPath" in captured["spec.dump"]


def test_a_stream_cut_anywhere_is_one_a_tar_reader_refuses() -> None:
    rng = random.Random(3)
    data = container_tar(rng, pages=5000, rootfs=3000)
    end = len(data.rstrip(b"\0"))  # where the end-of-archive blocks begin (after padding)
    end = -(-end // 512) * 512
    blocks = {k * 512 + d for k in range(end // 512) for d in (-1, 0, 1)}
    cuts = set(range(0, end + 1024, 13)) | blocks
    for cut in sorted(c for c in cuts if 0 <= c < end + 1024):
        tar = TarStream(*member_editor(NEW, {}))
        out = b"".join(bytes(p) for c in pieces(data[:cut], rng) for p in tar.feed(c))
        with pytest.raises(ValueError):
            go_tar(out + tar.broken_tail())


# -- restore through the FIFO -------------------------------------------------------------------


class OpeningEngine:
    """Opens and reads its archive `reads` times as podman's import does (planned: 3), then
    "restores" from the last read, failing as podman would on an archive Go's tar refuses.
    `lenient`: restores whatever it read."""

    def __init__(self, reads: int = 3, *, fail_after: int | None = None, lenient: bool = False):
        self.reads = reads
        self.fail_after = fail_after
        self.lenient = lenient
        self.cgroup_parent: str | None = None
        self.opened: list[bytes] = []
        self.files: list[bytes] = []
        self.removed: list[str] = []

    def import_opens(self) -> int:
        return 3

    def restore(self, archive: Path, name: str, options: Any) -> tuple[str, dict[str, Any]]:
        if not stat.S_ISFIFO(archive.stat().st_mode):
            self.files.append(archive.read_bytes())
            return "cid-file-" + name, {}
        for n in range(self.reads):
            with open(archive, "rb") as f:
                self.opened.append(f.read())
            if self.fail_after == n + 1:
                raise EngineError("podman restore failed: no such image")
        try:
            names = [m for m, _ in go_tar(self.opened[-1])]
        except ValueError as exc:
            if not self.lenient:
                raise EngineError(f"podman restore failed: {exc}") from None
            names = []
        if "checkpoint/pages-1.img" not in names and not self.lenient:
            raise EngineError("podman restore failed: criu: no pages")
        return "cid-" + name, {}

    def remove(self, container_id: str) -> None:
        self.removed.append(container_id)


@pytest.fixture(autouse=True)
def fifo_on() -> Iterator[None]:
    checkpointing._fifo_off.clear()
    yield
    checkpointing._fifo_off.clear()


def capsule(tmp_path: Path, container: bytes) -> tuple[FileStore, Manifest]:
    work = tmp_path / "task"
    (work / "outputs").mkdir(parents=True, exist_ok=True)
    (work / "outputs" / "log.txt").write_text("line\n" * 100)
    store = FileStore(tmp_path / "capsules")
    m = task_capsule(store, work, container, CHUNK)
    return store, m


def restore(tmp_path: Path, store: FileStore, m: Manifest, engine: Any) -> Any:
    assert m.sha256 is not None
    ref = CapsuleRef(
        capsule_id=m.capsule_id, sequence=1, manifest_key=m.key, manifest_sha256=m.sha256
    )
    return checkpointing.restore(
        engine,
        store,
        CapsuleSettings(store=str(store.root), workers=3),
        ref,
        task_dir=tmp_path / "restored",
        scratch=tmp_path / "scratch",
        name="n",
    )


def no_fifo_thread_left() -> bool:
    return not any(t.name == "restore-fifo" for t in threading.enumerate())


@pytest.mark.parametrize("parent", [None, NEW])
def test_three_opens_get_the_head_twice_then_the_whole_part(
    tmp_path: Path, parent: str | None
) -> None:
    container = container_tar(random.Random(4))
    store, m = capsule(tmp_path, container)
    engine = OpeningEngine()
    engine.cgroup_parent = parent
    done = restore(tmp_path, store, m, engine)
    assert (done.via, done.container_id, engine.files) == ("fifo", "cid-n", [])
    head, again, whole = engine.opened
    assert head == again
    names = [n for n, _ in go_tar(head)]
    assert names == ["artifacts", "config.dump", "spec.dump", "network.status"]
    expected = container
    if parent is not None:
        archive = tmp_path / "expected.tar"
        archive.write_bytes(container)
        retarget(archive, parent)
        expected = archive.read_bytes()
        assert OLD.encode() not in head
    assert whole == expected
    assert (tmp_path / "restored" / "outputs" / "log.txt").read_text() == "line\n" * 100
    assert list((tmp_path / "scratch").iterdir()) == [] and no_fifo_thread_left()


def test_a_fourth_open_fails_cleanly_and_the_scratch_file_restores(tmp_path: Path) -> None:
    container = container_tar(random.Random(5))
    store, m = capsule(tmp_path, container)
    engine = OpeningEngine(reads=4)
    done = restore(tmp_path, store, m, engine)
    assert engine.opened[3] == BAD_HEADER  # a broken archive, never a truncated tar
    assert (done.via, done.container_id, engine.files) == ("scratch", "cid-file-n", [container])
    assert engine.removed == []  # podman failed on the broken archive: nothing to remove
    assert checkpointing.fifo_opens(engine) is None  # type: ignore[arg-type]  # a scratch file from now on
    assert no_fifo_thread_left()
    assert list((tmp_path / "scratch").iterdir()) == []


def test_an_engine_restoring_from_fewer_opens_is_undone(tmp_path: Path) -> None:
    store, m = capsule(tmp_path, container_tar(random.Random(6)))
    engine = OpeningEngine(reads=2, lenient=True)
    done = restore(tmp_path, store, m, engine)
    assert engine.removed == ["cid-n"] and done.via == "scratch"
    assert no_fifo_thread_left()


def test_an_engine_that_exits_early_leaves_no_writer_blocked(tmp_path: Path) -> None:
    store, m = capsule(tmp_path, container_tar(random.Random(7)))
    engine = OpeningEngine(fail_after=1)
    with pytest.raises(EngineError, match="no such image"):
        restore(tmp_path, store, m, engine)
    assert no_fifo_thread_left()
    assert list((tmp_path / "scratch").iterdir()) == []


@pytest.mark.parametrize("lenient", [False, True])
def test_a_corrupt_chunk_midway_fails_the_restore(tmp_path: Path, lenient: bool) -> None:
    container = container_tar(random.Random(8))
    store, m = capsule(tmp_path, container)
    chunks = m.part("container").chunks
    bad = chunks[len(chunks) // 2]
    path = store.root / chunk_key("t1", bad.sha256)
    stored = bytearray(path.read_bytes())
    stored[len(stored) // 2] ^= 1
    path.write_bytes(bytes(stored))
    engine = OpeningEngine(lenient=lenient)
    with pytest.raises(CapsuleCorrupt, match="part container"):
        restore(tmp_path, store, m, engine)
    whole = engine.opened[2]
    assert container.startswith(whole[: len(whole) - len(BAD_HEADER)])  # no bad byte passed on
    with pytest.raises(ValueError):
        go_tar(whole)
    assert engine.removed == (["cid-n"] if lenient else [])
    assert engine.files == [] and no_fifo_thread_left()


def test_a_bind_source_through_a_symlink_is_refused_from_the_head(tmp_path: Path) -> None:
    task = tmp_path / "restored"
    container = container_tar(random.Random(9), mounts=[str(task / "outputs" / "log.txt")])
    work = tmp_path / "task"
    (work / "outputs").mkdir(parents=True)
    os.symlink("/etc/hostname", work / "outputs" / "log.txt")
    store = FileStore(tmp_path / "capsules")
    m = task_capsule(store, work, container, CHUNK)
    engine = OpeningEngine()
    with pytest.raises(checkpointing.UnsafeWorkspace, match="symlink"):
        restore(tmp_path, store, m, engine)
    assert engine.opened == [] and engine.files == [] and no_fifo_thread_left()


def test_no_fifo_where_the_scratch_dir_cannot_have_one_uses_the_scratch_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    container = container_tar(random.Random(10))
    store, m = capsule(tmp_path, container)

    def refused(path: Any, mode: int = 0o666) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(restore_fifo.os, "mkfifo", refused)
    engine = OpeningEngine()
    done = restore(tmp_path, store, m, engine)
    assert (done.via, engine.opened, engine.files) == ("scratch", [], [container])
    assert checkpointing.fifo_opens(engine) == 3  # type: ignore[arg-type]  # tried next time
