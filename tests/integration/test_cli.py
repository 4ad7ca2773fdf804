"""`tescape` server commands run as a user runs them (a subprocess, COLUMNS=80) against a real
`tescape serve`: ids print whole, `--json` shapes, exit codes, logs and events, completion."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fixtures.cli import tescape
from tests.fixtures.server import API_CONFIG, RunningServer, tescape_server
from tests.fixtures.tasks import cancel

LONG_NAME = "a-task-with-a-name-long-enough-to-crowd-an-eighty-column-terminal"
TASK = {"name": LONG_NAME, "executors": [{"image": "busybox", "command": ["true"]}]}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with tescape_server(tmp_path_factory.mktemp("cli"), config=API_CONFIG) as running:
        yield running


def create(srv: RunningServer, **task: Any) -> str:
    resp = requests.post(srv.tes + "/tasks", json={**TASK, **task}, timeout=30)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["id"])


def test_task_ids_print_whole_on_80_columns(srv: RunningServer) -> None:
    ids = [create(srv) for _ in range(3)]
    out = tescape(srv, "tasks", "list")
    assert out.returncode == 0, out.stderr
    for task_id in ids:
        assert task_id in out.stdout, out.stdout
    assert max(len(line) for line in out.stdout.splitlines()) <= 80
    assert "…" not in out.stdout


def test_tasks_list_json_shape(srv: RunningServer) -> None:
    task_id = create(srv)
    out = tescape(srv, "tasks", "list", "--json", "--limit", "500")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert set(doc) == {"tasks", "next_page_token"}
    assert task_id in [t["id"] for t in doc["tasks"]]
    assert all({"id", "state"} <= set(t) for t in doc["tasks"])


def test_other_listings_json_shapes(srv: RunningServer) -> None:
    assert tescape(srv, "apps", "add", "cli-app", "docker.io/library/busybox:1").returncode == 0
    apps = json.loads(tescape(srv, "apps", "list", "--json").stdout)
    assert set(apps) == {"apps"} and "cli-app" in [a["name"] for a in apps["apps"]]
    table = tescape(srv, "apps", "list")
    assert table.returncode == 0 and "cli-app" in table.stdout
    instances = tescape(srv, "instances", "list", "--json")
    assert instances.returncode == 0, instances.stderr
    assert json.loads(instances.stdout) == {"instances": []}  # the scheduler is off
    market = tescape(srv, "market", "show", "--json")
    assert market.returncode == 0, market.stderr
    assert {"time", "zones", "types", "quarantines"} <= set(json.loads(market.stdout))
    status = tescape(srv, "status", "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["status"] in ("ok", "degraded")


def test_events_table_and_json(srv: RunningServer) -> None:
    task_id = create(srv)
    cancel(srv, task_id)
    out = tescape(srv, "tasks", "events", task_id, "--json")
    assert out.returncode == 0, out.stderr
    events = json.loads(out.stdout)
    assert set(events) == {"events"} and events["events"]
    assert all({"time", "kind"} <= set(e) for e in events["events"])
    table = tescape(srv, "tasks", "events", task_id)
    assert table.returncode == 0, table.stderr
    assert events["events"][-1]["kind"] in table.stdout


def test_logs_of_a_task_without_streams(srv: RunningServer) -> None:
    task_id = create(srv)
    out = tescape(srv, "tasks", "logs", task_id)  # QUEUED: nothing yet, said on stderr
    assert out.returncode == 0 and out.stdout == "" and "no full stdout" in out.stderr
    cancel(srv, task_id)
    started = time.monotonic()
    follow = tescape(srv, "tasks", "logs", "-f", task_id)  # cancelled before running: ends
    assert follow.returncode == 0 and "CANCELED" in follow.stderr
    assert time.monotonic() - started < 25  # no wait for a stream that will never come


@pytest.mark.parametrize(
    "args",
    [
        ("tasks", "get", "nosuchtask"),
        ("tasks", "events", "nosuchtask"),
        ("tasks", "logs", "nosuchtask"),
        ("tasks", "logs", "-f", "nosuchtask"),
        ("tasks", "cancel", "nosuchtask"),
    ],
)
def test_not_found_exits_4(srv: RunningServer, args: tuple[str, ...]) -> None:
    out = tescape(srv, *args)
    assert out.returncode == 4, (out.stdout, out.stderr)
    assert "error 404" in out.stderr


def test_usage_errors_exit_2(srv: RunningServer) -> None:
    assert tescape(srv, "tasks", "logs").returncode == 2  # a missing argument (click)
    assert tescape(srv, "tasks", "logs", "x", "--stream", "stdin").returncode == 2
    bad_state = tescape(srv, "tasks", "list", "--state", "NOT_A_STATE")  # the server's 400
    assert bad_state.returncode == 2, bad_state.stderr


def test_an_unreachable_server_exits_1() -> None:
    for args in (("tasks", "list", "--json"), ("instances", "list"), ("tasks", "logs", "x")):
        out = tescape(None, *args)
        assert out.returncode == 1 and "cannot reach" in out.stderr, out.stderr


def test_shell_completion(tmp_path: Path) -> None:
    script = tescape(None, env={"_TESCAPE_COMPLETE": "bash_source"})
    assert script.returncode == 0 and "_tescape_completion" in script.stdout
    words = tescape(
        None,
        env={
            "_TESCAPE_COMPLETE": "bash_complete",
            "COMP_WORDS": "tescape tasks l",
            "COMP_CWORD": "2",
        },
    )
    assert "logs" in words.stdout and "list" in words.stdout


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory, busybox_image: str) -> Iterator[RunningServer]:
    config = {
        "images": {"rewrites": {"busybox": busybox_image}},
        "scheduler": {"interval_seconds": 0.2},
    }
    data = tmp_path_factory.mktemp("cli-run")
    with tescape_server(data, config=config, run_tasks=True) as running:
        yield running


def test_logs_follow_a_running_task(runner: RunningServer) -> None:
    script = "echo one; echo oops >&2; sleep 2; echo two"
    task_id = create(runner, executors=[{"image": "busybox", "command": ["sh", "-c", script]}])
    follow = tescape(runner, "tasks", "logs", "-f", "--interval", "1", task_id)
    assert follow.returncode == 0, follow.stderr
    assert follow.stdout == "one\ntwo\n" and "COMPLETE" in follow.stderr
    stderr = tescape(runner, "tasks", "logs", "--stream", "stderr", task_id)
    assert stderr.returncode == 0 and stderr.stdout == "oops\n"
    assert tescape(runner, "tasks", "logs", "--executor", "1", task_id).returncode == 0
    events = json.loads(tescape(runner, "tasks", "events", "--json", task_id).stdout)["events"]
    attempt = next(e["attempt_id"] for e in events if e.get("attempt_id"))
    table = tescape(runner, "tasks", "events", task_id)
    assert attempt in table.stdout  # whole, on 80 columns


def test_task_ids_complete_from_the_server(srv: RunningServer) -> None:
    task_id = create(srv)
    env = {
        "_TESCAPE_COMPLETE": "bash_complete",
        "COMP_WORDS": f"tescape tasks logs {task_id[:-3]}",
        "COMP_CWORD": "3",
    }
    words = tescape(srv, env=env)
    assert words.returncode == 0 and f"plain,{task_id}" in words.stdout.splitlines()
    unreachable = tescape(None, env=env)  # a Tab press on a dead server: nothing, no error
    assert unreachable.returncode == 0 and unreachable.stdout.strip() == ""


def test_a_reclaimed_instance_shows_its_notice(srv: RunningServer) -> None:
    """Issue 13: an instance with a reclaim notice is DRAINING, with the notice's action and
    deadline, in the admin API and in `tescape instances list` (it used to stay READY)."""
    from capsule_runtime.protocol.messages import Notice
    from tests.fixtures.agents import add_instances

    [inst] = add_instances(srv.url, f"sqlite:///{srv.data_dir / 'tescape.db'}")
    deadline = "2026-12-02T12:00:00Z"
    resp = inst.call(
        "POST",
        f"/instances/{inst.instance_id}/notice",
        json=Notice(kind="terminate", time=deadline).model_dump(),
    )
    assert resp.status_code < 300, resp.text
    listed = requests.get(srv.url + "/api/v1/instances", timeout=10).json()["instances"]
    [shown] = [i for i in listed if i["id"] == inst.instance_id]
    assert shown["draining"] is True
    assert shown["interruption"] == {"action": "terminate", "deadline": deadline}
    out = tescape(srv, "instances", "list")
    assert out.returncode == 0, out.stderr
    for shown_text in ("DRAINING", "terminate at", "12:00:00Z"):  # the table may fold the cell
        assert shown_text in out.stdout, out.stdout
