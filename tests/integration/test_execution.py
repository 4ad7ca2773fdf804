"""Tasks really run: a real `tescape serve` with its local provider starts a worker agent, which
runs each executor in podman (busybox and Debian images built locally, mapped from `alpine` and
`ubuntu` by the gateway's rewrite rules)."""

from __future__ import annotations

import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fixtures import tasks
from tests.fixtures.server import RunningServer, tescape_server
from tests.fixtures.tasks import cancel, wait_state


@pytest.fixture(scope="module")
def exec_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("exec")


@pytest.fixture(scope="module")
def runner(
    exec_root: Path,
    busybox_image: str,
    debian_bash_image: str,
) -> Iterator[RunningServer]:
    root = exec_root
    config = {
        "images": {"rewrites": {"alpine": busybox_image, "ubuntu": debian_bash_image}},
        "storage": {"allowed_dirs": [str(root)]},
        "scheduler": {"interval_seconds": 0.2},
    }
    with tescape_server(root / "data", config=config, run_tasks=True) as srv:
        yield srv


def submit(srv: RunningServer, **task: Any) -> str:
    task.setdefault("executors", [{"image": "alpine", "command": ["echo", "hello"]}])
    return tasks.submit(srv, task)


def test_echo_completes_with_logs(runner: RunningServer) -> None:
    task = wait_state(runner, submit(runner))
    assert task["state"] == "COMPLETE", task
    [task_log] = task["logs"]
    [ex] = task_log["logs"]
    assert ex["exit_code"] == 0 and ex["stdout"] == "hello\n"
    assert ex["start_time"] <= ex["end_time"]
    assert task_log["start_time"] <= task_log["end_time"]
    assert task_log["metadata"]["instance_type"] and task_log["metadata"]["market"] == "spot"


def test_exit_code_3_is_executor_error(runner: RunningServer) -> None:
    task = wait_state(
        runner, submit(runner, executors=[{"image": "alpine", "command": ["sh", "-c", "exit 3"]}])
    )
    assert task["state"] == "EXECUTOR_ERROR"
    assert task["logs"][0]["logs"][0]["exit_code"] == 3


@pytest.mark.parametrize(
    ("ignore", "count", "state"), [(False, 1, "EXECUTOR_ERROR"), (True, 2, "COMPLETE")]
)
def test_ignore_error_chains(runner: RunningServer, ignore: bool, count: int, state: str) -> None:
    executors = [
        {"image": "alpine", "command": ["ERROR"], "ignore_error": ignore},
        {"image": "alpine", "command": ["echo", "hello"]},
    ]
    task = wait_state(runner, submit(runner, executors=executors))
    assert task["state"] == state
    assert len(task["logs"][0]["logs"]) == count
    assert task["logs"][0]["logs"][0]["exit_code"] == 127


def test_executors_share_the_work_area_env_workdir_stdio(
    runner: RunningServer, tmp_path: Path
) -> None:
    executors = [
        {
            "image": "alpine",
            "command": ["sh", "-c", "echo $GREETING > /work/a.txt"],
            "env": {"GREETING": "hi"},
        },
        {
            "image": "alpine",
            "command": ["cat"],
            "workdir": "/work",
            "stdin": "/work/a.txt",
            "stdout": "/work/out.txt",
            "stderr": "/work/err.txt",
        },
        {"image": "alpine", "command": ["sh", "-c", "pwd; cat out.txt"], "workdir": "/work"},
    ]
    task = wait_state(runner, submit(runner, executors=executors, volumes=["/work"]))
    assert task["state"] == "COMPLETE", task
    assert task["logs"][0]["logs"][2]["stdout"] == "/work\nhi\n"


def test_cancel_while_running_stops_the_container(runner: RunningServer) -> None:
    task_id = submit(runner, executors=[{"image": "alpine", "command": ["sleep", "300"]}])
    wait_state(runner, task_id, {"RUNNING"})
    assert cancel(runner, task_id) == {}
    task = wait_state(runner, task_id, timeout=60)
    assert task["state"] == "CANCELED"


