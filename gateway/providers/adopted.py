"""An agent process that an earlier gateway process of the same data dir started, taken over by
this one after a restart (re-adoption): driven through the few `subprocess.Popen` calls the local
provider makes (`poll`, `send_signal`, `kill`, `wait`, `pid`).

It is not this process's child, so its end cannot be waited for: it is seen in /proc (gone, a
zombie, or the pid reused by another command line)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

GONE = -1  # the exit status of an adopted agent is not ours to know


class AdoptedAgent:
    def __init__(self, pid: int, argv: list[bytes], proc: Path = Path("/proc")):
        self.pid = pid
        self.argv = argv
        self._proc = proc

    def running(self) -> bool:
        """Whether the same command still runs under this pid (not ended, not a zombie)."""
        entry = self._proc / str(self.pid)
        try:
            if (entry / "cmdline").read_bytes().split(b"\0") != self.argv:
                return False
            stat = (entry / "stat").read_text()
        except OSError:
            return False
        state = stat.rpartition(")")[2].split()[:1]
        return state not in (["Z"], ["X"])

    def poll(self) -> int | None:
        return None if self.running() else GONE

    def send_signal(self, sig: int) -> None:
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.running():
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"adopted agent {self.pid}", timeout or 0.0)
            time.sleep(0.1)
        return GONE


def argv_of(pid: int, proc: Path = Path("/proc")) -> list[bytes] | None:
    try:
        return (proc / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return None


def option(argv: list[bytes], name: str) -> str | None:
    """The value after `name` in a command line (`--imds-url URL`), or None."""
    key = name.encode()
    for i, arg in enumerate(argv[:-1]):
        if arg == key:
            return argv[i + 1].decode(errors="replace")
    return None
