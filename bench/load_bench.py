"""Load: many TES clients polling at once, as workflow managers do, plus steady task creation and
agents holding their long polls, against a real `tescape serve` on loopback.

    python -m bench.load_bench --clients 200 --seconds 120 --out /tmp/load.json
    python -m bench.load_bench --clients 200 --agents 50 --seconds 600   # issue 10's 10 minutes

Each client keeps one HTTP/1.1 connection alive and polls one task of its own in a closed loop
(`--interval` seconds between an answer and the next request): `--full-share` of them ask for
`?view=FULL` as Cromwell does on every poll, the others for the default MINIMAL view as Nextflow
does. `--creators` clients each create a task every `--create-interval` seconds. `--agents`
instances (rows with known tokens written into the server's database before the run) long-poll
the agent API as agents do, waiting on their side when the gateway answers at once. A request
with no answer within `--timeout` seconds (Nextflow's read timeout; for a long poll, its wait on
top, as the agent's client allows) is an error, as is any status
but 200 and any dropped connection. The run stops after `--seconds` or `--max-requests`,
whichever comes first.

Reported: requests and errors by kind, p50/p99/max latency, requests per second, and the
gateway's resident memory at the start, at the end and at its highest (sampled every second).
The generator is one asyncio thread (a few tens of microseconds of CPU per request), but it runs
on the same cores as the server: on a small machine the figures are the pair's, not the server's
alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import socket
import sys
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

TES = "/ga4gh/tes/v1"
AGENT = "/agent/v1"
TASK = {
    "name": "load",
    "executors": [{"image": "ubuntu:22.04", "command": ["bash", "-c", "echo hi"]}],
    "resources": {"cpu_cores": 1, "ram_gb": 1.0},
    "tags": {"bench": "load"},
}


class Refused(RuntimeError):
    """The target is not on loopback: this benchmark never loads another machine."""


def loopback_address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 80
    for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        if not ipaddress.ip_address(info[4][0]).is_loopback:
            raise Refused(f"{url} resolves to {info[4][0]}, not a loopback address")
    return host, port


# -- a minimal keep-alive HTTP/1.1 client ----------------------------------------------------------


class HttpError(Exception):
    """A request that got no complete answer (connection refused, reset or closed early)."""


class Connection:
    """One persistent connection; reopened after any failure, as an HTTP client pool does."""

    def __init__(self, host: str, port: int, headers: dict[str, str] | None = None):
        self.host, self.port = host, port
        self.extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{self.extra}"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        try:
            status_line = await self.reader.readuntil(b"\r\n")
            length, close = 0, False
            while (line := await self.reader.readuntil(b"\r\n")) != b"\r\n":
                name, _, value = line.decode("latin-1").partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "connection" and value.strip().lower() == "close":
                    close = True
            payload = await self.reader.readexactly(length)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError) as exc:
            self.close()
            raise HttpError(type(exc).__name__) from None
        if close:
            self.close()
        return int(status_line.split()[1]), payload

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


# -- the run ---------------------------------------------------------------------------------------


@dataclass
class Kind:
    """The latencies (seconds) and outcomes of one kind of request. A request that timed out
    counts as an error and, in the percentiles, as waiting the whole timeout (its client did)."""

    latencies: array = field(default_factory=lambda: array("d"))
    errors: Counter[str] = field(default_factory=Counter)

    def summary(self, seconds: float) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        n = len(ordered)
        errors = sum(self.errors.values())

        def pct(q: float) -> float | None:
            return round(ordered[min(n - 1, int(q * n))] * 1000, 2) if n else None

        return {
            "requests": n + errors - self.errors["timeout"],
            "ok": n - self.errors["timeout"],
            "errors": errors,
            "error_kinds": dict(self.errors),
            "rps": round((n - self.errors["timeout"]) / seconds, 1) if seconds else 0.0,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "max_ms": round(ordered[-1] * 1000, 2) if n else None,
        }


@dataclass
class Run:
    host: str
    port: int
    deadline: float
    max_requests: int
    timeout: float
    kinds: dict[str, Kind] = field(default_factory=dict)
    count: int = 0

    def done(self) -> bool:
        return time.monotonic() >= self.deadline or self.count >= self.max_requests

    async def timed(
        self,
        conn: Connection,
        kind: str,
        method: str,
        path: str,
        body: bytes = b"",
        held: float = 0.0,
    ) -> bytes | None:
        """One request; its latency or its error goes to `kind`. The answer's body, or None.
        `held`: seconds the server may hold it on purpose (a long poll), on top of the timeout,
        as the agent's own client allows."""
        stats = self.kinds.setdefault(kind, Kind())
        self.count += 1
        start = time.monotonic()
        limit = self.timeout + held
        try:
            status, payload = await asyncio.wait_for(conn.request(method, path, body), limit)
        except TimeoutError:
            conn.close()
            stats.errors["timeout"] += 1
            stats.latencies.append(limit)
            return None
        except (HttpError, OSError) as exc:
            stats.errors[f"connection: {exc}"] += 1
            await asyncio.sleep(0.1)  # as a client's retry back-off: no tight reconnect loop
            return None
        if status != 200:
            stats.errors[f"HTTP {status}"] += 1
            return None
        stats.latencies.append(time.monotonic() - start)
        return payload