def test_full_logs_events_and_instances_in_the_admin_api(runner: RunningServer) -> None:
    script = "i=0; while [ $i -lt 20000 ]; do echo line$i; i=$((i+1)); done"
    task_id = submit(runner, executors=[{"image": "alpine", "command": ["sh", "-c", script]}])
    task = wait_state(runner, task_id)
    tail = task["logs"][0]["logs"][0]["stdout"]
    assert len(tail.encode()) <= 65536 and tail.endswith("line19999\n")
    full = full_stream(runner, task_id, 0, "stdout", wait_s=15)  # saved after the final report
    assert full.startswith("line0\n") and full.count("\n") == 20000
    events = requests.get(f"{runner.url}/api/v1/tasks/{task_id}/events", timeout=10).json()[
        "events"
    ]
    states = [e["to_state"] for e in events if e.get("to_state")]
    assert states == ["QUEUED", "INITIALIZING", "RUNNING", "COMPLETE"]
    assert any(e.get("attempt_id") and e.get("instance_id") for e in events)
    instances = requests.get(f"{runner.url}/api/v1/instances", timeout=10).json()["instances"]
    assert instances and {
        "id",
        "instance_type",
        "market",
        "zone",
        "state",
        "price_per_hour",
        "task_ids",
    } <= set(instances[0])


def test_inputs_staged_and_outputs_uploaded_even_on_failure(
    runner: RunningServer, exec_root: Path
) -> None:
    """CLIENTS.md: outputs are uploaded even when an executor fails; a missing output is logged
    and skipped; size_bytes is a string; the same path may be an input and an output."""
    src = exec_root / "in.txt"
    src.write_text("from disk\n")
    out_dir = exec_root / "out"
    task = {
        "inputs": [
            {"path": "/work/script.sh", "content": "cat /work/in.txt > /work/result.txt; exit 1"},
            {"url": str(src), "path": "/work/in.txt"},
        ],
        "outputs": [
            {"path": "/work/result.txt", "url": f"file://{out_dir}/result.txt"},
            {"path": "/work/script.sh", "url": str(out_dir / "script.sh")},
            {"path": "/work/missing.txt", "url": str(out_dir / "missing.txt")},
        ],
        "executors": [{"image": "alpine", "command": ["sh", "/work/script.sh"]}],
    }
    done = wait_state(runner, submit(runner, **task))
    assert done["state"] == "EXECUTOR_ERROR"
    assert (out_dir / "result.txt").read_text() == "from disk\n"
    assert (out_dir / "script.sh").exists() and not (out_dir / "missing.txt").exists()
    logs = done["logs"][0]
    assert {o["path"]: o["size_bytes"] for o in logs["outputs"]}["/work/result.txt"] == "10"
    assert any("missing.txt" in line for line in logs["system_logs"])


def refused_at_create(srv: RunningServer, task: dict[str, Any]) -> dict[str, str]:
    """POST the task: 400, a JSON body naming each offending field; field → message."""
    task.setdefault("executors", [{"image": "alpine", "command": ["true"]}])
    resp = requests.post(srv.tes + "/tasks", json=task, timeout=10)
    assert resp.status_code == 400, resp.text
    assert resp.headers["Content-Type"].startswith("application/json")
    return {e["field"]: e["message"] for e in resp.json()["errors"]}


def test_local_paths_outside_allowed_dirs_are_refused_at_create(runner: RunningServer) -> None:
    """Issue 10: refused at create (400), not after placement."""
    errors = refused_at_create(
        runner,
        {
            "inputs": [{"url": "/etc/hostname", "path": "/work/h"}],
            "outputs": [{"url": "file:///etc/cron.d/x", "path": "/work/o"}],
        },
    )
    assert set(errors) == {"inputs[0].url", "outputs[0].url"}
    assert "outside the directories tasks may use" in errors["inputs[0].url"]


def test_the_servers_state_is_refused_at_create_even_under_an_allowed_parent(
    runner: RunningServer, exec_root: Path
) -> None:
    """allowed_dirs is exec_root, a parent of the data dir: the database, the secret key and
    the data dir itself are still refused, and so is a directory holding them."""
    data = runner.data_dir
    (exec_root / "to-db").unlink(missing_ok=True)
    (exec_root / "to-db").symlink_to(data / "tescape.db")
    errors = refused_at_create(
        runner,
        {
            "inputs": [
                {"url": f"file://{data}/tescape.db", "path": "/work/db"},
                {"url": str(exec_root / "to-db"), "path": "/work/db2"},
                {"url": f"file://{exec_root}/", "path": "/work/all", "type": "DIRECTORY"},
            ],
            "outputs": [{"url": f"{data}/secret.key", "path": "/work/o"}],
        },
    )
    assert set(errors) == {"inputs[0].url", "inputs[1].url", "inputs[2].url", "outputs[0].url"}
    assert all("tescape's own state" in m for m in errors.values()), errors
    assert "resolves to" in errors["inputs[1].url"]


