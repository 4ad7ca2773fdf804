"""Progress a user watches on long commands: a spinner with the current state while waiting
(`submit --wait`, `tasks checkpoint|migrate --wait`) and a bar while an image archive uploads
(`apps import`). Both draw on stderr and only on a terminal: a pipe, a log file or `--json`
gets no escape codes and no partial lines."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

CHUNK_BYTES = 1 << 20  # an upload is read (and the bar moved) a MiB at a time


def stderr_console() -> Console:
    return Console(stderr=True)


@contextmanager
def waiting(label: str, enabled: bool) -> Iterator[Callable[[str], None]]:
    """A spinner '<label>: <state>  0:00:12' while the caller polls; yields a function that
    sets the state shown. Disabled, it yields a function that does nothing."""
    if not enabled:
        yield lambda state: None
        return
    progress = Progress(
        TextColumn("{task.description}"),
        TextColumn("[bold]{task.fields[state]}"),
        TimeElapsedColumn(),
        console=stderr_console(),
        transient=True,
    )
    with progress:
        bar = progress.add_task(label, total=None, state="…")
        yield lambda state: progress.update(bar, state=state)


class UploadReader:
    """A file object for `requests` (`data=`) that streams the file in chunks and advances a
    bar as the bytes go out."""

    def __init__(self, stream: IO[bytes], size: int, advance: Callable[[int], None]):
        self.stream = stream
        self.size = size
        self.advance = advance

    def __len__(self) -> int:
        """requests sends this as Content-Length (not chunked): the server checks the size."""
        return self.size

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.stream.read(CHUNK_BYTES):
            self.advance(len(chunk))
            yield chunk


@contextmanager
def uploading(label: str, size: int, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A bar 'label ━━━━ 1.2/4.0 GB 80 MB/s 0:00:35'; yields the function that advances it."""
    if not enabled:
        yield lambda n: None
        return
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=stderr_console(),
        transient=True,
    )
    with progress:
        bar = progress.add_task(label, total=size)
        yield lambda n: progress.advance(bar, n)