async def poller(run: Run, task_id: str, full: bool, interval: float) -> None:
    conn = Connection(run.host, run.port)
    path = f"{TES}/tasks/{task_id}" + ("?view=FULL" if full else "")
    kind = "get_full" if full else "get_minimal"
    await asyncio.sleep(interval * (hash(task_id) % 1000) / 1000)  # spread the first requests
    while not run.done():
        await run.timed(conn, kind, "GET", path)
        await asyncio.sleep(interval)
    conn.close()


async def creator(run: Run, interval: float) -> None:
    conn = Connection(run.host, run.port)
    body = json.dumps(TASK).encode()
    while not run.done():
        await run.timed(conn, "create", "POST", f"{TES}/tasks", body)
        await asyncio.sleep(interval)
    conn.close()


async def agent(run: Run, instance_id: str, token: str, wait: float) -> None:
    """Long polls as capsule_runtime.agent does: ask to be held `wait` seconds; when answered at
    once (the gateway's long-poll slots are taken), wait the rest here."""
    headers = {"Authorization": f"Bearer {token}", "X-Tescape-Instance": instance_id}
    conn = Connection(run.host, run.port, headers)
    body = json.dumps({"running": [], "wait_seconds": wait}).encode()
    path = f"{AGENT}/instances/{instance_id}/poll"
    while not run.done():
        asked = time.monotonic()
        await run.timed(conn, "agent_poll", "POST", path, body, held=wait)
        rest = wait - (time.monotonic() - asked)
        if rest > 0:
            await asyncio.sleep(min(rest, max(0.0, run.deadline - time.monotonic())))
    conn.close()


async def create_tasks(host: str, port: int, count: int) -> list[str]:
    conn = Connection(host, port)
    body = json.dumps(TASK).encode()
    ids = []
    for _ in range(count):
        status, payload = await conn.request("POST", f"{TES}/tasks", body)
        if status != 200:
            raise RuntimeError(f"creating the clients' tasks: HTTP {status} {payload[:200]!r}")
        ids.append(json.loads(payload)["id"])
    conn.close()
    return ids


