"""The CLI's output rules without a server: exit codes per HTTP status, ids whole in narrow
tables, and `tasks logs -f` asking only for the bytes not printed yet."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from rich.console import Console
from rich.table import Table

from gateway import cli, cli_logs
from gateway.api.admin import STREAM_HEADER as SERVER_STREAM_HEADER
from gateway.cli_logs import STREAM_HEADER
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


def response(status: int, body: bytes, stream: str | None = None) -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    resp._content = body
    if stream is not None:
        resp.headers[STREAM_HEADER] = stream
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
    assert cli_logs._new_bytes("http://x", TASK_ID, 0, "stdout", offset).data == expected
    assert seen[0]["headers"] == ({"Range": f"bytes={offset}-"} if offset else {})
    assert seen[0]["params"] == {"executor": 0, "stream": "stdout"}


def test_a_server_error_on_logs_exits_1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "_request", lambda *a, **k: response(500, b'{"message": "boom"}'))
    with pytest.raises(SystemExit) as exit_:
        cli_logs._new_bytes("http://x", TASK_ID, 0, "stdout", 0)
    assert exit_.value.code == 1


def test_the_cli_reads_the_header_the_gateway_sets() -> None:
    assert STREAM_HEADER == SERVER_STREAM_HEADER


@pytest.mark.parametrize(
    ("status", "stream", "final"),
    [
        (200, "live", False),
        (206, "final", True),
        (416, "live", False),
        (416, "final", True),
        (200, None, True),  # a gateway without the header answered only with the whole stream
        (404, "live", False),
    ],
)
def test_new_bytes_says_whether_the_stream_is_whole(
    monkeypatch: pytest.MonkeyPatch, status: int, stream: str | None, final: bool
) -> None:
    monkeypatch.setattr(cli, "_request", lambda *a, **k: response(status, b"x", stream))
    assert cli_logs._new_bytes("http://x", TASK_ID, 0, "stdout", 0).final == final


def test_follow_waits_past_the_end_for_the_whole_stream(
    monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """The task is COMPLETE while the gateway still holds the live pushes (`line 1..2`); -f
    keeps asking until the whole stream (`line 3`, `end`) is there, and prints each byte once."""
    answers = iter(
        [
            response(200, b"line 1\nline 2\n", "live"),
            response(416, b"", "live"),
            response(206, b"line 3\nend\n", "final"),
        ]
    )
    states = iter(["RUNNING", "COMPLETE", "COMPLETE"])
    monkeypatch.setattr(cli_logs, "_task", lambda *a, **k: {"state": next(states)})
    monkeypatch.setattr(cli, "_request", lambda *a, **k: next(answers))
    monkeypatch.setattr(cli_logs.time, "sleep", lambda s: None)
    assert cli_logs._follow("http://x", TASK_ID, 0, "stdout", 1.0) == "COMPLETE"
    assert capsysbinary.readouterr().out == b"line 1\nline 2\nline 3\nend\n"
