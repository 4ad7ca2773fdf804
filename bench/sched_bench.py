"""Scheduler scale (issue 5): N queued tasks placed by the real scheduler on the real store.

    python -m bench.sched_bench                        # 10,000 tasks, 3 repetitions, 3 variants
    python -m bench.sched_bench --tasks 200 --repeat 1 # a quick look (the smoke test)
    python -m bench.sched_bench --profile              # + one cProfile'd run: where the time goes
    python -m bench.sched_bench --db postgresql://postgres@127.0.0.1:5432/postgres

`gateway.scheduler.loop.Scheduler.tick` (placement: `_place`, `_room`, `_placeable`; launches:
`_launch`) against `gateway.store` (TaskStore, FleetStore) on a SQLite file in a temporary
directory (or a fresh database created on the PostgreSQL server given with --db and dropped
afterwards; not measured yet). Only the provider is fake: its instances "launch" instantly and
register as an agent does (READY, with their capacity), and it never loses one. Each repetition
starts from a fresh database.

Setup (not timed in the decisions): N tasks created through `TaskStore.create` from 64 threads
(as the API does: concurrent creates share a group commit), each 1 CPU core and 1, 2 or 4 GB RAM;
then the instances. Timed: `tick()` until no task is QUEUED; every task must then be INITIALIZING
with exactly one live attempt on an instance.

Variants:
    ready    --instances READY instances of 32 cores / 128 GB (default: room for N + 10%)
    market   the simulated Spot market on (`providers.local.market`, interruptions off): the
             provider's offers are the market's 540, the instances are m5.8xlarge across the six
             zones, two thirds Spot and one third on-demand, and the tasks cycle the market
             policies spot_first / spot_only / on_demand_only (backend_parameters)
    launch   no instance at first: the scheduler launches them itself through the fake provider
             (192 cores / 768 GB, `max_instances` 64, one at a time as `_launch` does: each
             registers before the next), so the ticks include launches

A decision is one task placed (QUEUED → INITIALIZING with its attempt); decisions per second is
N / the ticks' wall time. Reported per variant: the median of --repeat repetitions.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import math
import platform
import pstats
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from capsule_runtime.protocol.resources import Resources
from gateway.auth import token_sha256
from gateway.config import Config, load_config
from gateway.market.model import Market
from gateway.providers.base import (
    Capability,
    CloudState,
    LaunchRecord,
    LaunchSpec,
    Offer,
    Provider,
)
from gateway.scheduler.loop import Scheduler
from gateway.scheduler.wakeups import Wakeups
from gateway.store import TaskStore, open_database
from gateway.store.database import Database
from gateway.store.fleet import LIVE_PHASES, FleetStore, Instance, InstanceState
from gateway.store.fleet_data import InstanceData
from gateway.store.schema import attempts, tasks
from gateway.tes.states import State

TARGET_DECISIONS_PER_S = 1000.0
EXECUTORS = [{"image": "alpine", "command": ["true"]}]
POLICIES = ("spot_first", "spot_only", "on_demand_only")
VARIANTS = ("ready", "market", "launch")
READY_SHAPE = (32.0, 128.0, 100.0)  # cores, GB RAM, GB disk
LAUNCH_SHAPE = (192.0, 768.0, 1000.0)
MARKET_TYPE = "m5.8xlarge"  # 32 vCPU, 128 GiB
MAX_INSTANCES = 64  # the configuration's upper bound


class BenchProvider(Provider):
    """Instances come up at once: `launch` registers the agent (READY, with its capacity) as
    `Dispatcher.register` does. Offers: one shape, or the market's."""

    name = "bench"

    def __init__(self, fleet: FleetStore, shape: tuple[float, float, float], market: Market | None):
        self.fleet = fleet
        self.shape = shape
        self.market = market
        self.live: set[str] = set()
        self.max_instances = MAX_INSTANCES
        caps = {Capability.SPOT, Capability.ON_DEMAND}
        self.capabilities = frozenset(caps | ({Capability.PRICES} if market else set()))

    def offers(self) -> list[Offer]:
        if self.market is not None:
            return self.market.offers()
        cpu, ram, disk = self.shape
        return [
            Offer(
                instance_type="bench.xl",
                market="spot",
                zone="z1",
                price_per_hour=0.05,
                cpu_cores=cpu,
                ram_gb=ram,
                disk_gb=disk,
            )
        ]

    def launch(self, spec: LaunchSpec) -> LaunchRecord:
        self.live.add(spec.instance_id)
        inst = self.fleet.instance(spec.instance_id)
        assert inst is not None
        register(self.fleet, inst)
        return LaunchRecord(spec.instance_id, spec.offer.zone)

    def query(self, records: Sequence[LaunchRecord]) -> dict[str, CloudState | None]:
        return {
            r.provider_id: CloudState.RUNNING if r.provider_id in self.live else None
            for r in records
        }

    def terminate(self, record: LaunchRecord) -> None:
        self.live.discard(record.provider_id)

    def close(self) -> None:
        self.live.clear()


