"""Per-task overhead and short-task throughput: trivial tasks through a real `tescape serve`
(scheduler → local agent → podman) next to plain `podman run` of the same image, in one run.

    python -m bench.exec_bench [--tasks 10] [--batch 20] [--out FILE.json]

Measures (medians): submit → RUNNING, submit → COMPLETE for `echo hi`, and plain
`podman run --rm IMAGE echo hi` (same containers.conf, same runtime); then the wall time of a
batch of N tasks submitted at once vs N plain `podman run`s two at a time (the agent runs two
1-core tasks at once on this 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from capsule_runtime.engine import PodmanEngine
from capsule_runtime.engine.images import ImageBuilder, busybox_recipe
from capsule_runtime.host.podman import CONTAINERS_CONF
from tests.fixtures.server import tescape_server

REPO = Path(__file__).resolve().parents[1]
IMAGE = busybox_recipe("localhost/tescape-test/busybox:1")
TERMINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}


def plain_podman() -> float:
    env = dict(os.environ, CONTAINERS_CONF=str(CONTAINERS_CONF))
    started = time.perf_counter()
    subprocess.run(
        ["podman", "run", "--rm", IMAGE.tag, "echo", "hi"],
        check=True,
        capture_output=True,
        env=env,
        cwd="/",
    )
    return time.perf_counter() - started


def one_task(tes: str) -> tuple[float, float]:
    body = {"executors": [{"image": IMAGE.tag, "command": ["echo", "hi"]}]}
    started = time.perf_counter()
    task_id = requests.post(tes + "/tasks", json=body, timeout=10).json()["id"]
    running = None
    while True:
        state = requests.get(f"{tes}/tasks/{task_id}", timeout=10).json()["state"]
        now = time.perf_counter()
        if running is None and state in {"RUNNING"} | TERMINAL:
            running = now - started
        if state in TERMINAL:
            assert state == "COMPLETE", state
            assert running is not None  # set on this poll at the latest
            return running, now - started
        time.sleep(0.01)


def batch(tes: str, n: int) -> float:
    body = {"executors": [{"image": IMAGE.tag, "command": ["echo", "hi"]}]}
    started = time.perf_counter()
    ids = [requests.post(tes + "/tasks", json=body, timeout=10).json()["id"] for _ in range(n)]
    pending = set(ids)
    while pending:
        for task_id in list(pending):
            if requests.get(f"{tes}/tasks/{task_id}", timeout=10).json()["state"] in TERMINAL:
                pending.discard(task_id)
        time.sleep(0.05)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    ImageBuilder(PodmanEngine().cli, cache_dir=REPO / ".cache" / "images").ensure(IMAGE)
    result: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "tasks": args.tasks}
    with (
        tempfile.TemporaryDirectory() as tmp,
        tescape_server(
            Path(tmp) / "data", config={"scheduler": {"interval_seconds": 0.2}}, run_tasks=True
        ) as srv,
    ):
        one_task(srv.tes)  # warm up: the instance starts on the first task
        plain, to_running, total = [], [], []
        for _ in range(args.tasks):  # interleaved, so drift hits both sides alike
            plain.append(plain_podman())
            r, t = one_task(srv.tes)
            to_running.append(r)
            total.append(t)
        result["plain_podman_run_s"] = statistics.median(plain)
        result["submit_to_running_s"] = statistics.median(to_running)
        result["submit_to_complete_s"] = statistics.median(total)
        result["overhead_ratio"] = result["submit_to_complete_s"] / result["plain_podman_run_s"]
        tescape_batch = batch(srv.tes, args.batch)
    started = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda _: plain_podman(), range(args.batch)))
    plain_batch = time.perf_counter() - started
    result["batch"] = args.batch
    result["tescape_tasks_per_min"] = args.batch / tescape_batch * 60
    result["plain_podman_tasks_per_min"] = args.batch / plain_batch * 60
    result["throughput_ratio"] = (
        result["tescape_tasks_per_min"] / result["plain_podman_tasks_per_min"]
    )
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
