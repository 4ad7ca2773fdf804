"""The cost simulator (bench/spot_sim.py) against a small real run of the same workload.

    python -m bench.sim_check                      # two real runs (~4-5 min), then the sims
    python -m bench.sim_check --out bench/results/sim-check-DATE.json --markdown F.md
    python -m bench.sim_check --real bench/results/sim-check-DATE.json   # the comparison only

Workload (seeded, `jobs()`): N tasks (default 12) submitted `--gap` seconds apart, each a busybox
shell loop that counts for 20..60 real seconds (`sleep 1` per step) holding an 8 MiB /dev/shm
file; 2 cores, 1 GB, so one task fills one .large instance.

Real runs: `tescape serve` with the local provider's market: seed, `time_scale` (default 60:
a real second is a simulated minute), m5 and c5 types in six zones, every pool in the >20% bucket
with a short `exposure_hours` so that a few reclaims come within minutes, a `--notice` of real
seconds; policy spot_first, capsules at the notice only (no periodic capsules, no cost moves,
no rightsizing); one run per `--recoveries`: next_zone (restore the capsule in another zone) and
restart (from the beginning). Measured from the server's API and its SQLite store after it stopped:
reclaims (attempts with reason `reclaim`), cost (GET /api/v1/costs, and the
same instances billed the way the simulator bills: launch to stop, following the price path),
makespan (first submit to last end), wasted core-seconds (running time of attempts whose work a
later attempt started over), and the overheads the simulator has parameters for: boot (submit to
RUNNING), checkpoint (notice to capsule) and restore (capsule to RUNNING again, less a boot).
Also: the restarts of tasks that would have ended inside the notice (the gateway stops a task at
the notice even under `restart`; the simulator, as EC2, lets it run to the reclaim).

Simulated runs: `spot_sim.Run` on the same tasks in simulated time (every real duration x
time_scale), the same market config (seed, start time, types, bucket, exposure, notice,
quarantine), `spot_capsules` (next_zone) and `spot_restart`; once with the simulator's EC2
defaults (60 s boot, 5 s + GiB / 0.8 GiB/s capsules) and once calibrated with the overheads the
real run measured. Reclaims are random in both (the real market draws them every scheduler tick,
the simulator per attempt), so each simulated row is the mean over `--lucks` reclaim seeds (the
market itself stays the same), with its 10th-90th percentile range.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from bench.spot_sim import POLICIES, T0, Run, SimParams, Task
from capsule_runtime.protocol.resources import Resources
from gateway.market.catalog import CATALOG
from gateway.market.interruptions import Bucket
from gateway.market.model import Market, MarketConfig

REPO = Path(__file__).resolve().parent.parent
IMAGE = "localhost/tescape-test/busybox:1"
TERMINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}
VCPU = {t.name: t.vcpu for t in CATALOG}

# $1 = seconds of work (one `sleep 1` each), $2 = MiB held in /dev/shm
SCRIPT = r"""
dd if=/dev/urandom of=/dev/shm/blob bs=1M count=$2 2>/dev/null
i=0
while [ $i -lt $1 ]; do
  i=$((i + 1))
  echo "$i" >> /tmp/count
  sleep 1
