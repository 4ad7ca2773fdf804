"""The capsule benchmark runs end to end: `python -m bench.capsule_bench --quick` (64 MiB, one
round: tescape's checkpoint/restore through a FileStore and SeaweedFS next to raw podman/CRIU) in a
subprocess, writes its results JSON, checks every restored memory digest, and leaves no container
of its own behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.bench import run_bench

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(180),
    pytest.mark.skipif(os.geteuid() != 0, reason="CRIU needs root"),
    pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc builds the memory holder"),
]


def bench_containers(run_id: str) -> list[str]:
    env = dict(os.environ, CONTAINERS_CONF="/etc/tescape/containers.conf")
    out = subprocess.run(
        ["podman", "ps", "--all", "--quiet", "--filter", f"label=io.tescape.bench={run_id}"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=60,
    )
    return out.stdout.split()


def test_quick_capsule_benchmark(tmp_path: Path, busybox_image: str) -> None:
    out = tmp_path / "capsules.json"
    work = tmp_path / "work"
    argv = ["--quick", "--out", str(out), "--work-dir", str(work)]
    proc = run_bench("capsule_bench", *argv, timeout=170)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert {"meta", "targets", "runs", "summary", "extrapolation", "cpu"} <= set(results)
    summary = results["summary"]["64/half"]
    assert summary["restores_verified"] is True
    assert summary["capsule_size_bytes"] >= 64 << 20
    assert 0.3 < summary["capsule_stored_bytes"] / summary["capsule_size_bytes"] < 0.7
    for key in ("notice_file_s", "raw_export_file_s", "restore_s", "raw_restore_s"):
        assert summary[key] > 0, key
    # the previous pipeline ran in the same round, its restore verified too
    for key in ("notice_old_s", "restore_old_s", "notice_new_vs_old", "restore_new_vs_old"):
        assert summary[key] > 0, key
    assert results["runs"]["64/half"]["rounds"][0]["tescape_old"]["restore"]["verified"] is True
    # the "images" path (CRIU's pages stored while the dump runs) in the same round, verified
    images = results["runs"]["64/half"]["rounds"][0]["tescape_images"]
    assert images["notice"]["via"] == "images" and images["restore"]["verified"] is True
    assert summary["notices_via_images"] == 1 and summary["notice_images_vs_raw_export"] > 0
    assert summary["notice_criu_frozen_s"] > 0
    assert summary["notice_files_frozen_s"] is not None
    assert 0 < summary["incremental_upload_vs_first"] < 0.5
    if results["meta"]["s3"]:
        assert summary["s3_rate_vs_slower_raw"] > 0
    # the Markdown table: the images path (the default) against issue 14's targets first
    assert "| notice→durable, images path (the default; s) |" in proc.stdout
    assert "| **CPU, images path / raw export** (≤ 1.3) |" in proc.stdout
    assert "| notice→durable, export path, FileStore (s) |" in proc.stdout
    assert summary["notice_images_cpu_vs_raw_export"] > 0
    assert results["targets"]["notice_images_vs_raw_export"] == 1.0
    assert bench_containers(results["meta"]["run_id"]) == []  # every container removed
    assert not any((work / "capsules").rglob("*.zst"))  # capsules deleted
