"""`tescape submit` run as a user runs it (a subprocess) against a real `tescape serve`: the task
the flags describe, task files in JSON and YAML, clear refusals of bad input (exit 2), and
`--wait` following a real task to its end (exit 0 COMPLETE, 1 failed)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fixtures.cli import tescape
from tests.fixtures.server import API_CONFIG, RunningServer, tescape_server


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with tescape_server(tmp_path_factory.mktemp("submit"), config=API_CONFIG) as running:
        yield running


def stored(srv: RunningServer, task_id: str) -> dict:
    resp = requests.get(f"{srv.tes}/tasks/{task_id}?view=FULL", timeout=30)
    resp.raise_for_status()
    return dict(resp.json())


def test_flags_make_the_task(srv: RunningServer) -> None:
    out = tescape(
        srv,
        "submit",
        "--image",
        "busybox",
        "--cpu",
        "2",
        "--mem",
        "512M",
        "--disk",
        "2G",
        "--name",
        "flags",
        "--tag",
        "project=x=y",
        "--env",
        "GREETING=hi",
        "--input",
        "/in/data.txt=file:///tmp/data.txt",
        "--output",
        "/out/=file:///tmp/results/",
        "--",
        "sh",
        "-c",
        "echo $GREETING --not-an-option",
    )
    assert out.returncode == 0, out.stderr
    task_id = out.stdout.strip()
    task = stored(srv, task_id)
    assert task["name"] == "flags" and task["tags"] == {"project": "x=y"}
    assert task["resources"]["cpu_cores"] == 2
    assert task["resources"]["ram_gb"] == 0.5 and task["resources"]["disk_gb"] == 2.0
    executor = task["executors"][0]
    assert executor["command"] == ["sh", "-c", "echo $GREETING --not-an-option"]
    assert executor["env"] == {"GREETING": "hi"}
    assert task["inputs"][0]["path"] == "/in/data.txt" and task["inputs"][0]["type"] == "FILE"
    assert task["outputs"][0]["path"] == "/out" and task["outputs"][0]["type"] == "DIRECTORY"


def test_json_output(srv: RunningServer) -> None:
    out = tescape(srv, "submit", "--json", "-i", "busybox", "--", "true")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert set(doc) == {"id", "state"} and doc["state"] == "QUEUED"
    assert stored(srv, doc["id"])["executors"][0]["command"] == ["true"]


@pytest.mark.parametrize("suffix", ["json", "yaml"])
def test_task_files(srv: RunningServer, tmp_path: Path, suffix: str) -> None:
    task: dict[str, Any] = {
        "name": f"from-{suffix}",
        "executors": [{"image": "busybox", "command": ["true"]}],
    }
    path = tmp_path / f"task.{suffix}"
    if suffix == "json":
        path.write_text(json.dumps(task))
    else:
        path.write_text("name: from-yaml\nexecutors:\n  - image: busybox\n    command: [true]\n")
        task["executors"][0]["command"] = [True]
    out = tescape(srv, "submit", str(path), "--json")  # options may follow the file
    if suffix == "yaml":  # YAML's bare `true` is a boolean: the server says which field
        assert out.returncode == 2 and "command" in out.stderr, out.stderr
        path.write_text("name: from-yaml\nexecutors:\n  - image: busybox\n    command: ['true']\n")
        out = tescape(srv, "submit", str(path), "--json")
    assert out.returncode == 0, out.stderr
    assert stored(srv, json.loads(out.stdout)["id"])["name"] == f"from-{suffix}"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--image", "busybox"), "no command"),
        (("--image", "busybox", "--mem", "lots", "--", "true"), "--mem"),
        (("--image", "busybox", "--cpu", "0", "--", "true"), "--cpu"),
        (("--image", "busybox", "--tag", "novalue", "--", "true"), "KEY=VALUE"),
        (("--image", "busybox", "--input", "s3://b/k", "--", "true"), "/path/in/container=URL"),
        (("--cpu", "2", "--", "true"), "need --image"),
        (("no-such-file.json",), "cannot read"),
        (("a.json", "b.json"), "one task FILE"),
    ],
)
def test_bad_input_exits_2(srv: RunningServer, args: tuple[str, ...], says: str) -> None:
    out = tescape(srv, "submit", *args)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert says in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_bad_files_exit_2(srv: RunningServer, tmp_path: Path) -> None:
    for name, text, says in [
        ("list.yaml", "- 1\n- 2\n", "is a mapping"),
        ("broken.yaml", "name: [unclosed\n", "neither JSON nor YAML"),
        ("empty.json", "{}", "no `executors`"),
    ]:
        (tmp_path / name).write_text(text)
        out = tescape(srv, "submit", str(tmp_path / name))
        assert out.returncode == 2 and says in out.stderr, (name, out.stderr)


def test_an_unreachable_server_exits_1() -> None:
    out = tescape(None, "submit", "-i", "busybox", "--", "true")
    assert out.returncode == 1 and "cannot reach" in out.stderr


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory, busybox_image: str) -> Iterator[RunningServer]:
    config = {
        "images": {"rewrites": {"busybox": busybox_image}},
        "scheduler": {"interval_seconds": 0.2},
    }
    data = tmp_path_factory.mktemp("submit-run")
    with tescape_server(data, config=config, run_tasks=True) as running:
        yield running


def test_wait_follows_to_the_end(runner: RunningServer) -> None:
    ok = tescape(runner, "submit", "--wait", "-i", "busybox", "--", "sh", "-c", "exit 0")
    assert ok.returncode == 0, ok.stderr
    task_id = ok.stdout.strip()
    assert f"task {task_id}: COMPLETE" in ok.stderr
    assert "\x1b[" not in ok.stderr  # not a terminal: no spinner
    failed = tescape(runner, "submit", "--wait", "--json", "-i", "busybox", "--", "false")
    assert failed.returncode == 1, failed.stderr
    doc = json.loads(failed.stdout)
    assert doc["state"] == "EXECUTOR_ERROR" and set(doc) == {"id", "state"}