done
echo "done $i"
"""


# -- the workload and the market --------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    index: int
    submit_s: float  # real seconds after the first submission
    seconds: int  # real seconds of work
    shm_mib: int = 8
    cpu_cores: int = 2
    ram_gb: float = 1.0


def jobs(n: int, seed: int, gap_s: float, min_s: int = 20, max_s: int = 60) -> list[Job]:
    rng = random.Random(f"{seed}/sim-check")
    return [Job(i, i * gap_s, rng.randint(min_s, max_s)) for i in range(n)]


@dataclass(frozen=True)
class Setup:
    seed: int = 5
    time_scale: float = 60.0
    instance_types: tuple[str, ...] = ("m5", "c5")
    bucket: str = ">20%"
    exposure_hours: float = 0.5  # simulated hours: with time_scale 60, minutes of real time
    notice_s: float = 20.0  # real seconds (the market does not scale the notice)
    quarantine_s: float = 180.0  # simulated seconds
    co_probability: float = 0.3
    recovery: str = "next_zone"
    max_instances: int = 12


def market_config(setup: Setup) -> dict[str, Any]:
    """`providers.local.market` of the real run."""
    return {
        "seed": setup.seed,
        "time_scale": setup.time_scale,
        "start_time": T0.isoformat(),
        "instance_types": list(setup.instance_types),
        "buckets": {"*": setup.bucket},
        "exposure_hours": setup.exposure_hours,
        "co_interruption_probability": setup.co_probability,
        "notice_seconds": setup.notice_s,
        "quarantine_seconds": setup.quarantine_s,
    }


def server_config(setup: Setup, root: Path, recovery: str) -> dict[str, Any]:
    return {
        "storage": {"allowed_dirs": [str(root)]},
        "scheduler": {
            "interval_seconds": 0.5,
            "idle_timeout_seconds": 1.0,
            "market_policy": "spot_first",
            "recovery": recovery,
            "cost_migration": {"enabled": False},
            "rightsizing": {"enabled": False},  # a sleeping task would be "oversized"
        },
        "providers": {
            "local": {"max_instances": setup.max_instances, "market": market_config(setup)}
        },
        "capsules": {"store": str(root / "capsules"), "interval_seconds": 0},
    }


def task_body(job: Job, recovery: str) -> dict[str, Any]:
    return {
        "name": f"sim-check-{job.index}",
        "executors": [
            {
                "image": IMAGE,
                "command": ["sh", "-c", SCRIPT, "job", str(job.seconds), str(job.shm_mib)],
            }
        ],
        "resources": {
            "cpu_cores": job.cpu_cores,
            "ram_gb": job.ram_gb,
            "backend_parameters": {"market_policy": "spot_first", "recovery": recovery},
        },
        "tags": {"bench": "sim_check"},
    }


# -- the real run -----------------------------------------------------------------------------


def _t(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def ensure_image() -> None:
    from capsule_runtime.engine.images import ImageBuilder, busybox_recipe
    from capsule_runtime.engine.podman_cli import PodmanCli

    ImageBuilder(PodmanCli(), cache_dir=REPO / ".cache" / "images").ensure(busybox_recipe(IMAGE))


def real_run(
    setup: Setup, work: list[Job], recovery: str, root: Path, timeout_s: float
) -> dict[str, Any]:
    """Run the workload through a real `tescape serve`; return what it recorded (raw)."""
    from tests.fixtures.server import tescape_server

    config = server_config(setup, root, recovery)
    ids: list[str] = []
    out: dict[str, Any] = {"recovery": recovery}
    started = time.time()
    with tescape_server(root / "data", config=config, run_tasks=True) as srv:
        api = srv.url + "/api/v1"
        t0 = time.time()
        for job in work:
            time.sleep(max(0.0, t0 + job.submit_s - time.time()))
            resp = requests.post(srv.tes + "/tasks", json=task_body(job, recovery), timeout=10)
            resp.raise_for_status()
            ids.append(resp.json()["id"])
        deadline = t0 + timeout_s
        states: dict[str, str] = {}
        while time.time() < deadline:
            states = {
                i: requests.get(f"{srv.tes}/tasks/{i}?view=MINIMAL", timeout=10).json()["state"]
                for i in ids
            }
            if all(s in TERMINAL for s in states.values()):
                break
            time.sleep(1.0)
        out["states"] = states
        out["costs"] = requests.get(api + "/costs?attempts=true", timeout=10).json()
        before = time.time()
        market = requests.get(api + "/market", timeout=10).json()
        out["market_probe"] = {"real": (before + time.time()) / 2, "simulated": market["time"]}
    out["task_ids"] = ids
    out["wall_s"] = time.time() - started
    out.update(read_store(root / "data" / "tescape.db", ids))
    out["containers_removed"] = remove_containers(out["attempts"])
    return out


def read_store(path: Path, ids: list[str]) -> dict[str, Any]:
    """Tasks, attempts, events and instances, from the stopped server's SQLite file."""
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    marks = ",".join("?" * len(ids))
    try:
        tasks = [
            dict(r)
            for r in db.execute(
                f"SELECT id, state, creation_time FROM tasks WHERE id IN ({marks})", ids
            )
        ]
        attempts = [
            dict(r)
            for r in db.execute(
                "SELECT id, task_id, number, instance_id, phase, reason, market, instance_type,"
                f" zone, price_per_hour, start_time, end_time, data FROM attempts"
                f" WHERE task_id IN ({marks}) ORDER BY task_id, number",
                ids,
            )
        ]
        events = [
            dict(r)
            for r in db.execute(
                "SELECT task_id, attempt_id, instance_id, time, kind, to_state, phase, message,"
                " data FROM events ORDER BY id"
            )
        ]
        instances = [
            dict(r)
            for r in db.execute(
                "SELECT id, instance_type, market, zone, state, price_per_hour, created_time,"
                " updated_time FROM instances"
            )
        ]
    finally:
        db.close()
    for row in attempts + events:
        row["data"] = json.loads(row["data"]) if row.get("data") else None
    return {"tasks": tasks, "attempts": attempts, "events": events, "instances": instances}


