"""The real CRIU on this host, without podman: version, `criu check`, and a checkpoint/restore of a
plain process tree (two processes, an in-memory counter, a pipe or a loopback TCP connection between
them, a file that keeps growing).

Every process tree here runs under a small *reaper* (a child of pytest that makes itself the child
subreaper), because `criu dump` kills the tree and `criu restore -d` leaves it orphaned: without a
subreaper the orphans would go to PID 1, which on some hosts (this Firecracker VM) never reaps them.
The reaper reports each child it reaps, so a test also learns when `criu restore` has returned.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from capsule_runtime.host import criu as host_criu
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="CRIU checkpoint/restore needs root (CAP_SYS_ADMIN)"
)

# Runs CMD... as its child (own session, stdio to LOG), reaps it and every orphan reparented to it,
# and prints one JSON line per event: {"started": pid} then {"pid", "status", "t"} per reaped child.
REAPER = r"""
import ctypes, json, os, subprocess, sys, time
PR_SET_CHILD_SUBREAPER = 36
if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
    sys.exit("prctl(PR_SET_CHILD_SUBREAPER) failed")
start = time.monotonic()
with open(sys.argv[1], "ab") as log:
    child = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                             start_new_session=True)
print(json.dumps({"started": child.pid}), flush=True)
while True:
    try:
        pid, status = os.wait()
    except ChildProcessError:
        break
    print(json.dumps({"pid": pid, "status": status, "t": time.monotonic() - start}), flush=True)
"""

# The checkpointed program: the parent counts in memory and sends each number to its child over a
# pipe or a loopback TCP connection; the child appends the numbers to a file, one per line.
WORKLOAD = r"""
import json, os, socket, sys, time
channel, out_path, state_path = sys.argv[1:4]