def register(fleet: FleetStore, inst: Instance) -> None:
    """What `Dispatcher.register` does for an agent that reports the offered capacity."""
    data = inst.data.model_copy(
        update={"hostname": f"host-{inst.id}", "agent_version": "bench", "facts": []}
    )
    fleet.set_instance_state(inst.id, InstanceState.READY, data=data)
    fleet.heartbeat(inst.id)


@contextmanager
def database(url: str | None, work: Path) -> Iterator[Database]:
    """A fresh database: a SQLite file under `work`, or a new database on the PostgreSQL server
    of `url`, dropped afterwards."""
    if url is None:
        db = open_database(f"sqlite:///{work / 'sched.db'}")
        try:
            yield db
        finally:
            db.close()
        return
    name = f"tescape_sched_bench_{secrets.token_hex(4)}"
    server_url = make_url(url).set(drivername="postgresql+psycopg")
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    db = open_database(server_url.set(database=name).render_as_string(hide_password=False))
    try:
        yield db
    finally:
        db.close()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def spec(i: int, variant: str) -> dict[str, Any]:
    resources: dict[str, Any] = {"cpu_cores": 1, "ram_gb": (1, 2, 4)[i % 3]}
    if variant == "market":
        resources["backend_parameters"] = {"market_policy": POLICIES[(i // 3) % 3]}
    return {"name": f"bench-{i}", "executors": EXECUTORS, "resources": resources}


def queue_tasks(store: TaskStore, n: int, variant: str) -> None:
    with ThreadPoolExecutor(64) as pool:
        list(pool.map(lambda i: store.create(spec(i, variant)), range(n)))


def add_instances(
    fleet: FleetStore, provider: BenchProvider, n: int, variant: str, market: Market | None
) -> None:
    for k in range(n):
        if variant == "market":
            assert market is not None
            zone = market.zones[k % len(market.zones)]
            kind = "spot" if k < spot_instances(n) else "on-demand"
            offer = next(
                o
                for o in market.offers()
                if o.instance_type == MARKET_TYPE and o.zone == zone and o.market == kind
            )
        else:
            cpu, ram, disk = READY_SHAPE
            offer = Offer(
                instance_type="bench.8xl",
                market="spot",
                zone="z1",
                price_per_hour=0.05 + k * 1e-4,
                cpu_cores=cpu,
                ram_gb=ram,
                disk_gb=disk,
            )
        inst = fleet.add_instance(
            provider=provider.name,
            instance_type=offer.instance_type,
            market=offer.market,
            zone=offer.zone,
            price_per_hour=offer.price_per_hour,
            token_sha256=token_sha256(secrets.token_urlsafe(16)),
            data=InstanceData(
                capacity=Resources(
                    cpu_cores=offer.cpu_cores, ram_gb=offer.ram_gb, disk_gb=offer.disk_gb
                )
            ),
        )
        provider.live.add(inst.id)
        register(fleet, inst)


def config(work: Path, variant: str) -> Config:
    return load_config(
        overrides={
            "data_dir": str(work),
            "capsules": {"keep": True},
            "scheduler": {"heartbeat_timeout_seconds": 3600, "launch_timeout_seconds": 3600},
            "providers": {
                "local": {
                    "max_instances": MAX_INSTANCES,
                    "market": {
                        "enabled": variant == "market",
                        "interruptions": False,
                        "seed": 1,
                    },
                }
            },
        },
        environ={},
    )


def default_instances(n_tasks: int) -> int:
    """Room for every task + 10%; in the market variant, as much Spot room as the two thirds of
    the tasks that may run on Spot and as much on-demand room as the third that may not."""
    per = READY_SHAPE[0] / 1.1
    return math.ceil(n_tasks * 2 / 3 / per) + math.ceil(n_tasks / 3 / per)


def spot_instances(n_instances: int) -> int:
    return math.ceil(n_instances * 2 / 3)


def run_once(
    n_tasks: int,
    n_instances: int,
    variant: str,
    db_url: str | None,
    profile: cProfile.Profile | None = None,
) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="sched-bench-") as tmp,
        database(db_url, Path(tmp)) as db,
    ):
        work = Path(tmp)
        cfg = config(work, variant)
        market = Market(cfg.providers.local.market) if variant == "market" else None
        store, fleet = TaskStore(db), FleetStore(db)
        shape = LAUNCH_SHAPE if variant == "launch" else READY_SHAPE
        provider = BenchProvider(fleet, shape, market)
        scheduler = Scheduler(cfg, store, fleet, provider, Wakeups(), market=market)

        started = time.perf_counter()
        queue_tasks(store, n_tasks, variant)
        queued_s = time.perf_counter() - started
        started = time.perf_counter()
        if variant != "launch":
            add_instances(fleet, provider, n_instances, variant, market)
        instances_s = time.perf_counter() - started

        ticks: list[float] = []
        placed_per_tick: list[int] = []
        remaining = n_tasks
        while remaining:
            if profile is not None:
                profile.enable()
            t0 = time.perf_counter()
            scheduler.tick()
            ticks.append(time.perf_counter() - t0)
            if profile is not None:
                profile.disable()
            left = count_state(db, State.QUEUED)
            placed_per_tick.append(remaining - left)
            if left == remaining and variant != "launch":
                raise RuntimeError(f"a tick placed nothing; {left} tasks still QUEUED")
            if len(ticks) > 10 * n_tasks + 100:
                raise RuntimeError("the scheduler does not converge")
            remaining = left
        check_placed(db, n_tasks)
        seconds = sum(ticks)
        return {
            "variant": variant,
            "tasks": n_tasks,
            "instances": len(fleet.instances({InstanceState.READY})),
            "setup_queue_s": round(queued_s, 3),
            "setup_instances_s": round(instances_s, 3),
            "ticks": len(ticks),
            "seconds": round(seconds, 3),
            "decisions_per_s": round(n_tasks / seconds, 1),
            "tick_ms_median": round(statistics.median(ticks) * 1000, 2),
            "tick_ms_max": round(max(ticks) * 1000, 2),
            "placed_per_tick_max": max(placed_per_tick),
        }


def count_state(db: Database, state: State) -> int:
    with db.engine.connect() as conn:
        query = select(func.count()).select_from(tasks).where(tasks.c.state == state.value)
        return int(conn.execute(query).scalar() or 0)


def check_placed(db: Database, n: int) -> None:
    """Every task INITIALIZING, with exactly one live attempt, on an instance."""
    initializing = count_state(db, State.INITIALIZING)
    with db.engine.connect() as conn:
        live = conn.execute(
            select(func.count(func.distinct(attempts.c.task_id))).where(
                attempts.c.phase.in_([p.value for p in LIVE_PHASES]),
                attempts.c.instance_id.is_not(None),
            )
        ).scalar()
        total = conn.execute(select(func.count()).select_from(attempts)).scalar()
    if not initializing == live == total == n:
        raise RuntimeError(
            f"expected {n} tasks placed; INITIALIZING {initializing}, tasks with a live attempt "
            f"{live}, attempts {total}"
        )


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("seconds", "decisions_per_s", "tick_ms_median", "setup_queue_s", "setup_instances_s")
    out = {k: runs[0][k] for k in ("variant", "tasks", "instances", "ticks")}
    for k in keys:
        out[k] = round(statistics.median(r[k] for r in runs), 3)
    out["decisions_per_s_all"] = [r["decisions_per_s"] for r in runs]
    out["met"] = out["decisions_per_s"] >= TARGET_DECISIONS_PER_S
    return out


def profile_text(prof: cProfile.Profile, top: int) -> str:
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(r"gateway/|sqlalchemy/engine/base", top)
    return buf.getvalue()


def markdown(summaries: list[dict[str, Any]]) -> str:
    lines = [
        "| variant | tasks | instances | ticks | wall (s) | decisions/s | tick (ms) | met |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for s in summaries:
        lines.append(
            f"| {s['variant']} | {s['tasks']:,} | {s['instances']} | {s['ticks']} | "
            f"{s['seconds']:.2f} | {s['decisions_per_s']:,.0f} | {s['tick_ms_median']:.1f} | "
            f"{'yes' if s['met'] else 'no'} |"
        )
    return "\n".join(lines)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument(
        "--instances", type=int, help="READY instances of 32 cores (default: room for all + 10%%)"
    )
    ap.add_argument("--repeat", type=int, default=3, help="repetitions per variant (median)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="of " + ",".join(VARIANTS))
    ap.add_argument("--db", help="a PostgreSQL server URL (default: SQLite in a temp dir)")
    ap.add_argument("--profile", action="store_true", help="one more run under cProfile")
    ap.add_argument("--profile-top", type=int, default=25)
    ap.add_argument("--out", help="write the results as JSON here")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        print(f"unknown variants: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    n_instances = args.instances or default_instances(args.tasks)
    results: dict[str, Any] = {
        "meta": {
            "command": " ".join(["python -m bench.sched_bench", *(argv or sys.argv[1:])]),
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": _cpus(),
            "store": "postgresql" if args.db else "sqlite",
        },
        "target_decisions_per_s": TARGET_DECISIONS_PER_S,
        "runs": [],
        "summary": [],
    }
    for variant in variants:
        runs = []
        for k in range(args.repeat):
            run = run_once(args.tasks, n_instances, variant, args.db)
            print(f"{variant} #{k + 1}: {json.dumps(run)}", flush=True)
            runs.append(run)
        results["runs"] += runs
        results["summary"].append(summarize(runs))
    if args.profile:
        prof = cProfile.Profile()
        run_once(args.tasks, n_instances, variants[0], args.db, profile=prof)
        text_ = profile_text(prof, args.profile_top)
        results["profile"] = text_
        print(text_)
    table = markdown(results["summary"])
    print(table)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


if __name__ == "__main__":
    sys.exit(main())
