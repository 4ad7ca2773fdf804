"""Stopping tescape (SIGTERM) while a stateful task runs, then starting it again on the same data
directory: the task was moved into a capsule on the way down and goes on from it after the
start — its counter, pipe and loopback connection continue, nothing runs twice."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.gateway_process import agent_pids, attempts_of, capsules, container_exists
from tests.fixtures.server import tescape_server
from tests.fixtures.stateful import count_lines, numbers, stateful_task, work_dirs
from tests.fixtures.tasks import admin, ended, events, get, submit, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="CRIU needs root")


def test_a_restart_of_tescape_loses_no_running_work(tmp_path: Path, busybox_image: str) -> None:
    config: dict[str, Any] = {
        "images": {"rewrites": {"alpine": busybox_image}},
        "storage": {"allowed_dirs": [str(tmp_path)]},
        "scheduler": {"interval_seconds": 0.2},
        "providers": {"local": {"max_instances": 1}},
        "capsules": {"store": str(tmp_path / "capsules"), "interval_seconds": 0},
    }
    n = 80
    with tescape_server(tmp_path / "data", config=config, run_tasks=True) as first:
        task_id = submit(first, stateful_task(tmp_path, "restart", n, 0.1, 8))
        wait_for("the counter to pass 10", lambda: count_lines(tmp_path, task_id) >= 10, srv=first)
    # stopped: the task was checkpointed on the way down, and still RUNNING to its client
    down_log = (tmp_path / "data" / "server.log").read_text()
    assert "moving 1 running tasks into capsules" in down_log, down_log[-3000:]
    # a capsule holds the task's whole memory: files 0600, folders 0700 (issue 10)
    store = [tmp_path / "capsules", *(tmp_path / "capsules").rglob("*")]
    assert len(store) > 1
    for path in store:
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600), path

    with tescape_server(tmp_path / "data", config=config, run_tasks=True) as second:
        assert get(second, task_id, "MINIMAL")["state"] == "RUNNING"
        task = ended(second, task_id)
        assert task["state"] == "COMPLETE", task
        attempts = admin(second, "GET", f"/tasks/{task_id}/attempts").json()["attempts"]
    out = tmp_path / "out" / "restart"
    for name in ("count", "pipe.log", "net.log"):
        assert numbers(out / name) == list(range(1, n + 1)), name  # continued, never from 1
    assert [a["reason"] for a in attempts] == ["first", "shutdown"], attempts
    assert task["logs"][-1]["metadata"]["restored_from"]


def test_a_killed_gateway_adopts_its_running_agent(tmp_path: Path, busybox_image: str) -> None:
    """The gateway dies (SIGKILL) while a stateful task runs, with no capsule of it anywhere,
    and another task waits QUEUED for room. The agent lives on in a session of its own and keeps
    running its task; the gateway started again on the same data dir (on another port: the
    agent reads where it went) adopts that agent. The task goes on in the same container under
    the same attempt (never restored, restarted or lost), the agent's polls and final report
    reach the new process, the counter runs 1..n without a gap; the queued task runs once."""
    config: dict[str, Any] = {
        "images": {"rewrites": {"alpine": busybox_image}},
        "storage": {"allowed_dirs": [str(tmp_path)]},
        "scheduler": {"interval_seconds": 0.2},
        "providers": {"local": {"max_instances": 1}},
        "capsules": {"store": str(tmp_path / "capsules"), "interval_seconds": 0},
    }
    task = stateful_task(tmp_path, "adopted", 20, 0.1, 1, gate="/work/.release")
    with tescape_server(tmp_path / "data", config=config, run_tasks=True) as first:
        task_id = submit(first, task)
        wait_for("the counter to pass 5", lambda: count_lines(tmp_path, task_id) >= 5, srv=first)
        [before] = attempts_of(first, task_id)
        # a second task that fits the instance only once the first is done waits QUEUED
        [instance] = admin(first, "GET", "/instances").json()["instances"]
        cores = instance["capacity"]["cpu_cores"]
        queued = submit(
            first,
            {
                "executors": [{"image": "alpine", "command": ["echo", "queued"]}],
                "resources": {"cpu_cores": cores},
            },
        )
        assert get(first, queued, "MINIMAL")["state"] == "QUEUED"
        port = int(first.url.rpartition(":")[2])
        first.process.kill()  # no shutdown: nothing is moved into a capsule on the way down
        first.process.wait()
    agents = agent_pids(before["instance_id"])
    assert agents, "the agent should outlive a SIGKILLed gateway"
    at_kill = count_lines(tmp_path, task_id)

    # started on another port: the agent reads where it went (instances/gateway.url)
    with tescape_server(tmp_path / "data", config=config, run_tasks=True) as second:
        assert not second.url.endswith(f":{port}")
        wait_for("the adoption", lambda: "adopted the agent an earlier" in second.log())
        assert get(second, task_id, "MINIMAL")["state"] == "RUNNING"
        # the container ran on while no gateway was there, and runs on now
        wait_for(
            "the counter to go on",
            lambda: count_lines(tmp_path, task_id) > at_kill + 10,
            srv=second,
        )
        [instance] = admin(second, "GET", "/instances").json()["instances"]
        assert (instance["id"], instance["state"]) == (before["instance_id"], "READY"), instance
        gateway = (tmp_path / "data" / "gateway.id").read_text().strip()
        assert instance["owner"] == gateway  # the same data dir: the same gateway id
        for work in work_dirs(tmp_path, task_id):
            with contextlib.suppress(OSError):
                (work / ".release").touch()
        done = ended(second, task_id)
        assert done["state"] == "COMPLETE", done
        assert ended(second, queued)["state"] == "COMPLETE"  # then the queued one, once
        assert len(attempts_of(second, queued)) == 1
        [after] = attempts_of(second, task_id)
        found = events(second, task_id)
    kinds = [e["kind"] for e in found]
    assert not [e for e in found if "lost" in (e.get("message") or "")], found
    assert after["id"] == before["id"] and after["reason"] == "first", after
    for kind in ("restart_from_scratch", "restored"):
        assert kind not in kinds, kinds
    assert not done["logs"][-1].get("metadata", {}).get("restored_from"), done["logs"][-1]
    for name in ("count", "pipe.log", "net.log"):
        counted = numbers(tmp_path / "out" / "adopted" / name)
        assert len(counted) >= 20 and counted == list(range(1, len(counted) + 1)), name
    # the second gateway's graceful stop stopped the agent it adopted
    assert not agent_pids(before["instance_id"])


def test_a_killed_gateway_whose_agent_died_too_recovers_from_the_capsule(
    tmp_path: Path, busybox_image: str
) -> None:
    """The gateway dies (SIGKILL), then its agent too (the machine is gone): the next start finds
    nothing to adopt, removes the containers that agent left, and the task goes on from its
    newest capsule, not from the beginning."""
    config: dict[str, Any] = {
        "images": {"rewrites": {"alpine": busybox_image}},
        "storage": {"allowed_dirs": [str(tmp_path)]},
        "scheduler": {"interval_seconds": 0.2},
        "providers": {"local": {"max_instances": 1}},
        "capsules": {"store": str(tmp_path / "capsules"), "interval_seconds": 0},
    }
    task = stateful_task(tmp_path, "killed", 40, 0.1, 1, gate="/work/.release")
    task["resources"]["backend_parameters"]["checkpoint_interval"] = "1s"
    with tescape_server(tmp_path / "data", config=config, run_tasks=True) as first:
        task_id = submit(first, task)
        wait_for("a periodic capsule", lambda: capsules(first, task_id), srv=first)
        [old] = {a["instance_id"] for a in attempts_of(first, task_id)}
        ledger = tmp_path / "data" / "instances" / old / "containers"
        old_containers = {p.name for p in ledger.iterdir()}
        assert old_containers
        first.process.kill()  # no shutdown: nothing is moved into a capsule on the way down
        first.process.wait()
    [pid] = agent_pids(old)
    os.killpg(int(pid), signal.SIGKILL)  # the machine goes too (its containers run on here)
    wait_for("the agent to die", lambda: not agent_pids(old))

    with tescape_server(tmp_path / "data", config=config, run_tasks=True) as second:
        wait_for(
            "the old container to be removed",
            lambda: not [c for c in old_containers if container_exists(c)],
            srv=second,
        )
        wait_for(
            "the restore",
            lambda: any(e["kind"] == "restored" for e in events(second, task_id)),
            srv=second,
        )
        for work in work_dirs(tmp_path, task_id):
            with contextlib.suppress(OSError):
                (work / ".release").touch()
        done = ended(second, task_id)
        assert done["state"] == "COMPLETE", done
        kinds = [e["kind"] for e in events(second, task_id)]
        assert "restart_from_scratch" not in kinds, kinds
    counted = numbers(tmp_path / "out" / "killed" / "count")
    assert len(counted) >= 40 and counted == list(range(1, len(counted) + 1))


def test_a_gateway_killed_as_it_orders_a_move_restores_the_task_after_restart(
    tmp_path: Path, busybox_image: str
) -> None:
    """The gateway is SIGKILLed the moment it accepts a migration (the checkpoint order out, or
    about to be): the adopted agent's capsule and `interrupted` reports reach the restarted
    gateway (retried until it answers, at its new address), and the task continues from that
    capsule on a new instance — never from the beginning."""
    config: dict[str, Any] = {
        "images": {"rewrites": {"alpine": busybox_image}},
        "storage": {"allowed_dirs": [str(tmp_path)]},
        "scheduler": {"interval_seconds": 0.2},
        "providers": {"local": {"max_instances": 1}},
        "capsules": {"store": str(tmp_path / "capsules"), "interval_seconds": 0},
    }
    task = stateful_task(tmp_path, "moving", 20, 0.1, 1, gate="/work/.release")
    with tescape_server(tmp_path / "data", config=config, run_tasks=True) as first:
        task_id = submit(first, task)
        wait_for("the counter to pass 5", lambda: count_lines(tmp_path, task_id) >= 5, srv=first)
        assert admin(first, "POST", f"/tasks/{task_id}:migrate").status_code == 202
        first.process.kill()
        first.process.wait()
    with tescape_server(tmp_path / "data", config=config, run_tasks=True) as second:
        wait_for(
            "the restore",
            lambda: any(e["kind"] == "restored" for e in events(second, task_id)),
            timeout=120,
            srv=second,
        )
        for work in work_dirs(tmp_path, task_id):
            with contextlib.suppress(OSError):
                (work / ".release").touch()
        done = ended(second, task_id)
        assert done["state"] == "COMPLETE", done
        kinds = [e["kind"] for e in events(second, task_id)]
        attempts = attempts_of(second, task_id)
    assert "restart_from_scratch" not in kinds, kinds
    assert [a["reason"] for a in attempts] == ["first", "manual"], attempts
    for name in ("count", "pipe.log", "net.log"):
        counted = numbers(tmp_path / "out" / "moving" / name)
        assert len(counted) >= 20 and counted == list(range(1, len(counted) + 1)), name


class HeldInput:
    """An http input that answers only once released: its task stays INITIALIZING (staging)."""

    def __init__(self) -> None:
        self.asked, self.released = threading.Event(), threading.Event()
        held = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                held.asked.set()
                held.released.wait(120)
                body = b"staged across a restart\n"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/in.txt"

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


def test_a_killed_gateway_adopts_an_agent_staging_inputs(
    tmp_path: Path, busybox_image: str
) -> None:
    """The gateway dies (SIGKILL) while a task is INITIALIZING (its input still downloading);
    the restarted gateway adopts the agent, and the task runs to COMPLETE under its first and
    only attempt."""
    config: dict[str, Any] = {
        "images": {"rewrites": {"alpine": busybox_image}},
        "storage": {"allowed_dirs": [str(tmp_path)]},
        "scheduler": {"interval_seconds": 0.2},
        "providers": {"local": {"max_instances": 1}},
        "capsules": {"store": str(tmp_path / "capsules"), "interval_seconds": 0},
    }
    held = HeldInput()
    task = {
        "inputs": [{"url": held.url, "path": "/work/in.txt"}],
        "executors": [{"image": "alpine", "command": ["cat", "/work/in.txt"]}],
    }
    try:
        with tescape_server(tmp_path / "data", config=config, run_tasks=True) as first:
            task_id = submit(first, task)
            wait_for("the input download", held.asked.is_set, srv=first)
            assert get(first, task_id, "MINIMAL")["state"] == "INITIALIZING"
            [before] = attempts_of(first, task_id)
            first.process.kill()
            first.process.wait()
        with tescape_server(tmp_path / "data", config=config, run_tasks=True) as second:
            wait_for("the adoption", lambda: "adopted the agent an earlier" in second.log())
            held.released.set()
            done = ended(second, task_id)
            assert done["state"] == "COMPLETE", done
            assert done["logs"][-1]["logs"][0]["stdout"] == "staged across a restart\n"
            [after] = attempts_of(second, task_id)
            assert after["id"] == before["id"]
    finally:
        held.close()