def test_links_met_while_staging_never_reach_the_servers_state(
    runner: RunningServer, exec_root: Path
) -> None:
    """What the gateway cannot see at create (links inside a directory input, a directory output
    whose files land behind a link) the agent refuses: SYSTEM_ERROR, a system_logs line that
    says why, and the host untouched."""
    data = runner.data_dir
    db_before = (data / "tescape.db").stat().st_size
    leak = exec_root / "leak-in"
    leak.mkdir()
    (leak / "db").symlink_to(data / "tescape.db")
    done = wait_state(
        runner,
        submit(
            runner,
            inputs=[{"url": f"file://{leak}/", "path": "/work/in", "type": "DIRECTORY"}],
            executors=[{"image": "alpine", "command": ["cat", "/work/in/db"]}],
        ),
    )
    assert done["state"] == "SYSTEM_ERROR"
    lines = done["logs"][0]["system_logs"]
    assert any("symlink" in line and "tescape's own state" in line for line in lines), lines
    assert "logs" not in done["logs"][0] or not done["logs"][0]["logs"]

    out = exec_root / "leak-out"
    out.mkdir()
    (out / "state").symlink_to(data)
    marker = data / "planted.txt"
    done = wait_state(
        runner,
        submit(
            runner,
            outputs=[{"url": f"file://{out}/", "path": "/work/o/", "type": "DIRECTORY"}],
            executors=[
                {
                    "image": "alpine",
                    "command": [
                        "sh",
                        "-c",
                        "mkdir -p /work/o/state && echo x > /work/o/state/planted.txt",
                    ],
                }
            ],
        ),
    )
    assert done["state"] == "SYSTEM_ERROR"
    lines = done["logs"][0]["system_logs"]
    assert any("planted.txt" in line and "tescape's own state" in line for line in lines), lines
    assert not marker.exists()
    assert (data / "tescape.db").stat().st_size >= db_before  # still the server's own file


def test_the_servers_state_is_private_after_a_start(runner: RunningServer) -> None:
    """Issue 10: state files 0600, folders 0700 (the database and its WAL, logs, the secret key,
    instance folders and agent logs, capsules)."""
    data = runner.data_dir
    wait_state(runner, submit(runner))  # an instance, its folder and agent log exist
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    checked = 0
    for path in data.rglob("*"):
        rel = path.relative_to(data)
        if rel.parts[0] in ("config.yaml", "server.log") or path.is_symlink():
            continue  # written by the test fixture, not by tescape
        if rel.parts[0] == "instances" and (
            rel.parts[1:2] == ("tasks",) or (len(rel.parts) > 2 and rel.name != "agent.log")
        ):
            continue  # the agent's and its tasks' own files, inside the private instances folder
        want = 0o700 if path.is_dir() else 0o600
        assert stat.S_IMODE(path.lstat().st_mode) == want, rel
        checked += 1
    assert (data / "tescape.db").exists() and checked > 3


# -- a task never reaches the host through a path it controls (issue 10) ---------------------------


def full_stream(
    srv: RunningServer, task_id: str, executor: int, stream: str, wait_s: float = 0.0
) -> str:
    """The full stream saved after the final report ("" when none was saved); waits up to
    `wait_s` for it (streams are saved just after the final report, in executor order)."""
    url = f"{srv.url}/api/v1/tasks/{task_id}/logs?executor={executor}&stream={stream}"
    deadline = time.monotonic() + wait_s
    resp = requests.get(url, timeout=10)
    while resp.status_code == 404 and time.monotonic() < deadline:
        time.sleep(0.1)
        resp = requests.get(url, timeout=10)
    return resp.text if resp.status_code == 200 else ""


def test_a_stdout_symlink_to_the_host_creates_no_host_file(
    runner: RunningServer, tmp_path: Path
) -> None:
    victim = tmp_path / "cron.d" / "x"  # stands in for /etc/cron.d/x
    victim.parent.mkdir()
    executors = [
        {"image": "alpine", "command": ["ln", "-s", str(victim), "/work/o"]},
        {"image": "alpine", "command": ["echo", "* * * * * root pwned"], "stdout": "/work/o"},
    ]
    task = wait_state(runner, submit(runner, executors=executors, volumes=["/work"]))
    assert task["state"] == "EXECUTOR_ERROR", task
    assert not victim.exists() and list(victim.parent.iterdir()) == []
    lines = task["logs"][0]["system_logs"]
    assert any(
        "executor 1 could not start" in line
        and f"/work/o leads through a symlink to {victim}" in line
        and "outside the task's mounted directories" in line
        for line in lines
    ), lines


