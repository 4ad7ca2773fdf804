"""`tescape tasks logs|events`: an executor's full stdout/stderr (followed with `-f`) and the
task's event history, from the admin API (`GET /api/v1/tasks/{id}/logs|events`).

While an executor runs, its agent pushes the stream to the gateway as it grows (every 2 s,
capsule_runtime/live_logs.py); once the task has ended the whole stream is uploaded and replaces
it. `-f` follows the task's state and prints the stream as it grows, asking with a `Range` header
for only the bytes not printed yet; it stops once the task has ended and the gateway says
(`X-Tescape-Stream: final`) that it holds the whole stream. Before the executor starts only the
tail that TES keeps in the task's ExecutorLog exists; without `-f` that tail is printed instead.
"""

from __future__ import annotations

import sys
import time
from typing import Any, NamedTuple

import click
from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.text import Text

from gateway.cli_complete import task_ids
from gateway.cli_output import EXIT_OK, print_json
from gateway.tes.states import TERMINAL

FIRST_POLL_SECONDS = 0.5  # the poll interval starts here and doubles while nothing changes
STREAM_GRACE_SECONDS = 30.0  # after the task ends, how long -f waits for its whole stream
STREAM_HEADER = "X-Tescape-Stream"  # `final` or `live`: set by gateway/api/admin.py


def _cli() -> Any:
    """gateway.cli, imported late: it imports this module to register the commands."""
    from gateway import cli

    return cli


def _task(server: str, task_id: str, view: str = "MINIMAL") -> dict[str, Any]:
    """The TES task (exit 4 when there is no such task, or not one of this user's)."""
    task: dict[str, Any] = _cli()._call(server, "GET", f"/ga4gh/tes/v1/tasks/{task_id}?view={view}")
    return task


class Piece(NamedTuple):
    """What one ask for the stream brought: its bytes past the offset (None while the gateway
    has no stream yet), and whether the gateway holds the whole stream (uploaded when the
    task ended) rather than the live pushes, which stop up to a push interval short."""

    data: bytes | None
    final: bool


def _new_bytes(server: str, task_id: str, executor: int, stream: str, offset: int) -> Piece:
    """The stream's bytes from `offset` on."""
    cli = _cli()
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    resp = cli._request(
        server,
        "GET",
        f"/api/v1/tasks/{task_id}/logs",
        params={"executor": executor, "stream": stream},
        headers=headers,
    )
    # a gateway older than the header only ever answered once the stream was whole
    final = resp.headers.get(STREAM_HEADER, "final") == "final"
    if resp.status_code == 404:  # the task exists (checked first): the stream does not yet
        return Piece(None, False)
    if resp.status_code == 416:  # nothing past what was printed
        return Piece(b"", final)
    if resp.status_code >= 400:
        cli._fail(resp)
    data: bytes = resp.content
    if resp.status_code == 200 and offset:  # the whole file despite the range
        data = data[offset:]
    return Piece(data, final)


