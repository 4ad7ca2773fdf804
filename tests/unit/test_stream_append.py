"""The gateway's side of live logs (Dispatcher._append_stream): bytes stored from an offset; a
push sent again after a lost answer writes the same bytes at the same place; a push past the end
is refused with the size the gateway has, where the agent starts again."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.dispatch import STREAM_SETTLE_SECONDS, Dispatcher, StreamGap
from tests.fixtures.world import World, running_with


def test_pushes_append_and_a_resend_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "0.stdout"
    assert Dispatcher._append_stream(path, 0, [b"one\n"]) == 4
    assert Dispatcher._append_stream(path, 4, [b"two\n", b"three\n"]) == 14
    assert Dispatcher._append_stream(path, 4, [b"two\n", b"three\n"]) == 14  # the same again
    assert path.read_bytes() == b"one\ntwo\nthree\n"


def test_a_push_past_the_end_says_where_the_gateway_is(tmp_path: Path) -> None:
    path = tmp_path / "0.stdout"
    Dispatcher._append_stream(path, 0, [b"abc"])
    with pytest.raises(StreamGap) as gap:
        Dispatcher._append_stream(path, 10, [b"x"])
    assert gap.value.size == 3
    assert path.read_bytes() == b"abc"


def test_a_late_push_leaves_the_whole_stream_alone(tmp_path: Path) -> None:
    """The agent's whole stream (uploaded at the end) is marked with its attempt: a push of that
    attempt still on its way cannot cut it short, while a later attempt's pushes are stored."""
    path = tmp_path / "0.stdout"
    Dispatcher._append_stream(path, 0, [b"one\n"], "attempt-1")
    path.write_bytes(b"one\ntwo\nend\n")
    Dispatcher.final_marker(path).write_text("attempt-1")
    assert Dispatcher._append_stream(path, 0, [b"one\ntwo\n"], "attempt-1") == 12
    assert path.read_bytes() == b"one\ntwo\nend\n"
    assert Dispatcher._append_stream(path, 0, [b"again\n"], "attempt-2") == 6
    assert path.read_bytes() == b"again\n"


def test_a_stream_is_final_once_its_attempt_uploaded_it_or_long_after_it_ended(
    tmp_path: Path,
) -> None:
    """What `GET .../logs` says in X-Tescape-Stream, and `tasks logs -f` waits for: live while
    the executor runs and just after (the agent uploads the whole stream after its report);
    final with the attempt's whole stream, or, if that never comes, a while after the end."""
    world = World(tmp_path)
    inst, aid = running_with(world)
    attempt = world.fleet.attempt(aid)
    assert attempt is not None
    task_id = attempt.task_id
    dispatch = world.dispatch
    dispatch.save_stream(inst, aid, 0, "stdout", [b"line 1\n"], offset=0)
    assert not dispatch.stream_is_final(task_id, 0, "stdout")
    world.report(inst, aid, "complete")
    assert not dispatch.stream_is_final(task_id, 0, "stdout")  # the whole one is on its way
    dispatch.save_stream(inst, aid, 0, "stdout", [b"line 1\nline 2\nend\n"])
    assert dispatch.stream_is_final(task_id, 0, "stdout")
    assert dispatch.stream_path(task_id, 0, "stdout").read_bytes() == b"line 1\nline 2\nend\n"
    # stderr was never uploaded whole (an upload that failed, or a gateway before the marks)
    dispatch.save_stream(inst, aid, 0, "stderr", [b"oops\n"], offset=0)
    assert not dispatch.stream_is_final(task_id, 0, "stderr")
    world.clock.advance(STREAM_SETTLE_SECONDS + 1)
    assert dispatch.stream_is_final(task_id, 0, "stderr")
