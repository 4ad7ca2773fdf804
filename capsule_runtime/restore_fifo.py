"""Restoring a capsule's container part through a FIFO instead of a scratch archive.

`podman container restore --import ARCHIVE` (podman 4.3.1; `strace -f -e trace=openat`) opens
ARCHIVE three times and reads it to its end each time: twice to extract only `config.dump` and
`spec.dump`, then once to extract everything. In podman's export those two files come before
`checkpoint/` (`artifacts/`, `devshm-checkpoint.tar`, `config.dump`, `spec.dump`,
`network.status`, `stats-dump`, `ctr.log`, then `checkpoint/…`, `rootfs-diff.tar`, …), so they
lie in the container part's first chunk. So ARCHIVE is a FIFO, and a server thread opens it for
writing once per open by podman: the first opens get a small tar of the members before
`checkpoint/` plus an end-of-archive, the last one the whole part, streamed from the store as
its chunks arrive (fetched, checked and decoded in parallel, written in order: capsules.reader).
The fetch then overlaps podman's extraction, and nothing is written to a scratch file and read
back.

What the scratch-file path did on the file is done on the stream: the bind-mount check
(checkpointing.check_mount_sources) on `spec.dump` from the head, in memory, before podman
starts; the cgroup retarget (engine/cgroup_parent) on each member it rewrites, held whole
(they are small) while it streams.

How it fails, never silently:

- a chunk that is missing or corrupt (or a store error) midway: nothing of that chunk reaches
  podman; the stream is cut so that podman's tar reader must fail (inside a member's data: the
  FIFO is closed, an unexpected EOF; at a member boundary: a block that is no tar header), and
  the restore raises the chunk's error (a container podman restored anyway is removed);
- podman opens the archive more often than planned (another version's behaviour): that open
  gets a broken archive, the restore fails cleanly, and FifoUnsupported says to use the scratch
  file; so does a head without `checkpoint/`;
- podman exits early: the writer still waiting for an open is released (no thread left blocked).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from capsule_runtime.capsules.errors import CapsuleCorrupt
from capsule_runtime.capsules.reader import write_all
from capsule_runtime.engine import cgroup_parent
from capsule_runtime.engine.errors import EngineError
from capsule_runtime.engine.protocol import ContainerEngine
from capsule_runtime.engine.spec import CheckpointOptions

BLOCK = 512
END_OF_ARCHIVE = bytes(2 * BLOCK)
BAD_HEADER = b"\xff" * BLOCK  # not a tar header (its checksum fails): a tar reader must fail here
HEAD_LIMIT = 256 << 20  # the members before checkpoint/ are podman's metadata: small
META_LIMIT = 1 << 20  # a pax or GNU long-name record
PIPE_BYTES = 1 << 20  # Linux's default /proc/sys/fs/pipe-max-size
_META_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
_HEADER, _PASS, _HOLD, _RAW = range(4)


class FifoUnsupported(Exception):
    """This restore cannot be served through a FIFO; the scratch file can (nothing was restored)."""


class ExtraOpen(FifoUnsupported):
    """The engine opened the archive more often than planned: its version behaves otherwise."""


class TarStream:
    """Follows a tar byte stream fed in pieces and gives the same stream back, except that the
    members `wanted(name, size)` selects are held whole and passed through `edit(name, data)`
    (which returns as many bytes) first. Knows where its output stands in the tar's structure,
    so a stream cut short can be made one that no tar reader accepts (`broken_tail`). A header
    it cannot parse makes it pass everything on unread (the reader decides)."""

    def __init__(
        self,
        wanted: Callable[[str, int], bool] = lambda name, size: False,
        edit: Callable[[str, bytes], bytes] = lambda name, data: data,
    ) -> None:
        self.wanted = wanted
        self.edit = edit
        self.offset = 0  # stream bytes consumed
        self.entries: list[tuple[str, int]] = []  # (name, offset of its first header)
        self._state = _HEADER
        self._header = bytearray()
        self._left = 0  # bytes of the current member (data and padding) still to come
        self._pad = 0  # of which padding
        self._held = bytearray()
        self._holding: tuple[str, int] | None = None  # (name or meta type, data size)
        self._meta = False
        self._next_name: str | None = None
        self._next_size: int | None = None
        self._entry_start: int | None = None

    def first(self, prefix: str) -> int | None:
        """The offset of the first entry named `prefix` or under it, once it has been seen."""
        return next(
            (at for name, at in self.entries if name == prefix or name.startswith(prefix + "/")),
            None,
        )

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes | memoryview]:
        """The output these bytes complete, in order (views into `data` where unchanged)."""
        out: list[bytes | memoryview] = []
        view = memoryview(data)
        while view:
            if self._state == _RAW:
                out.append(view)
                self.offset += len(view)
                break
            if self._state == _HEADER:
                take = view[: BLOCK - len(self._header)]
                self._header += take
                view = view[len(take) :]
                self.offset += len(take)
                if len(self._header) == BLOCK:
                    block = bytes(self._header)
                    self._header.clear()
                    out.append(block)
                    self._begin(block)
                continue
            n = min(len(view), self._left)
            if self._state == _PASS:
                out.append(view[:n])
            else:
                self._held += view[:n]
            view = view[n:]
            self.offset += n
            self._left -= n
            if self._left == 0:
                if self._state == _HOLD:
                    out.append(self._release())
                self._state = _HEADER
        return out

    def broken_tail(self) -> bytes:
        """What to write after the output so far so that a tar reader fails rather than takes a
        shortened archive for a whole one (Go's archive/tar ends cleanly at EOF on a member
        boundary, and when only a member's padding is missing)."""
        if self._state == _RAW:
            return b""
        if self._state == _HEADER:
            return BAD_HEADER  # a partial header was never passed on
        if self._state == _HOLD or self._left > self._pad:
            return b""  # inside a member's data: EOF there is an unexpected EOF
        return bytes(self._left) + BAD_HEADER

    def _begin(self, block: bytes) -> None:
        if block == bytes(BLOCK):
            return  # end-of-archive (or padding after it)
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.HeaderError:
            self._state = _RAW
            return
        start = self.offset - BLOCK if self._entry_start is None else self._entry_start
        if info.type in _META_TYPES:
            if info.size > META_LIMIT:
                self._state = _RAW
                return
            self._entry_start = start
            self._hold(info.type.decode(), info.size, meta=True)
            return
        name = self._next_name if self._next_name is not None else info.name
        size = self._next_size if self._next_size is not None else info.size
        self._next_name = self._next_size = self._entry_start = None
        self.entries.append((name, start))
        if not (info.isreg() or info.type not in tarfile.SUPPORTED_TYPES) or size == 0:
            return
        if self.wanted(name, size):
            self._hold(name, size, meta=False)
        else:
            self._state, self._left, self._pad = _PASS, _padded(size), _padded(size) - size

    def _hold(self, what: str, size: int, *, meta: bool) -> None:
        if size == 0:
            return
        self._state, self._left, self._pad = _HOLD, _padded(size), _padded(size) - size
        self._holding, self._meta = (what, size), meta
        self._held = bytearray()

    def _release(self) -> bytes:
        assert self._holding is not None
        what, size = self._holding
        held = bytes(self._held)
        self._held = bytearray()
        if self._meta:
            self._read_meta(what, held[:size])
            return held
        data = self.edit(what, held[:size])
        if len(data) != size:
            raise ValueError(f"editing {what} changed its size")
        return data + held[size:]

    def _read_meta(self, kind: str, data: bytes) -> None:
        if kind == tarfile.GNUTYPE_LONGNAME.decode():
            self._next_name = data.rstrip(b"\0").decode("utf-8", "surrogateescape")
        elif kind == tarfile.XHDTYPE.decode():
            for key, value in _pax_records(data):
                if key == "path":
                    self._next_name = value
                elif key == "size" and value.isdigit():
                    self._next_size = int(value)


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _pax_records(data: bytes) -> Iterator[tuple[str, str]]:
    """A pax extended header's `LEN key=value\\n` records (a malformed one ends the list)."""
    at = 0
    while at < len(data):
        space = data.find(b" ", at)
        if space < 0 or not data[at:space].isdigit():
            return
        end = at + int(data[at:space])
        if end <= space or end > len(data):
            return
        key, _, value = data[space + 1 : end - 1].partition(b"=")
        yield key.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape")
        at = end


@dataclass
class Head:
    """The container part's members before `checkpoint/`: what the first opens are served."""

    archive: bytes  # those members (edited) and an end-of-archive
    prefix: bytes  # the edited stream as far as it was read (the last open starts with it)
    spec: dict[str, Any] | None  # spec.dump, parsed (None: the archive has none)


def read_head(
    chunks: Iterator[bytes | bytearray],
    stream: TarStream,
    captured: dict[str, bytes],
    limit: int = HEAD_LIMIT,
) -> Head:
    """Take chunks until the first `checkpoint/` entry has been seen. FifoUnsupported when the
    part has none within `limit` bytes; CapsuleCorrupt when spec.dump is not JSON."""
    out: list[bytes | memoryview] = []
    while (at := stream.first("checkpoint")) is None:
        if stream.offset > limit:
            raise FifoUnsupported(f"no checkpoint/ in the first {limit} bytes of the archive")
        chunk = next(chunks, None)
        if chunk is None:
            raise FifoUnsupported("the archive has no checkpoint/")
        out.extend(stream.feed(chunk))
    prefix = b"".join(out)
    spec = None
    if "spec.dump" in captured:
        try:
            spec = json.loads(captured["spec.dump"])
        except ValueError as exc:
            raise CapsuleCorrupt(f"checkpoint archive unreadable: spec.dump: {exc}") from None
    return Head(prefix[:at] + END_OF_ARCHIVE, prefix, spec)


def member_editor(
    parent: str | None, captured: dict[str, bytes]
) -> tuple[Callable[[str, int], bool], Callable[[str, bytes], bytes]]:
    """What a TarStream of a restore holds and edits: spec.dump (kept in `captured`, for the
    bind-mount check) and, with a cgroup `parent`, the members engine/cgroup_parent rewrites."""
    new = cgroup_parent.parent_bytes(parent) if parent else None

    def wanted(name: str, size: int) -> bool:
        if size > cgroup_parent.MAX_MEMBER:
            return False
        return name == "spec.dump" or (new is not None and cgroup_parent.rewritable(name))

    def edit(name: str, data: bytes) -> bytes:
        if name == "spec.dump":
            captured[name] = data
        if new is not None and cgroup_parent.rewritable(name):
            data, _ = cgroup_parent.rewrite(data, new)
        return data

    return wanted, edit


def _widen(fd: int) -> None:
    """A pipe buffer of PIPE_BYTES instead of 64 KiB, where the system allows it: podman reads
    32 KiB at a time, and a wider pipe lets the writer run ahead of it (fewer wake-ups)."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)


class _ReaderGone(Exception):
    """The engine closed its end of the FIFO before the stream ended."""


class ArchiveServer(threading.Thread):
    """Opens `fifo` for writing once per open by the engine and serves each open its archive:
    the first `opens - 1` the head, the last one `stream`; any further open a broken archive
    (`extra`). After each open the FIFO is made anew at the same path, so an open still reading
    is never taken for a new one. `stop()` releases a writer waiting for an open that never
    comes."""

    def __init__(
        self,
        fifo: Path,
        opens: int,
        head: bytes,
        stream: Callable[[Callable[[bytes | memoryview], None]], None],
    ) -> None:
        super().__init__(name="restore-fifo", daemon=True)
        self.fifo, self.opens, self.head, self.stream = fifo, opens, head, stream
        self.opened = 0
        self.extra = False
        self.cut = False  # the engine stopped reading the last open before its end
        self.error: BaseException | None = None  # what broke the stream (a chunk, the store)
        self.streamed: float | None = None  # seconds from start to the whole stream written
        self._stopping = threading.Event()
        self._started_at = time.monotonic()

    def run(self) -> None:
        try:
            while True:
                fd = os.open(self.fifo, os.O_WRONLY)  # blocks until the engine opens it
                if self._stopping.is_set():
                    os.close(fd)
                    return
                self.opened += 1
                try:
                    self._renew()
                except OSError as exc:  # the engine's next open fails: nothing restored
                    os.close(fd)
                    raise FifoUnsupported(f"the FIFO could not be made again: {exc}") from None
                _widen(fd)
                with open(fd, "wb", buffering=0) as sink:
                    self._serve(sink)
        except BaseException as exc:
            self.error = self.error or exc

    def _renew(self) -> None:
        self.fifo.unlink(missing_ok=True)
        os.mkfifo(self.fifo, 0o600)

    def _serve(self, sink: BinaryIO) -> None:
        def write(data: bytes | memoryview) -> None:
            try:
                write_all(sink, data)
            except BrokenPipeError:
                raise _ReaderGone from None

        try:
            if self.opened < self.opens:
                write(self.head)
            elif self.opened > self.opens:
                self.extra = True
                write(BAD_HEADER)
            else:
                self.stream(write)
                self.streamed = time.monotonic() - self._started_at
        except _ReaderGone:
            if self.opened == self.opens:
                self.cut = True
        except BaseException as exc:
            self.error = exc

    def stop(self, timeout: float = 600.0) -> None:
        """No more opens are served; returns once the thread has ended (a writer waiting for a
        reader is released by opening the FIFO for reading, as often as it takes)."""
        self._stopping.set()
        deadline = time.monotonic() + timeout
        while self.is_alive() and time.monotonic() < deadline:
            try:
                fd = os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK)
            except OSError:
                pass
            else:
                os.close(fd)
            self.join(0.05)


def streamer(
    head: Head, chunks: Iterator[bytes | bytearray], tar: TarStream
) -> Callable[[Callable[[bytes | memoryview], None]], None]:
    """The last open's stream: the head as read, then every further chunk through `tar`. When a
    chunk fails, the stream is cut so the reader fails (TarStream.broken_tail), and the chunk's
    error is raised (the server keeps it)."""

    def stream(write: Callable[[bytes | memoryview], None]) -> None:
        write(head.prefix)
        try:
            for chunk in chunks:
                for piece in tar.feed(chunk):
                    write(piece)
        except _ReaderGone:
            raise
        except BaseException:
            with contextlib.suppress(_ReaderGone):
                write(tar.broken_tail())
            raise

    return stream


def restore_through_fifo(
    engine: ContainerEngine,
    chunks: Iterator[bytes | bytearray],
    *,
    opens: int,
    parent: str | None,
    fifo: Path,
    name: str,
    options: CheckpointOptions,
    check_spec: Callable[[dict[str, Any] | None], None],
) -> tuple[str, dict[str, Any], dict[str, float]]:
    """`engine.restore` of the container part whose checked chunks `chunks` yields, served
    through `fifo` (see the module docstring). Returns the container id, the engine's
    statistics and step seconds. Raises FifoUnsupported before anything was restored (ExtraOpen
    after a clean failure), a chunk's error (CapsuleCorrupt, a store error) or EngineError."""
    captured: dict[str, bytes] = {}
    wanted, edit = member_editor(parent, captured)
    tar = TarStream(wanted, edit)
    started = time.monotonic()
    head = read_head(chunks, tar, captured)
    check_spec(head.spec)
    try:
        os.mkfifo(fifo, 0o600)
    except OSError as exc:
        raise FifoUnsupported(f"no FIFO at {fifo}: {exc}") from None
    server = ArchiveServer(fifo, opens, head.archive, streamer(head, chunks, tar))
    headed = time.monotonic()
    server.start()
    container_id: str | None = None
    failure: EngineError | None = None
    try:
        container_id, stats = engine.restore(fifo, name, options)
    except EngineError as exc:
        failure = exc
    finally:
        server.stop()
        fifo.unlink(missing_ok=True)
    done = time.monotonic()
    problem: BaseException | None = None
    if server.extra:
        problem = ExtraOpen(f"the engine opened the archive more than {opens} times")
    elif server.error is not None:
        problem = server.error
    elif failure is None and server.opened != opens:
        problem = FifoUnsupported(f"the engine opened the archive {server.opened} of {opens} times")
    if problem is not None:
        if container_id is not None:
            engine.remove(container_id)  # restored from a stream that was not all it should be
        raise problem
    if failure is not None:
        raise failure
    assert container_id is not None
    seconds = {
        "fifo_head": round(headed - started, 4),
        "fifo_stream": round(server.streamed if server.streamed is not None else done - headed, 4),
    }
    return container_id, stats, seconds
