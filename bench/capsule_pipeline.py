"""The agent's capsule pipeline alone, without podman or CRIU: wall time and CPU per GiB.

A pages image of N MiB (`random`: incompressible; `half`: each 4 KiB page 2 KiB random + 2 KiB
zeros, as bench.capsule_bench's memhog writes it) is written once under --work-dir and kept in
the page cache (CRIU's images are, when the agent reads them). Each measurement is a fresh
Python process that follows the image as the "images" checkpoint path does
(follow_pages.PagesFollower) into write_capsule (encryption on, as the gateway's default) to a
FileStore with fsync (or a store that keeps nothing: `--store null`, the pipeline's own cost),
then restores the part to /dev/null through restore_part (every chunk's tag, frame and id
checked). CPU is the process's own user + system time.

With `--tree` given twice, two source trees are measured side by side, their order alternating
by round, so their ratio is paired per round (this VM is shared and noisy: medians and paired
ratios, never one run).

    python -m bench.capsule_pipeline --tree /tmp/before --tree . --rounds 5 \\
        --out bench/results/capsule-pipeline-<date>.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MiB = 1 << 20
PAGE = 4096

CHILD = r"""
import json, os, resource, sys, time
from pathlib import Path
from capsule_runtime.capsules.crypto import LocalKeyWrapper
from capsule_runtime.capsules.follow_pages import PagesFollower
from capsule_runtime.capsules.reader import read_manifest, restore_part
from capsule_runtime.capsules.store import FileStore
from capsule_runtime.capsules.writer import PartSource, write_capsule

image_dir, store_dir, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
workers = int(sys.argv[4])
store = FileStore(store_dir)
if mode == "null":
    kept = {}
    def put(key, data, kept=kept):
        if key.endswith(".json") or "manifest" in key:
            kept[key] = bytes(data)
    store.put = put
keys = LocalKeyWrapper(bytes(range(32)))
follower = PagesFollower(image_dir)
follower.detach = lambda: None  # the image stays for the next measurement
follower._scan()

def keyed():
    for number, index, data in follower.finish():
        yield 1, (1, number, index), data

def usage():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), r.ru_utime + r.ru_stime
t0, c0 = usage()
m = write_capsule(store, task_id="t", attempt_id="a", sequence=1,
                  parts=[PartSource("w", lambda: None), PartSource("c", lambda: None)],
                  keys=keys, keyed=keyed(), workers=workers)
t1, c1 = usage()
out = {"write_s": t1 - t0, "write_cpu": c1 - c0, "size": m.size_bytes, "stored": m.stored_bytes,
       "raw_chunks": m.raw_chunks, "timings": m.timings}
if mode != "null":
    manifest = read_manifest(store, m.key)
    with open(os.devnull, "wb") as sink:
        t2, c2 = usage()
        restore_part(store, manifest, "c", sink, keys=keys, workers=workers)
        t3, c3 = usage()
    out.update(restore_s=t3 - t2, restore_cpu=c3 - c2)
out["module"] = __import__("capsule_runtime").__file__
print(json.dumps(out))
"""


def make_image(path: Path, mib: int, flavour: str) -> None:
    if path.exists() and path.stat().st_size == mib * MiB:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        for _ in range(mib):
            if flavour == "random":
                f.write(os.urandom(MiB))
            else:
                page = (os.urandom(PAGE // 2) + bytes(PAGE // 2) for _ in range(MiB // PAGE))
                f.write(b"".join(page))
        f.flush()
        os.fsync(f.fileno())


def warm(path: Path) -> None:
    with path.open("rb") as f:
        while f.read(8 * MiB):
            pass


def measure(
    tree: Path, image_dir: Path, store_dir: Path, mode: str, workers: int
) -> dict[str, Any]:
    shutil.rmtree(store_dir, ignore_errors=True)
    warm(next(image_dir.glob("pages-*.img")))
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(image_dir), str(store_dir), mode, str(workers)],
        env=env,
        cwd=tree,  # `-c` puts the working directory first on sys.path
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    shutil.rmtree(store_dir, ignore_errors=True)
    if done.returncode != 0:
        raise RuntimeError(f"{tree}: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.capsule_pipeline", description=__doc__)
    parser.add_argument("--tree", action="append", type=Path, help="a source tree (default .)")
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--flavours", default="random,half")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--store", choices=["file", "null"], default="file")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--work-dir", type=Path, default=Path("/var/tmp/tescape-bench-pipeline"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    trees = [t.resolve() for t in (args.tree or [Path(".")])]
    gib = args.mib / 1024
    results: dict[str, Any] = {
        "command": " ".join(sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "trees": [str(t) for t in trees],
        "mib": args.mib,
        "store": args.store,
        "rounds": [],
    }
    try:
        for flavour in args.flavours.split(","):
            image_dir = args.work_dir / f"{flavour}-{args.mib}"
            make_image(image_dir / "pages-1.img", args.mib, flavour)
            for r in range(args.rounds):
                order = list(range(len(trees)))
                if r % 2:
                    order.reverse()
                for i in order:
                    got = measure(
                        trees[i], image_dir, args.work_dir / "store", args.store, args.workers
                    )
                    got.update(flavour=flavour, round=r, tree=i, loadavg=os.getloadavg()[0])
                    results["rounds"].append(got)
                    print(
                        f"{flavour} round {r} tree {i}: write {got['write_s'] / gib:.2f} s/GiB "
                        f"{got['write_cpu'] / gib:.2f} core-s/GiB"
                        + (
                            f", restore {got['restore_s'] / gib:.2f} s/GiB "
                            f"{got['restore_cpu'] / gib:.2f} core-s/GiB"
                            if "restore_s" in got
                            else ""
                        ),
                        flush=True,
                    )
    finally:
        shutil.rmtree(args.work_dir / "store", ignore_errors=True)
    results["summary"] = summarize(results["rounds"], len(trees), gib)
    print(json.dumps(results["summary"], indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


def summarize(rounds: list[dict[str, Any]], trees: int, gib: float) -> dict[str, Any]:
    """Medians per tree and flavour (per GiB), and the paired ratio tree i / tree 0 per round."""
    out: dict[str, Any] = {}
    for flavour in sorted({r["flavour"] for r in rounds}):
        mine = [r for r in rounds if r["flavour"] == flavour]
        row: dict[str, Any] = {}
        for key in ("write_s", "write_cpu", "restore_s", "restore_cpu"):
            for i in range(trees):
                values = [r[key] / gib for r in mine if r["tree"] == i and key in r]
                if values:
                    row[f"{key}_per_gib[{i}]"] = round(statistics.median(values), 3)
            for i in range(1, trees):
                ratios = [
                    b[key] / a[key]
                    for a in mine
                    for b in mine
                    if a["tree"] == 0 and b["tree"] == i and a["round"] == b["round"] and key in a
                ]
                if ratios:
                    row[f"{key}_ratio[{i}/0]"] = round(statistics.median(ratios), 3)
        out[flavour] = row
    return out


if __name__ == "__main__":
    sys.exit(main())
