"""The CLI's output rules without a server: exit codes per HTTP status, ids whole in narrow
tables, and `tasks logs -f` asking only for the bytes not printed yet."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from rich.console import Console
from rich.table import Table

from gateway import cli, cli_logs
from gateway.cli_output import exit_code_for, id_column, text_column

TASK_ID = "01m8vn5hkzn10wxv69ejd6e5ab"


@pytest.mark.parametrize(
    ("status", "code"), [(404, 4), (400, 2), (401, 1), (403, 1), (409, 1), (500, 1), (503, 1)]
)
def test_exit_codes(status: int, code: int) -> None:
    assert exit_code_for(status) == code


@pytest.mark.parametrize("width", [50, 80, 120])
def test_ids_stay_whole_in_narrow_tables(width: int) -> None:
    table = Table(id_column("id", [TASK_ID]), "state", text_column("name"), text_column("created"))
    table.add_row(TASK_ID, "EXECUTOR_ERROR", "x" * 60, "2026-12-02T18:04:05.123456+00:00")
    console = Console(width=width, record=True)
    console.print(table)
    assert TASK_ID in console.export_text()


def response(status: int, body: bytes) -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    resp._content = body
    return resp


@pytest.mark.parametrize(
    ("status", "body", "offset", "expected"),
    [
        (404, b'{"message": "no such log yet"}', 0, None),  # not saved yet
        (200, b"one\n", 0, b"one\n"),
        (206, b"two\n", 4, b"two\n"),  # the server honoured the range
        (200, b"one\ntwo\n", 4, b"two\n"),  # it sent the whole file instead
        (416, b"", 8, b""),  # nothing new
    ],
)
def test_new_bytes_asks_from_the_offset(
    monkeypatch: pytest.MonkeyPatch, status: int, body: bytes, offset: int, expected: bytes | None
) -> None:
    seen: list[dict[str, Any]] = []

    def fake(server: str, method: str, path: str, **kwargs: Any) -> requests.Response:
        seen.append(kwargs)
        return response(status, body)

    monkeypatch.setattr(cli, "_request", fake)
    assert cli_logs._new_bytes("http://x", TASK_ID, 0, "stdout", offset) == expected
    assert seen[0]["headers"] == ({"Range": f"bytes={offset}-"} if offset else {})
    assert seen[0]["params"] == {"executor": 0, "stream": "stdout"}


def test_a_server_error_on_logs_exits_1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "_request", lambda *a, **k: response(500, b'{"message": "boom"}'))
    with pytest.raises(SystemExit) as exit_:
        cli_logs._new_bytes("http://x", TASK_ID, 0, "stdout", 0)
    assert exit_.value.code == 1
