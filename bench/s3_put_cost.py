"""What storing bytes in SeaweedFS costs this machine's CPU: the S3 server's and the client's.

A fresh `weed mini` (tests/fixtures/seaweedfs.py) on loopback; N MiB of random bytes put as
4 MiB objects from `--workers` threads through boto3 (as bench.capsule_bench's raw store rate
does), `--rounds` times. Per round: wall time, this process's CPU (boto3, the HTTP client) and
the weed process's CPU (bench.load.tree_cpu: all its threads and children), per GiB. On a
machine where the store runs beside the task, the store's own CPU is taken from the cores the
checkpoint needs: docs/benchmarks.md, "2026-12-03: fewer copies, cheaper ids".

    python -m bench.s3_put_cost --mib 1024 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.capsule_bench import cpu_meter
from bench.load import tree_cpu
from tests.fixtures.seaweedfs import seaweedfs_server

MiB = 1 << 20
CHUNK = 4 * MiB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.s3_put_cost", description=__doc__)
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args(argv)
    gib = args.mib / 1024
    pieces = [os.urandom(CHUNK) for _ in range(8)]
    rows = []
    with seaweedfs_server() as server:
        assert server.pid is not None
        client = server.client()
        for r in range(args.rounds):
            bucket = server.create_bucket(f"cost{r}")

            def put(i: int, bucket: str = bucket) -> None:
                client.put_object(Bucket=bucket, Key=f"o{i}", Body=pieces[i % len(pieces)])

            client_cpu: dict[str, Any] = {}
            w0, s0 = time.perf_counter(), tree_cpu(server.pid)
            with cpu_meter(client_cpu), ThreadPoolExecutor(args.workers) as pool:
                list(pool.map(put, range(args.mib * MiB // CHUNK)))
            w1, s1 = time.perf_counter(), tree_cpu(server.pid)
            row = {
                "wall_s_per_gib": round((w1 - w0) / gib, 3),
                "client_core_s_per_gib": round(client_cpu["cpu_self_s"] / gib, 3),
                "server_core_s_per_gib": round((s1 - s0) / gib, 3),
                "loadavg": os.getloadavg()[0],
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {k: statistics.median(r[k] for r in rows) for k in rows[0] if k != "loadavg"}
    print(json.dumps({"median": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
