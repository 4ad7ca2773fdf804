"""`/metrics` of a real `tescape serve`, parsed with prometheus-client's own parser: queue
latency, checkpoints, restores, migrations and spend move when a task runs and migrates (a real
CRIU checkpoint and restore through podman), and every family keeps its declared type."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.server import RunningServer, tescape_server

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="CRIU needs root")

TERMINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}
COUNTING = "i=0; while [ $i -lt 40 ]; do i=$((i+1)); echo $i; sleep 0.2; done"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, busybox_image: str) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("metrics")
    config = {
        "images": {"rewrites": {"busybox": busybox_image}},
        "scheduler": {"interval_seconds": 0.2},
        "capsules": {"store": str(root / "capsules"), "interval_seconds": 0},
    }
    with tescape_server(root / "data", config=config, run_tasks=True) as srv:
        yield srv


def scrape(srv: RunningServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, by name and sorted labels (the parser checks the format)."""
    body = requests.get(srv.url + "/metrics", timeout=30).text
    out = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def total(samples: dict[tuple[str, Any], float], name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def wait_for(what: str, predicate: Any, srv: RunningServer, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}\n{srv.log()[-4000:]}")


def state(srv: RunningServer, task_id: str) -> str:
    return str(requests.get(f"{srv.tes}/tasks/{task_id}?view=MINIMAL", timeout=10).json()["state"])


def test_counters_move_when_a_task_runs_and_migrates(server: RunningServer) -> None:
    before = scrape(server)
    task = {"executors": [{"image": "busybox", "command": ["sh", "-c", COUNTING]}]}
    task_id = requests.post(server.tes + "/tasks", json=task, timeout=10).json()["id"]
    wait_for("RUNNING", lambda: state(server, task_id) == "RUNNING", server)
    resp = requests.post(f"{server.url}/api/v1/tasks/{task_id}:migrate", timeout=10)
    assert resp.status_code == 202, resp.text
    wait_for("the end", lambda: state(server, task_id) in TERMINAL, server, timeout=120)
    assert state(server, task_id) == "COMPLETE", server.log()[-4000:]
    after = scrape(server)

    def moved(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert moved("tescape_queue_latency_seconds_count", until="INITIALIZING") == 1
    assert moved("tescape_queue_latency_seconds_count", until="RUNNING") == 1
    assert moved("tescape_checkpoints_total", outcome="ok", reason="manual") == 1
    assert moved("tescape_checkpoint_seconds_count", outcome="ok") == 1
    assert moved("tescape_checkpoint_seconds_sum") > 0
    assert moved("tescape_checkpoint_bytes_total", kind="uploaded") > 0
    assert moved("tescape_restores_total", outcome="ok") == 1
    assert moved("tescape_restore_seconds_count") == 1
    assert moved("tescape_restore_bytes_total") > 0
    assert moved("tescape_migrations_total", reason="manual") == 1
    assert moved("tescape_spend_usd_total") >= 0
    assert total(after, "tescape_on_demand_equivalent_usd_total") >= total(
        after, "tescape_spend_usd_total"
    )
    assert total(after, "tescape_tasks", state="COMPLETE") >= 1
    assert any(n == "tescape_instances" and dict(ls).get("market") for n, ls in after)
    again = scrape(server)  # a second scrape counts nothing twice
    for key in ("tescape_checkpoints_total", "tescape_restores_total", "tescape_migrations_total"):
        assert total(again, key) == total(after, key)


def test_every_family_parses_with_its_type(server: RunningServer) -> None:
    body = requests.get(server.url + "/metrics", timeout=30).text
    types = {f.name: f.type for f in text_string_to_metric_families(body)}
    for name in ("queue_latency_seconds", "checkpoint_seconds", "restore_seconds"):
        assert types[f"tescape_{name}"] == "histogram"
    for name in ("checkpoints", "restores", "migrations", "restarts", "spend_usd"):
        assert types[f"tescape_{name}"] == "counter"
    assert types["tescape_interruption_notices"] == "counter"
    assert types["tescape_instances"] == "gauge"


def test_grafana_dashboard_uses_metrics_that_exist(server: RunningServer) -> None:
    dashboard = json.loads(Path("configs/grafana-tescape.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs
    body = requests.get(server.url + "/metrics", timeout=30).text
    families = {f.name for f in text_string_to_metric_families(body)}  # even with no samples
    for expr in exprs:
        for name in re.findall(r"\btescape_[a-z_]+", expr):
            family = re.sub(r"_(total|bucket|count|sum)$", "", name)
            assert family in families, (name, expr)
