"""The CRIU action script that holds a task frozen (capsule_runtime/engine/freeze.py), run as CRIU
runs it: it waits for the agent's thaw, and stops waiting when the agent that opened the gate is
gone (an agent killed mid-checkpoint must not leave CRIU, podman and the container lock held)."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from capsule_runtime.engine.freeze import GATES, HOOK, ensure_installed

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the gates live under /run")


def start_hook(tmp_path: Path, init_pid: str) -> subprocess.Popen[bytes]:
    ensure_installed(tmp_path)
    env = {**os.environ, "CRTOOLS_SCRIPT_ACTION": "post-dump", "CRTOOLS_INIT_PID": init_pid}
    return subprocess.Popen([str(tmp_path / HOOK.name)], env=env)


def wait_for(path: Path, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


@pytest.fixture
def gate() -> Iterator[Path]:
    path = GATES / f"test-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    yield path
    for child in path.iterdir():
        child.unlink()
    path.rmdir()


def test_the_hook_holds_until_thawed(tmp_path: Path, gate: Path) -> None:
    (gate / "owner").write_text(str(os.getpid()))
    hook = start_hook(tmp_path, gate.name)
    wait_for(gate / "frozen")
    with pytest.raises(subprocess.TimeoutExpired):
        hook.wait(timeout=0.3)  # still holding
    (gate / "thaw").touch()
    assert hook.wait(timeout=10) == 0


def test_the_hook_lets_go_when_its_agent_is_gone(tmp_path: Path, gate: Path) -> None:
    agent = subprocess.Popen(["sleep", "60"])
    (gate / "owner").write_text(str(agent.pid))
    hook = start_hook(tmp_path, gate.name)
    wait_for(gate / "frozen")
    agent.kill()
    agent.wait()
    assert hook.wait(timeout=10) == 0  # no thaw ever came


def test_no_gate_no_wait(tmp_path: Path) -> None:
    hook = start_hook(tmp_path, f"nobody-{uuid.uuid4().hex[:8]}")
    assert hook.wait(timeout=10) == 0
