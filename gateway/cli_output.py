"""What the `tescape` commands print: exit codes scripts rely on, JSON documents with a stable
shape, and tables whose ids always print whole.

Ids (task, instance, attempt, capsule) are what a user copies into the next command, so their
columns never wrap nor shrink below the longest id; the other columns fold or wrap instead,
even on an 80-column terminal.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import click
from rich.table import Column

EXIT_OK = 0
EXIT_ERROR = 1  # the server answered an error, or could not be reached
EXIT_USAGE = 2  # click's own code for bad options; also a request the server calls malformed
EXIT_NOT_FOUND = 4  # no such task, instance or app


def exit_code_for(status: int) -> int:
    """The exit code for an HTTP error status from the server."""
    if status == 404:
        return EXIT_NOT_FOUND
    if status in (400, 422):
        return EXIT_USAGE
    return EXIT_ERROR


def id_column(header: str, values: Iterable[str]) -> Column:
    """A column that shows each id whole: never wrapped, never narrower than the longest."""
    width = max([len(header), *(len(v) for v in values)])
    return Column(header, no_wrap=True, min_width=width)


def text_column(header: str) -> Column:
    """A column that gives way to the id columns: long words fold instead of being cut."""
    return Column(header, overflow="fold")


def print_json(doc: Any) -> None:
    """One JSON document on stdout (UTF-8 kept, 2-space indent), for `--json`."""
    click.echo(json.dumps(doc, indent=2, ensure_ascii=False))
