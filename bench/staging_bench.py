"""Staging throughput: a 1 GiB task input and output through `capsule_runtime.staging`, by local
path and by s3 (a real SeaweedFS on loopback), next to the raw tools measured in the same run on
the same file — `shutil.copyfile`, `cp`, and boto3's own `upload_file` / `download_file` — so the
ratio shows what staging costs over moving the bytes.

    python -m bench.staging_bench                                # 1 GiB, 3 rounds (~2 min)
    python -m bench.staging_bench --size-mib 64 --rounds 1 --out /tmp/quick.json   # < 20 s

Every scenario runs `--rounds` times, interleaved (round 1 of each, then round 2, ...); the median
is reported. Before each run the destination is removed and dirty pages are flushed (`sync`,
not timed); the source file stays in the page cache for every scenario alike. For the staging
runs, the peak RSS above the run's starting point is recorded too (VmHWM after clear_refs).
Results go to `--out` as JSON and a table is printed; docs/benchmarks.md is written by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MiB = 1 << 20
PEAK = "peak_rss_over_start_mib"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    summary = (__doc__ or "").split("\n", 1)[0]
    p = argparse.ArgumentParser(prog="python -m bench.staging_bench", description=summary)
    p.add_argument("--size-mib", type=int, default=1024, help="file size in MiB (default 1 GiB)")
    p.add_argument("--rounds", type=int, default=3, help="runs per scenario (median reported)")
    p.add_argument("--out", default="staging-bench-results.json", help="results JSON")
    p.add_argument("--work-dir", help="where files and SeaweedFS live (default: a temp dir)")
    return p.parse_args(argv)


def peak_rss_reset() -> bool:
    """Reset this process's peak RSS (VmHWM); False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class Bench:
    def __init__(self, work: Path, size: int, s3: Any):
        from capsule_runtime.staging import S3Config, StagingPolicy

        self.work = work
        self.size = size
        self.src = work / "source.bin"
        self.dst = work / "dest"
        self.s3 = s3
        self.bucket = s3.create_bucket("staging-bench")
        self.client = s3.client()
        self.policy = StagingPolicy.create([work])
        self.s3_config = S3Config.from_mapping(s3.s3_settings())
        self.n = 0

    def make_source(self) -> None:
        block = os.urandom(MiB)
        with open(self.src, "wb") as f:
            for i in range(self.size // MiB):
                f.write(i.to_bytes(8, "little") + block[8:])

    def fresh(self) -> None:
        shutil.rmtree(self.dst, ignore_errors=True)
        self.dst.mkdir()
        subprocess.run(["sync"], check=True)

    def key(self, label: str) -> str:
        self.n += 1
        return f"{label}/{self.n}.bin"

    # -- the scenarios: each returns a function to time ---------------------------------------

    def raw_copyfile(self) -> Callable[[], object]:
        return lambda: shutil.copyfile(self.src, self.dst / "copy.bin")

    def raw_cp(self) -> Callable[[], object]:
        return lambda: subprocess.run(["cp", str(self.src), str(self.dst / "cp.bin")], check=True)

    def _workspace(self, task: dict[str, Any]) -> Any:
        from capsule_runtime.protocol.tes import TesTask
        from capsule_runtime.staging import Workspace

        typed = TesTask.model_validate(task)
        return Workspace.create(self.dst / "ws", typed, self.policy, s3=self.s3_config)

    def staging_input_file(self) -> Callable[[], object]:
        from capsule_runtime.staging import stage_inputs

        inputs = [{"url": str(self.src), "path": "/work/in.bin", "type": "FILE"}]
        task = {"inputs": inputs, "executors": [{"image": "x", "command": ["x"]}]}

        def run() -> None:
            with self._workspace(task) as ws:
                stage_inputs(ws.task.inputs or [], ws)

        return run

    def _output_task(self, url: str) -> tuple[dict[str, Any], Callable[[], object]]:
        from capsule_runtime.staging import upload_outputs

        outputs = [{"url": url, "path": "/work/out.bin", "type": "FILE"}]
        task = {"outputs": outputs, "executors": [{"image": "x", "command": ["x"]}]}
        ws = self._workspace(task)
        ws.prepare()
        staged = ws.tree_path("/work/out.bin")
        os.link(self.src, staged)  # the task's output, without a timed copy

        def run() -> None:
            try:
                logs, notes = upload_outputs(ws.task.outputs or [], ws)
                assert not notes and logs[0]["size_bytes"] == str(self.size), notes
            finally:
                ws.close()

        return task, run

    def staging_output_file(self) -> Callable[[], object]:
        return self._output_task(str(self.dst / "out" / "out.bin"))[1]

    def raw_boto3_upload(self) -> Callable[[], object]:
        key = self.key("raw")
        return lambda: self.client.upload_file(str(self.src), self.bucket, key)

    def staging_output_s3(self) -> Callable[[], object]:
        return self._output_task(f"s3://{self.bucket}/{self.key('staging')}")[1]

    def _uploaded(self) -> str:
        key = self.key("source")
        self.client.upload_file(str(self.src), self.bucket, key)
        return key

    def raw_boto3_download(self) -> Callable[[], object]:
        key = self._uploaded()
        return lambda: self.client.download_file(self.bucket, key, str(self.dst / "dl.bin"))

    def staging_input_s3(self) -> Callable[[], object]:
        from capsule_runtime.staging import stage_inputs

        key = self._uploaded()
        inputs = [{"url": f"s3://{self.bucket}/{key}", "path": "/work/in.bin", "type": "FILE"}]
        task = {"inputs": inputs, "executors": [{"image": "x", "command": ["x"]}]}

        def run() -> None:
            with self._workspace(task) as ws:
                stage_inputs(ws.task.inputs or [], ws)

        return run


SCENARIOS: list[tuple[str, str, str]] = [
    # (name, group, Bench method)
    ("raw shutil.copyfile", "local copy", "raw_copyfile"),
    ("raw cp", "local copy", "raw_cp"),
    ("staging input (bare path)", "local copy", "staging_input_file"),
    ("staging output (bare path)", "local copy", "staging_output_file"),
    ("raw boto3 upload_file", "s3 upload", "raw_boto3_upload"),
    ("staging output (s3://)", "s3 upload", "staging_output_s3"),
    ("raw boto3 download_file", "s3 download", "raw_boto3_download"),
    ("staging input (s3://)", "s3 download", "staging_input_s3"),
]


def measure(bench: Bench, method: str) -> dict[str, float]:
    bench.fresh()
    run = getattr(bench, method)()
    staging = method.startswith("staging")
    reset = staging and peak_rss_reset()
    base = rss_kib("VmRSS")
    started = time.perf_counter()
    run()
    seconds = time.perf_counter() - started
    out = {"seconds": seconds}
    if reset:
        out[PEAK] = max(0, rss_kib("VmHWM") - base) / 1024
    return out


def versions() -> dict[str, str]:
    import boto3

    from tests.fixtures.seaweedfs import weed_binary

    weed = weed_binary() or "weed"
    weed_version = subprocess.run([weed, "version"], capture_output=True, text=True).stdout.strip()
    return {
        "python": platform.python_version(),
        "boto3": boto3.__version__,
        "seaweedfs": weed_version,
        "kernel": platform.release(),
        "cpus": str(os.cpu_count()),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from tests.fixtures.seaweedfs import seaweedfs_server

    size = args.size_mib * MiB
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="tescape-staging-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in SCENARIOS}
    try:
        with seaweedfs_server(work / "seaweedfs") as s3:
            bench = Bench(work, size, s3)
            bench.make_source()
            for r in range(args.rounds):
                for name, _, method in SCENARIOS:
                    runs[name].append(measure(bench, method))
                    took = runs[name][-1]["seconds"]
                    print(f"round {r + 1}: {name}: {took:.2f} s", file=sys.stderr)
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    rows = []
    for name, group, _ in SCENARIOS:
        median = statistics.median(run["seconds"] for run in runs[name])
        peaks = [run[PEAK] for run in runs[name] if PEAK in run]
        rows.append(
            {
                "scenario": name,
                "group": group,
                "median_seconds": round(median, 3),
                "mib_per_second": round(args.size_mib / median, 1),
                PEAK: round(max(peaks), 1) if peaks else None,
                "seconds": [round(run["seconds"], 3) for run in runs[name]],
            }
        )
    result = {
        "benchmark": "staging",
        "command": " ".join(
            ["python -m bench.staging_bench", *(sys.argv[1:] if argv is None else argv)]
        ),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "size_mib": args.size_mib,
        "rounds": args.rounds,
        "s3_transfer": {
            "staging": "16 MiB parts above 16 MiB, 8 in parallel (S3Config defaults)",
            "raw boto3": "boto3 defaults: 8 MiB parts above 8 MiB, 10 in parallel",
        },
        "versions": versions(),
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(table(rows, args.size_mib))
    print(f"\nresults: {args.out}")
    return 0


def table(rows: list[dict[str, Any]], size_mib: int) -> str:
    head = f"{'scenario':<30} {'median s':>9} {'MiB/s':>8} {'peak RSS +MiB':>14}  runs (s)"
    lines = [f"{size_mib} MiB file", head, "-" * len(head)]
    for row in rows:
        peak = "" if row[PEAK] is None else f"{row[PEAK]:.0f}"
        each = ", ".join(f"{s:.2f}" for s in row["seconds"])
        lines.append(
            f"{row['scenario']:<30} {row['median_seconds']:>9.2f} {row['mib_per_second']:>8.1f} "
            f"{peak:>14}  {each}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