def remove_containers(attempts: list[dict[str, Any]]) -> list[str]:
    """Containers of this run's attempts still there (there should be none): removed."""
    ours = {a["id"] for a in attempts}
    try:
        listed = subprocess.run(
            ["podman", "ps", "-a", "--format", '{{.ID}} {{index .Labels "io.tescape.attempt"}}'],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return []
    removed = []
    for line in listed:
        cid, _, attempt = line.strip().partition(" ")
        if cid and attempt in ours:
            subprocess.run(["podman", "rm", "-f", cid], capture_output=True, timeout=60)
            removed.append(cid)
    return removed


# -- what the real run measured ---------------------------------------------------------------


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def measure(raw: dict[str, Any], setup: Setup, work: list[Job]) -> dict[str, Any]:
    """The real run's numbers, in the simulator's terms (real seconds; USD)."""
    by_task: dict[str, list[dict[str, Any]]] = {}
    for a in raw["attempts"]:
        by_task.setdefault(a["task_id"], []).append(a)
    events = [e for e in raw["events"] if e["task_id"] in set(raw["task_ids"])]
    task_events: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        task_events.setdefault(e["task_id"], []).append(e)
    created = {t["id"]: _t(t["creation_time"]) for t in raw["tasks"]}

    def phase_times(attempt_id: str) -> list[tuple[str, float]]:
        return [
            (e["phase"], _t(e["time"]))
            for e in events
            if e["attempt_id"] == attempt_id and e["kind"] == "phase"
        ]

    boots, dumps, restores, recoveries, stretches = [], [], [], [], []
    wasted = wasted_in_notice = 0.0
    in_notice = 0
    ends = []
    restored_attempts = {e["attempt_id"] for e in events if e["kind"] == "restored"}
    # tasks were submitted one by one, in the workload's order
    seconds = {t: work[i].seconds for i, t in enumerate(sorted(created, key=created.__getitem__))}
    for task_id, attempts in by_task.items():
        evs = task_events.get(task_id, [])
        running = [_t(e["time"]) for e in evs if e.get("to_state") == "RUNNING"]
        if running:
            boots.append(running[0] - created[task_id])
        done = [_t(a["end_time"]) for a in attempts if a["end_time"]]
        if done:
            ends.append(max(done))
        chain = chain_s = 0.0  # core-seconds and seconds computed since the last fresh start
        for k, a in enumerate(attempts):
            phases = phase_times(a["id"])
            run_from = next((t for p, t in phases if p == "RUNNING"), None)
            run_to = next(
                (
                    t
                    for p, t in phases
                    if run_from is not None
                    and t >= run_from
                    and p in ("CHECKPOINTING", "INTERRUPTED", "LOST", "DONE")
                ),
                None,
            )
            cores = VCPU.get(a["instance_type"] or "", 2)
            if k > 0 and a["id"] not in restored_attempts:
                wasted += chain  # started again from the beginning
                if seconds[task_id] - chain_s <= setup.notice_s:
                    in_notice += 1  # it would have finished before the reclaim itself
                    wasted_in_notice += chain
                chain = chain_s = 0.0
            if run_from is not None and run_to is not None:
                chain += (run_to - run_from) * cores
                chain_s += run_to - run_from
                if len(attempts) == 1:
                    stretches.append((run_to - run_from) / seconds[task_id])
            if a["reason"] == "reclaim" and k > 0:
                prev = attempts[k - 1]
                asked = [
                    _t(e["time"])
                    for e in evs
                    if e["kind"] == "migration_requested" and e["attempt_id"] == prev["id"]
                ]
                capsule = [
                    _t(e["time"])
                    for e in evs
                    if e["kind"] == "capsule" and e["attempt_id"] == prev["id"]
                ]
                if asked and capsule:
                    dumps.append(capsule[0] - asked[0])
                if capsule and run_from is not None and a["id"] in restored_attempts:
                    recoveries.append(run_from - capsule[0])
                    restores.append(
                        next(
                            e["data"]["seconds"]["total"]
                            for e in evs
                            if e["kind"] == "restored" and e["attempt_id"] == a["id"]
                        )
                    )
    boot = _mean(boots) or 0.0
    recovery = _mean(recoveries)
    restore = max(_mean(restores) or 0.0, (recovery or boot) - boot)

    # the instances billed as the simulator bills them: launch to stop, following the prices
    probe = raw["market_probe"]
    sim_at_probe = datetime.fromisoformat(probe["simulated"])

    def simulated(real: float) -> datetime:
        return sim_at_probe + timedelta(seconds=(real - probe["real"]) * setup.time_scale)

    market = Market(MarketConfig.model_validate(market_config(setup)))
    stops: dict[str, float] = {}
    for e in raw["events"]:
        if e["kind"] == "instance" and e["message"] in ("TERMINATING", "TERMINATED", "LOST"):
            stops.setdefault(e["instance_id"], _t(e["time"]))
    last: dict[str, float] = {}  # an instance still up when the run ended: to its last task
    for a in raw["attempts"]:
        if a["instance_id"] and a["end_time"]:
            last[a["instance_id"]] = max(last.get(a["instance_id"], 0.0), _t(a["end_time"]))
    billed = spot_hours = 0.0
    inst0 = raw["instances"][0] if raw["instances"] else {}
    for inst in raw["instances"]:
        end = stops.get(inst["id"]) or last.get(inst["id"]) or _t(inst["updated_time"])
        if inst["market"] == "spot":
            spot_hours += (end - _t(inst["created_time"])) * setup.time_scale / 3600.0
        billed += market.charge(
            inst["instance_type"],
            inst["zone"],
            inst["market"],
            simulated(_t(inst["created_time"])),
            simulated(end),
        )
    first = min(created.values())
    return {
        "sim_offset_s": (simulated(first) - T0).total_seconds(),
        "tasks": len(raw["task_ids"]),
        "complete": sum(1 for s in raw["states"].values() if s == "COMPLETE"),
        "interruptions": sum(1 for a in raw["attempts"] if a["reason"] == "reclaim"),
        "restores": len(restored_attempts),
        "restarts": sum(
            1
            for a in raw["attempts"]
            if a["reason"] in ("reclaim", "lost") and a["id"] not in restored_attempts
        ),
        "instances": len(raw["instances"]),
        "cost_usd": raw["costs"]["total"]["cost_usd"],
        "cost_instances_usd": billed,
        "makespan_s": (max(ends) - first) if ends else math.nan,
        "wasted_core_s": wasted,
        "restarts_inside_notice": in_notice,
        "wasted_inside_notice_core_s": wasted_in_notice,
        "work_stretch": statistics.median(stretches) if stretches else 1.0,
        "spot_hours": spot_hours,
        "expected_first_reclaims": spot_hours
        * market.interruptions.hazard(inst0["instance_type"], inst0["zone"])
        if raw["instances"]
        else 0.0,
        "work_core_s": float(sum(j.seconds * 2 for j in work)),
        "boot_s": boot,
        "checkpoint_s": _mean(dumps),
        "restore_s": restore,
        "recovery_s": recovery,
        "boots": boots,
        "checkpoints": dumps,
        "recoveries": recoveries,
        "wall_s": raw["wall_s"],
    }


# -- the simulated runs -----------------------------------------------------------------------


def sim_tasks(
    work: list[Job], setup: Setup, offset_s: float = 0.0, stretch: float = 1.0
) -> list[Task]:
    """The jobs in simulated seconds; `stretch`: real seconds one second of work takes."""
    s = setup.time_scale
    return [
        Task(
            index=j.index,
            arrival_s=offset_s + j.submit_s * s,
            work_s=j.seconds * stretch * s,
            need=Resources(cpu_cores=j.cpu_cores, ram_gb=j.ram_gb, disk_gb=0.0),
            resident_gib=j.shm_mib / 1024 + 0.002,  # the shm file and busybox itself
        )
        for j in work
    ]


def sim_params(setup: Setup, measured: dict[str, Any] | None) -> SimParams:
    """The simulator on the real run's market; `measured`: with its overheads (else the
    simulator's EC2 defaults)."""
    s = setup.time_scale
    base = SimParams(
        seed=setup.seed,
        exposure_hours=setup.exposure_hours,
        notice_s=setup.notice_s * s,
        no_notice=0.0,  # the local provider always posts the notice
        interval_s=0.0,  # no periodic capsules
        recovery=setup.recovery,
        co_probability=setup.co_probability,
        quarantine_s=setup.quarantine_s,
        instance_types=setup.instance_types,
    )
    if measured is None:
        return base
    return replace(
        base,
        boot_s=measured["boot_s"] * s,
        capsule_fixed_s=(measured["checkpoint_s"] or base.capsule_fixed_s / s) * s,
        restore_fixed_s=measured["restore_s"] * s,
        min_billing_s=0.0,
    )


def sim_once(
    tasks: list[Task], params: SimParams, bucket: str, policy: str, scale: float
) -> dict[str, float]:
    """One simulated run, in the real run's units (real seconds: simulated / time_scale)."""
    [pol] = [p for p in POLICIES if p.name == policy]
    run = Run(tasks, pol, Bucket(bucket), params)
    result = run.run()
    first = min(t.arrival_s for t in tasks)
    return {
        "interruptions": float(result.interruptions),
        "restores": float(result.restores),
        "restarts": float(result.restarts),
        "cost_usd": result.cost_usd,
        "makespan_s": (max(s.finish_t for s in run.states) - first) / scale,
        "wasted_core_s": result.wasted_core_h * 3600.0 / scale,
        "overhead_core_s": result.overhead_core_h * 3600.0 / scale,
    }


def sim_many(
    tasks: list[Task], params: SimParams, bucket: str, policy: str, scale: float, lucks: int
) -> dict[str, Any]:
    """Mean and 10-90% range over `lucks` reclaim seeds (the market stays the same)."""
    runs = [
        sim_once(tasks, replace(params, luck=luck), bucket, policy, scale)
        for luck in range(1, lucks + 1)
    ]
    out: dict[str, Any] = {}
    for key in runs[0]:
        values = sorted(r[key] for r in runs)
        out[key] = statistics.fmean(values)
        out[key + "_p10"] = values[int(0.1 * (len(values) - 1))]
        out[key + "_p90"] = values[int(0.9 * (len(values) - 1))]
    return out


# -- the comparison ---------------------------------------------------------------------------

ROWS = (
    ("interruptions", "reclaims", "{:.1f}"),
    ("restores", "restores from a capsule", "{:.1f}"),
    ("restarts", "restarts from the beginning", "{:.1f}"),
    ("cost_usd", "cost USD", "{:.4f}"),
    ("makespan_s", "makespan s", "{:.0f}"),
    ("wasted_core_s", "wasted core-s", "{:.0f}"),
)


def compare(
    setup: Setup,
    work: list[Job],
    real: dict[str, dict[str, Any]],
    lucks: int,
) -> dict[str, Any]:
    """The simulated runs for each real one (same policy) and for the other policy."""
    sims: dict[str, Any] = {}
    for recovery, measured in real.items():
        offset = measured.get("sim_offset_s", 0.0)
        for label, tasks, params in (
            ("defaults", sim_tasks(work, setup, offset), sim_params(setup, None)),
            (
                "calibrated",
                sim_tasks(work, setup, offset, measured["work_stretch"]),
                sim_params(setup, measured),
            ),
        ):
            for policy in ("spot_capsules", "spot_restart"):
                key = f"{recovery}/{label}/{policy}"
                sims[key] = sim_many(tasks, params, setup.bucket, policy, setup.time_scale, lucks)
                sims[key]["params"] = asdict(params)
    return sims


def _range(sim: dict[str, Any], key: str, fmt: str) -> str:
    return (
        f"{fmt.format(sim[key])} ({fmt.format(sim[key + '_p10'])}-{fmt.format(sim[key + '_p90'])})"
    )


def _ratio(a: float, b: float) -> str:
    if b == 0:
        return "—" if a == 0 else "∞"
    return f"{a / b:.2f}"


def table(real: dict[str, Any], sims: dict[str, Any], recovery: str) -> str:
    policy = "spot_restart" if recovery == "restart" else "spot_capsules"
    d, c = sims[f"{recovery}/defaults/{policy}"], sims[f"{recovery}/calibrated/{policy}"]
    lines = [
        f"| {policy} ({recovery}) | real | sim, EC2 defaults: mean (p10-p90) | real / sim "
        "| sim, calibrated: mean (p10-p90) | real / sim |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, name, fmt in ROWS:
        value = real[key]
        lines.append(
            f"| {name} | {fmt.format(value)} | {_range(d, key, fmt)} | {_ratio(value, d[key])} "
            f"| {_range(c, key, fmt)} | {_ratio(value, c[key])} |"
        )
    lines.append(
        f"| cost USD, instances billed as the simulator bills | {real['cost_instances_usd']:.4f} "
        f"| | {_ratio(real['cost_instances_usd'], d['cost_usd'])} | "
        f"| {_ratio(real['cost_instances_usd'], c['cost_usd'])} |"
    )
    lines.append(
        f"| Spot instance-hours (simulated) / first reclaims they give on average "
        f"| {real['spot_hours']:.2f} / {real['expected_first_reclaims']:.1f} | | | | |"
    )
    if real["restarts"]:
        lines.append(
            f"| restarts of a task that would have ended inside the notice / their wasted core-s "
            f"| {real['restarts_inside_notice']} / {real['wasted_inside_notice_core_s']:.0f} "
            "| | | | |"
        )
    other = "spot_restart" if policy == "spot_capsules" else "spot_capsules"
    o = sims[f"{recovery}/calibrated/{other}"]
    lines.append(
        f"| wasted core-s under {other} (sim, calibrated) | | | "
        f"| {_range(o, 'wasted_core_s', '{:.0f}')} | |"
    )
    return "\n".join(lines) + "\n"


def overheads(real: dict[str, Any], setup: Setup) -> str:
    def fmt(v: float | None) -> str:
        return "—" if v is None else f"{v:.2f} s"

    s = setup.time_scale
    return (
        "| overhead (real seconds) | measured | simulator default (÷ time_scale) |\n"
        "| --- | ---: | ---: |\n"
        f"| boot: submit → RUNNING | {fmt(real['boot_s'])} | {fmt(SimParams().boot_s / s)} |\n"
        f"| checkpoint: notice → capsule | {fmt(real['checkpoint_s'])} "
        f"| {fmt(SimParams().capsule_fixed_s / s)} |\n"
        f"| restore (capsule → RUNNING, less a boot) | {fmt(real['restore_s'])} "
        f"| {fmt(SimParams().capsule_fixed_s / s)} |\n"
        f"| capsule → RUNNING on the new instance | {fmt(real['recovery_s'])} "
        f"| {fmt((SimParams().boot_s + SimParams().capsule_fixed_s) / s)} |\n"
        f"| one second of work (`sleep 1` + the loop), median | {fmt(real['work_stretch'])} "
        "| 1.00 s |\n"
    )


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor()


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--tasks", type=int, default=12)
    ap.add_argument("--seed", type=int, default=Setup.seed, help="market and workload seed")
    ap.add_argument("--gap", type=float, default=6.0, help="real seconds between submissions")
    ap.add_argument("--time-scale", type=float, default=Setup.time_scale)
    ap.add_argument("--exposure-hours", type=float, default=Setup.exposure_hours)
    ap.add_argument("--notice", type=float, default=Setup.notice_s, help="real seconds")
    ap.add_argument("--lucks", type=int, default=500, help="reclaim seeds per simulated row")
    ap.add_argument(
        "--recoveries",
        default="next_zone,restart",
        help="real runs, comma-separated: next_zone (capsules) and/or restart",
    )
    ap.add_argument("--timeout", type=float, default=300.0, help="per real run, seconds")
    ap.add_argument("--work-dir", help="default: a temporary directory, removed")
    ap.add_argument("--real", help="reuse the real runs of this results JSON (sims only)")
    ap.add_argument("--out", help="write the results as JSON here")
    ap.add_argument("--markdown", help="write the tables as Markdown here")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    setup = Setup(
        seed=args.seed,
        time_scale=args.time_scale,
        exposure_hours=args.exposure_hours,
        notice_s=args.notice,
    )
    work = jobs(args.tasks, args.seed, args.gap)
    raws: dict[str, Any] = {}
    recorded: dict[str, Any] | None = None
    if args.real:
        doc = json.loads(Path(args.real).read_text())
        recorded = doc["meta"].get("real_run") or doc["meta"]
        setup = Setup(**{**doc["setup"], "instance_types": tuple(doc["setup"]["instance_types"])})
        work = [Job(**j) for j in doc["jobs"]]
        raws = doc["raw"]
    else:
        ensure_image()
        with contextlib.ExitStack() as stack:
            if args.work_dir:
                base = Path(args.work_dir)
                base.mkdir(parents=True, exist_ok=True)
            else:
                base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sim-check-")))
            for recovery in args.recoveries.split(","):
                print(f"real run ({recovery}) ...", flush=True)
                raws[recovery] = real_run(setup, work, recovery, base / recovery, args.timeout)
    real = {r: measure(raw, setup, work) for r, raw in raws.items()}
    sims = compare(setup, work, real, args.lucks)
    text = []
    for recovery, measured in real.items():
        text.append(
            f"### {recovery}: {measured['complete']}/{measured['tasks']} tasks complete, "
            f"{measured['instances']} instances, real run {measured['wall_s']:.0f} s\n\n"
            + table(measured, sims, recovery)
            + "\n"
            + overheads(measured, setup)
        )
    body = "\n".join(text)
    print(body)
    doc = {
        "meta": {
            "bench": "sim_check",
            "command": "python -m bench.sim_check " + " ".join(argv or sys.argv[1:]),
            "date": datetime.now().astimezone().isoformat(timespec="seconds"),
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "cpu_model": _cpu_model(),
            "lucks": args.lucks,
            **({"real_run": recorded} if recorded is not None else {}),
        },
        "setup": asdict(setup),
        "jobs": [asdict(j) for j in work],
        "real": real,
        "sims": sims,
        "raw": raws,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(body)
    return 0 if all(m["complete"] == m["tasks"] for m in real.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
