"""How well the notice budget planner predicts a notice capsule, on this machine, through a real
`tescape serve` with the local provider (docs/benchmarks.md, "The notice budget's predictions").

For each size: a task holding N MiB of incompressible anonymous memory (bench.capsule_bench's
memhog, staged into the task as an input) runs; once the agent has sent a memory sample,
`--capsules` manual checkpoints (default 2: the first stores everything, the second is
incremental and gives the task's dirty rate, as a periodic one would) teach the instance type's
rates — the sizes run one after the other on the same type, so the later ones also learn from
the earlier ones' capsules; then a reclaim notice (120 s) is posted and the task's
`notice_budget` event gives the prediction made at the notice next to the measured notice →
durable time and `model_s` (the rates on the capsule as it came out).

    python -m bench.notice_budget --sizes-mib 256 1024
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.capsule_bench import build_memhog
from tests.fixtures.images import BUSYBOX
from tests.fixtures.server import tescape_server
from tests.fixtures.tasks import admin, cancel, events, get, instance_of, submit


def wait(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    raise TimeoutError(f"no {what} in {timeout:.0f} s")


def one(srv: Any, binary: Path, mib: int, capsules: int) -> dict[str, Any]:
    task = {
        "name": f"notice-{mib}",
        "inputs": [{"path": "/in/memhog", "url": f"file://{binary}", "type": "FILE"}],
        "executors": [
            {
                "image": "alpine",
                "command": [
                    "sh",
                    "-c",
                    f"cp /in/memhog /tmp/m && chmod +x /tmp/m && exec /tmp/m {mib} random /tmp",
                ],
            }
        ],
    }
    task_id = submit(srv, task)

    def attempt_data() -> dict[str, Any]:
        rows = admin(srv, "GET", f"/tasks/{task_id}/attempts").json()["attempts"]
        return rows[-1] if rows else {}

    wait("RUNNING", lambda: get(srv, task_id, "MINIMAL")["state"] == "RUNNING", 120)
    time.sleep(15 + mib / 200)  # memhog fills its memory; the agent's next poll samples it

    def kinds(kind: str) -> list[dict[str, Any]]:
        return [e for e in events(srv, task_id) if e["kind"] == kind]

    for n in range(1, capsules + 1):
        resp = admin(srv, "POST", f"/tasks/{task_id}:checkpoint")
        assert resp.status_code == 202, resp.text
        wait(f"capsule {n}", lambda n=n: len(kinds("capsule")) >= n, 300)  # type: ignore[misc]
        time.sleep(2)  # between capsules, as the dirty rate is measured
    victim = instance_of(srv, task_id)
    resp = admin(srv, "POST", f"/instances/{victim}:interrupt", json={"notice_seconds": 120})
    assert resp.status_code == 202, resp.text
    [event] = wait("the notice_budget event", lambda: kinds("notice_budget"), 300)
    taken = [e["data"] for e in kinds("capsule")]
    cancel(srv, task_id)
    return {
        "mib": mib,
        "first_capsule_s": taken[0]["seconds"]["total"],
        "capsules": [
            {
                "total_s": c["seconds"].get("total"),
                "dump_s": c["seconds"].get("dump"),
                "uploaded_bytes": c.get("uploaded_bytes"),
            }
            for c in taken
        ],
        "attempt": attempt_data().get("id"),
        **event["data"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mib", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--capsules", type=int, default=2, help="manual capsules before it")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="notice-budget-") as tmp:
        root = Path(tmp)
        binary = root / "in" / "memhog"  # outside tescape's tree, which tasks may never read
        binary.parent.mkdir()
        shutil.copy(build_memhog(), binary)
        config = {
            "images": {"rewrites": {"alpine": BUSYBOX.tag}},
            "storage": {"allowed_dirs": [str(binary.parent)]},
            "scheduler": {"interval_seconds": 0.2},
            "providers": {"local": {"max_instances": 1}},
            "capsules": {"store": str(root / "capsules"), "interval_seconds": 0},
        }
        results = []
        with tescape_server(root / "data", config=config, run_tasks=True) as srv:
            for mib in args.sizes_mib:
                row = one(srv, binary, mib, args.capsules)
                print(json.dumps(row), flush=True)
                results.append(row)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
