"""`tescape status`: the gateway status API as a table (or JSON, the document unchanged).

A gateway that answers 503 still sends its status document (the failing check is the point),
so the command prints it like any other; only an unreachable server or a non-JSON answer is
an error of its own.
"""

from __future__ import annotations

import sys
from typing import Any

import requests
from rich.console import Console
from rich.table import Table
from rich.text import Text

STYLES = {"ok": "green", "degraded": "yellow", "disabled": "dim", "fail": "bold red"}


def fetch_status(server: str, token: str | None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = server.rstrip("/") + "/api/v1/status"
    err = Console(stderr=True)
    try:
        resp = requests.get(url, headers=headers, timeout=30)
    except requests.RequestException as exc:
        err.print(f"[red]error:[/red] cannot reach {server}: {exc}")
        sys.exit(1)
    try:
        doc = resp.json()
    except ValueError:
        doc = None
    if resp.status_code not in (200, 503) or not isinstance(doc, dict) or "status" not in doc:
        message = doc.get("message", doc) if isinstance(doc, dict) else resp.text[:200]
        err.print(f"[red]error {resp.status_code}:[/red] {message}")
        sys.exit(1)
    return doc


def _state(value: str | None) -> Text:
    value = value or "?"
    return Text(value, style=STYLES.get(value, ""))


def _rate(part: dict[str, Any]) -> str:
    rate = part.get("success_rate")
    shown = "n/a" if rate is None else f"{100 * rate:.1f}%"
    return f"{shown} ({part.get('succeeded', 0)} ok, {part.get('failed', 0)} failed)"


def print_status(console: Console, doc: dict[str, Any]) -> None:
    overall = doc.get("status", "?")
    console.print(Text.assemble("tescape ", doc.get("version", "?"), ": ", _state(overall)))
    health = Table("component", "status", "detail", title="health")
    provider = doc.get("provider") or {}
    for name, part in (
        ("database", doc.get("database") or {}),
        ("capsule store", doc.get("capsule_store") or {}),
        (f"provider {provider.get('name') or ''}".strip(), provider),
    ):
        # Text, not markup: details quote error messages verbatim
        health.add_row(name, _state(part.get("status")), Text(str(part.get("detail", ""))))
    console.print(health)
    if "tasks" not in doc:
        return
    work = Table("what", "value", title="work")
    queue = doc["queue"]
    oldest = queue.get("oldest_seconds")
    work.add_row(
        "queue depth",
        f"{queue['depth']}" + (f" (oldest {oldest:.1f} s)" if oldest is not None else ""),
    )
    latency = queue.get("latency") or {}
    if latency.get("placements"):
        work.add_row(
            "queue latency",
            f"median {latency['p50_seconds']:.1f} s, p95 {latency['p95_seconds']:.1f} s "
            f"(last {latency['placements']} placements)",
        )
    by_state = {k: v for k, v in doc["tasks"]["by_state"].items() if v}
    work.add_row(
        "tasks",
        f"{doc['tasks']['total']}: " + ", ".join(f"{k} {v}" for k, v in by_state.items()),
    )
    inst = doc["instances"]
    per = [
        f"{state} {market} {n}"
        for state, markets in inst["by_state"].items()
        for market, n in markets.items()
    ]
    work.add_row("instances", f"{inst['total']}" + (": " + ", ".join(per) if per else ""))
    work.add_row("checkpoints", _rate(doc["checkpoints"]))
    work.add_row("restores", _rate(doc["restores"]))
    console.print(work)