def rss_bytes(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


async def sample_rss(pid: int | None, run: Run, samples: list[int]) -> None:
    while not run.done():
        if (rss := rss_bytes(pid)) is not None:
            samples.append(rss)
        await asyncio.sleep(1.0)


async def measure(
    url: str, args: argparse.Namespace, pid: int | None, agents: list[tuple[str, str]]
) -> dict[str, Any]:
    host, port = loopback_address(url)
    task_ids = await create_tasks(host, port, args.clients)
    full = round(args.clients * args.full_share)
    rss_start = rss_bytes(pid)
    started = time.monotonic()
    run = Run(host, port, started + args.seconds, args.max_requests, args.timeout)
    samples: list[int] = []
    jobs = [poller(run, tid, i < full, args.interval) for i, tid in enumerate(task_ids)]
    jobs += [creator(run, args.create_interval) for _ in range(args.creators)]
    jobs += [agent(run, iid, token, args.agent_wait) for iid, token in agents]
    await asyncio.gather(*jobs, sample_rss(pid, run, samples))
    seconds = time.monotonic() - started
    kinds = {name: k.summary(seconds) for name, k in sorted(run.kinds.items())}
    total = Kind()
    for k in run.kinds.values():
        total.latencies.extend(k.latencies)
        total.errors.update(k.errors)
    rss_end = rss_bytes(pid)
    return {
        "seconds": round(seconds, 1),
        "clients": args.clients,
        "full_clients": full,
        "creators": args.creators,
        "agents": len(agents),
        "interval_s": args.interval,
        "timeout_s": args.timeout,
        "total": total.summary(seconds),
        "kinds": kinds,
        "rss_bytes": {
            "start": rss_start,
            "end": rss_end,
            "max": max(samples) if samples else None,
            "growth": (rss_end - rss_start) if rss_start and rss_end else None,
        },
    }


# -- the server ------------------------------------------------------------------------------------


@contextlib.contextmanager
def started_server(args: argparse.Namespace) -> Iterator[tuple[str, int | None, str]]:
    """A `tescape serve` of this checkout (scheduler off, tasks stay QUEUED): (url, pid, db url).
    With --url, that server instead (pid from --pid, agents need --db-url)."""
    if args.url:
        yield args.url, args.pid, args.db_url or ""
        return
    from tests.fixtures.server import tescape_server

    server: dict[str, Any] = {}
    for key in ("threads", "long_poll_slots", "connection_limit"):
        if getattr(args, key) is not None:
            server[key] = getattr(args, key)
    with tempfile.TemporaryDirectory(prefix="tescape-load-", dir=args.work_dir) as tmp:
        data = Path(tmp) / "data"
        with tescape_server(data, config={"server": server} if server else None) as srv:
            yield srv.url, srv.process.pid, f"sqlite:///{data / 'tescape.db'}"


def fake_agents(url: str, db_url: str, count: int) -> list[tuple[str, str]]:
    if not count:
        return []
    if not db_url:
        raise SystemExit("--agents with --url needs --db-url (instances are written into it)")
    from tests.fixtures.agents import add_instances

    return [(i.instance_id, i.token) for i in add_instances(url, db_url, count)]


def summary_lines(result: dict[str, Any]) -> list[str]:
    rss = result["rss_bytes"]
    mib = {k: f"{v / 2**20:.0f} MiB" if v is not None else "n/a" for k, v in rss.items()}
    lines = [
        f"{result['clients']} clients ({result['full_clients']} FULL), {result['creators']} "
        f"creators, {result['agents']} agents, {result['seconds']} s",
        f"{'kind':<12} {'requests':>9} {'errors':>7} {'rps':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'max ms':>8}",
    ]
    for name, k in [*result["kinds"].items(), ("total", result["total"])]:
        lines.append(
            f"{name:<12} {k['requests']:>9} {k['errors']:>7} {k['rps']:>8} "
            f"{k['p50_ms'] or 0:>8} {k['p99_ms'] or 0:>8} {k['max_ms'] or 0:>8}"
        )
        if k["error_kinds"]:
            lines.append(f"{'':<12} {k['error_kinds']}")
    lines.append(f"gateway RSS: start {mib['start']}, end {mib['end']}, max {mib['max']}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--full-share", type=float, default=0.5, help="share polling FULL")
    parser.add_argument("--interval", type=float, default=0.05, help="s between a client's polls")
    parser.add_argument("--creators", type=int, default=4)
    parser.add_argument("--create-interval", type=float, default=0.5)
    parser.add_argument("--agents", type=int, default=0, help="instances holding long polls")
    parser.add_argument("--agent-wait", type=float, default=5.0, help="long-poll wait asked, s")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--max-requests", type=int, default=10_000_000)
    parser.add_argument("--timeout", type=float, default=10.0, help="per request, s")
    parser.add_argument("--url", help="an already running server on loopback")
    parser.add_argument("--pid", type=int, help="its process id (for its memory)")
    parser.add_argument("--db-url", help="its database (to add --agents instances)")
    parser.add_argument("--threads", type=int, help="server.threads of the started server")
    parser.add_argument("--long-poll-slots", type=int, help="server.long_poll_slots")
    parser.add_argument("--connection-limit", type=int, help="server.connection_limit")
    parser.add_argument("--work-dir", help="where the started server keeps its data")
    parser.add_argument("--out", help="write the results here as JSON")
    args = parser.parse_args(argv)
    if args.url:
        loopback_address(args.url)
    with started_server(args) as (url, pid, db_url):
        agents = fake_agents(url, db_url, args.agents)
        result = asyncio.run(measure(url, args, pid, agents))
    result["meta"] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cores": os.cpu_count(),
        "load_average": os.getloadavg(),
        "python": sys.version.split()[0],
    }
    print("\n".join(summary_lines(result)))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 1 if result["total"]["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
