"""bench/sim_check.py without a server: the recorded real run (bench/results) measured again and
compared with the simulator, and the scaling of real durations into simulated ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import sim_check
from bench.sim_check import Setup, jobs, sim_params, sim_tasks

REPO = Path(__file__).resolve().parents[2]
RECORDED = REPO / "bench" / "results" / "sim-check-2026-11-29.json"


def test_real_durations_become_simulated_seconds() -> None:
    setup = Setup(time_scale=60.0, notice_s=20.0)
    work = jobs(4, seed=5, gap_s=6.0)
    assert all(20 <= j.seconds <= 60 for j in work) and work == jobs(4, seed=5, gap_s=6.0)
    tasks = sim_tasks(work, setup, offset_s=30.0, stretch=1.5)
    assert [t.arrival_s for t in tasks] == [30.0 + 360.0 * i for i in range(4)]
    assert [t.work_s for t in tasks] == [j.seconds * 90.0 for j in work]
    defaults = sim_params(setup, None)
    assert defaults.notice_s == 1200.0 and defaults.no_notice == 0.0
    assert defaults.instance_types == setup.instance_types
    calibrated = sim_params(setup, {"boot_s": 1.0, "checkpoint_s": 0.5, "restore_s": 2.0})
    assert calibrated.boot_s == 60.0
    assert calibrated.dump_s(0.0) == 30.0 and calibrated.restore_s(0.0) == 120.0


def test_the_recorded_real_run_against_the_simulator(tmp_path: Path) -> None:
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    args = ["--real", str(RECORDED), "--lucks", "3", "--out", str(out), "--markdown", str(md)]
    assert sim_check.main(args) == 0
    doc = json.loads(out.read_text())
    capsules, restart = doc["real"]["next_zone"], doc["real"]["restart"]
    assert capsules["complete"] == capsules["tasks"] == restart["complete"] == 12
    assert capsules["interruptions"] > 0 and capsules["restores"] == capsules["interruptions"]
    assert capsules["wasted_core_s"] == 0 and restart["wasted_core_s"] > 0
    assert restart["restarts"] == restart["interruptions"] > 0
    assert capsules["cost_usd"] == pytest.approx(capsules["cost_instances_usd"], rel=0.2)
    assert 0 < capsules["checkpoint_s"] < 20 and 0 < capsules["boot_s"] < 20
    sim = doc["sims"]["next_zone/spot_capsules"]
    # a notice that finds a task still booting or restoring costs work (it moves only RUNNING)
    assert sim["wasted_core_s"] < doc["sims"]["next_zone/spot_restart"]["wasted_core_s"]
    assert sim["cost_usd"] > 0
    assert sim["params"]["boot_s"] == pytest.approx(capsules["boot_s"] * 60.0)
    assert doc["meta"]["real_run"]["bench"] == "sim_check"
    text = md.read_text()
    assert "| reclaims |" in text and "| makespan s |" in text
