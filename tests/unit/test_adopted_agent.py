"""AdoptedAgent: an agent an earlier gateway process started, seen through /proc (a fake one)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gateway.providers.adopted import GONE, AdoptedAgent, option

ARGV = [b"python", b"-m", b"capsule_runtime.agent", b"--instance-id", b"i-1", b""]


def fake_proc(root: Path, pid: int, argv: list[bytes], state: str = "S") -> None:
    entry = root / str(pid)
    entry.mkdir(parents=True, exist_ok=True)
    (entry / "cmdline").write_bytes(b"\0".join(argv))
    (entry / "stat").write_text(f"{pid} (python (x)) {state} 1 {pid} {pid} 0")


def test_running_while_the_same_command_lives(tmp_path: Path) -> None:
    fake_proc(tmp_path, 42, ARGV)
    agent = AdoptedAgent(42, ARGV, proc=tmp_path)
    assert agent.running() and agent.poll() is None
    fake_proc(tmp_path, 42, ARGV, state="Z")  # ended, not yet reaped
    assert not agent.running() and agent.poll() == GONE
    fake_proc(tmp_path, 42, [b"sleep", b"10"])  # the pid went to another command
    assert not agent.running()
    assert agent.wait(timeout=1) == GONE


def test_wait_times_out_while_it_runs(tmp_path: Path) -> None:
    fake_proc(tmp_path, 7, ARGV)
    with pytest.raises(subprocess.TimeoutExpired):
        AdoptedAgent(7, ARGV, proc=tmp_path).wait(timeout=0.2)


def test_option_reads_a_value_from_the_command_line() -> None:
    argv = [b"x", b"--imds-url", b"http://127.0.0.1:4242", b"--y"]
    assert option(argv, "--imds-url") == "http://127.0.0.1:4242"
    assert option(argv, "--y") is None