def copy_lines(recv):
    out = os.open(out_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    pending = b""
    while True:
        data = recv(4096)
        if not data:
            os._exit(0)
        pending += data
        complete, _, pending = pending.rpartition(b"\n")
        if complete:
            os.write(out, complete + b"\n")

port = None
if channel == "pipe":
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(w)
        copy_lines(lambda n: os.read(r, n))
    os.close(r)
    send = lambda data: os.write(w, data)
else:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    child = os.fork()
    if child == 0:
        listener.close()
        conn = socket.create_connection(("127.0.0.1", port))
        copy_lines(conn.recv)
    conn, _ = listener.accept()  # the listener stays open: CRIU dumps it too
    send = conn.sendall

tmp = state_path + ".tmp"
with open(tmp, "w") as f:
    json.dump({"parent": os.getpid(), "child": child, "port": port}, f)
os.rename(tmp, state_path)
counter = 0
while True:
    counter += 1
    send(b"%d\n" % counter)
    time.sleep(0.02)
"""


class Reaped:
    """A reaper process and the events it reports."""

    def __init__(self, log: Path, *argv: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", REAPER, str(log), *argv],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.events: queue.Queue[dict[str, float]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.started = int(self.next_event(30)["started"])

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(json.loads(line))

    def next_event(self, timeout: float) -> dict[str, float]:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the reaper reported nothing in {timeout} s") from None

    def wait_reaped(self, pids: set[int], timeout: float) -> dict[int, dict[str, float]]:
        got: dict[int, dict[str, float]] = {}
        deadline = time.monotonic() + timeout
        while not pids <= got.keys():
            event = self.next_event(max(0.1, deadline - time.monotonic()))
            got[int(event["pid"])] = event
        return got

    def stop(self) -> None:
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._reader.join(timeout=5)


def run_criu(*args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.monotonic()
    done = subprocess.run(["criu", *args], capture_output=True, text=True, timeout=120)
    return time.monotonic() - started, done


def numbers(path: Path) -> list[int]:
    if not path.exists():
        return []
    return [int(line) for line in path.read_text().splitlines()]


def is_ours(pid: int, marker: str) -> bool:
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


@pytest.fixture
def criu_binary() -> Path:
    path = host_criu.find_criu()
    assert path is not None, "no criu on PATH: run `python3 -m capsule_runtime.host.setup`"
    return path


def test_criu_version_at_least_4_2(criu_binary: Path) -> None:
    version = host_criu.binary_version(criu_binary)
    assert host_criu.at_least(version, (4, 2)), f"{criu_binary} is {version}"


def test_criu_check_passes(criu_binary: Path) -> None:
    out = subprocess.run(["criu", "check"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Looks good" in out.stdout + out.stderr


@pytest.mark.parametrize("channel", ["pipe", "tcp"])
def test_dump_and_restore_a_process_tree(
    channel: str, tmp_path: Path, criu_binary: Path, record_property: Callable[[str, object], None]
) -> None:
    workdir = tmp_path
    out, state, images = workdir / "numbers", workdir / "state.json", workdir / "images"
    images.mkdir()
    tcp = ["--tcp-established"] if channel == "tcp" else []
    reapers: list[Reaped] = []
    try:
        first = Reaped(
            workdir / "run.log", sys.executable, "-c", WORKLOAD, channel, str(out), str(state)
        )
        reapers.append(first)
        wait_for("the workload to count to 30", lambda: len(numbers(out)) >= 30, 30, every=0.05)
        pids = json.loads(state.read_text())
        parent, child = int(pids["parent"]), int(pids["child"])
        assert parent == first.started

        dump_s, dump = run_criu(
            "dump", "-t", str(parent), "-D", str(images), "-o", "dump.log", "-v4", *tcp
        )
        assert dump.returncode == 0, (images / "dump.log").read_text()[-3000:]
        reaped = first.wait_reaped({parent, child}, 30)
        assert all(os.WIFSIGNALED(int(e["status"])) for e in reaped.values()), reaped
        assert not Path(f"/proc/{parent}").exists() and not Path(f"/proc/{child}").exists()
        first.stop()
        at_dump = numbers(out)
        time.sleep(0.3)
        assert numbers(out) == at_dump, "the file grew while the tree was checkpointed"

        second = Reaped(
            workdir / "restore.log",
            "criu",
            "restore",
            "-d",
            "-D",
            str(images),
            "-o",
            "restore.log",
            "-v4",
            *tcp,
        )
        reapers.append(second)
        restored = second.next_event(120)
        assert restored["pid"] == second.started, restored
        assert restored["status"] == 0, (images / "restore.log").read_text()[-3000:]
        restore_s = float(restored["t"])
        assert is_ours(parent, str(workdir)) and is_ours(child, str(workdir)), "same pids"

        wait_for(
            "counting to go on", lambda: len(numbers(out)) >= len(at_dump) + 30, 30, every=0.05
        )
        after = numbers(out)
        # Continues where it was — not from zero — and nothing in flight was lost or repeated.
        assert after == list(range(1, len(after) + 1)), after[len(at_dump) - 3 :][:10]
        assert len(after) > len(at_dump) + 25

        images_mib = sum(p.stat().st_size for p in images.iterdir()) / 2**20
        record_property("dump_s", round(dump_s, 3))
        record_property("restore_s", round(restore_s, 3))
        print(
            f"\n[{channel}] dump {dump_s:.3f} s, restore {restore_s:.3f} s, "
            f"images {images_mib:.1f} MiB, counted {len(at_dump)} before the dump"
        )

        os.kill(child, signal.SIGKILL)
        os.kill(parent, signal.SIGKILL)
        second.wait_reaped({parent, child}, 30)
    finally:
        for state_file in workdir.glob("state*.json"):
            pids = json.loads(state_file.read_text())
            for pid in (pids["child"], pids["parent"]):
                if is_ours(int(pid), str(workdir)):
                    os.kill(int(pid), signal.SIGKILL)
        for reaper in reapers:
            reaper.stop()