def _write(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _tail(task: dict[str, Any], executor: int, stream: str) -> str:
    """The tail TES keeps in the newest attempt's ExecutorLog ('' when there is none)."""
    attempts = task.get("logs") or []
    logs = (attempts[-1].get("logs") or []) if attempts else []
    if executor >= len(logs):
        return ""
    return str(logs[executor].get(stream) or "")


def _ran(task: dict[str, Any], executor: int) -> bool:
    """Whether the executor ran in some attempt (so that its stream is still to be saved)."""
    return any(len(attempt.get("logs") or []) > executor for attempt in task.get("logs") or [])


def _follow(server: str, task_id: str, executor: int, stream: str, interval: float) -> str:
    """Print the stream as it grows until the task ends and the gateway holds its whole
    stream; return the task's final state."""
    offset = 0
    wait = FIRST_POLL_SECONDS
    ended_at: float | None = None
    while True:
        state = str(_task(server, task_id).get("state", ""))
        piece = _new_bytes(server, task_id, executor, stream, offset)
        if piece.data:
            _write(piece.data)
            offset += len(piece.data)
            wait = FIRST_POLL_SECONDS
        if state in TERMINAL:
            if piece.final or (
                piece.data is None and not _ran(_task(server, task_id, "BASIC"), executor)
            ):
                return state  # all printed, or never to come (cancelled before it ran)
            # the agent uploads the whole stream just after it reports the end
            ended_at = ended_at if ended_at is not None else time.monotonic()
            if time.monotonic() - ended_at > STREAM_GRACE_SECONDS:
                return state
            wait = FIRST_POLL_SECONDS
        time.sleep(wait)
        wait = min(wait * 2, interval)


def _event_lines(event: dict[str, Any]) -> RenderableType:
    """One event as a few lines: time and kind, then its attempt and instance (each id whole,
    on its own line), then the message indented; a log reads better so than a cramped table."""
    change = ""
    if event.get("to_state"):
        change = f" {event.get('from_state', '')}→{event['to_state']}"
    text = Text.assemble(
        (str(event.get("time", "")), "dim"), "  ", (str(event.get("kind", "")), "bold"), change
    )
    for key in ("attempt_id", "instance_id"):
        if event.get(key):
            text.append(f"\n    {key.removesuffix('_id')} ")
            text.append(str(event[key]), style="cyan")
    if not event.get("message"):
        return text
    message = Text(str(event["message"]))  # Text, not markup: messages quote errors verbatim
    return Group(text, Padding(message, (0, 0, 0, 4)))


def register(tasks: click.Group) -> None:
    """Add `tescape tasks logs|events` to the `tasks` group (call it at the end of cli.py)."""
    server_option = _cli().server_option

    @tasks.command("logs")
    @server_option
    @click.argument("task_id", shell_complete=task_ids)
    @click.option(
        "--executor",
        type=click.IntRange(min=0),
        default=0,
        show_default=True,
        help="index of the executor",
    )
    @click.option(
        "--stream", type=click.Choice(["stdout", "stderr"]), default="stdout", show_default=True
    )
    @click.option(
        "-f", "--follow", is_flag=True, help="keep printing until the task ends (see above)"
    )
    @click.option(
        "--interval",
        type=click.FloatRange(FIRST_POLL_SECONDS, 60),
        default=5.0,
        show_default=True,
        help="longest wait between polls with -f (they start at 0.5 s)",
    )
    def tasks_logs(
        server: str, task_id: str, executor: int, stream: str, follow: bool, interval: float
    ) -> None:
        """Print an executor's full stdout or stderr.

        While the executor runs, the stream grows every few seconds; the whole stream is saved
        once the task has ended. Before the executor starts this prints the tail kept in the
        task's logs; with -f it follows the task's state instead, prints the stream as it grows
        (only bytes not printed yet) until the task has ended and its whole stream is saved
        (or 30 s after the end, if it never is), and then exits. The final
        state goes to stderr; exit 0 whatever it is, 4 when there is no such task.
        """
        task = _task(server, task_id)  # exit 4 before anything else when it does not exist
        if follow:
            state = _follow(server, task_id, executor, stream, interval)
            _cli().err_console.print(f"task {task_id}: {state}")
            sys.exit(EXIT_OK)
        data = _new_bytes(server, task_id, executor, stream, 0).data
        if data is not None:
            _write(data)
            return
        tail = _tail(_task(server, task_id, "FULL"), executor, stream)
        if tail:
            _write(tail.encode())
        _cli().err_console.print(
            f"(task {task_id} is {task.get('state', '?')}: "
            f"no full {stream} of executor {executor} yet"
            + ("; above, the tail the task's logs keep)" if tail else ")")
        )

    @tasks.command("events")
    @server_option
    @click.argument("task_id", shell_complete=task_ids)
    @click.option(
        "--json",
        "as_json",
        is_flag=True,
        help='print {"events": [{"id", "time", "kind", "message", "data", ...}]}',
    )
    def tasks_events(server: str, task_id: str, as_json: bool) -> None:
        """What happened to a task: states, placements, checkpoints, migrations, in order."""
        events = _cli()._call(server, "GET", f"/api/v1/tasks/{task_id}/events").get("events") or []
        if as_json:
            print_json({"events": events})
            return
        console = _cli().console
        for e in events:
            console.print(_event_lines(e))