def test_a_stdin_symlink_to_the_host_never_reads_host_bytes(
    runner: RunningServer, tmp_path: Path
) -> None:
    secret = tmp_path / "hostname"  # stands in for /etc/hostname
    secret.write_text("host-secret-bytes\n")
    executors = [
        {"image": "alpine", "command": ["sh", "-c", f"ln -s {secret} /work/i; echo ok >&2"]},
        {"image": "alpine", "command": ["cat"], "stdin": "/work/i"},  # into the ExecutorLog
    ]
    task_id = submit(runner, executors=executors, volumes=["/work"])
    task = wait_state(runner, task_id)
    assert task["state"] == "EXECUTOR_ERROR", task
    assert "host-secret-bytes" not in str(task)
    assert full_stream(runner, task_id, 0, "stderr", wait_s=15) == "ok\n"  # the last one saved
    for index in (0, 1):
        for stream in ("stdout", "stderr"):
            assert "host-secret" not in full_stream(runner, task_id, index, stream)
    assert any(
        "executor 1 could not start" in line and "/work/i leads through a symlink" in line
        for line in task["logs"][0]["system_logs"]
    ), task


def test_a_link_inside_the_work_area_still_works(runner: RunningServer) -> None:
    """Links the container's way stay links the container's way: /work/o → /work/real."""
    executors = [
        {"image": "alpine", "command": ["sh", "-c", "echo in > /work/real; ln -s real /work/i"]},
        {"image": "alpine", "command": ["ln", "-s", "/work/sub/out", "/work/o"]},
        {"image": "alpine", "command": ["cat"], "stdin": "/work/i", "stdout": "/work/o"},
        {"image": "alpine", "command": ["cat", "/work/sub/out"]},
    ]
    task = wait_state(runner, submit(runner, executors=executors, volumes=["/work"]))
    assert task["state"] == "COMPLETE", task
    logs = task["logs"][0]["logs"]
    assert logs[2]["stdout"] == "in\n" and logs[3]["stdout"] == "in\n"


def test_a_stdout_file_swapped_for_a_host_link_is_not_read_back(
    runner: RunningServer, tmp_path: Path
) -> None:
    """The executor replaces its own stdout file with a link to a host file while it runs:
    neither the ExecutorLog's tail nor the full stream saved later carries the host's bytes;
    a later executor doing the same to an earlier one's file is caught as well."""
    secret = tmp_path / "shadow"
    secret.write_text("host-secret-bytes\n")
    swap = f"echo mine; rm /work/o; ln -s {secret} /work/o"
    executors = [
        {"image": "alpine", "command": ["sh", "-c", swap], "stdout": "/work/o"},
        {"image": "alpine", "command": ["sh", "-c", "echo two"], "stdout": "/work/p"},
        {
            "image": "alpine",
            "command": ["sh", "-c", f"rm /work/p; ln -s {secret} /work/p; echo done >&2"],
        },
    ]
    task_id = submit(runner, executors=executors, volumes=["/work"])
    task = wait_state(runner, task_id)
    assert task["state"] == "COMPLETE", task
    assert "host-secret-bytes" not in str(task)
    logs = task["logs"][0]["logs"]
    assert logs[0]["stdout"] == "" and logs[1]["stdout"] == "two\n"
    assert any("executor 0's stdout is not read" in s for s in task["logs"][0]["system_logs"])
    assert full_stream(runner, task_id, 2, "stderr", wait_s=15) == "done\n"  # the last saved
    for index in (0, 1, 2):
        assert "host-secret" not in full_stream(runner, task_id, index, "stdout")
    assert secret.read_text() == "host-secret-bytes\n"


def test_a_dangling_link_out_of_a_file_directory_input_ends_the_task(
    runner: RunningServer, exec_root: Path
) -> None:
    """A dangling link in a file:// directory input that points anywhere but down into it is
    refused at staging (SYSTEM_ERROR, said in system_logs): a later write through it — by
    another input, or by the agent for a stdio path — could otherwise create a host file."""
    src = exec_root / "linkdir"
    src.mkdir()
    victim = exec_root / "victim-dangling"
    (src / "evil").symlink_to(victim)
    executors = [{"image": "alpine", "command": ["echo", "pwned"], "stdout": "/work/in/evil"}]
    inputs = [{"url": f"file://{src}", "path": "/work/in", "type": "DIRECTORY"}]
    task = wait_state(runner, submit(runner, executors=executors, inputs=inputs))
    assert task["state"] == "SYSTEM_ERROR", task
    assert not victim.exists()
    assert any(
        "input staging failed" in line and "dangling link is copied only when" in line
        for line in task["logs"][0]["system_logs"]
    ), task
