"""The load generator: wrk (C, epoll, one thread) driven by `wrk.lua`, and the CPU each side
spent while it ran.

wrk keeps C persistent HTTP/1.1 connections busy in a closed loop and records every request's
latency; the Lua script draws each request at random from a file of pre-built ones (random task
ids, page tokens, POST bodies), so the generator costs a few microseconds of CPU per request on a
machine where the server needs every cycle. The CPU of the server process, of the database's
processes and of wrk itself is read from /proc around each run.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WRK_SCRIPT = Path(__file__).with_name("wrk.lua")
TICK = os.sysconf("SC_CLK_TCK")


class LoadGeneratorMissing(RuntimeError):
    pass


def wrk_binary() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise LoadGeneratorMissing("wrk is not installed: apt-get install wrk (Debian)")
    return path


def wrk_version() -> str:
    out = subprocess.run([wrk_binary(), "-v"], capture_output=True, text=True)
    return (out.stdout or out.stderr).split("Copyright")[0].strip()


def write_requests(path: Path, requests: Iterable[tuple[str, str, str | None]]) -> Path:
    """One request per line: METHOD<TAB>PATH[<TAB>BODY] (bodies are compact JSON: no tabs)."""
    with path.open("w") as f:
        for method, target, body in requests:
            f.write(f"{method}\t{target}\t{body}\n" if body else f"{method}\t{target}\n")
    return path


# -- CPU accounting -------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds incl. waited-for children) of a process, None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    ppid = int(fields[1])
    ticks = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return ppid, ticks / TICK


def tree_cpu(root: int) -> float:
    """CPU seconds used so far by a process and all its live descendants."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                parents[int(entry)], cpu[int(entry)] = st
    total, todo = 0.0, [root]
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    while todo:
        pid = todo.pop()
        total += cpu.get(pid, 0.0)
        todo += children.get(pid, [])
    return total


def machine_busy() -> tuple[float, float]:
    """(busy CPU seconds, total CPU seconds) of the whole machine since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]
    total = sum(fields[:8])
    return (total - idle) / TICK, total / TICK


# -- one run --------------------------------------------------------------------------------------


@dataclass
class Measurement:
    connections: int
    requests: int
    seconds: float
    errors: int
    latency_us: dict[str, float]
    bytes: int
    cpu: dict[str, float]  # CPU seconds per side during the run

    def as_dict(self) -> dict[str, Any]:
        n = max(self.requests, 1)
        return {
            "connections": self.connections,
            "requests": self.requests,
            "seconds": round(self.seconds, 2),
            "rps": round(self.requests / self.seconds, 1),
            "p50_ms": self.latency_us["p50"] / 1000,
            "p90_ms": self.latency_us["p90"] / 1000,
            "p99_ms": self.latency_us["p99"] / 1000,
            "p999_ms": self.latency_us["p999"] / 1000,
            "max_ms": self.latency_us["max"] / 1000,
            "mean_ms": round(self.latency_us["mean"] / 1000, 3),
            "errors": self.errors,
            "bytes_per_response": round(self.bytes / n),
            "cpu_ms_per_request": {
                side: round(1000 * sec / n, 3) for side, sec in self.cpu.items() if side != "busy"
            },
            "machine_busy_cores": round(self.cpu["busy"] / self.seconds, 2),
            # CPU used by anything else on this shared machine meanwhile (noise)
            "other_cores": round(
                max(0.0, self.cpu["busy"] - sum(v for k, v in self.cpu.items() if k != "busy"))
                / self.seconds,
                2,
            ),
        }


def run_wrk(
    base_url: str,
    request_file: Path,
    *,
    connections: int,
    seconds: float,
    watch: dict[str, int],
    seed: int = 1,
) -> Measurement:
    """Run wrk against `base_url` for `seconds`; `watch` names processes (and their children)
    whose CPU to account, e.g. {"server": pid, "database": postmaster_pid}."""
    duration = f"{max(1, round(seconds))}s"  # wrk takes whole seconds
    cmd = [
        wrk_binary(),
        "-t1",
        f"-c{connections}",
        f"-d{duration}",
        "--timeout",
        "30s",
        "-s",
        str(WRK_SCRIPT),
        base_url,
        "--",
        str(request_file),
        str(seed),
    ]
    before = {side: tree_cpu(pid) for side, pid in watch.items()}
    busy0, _ = machine_busy()
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy1, _ = machine_busy()
    cpu = {side: tree_cpu(pid) - before[side] for side, pid in watch.items()}
    cpu["loadgen"] = (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime)
    cpu["busy"] = busy1 - busy0
    line = next((x for x in out.stdout.splitlines() if x.startswith("BENCH ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout}\n{out.stderr}")
    stats = json.loads(line[len("BENCH ") :])
    errors = sum(stats["errors"].values())
    return Measurement(
        connections=connections,
        requests=stats["requests"],
        seconds=stats["duration_us"] / 1e6,
        errors=errors,
        latency_us=stats["latency_us"],
        bytes=stats["bytes"],
        cpu=cpu,
    )
