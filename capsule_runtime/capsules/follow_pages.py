"""Following CRIU's pages-*.img while CRIU writes them (checkpointing's "images" path).

CRIU writes each process's pages image sequentially (`splice` from its page pipes, in address
order) into the container's checkpoint directory and only appends to it, so the bytes below
the size `fstat` reports are final. `PagesFollower.poll` reads what is new in every pages
image and cuts it with `PageCutter` (the same chunks `tar_chunks` makes of the member); once
CRIU's post-dump step is reached (every image complete), `detach` unlinks the images at once
(their descriptors stay open: the task is thawed without waiting for the pipeline to catch up)
and `finish` reads the rest and cuts the tails. podman's export, which runs after the dump,
then tars only the small files, and the agent appends the pages as tar members of its own
(`member_header`).
"""

from __future__ import annotations

import os
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from capsule_runtime.capsules.chunker import BLOCK, DEFAULT_CHUNK_SIZE, BufferPool, PageCutter

PAGES = re.compile(r"pages-([0-9]+)\.img")
READ = 8 << 20  # bytes read from one image per step


@dataclass
class _Image:
    """One pages image being followed: its descriptor, how far it is read and cut."""

    number: int
    name: str
    fd: int
    cutter: PageCutter
    offset: int = 0
    chunks: int = 0
    stat: os.stat_result | None = field(default=None, repr=False)


@dataclass(frozen=True)
class FollowedImage:
    """A pages image read whole: its tar member's name and the header's fields."""

    number: int
    name: str
    size: int
    mode: int
    mtime: float


def remove_stale(directory: Path) -> None:
    """Unlink pages images an earlier dump left (`--leave-running` keeps the directory), so
    that only images this dump writes are followed."""
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return
    for entry in entries:
        if PAGES.fullmatch(entry.name):
            os.unlink(entry.path)


class PagesFollower:
    """The pages images of one dump. Each chunk is yielded as (image number, index, a read-only
    view of the bytes: PageCutter's, uncopied)."""

    def __init__(self, directory: Path, chunk_size: int = DEFAULT_CHUNK_SIZE):
        self.directory = directory
        self.chunk_size = chunk_size
        self.images: dict[str, _Image] = {}
        self.done: list[FollowedImage] = []
        # one pool for all images (read one at a time): a read and the uncut tail before it
        self.pool = BufferPool(READ + chunk_size * 3 // 2 + BLOCK)

    def _scan(self) -> None:
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return  # runc has not created it yet
        for entry in entries:
            match = PAGES.fullmatch(entry.name)
            if match and entry.name not in self.images:
                try:
                    fd = os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    continue
                number = int(match.group(1))
                self.images[entry.name] = _Image(
                    number, entry.name, fd, PageCutter(self.chunk_size, self.pool)
                )

    def _read(self, image: _Image, limit: int) -> list[memoryview] | None:
        """The chunks final after reading the image's next bytes (at most READ, up to `limit`),
        read straight into the cutter's buffer; None when there were none."""
        want = min(limit - image.offset, READ)
        if want <= 0:
            return None
        space = image.cutter.space(want)
        try:
            got = os.preadv(image.fd, [space], image.offset)
        finally:
            space.release()
        image.offset += got
        chunks = image.cutter.filled(got)
        return chunks if got else None

    def _emit(
        self, image: _Image, chunks: list[memoryview]
    ) -> Iterator[tuple[int, int, memoryview]]:
        for chunk in chunks:
            yield image.number, image.chunks, chunk
            image.chunks += 1

    def poll(self) -> list[tuple[int, int, memoryview]] | None:
        """One step: the chunks whose cut became final in the next bytes (at most `READ`) CRIU
        has written to an image; None when nothing was new. A step is short, so the caller
        notices CRIU's post-dump between steps however far it lags behind CRIU."""
        self._scan()
        for image in sorted(self.images.values(), key=lambda i: i.number):
            size = os.fstat(image.fd).st_size
            if image.offset < size:
                chunks = self._read(image, size)
                if chunks is not None:
                    return list(self._emit(image, chunks))
        return None

    def detach(self) -> None:
        """Once CRIU has written every image (post-dump): open any not yet seen and unlink them
        all, so podman's export leaves them out; their data stays readable here until closed."""
        self._scan()
        for image in self.images.values():
            os.unlink(self.directory / image.name)

    def finish(self) -> Iterator[tuple[int, int, memoryview]]:
        """Every remaining chunk, after `detach`."""
        try:
            for image in sorted(self.images.values(), key=lambda i: i.number):
                info = os.fstat(image.fd)
                while image.offset < info.st_size:
                    chunks = self._read(image, info.st_size)
                    if chunks is None:
                        raise OSError(f"{image.name} ended before its size {info.st_size}")
                    yield from self._emit(image, chunks)
                yield from self._emit(image, image.cutter.finish())
                self.done.append(
                    FollowedImage(
                        image.number, image.name, image.offset, info.st_mode, info.st_mtime
                    )
                )
        finally:
            self.close()

    def close(self) -> None:
        for image in self.images.values():
            if image.fd >= 0:
                os.close(image.fd)
                image.fd = -1


def member_header(image: FollowedImage, prefix: str = "checkpoint/") -> bytes:
    """The tar header (pax when the size needs it) of a pages image as podman's export has it:
    `checkpoint/pages-N.img`, root-owned, the image's mode and mtime."""
    info = tarfile.TarInfo(prefix + image.name)
    info.size = image.size
    info.mode = image.mode & 0o7777
    info.mtime = int(image.mtime)
    info.uid = info.gid = 0
    info.type = tarfile.REGTYPE
    return info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")


def padding(size: int) -> bytes:
    """The zeros that pad a member of `size` bytes to whole tar blocks."""
    return bytes(-size % BLOCK)
