"""Cost simulation of Spot policies in simulated time, on the scheduler's own market and decisions.

    python -m bench.spot_sim                                   # the default run (< 1 min)
    python -m bench.spot_sim --out bench/results/spot-sim-DATE.json [--markdown F.md]
    python -m bench.spot_sim --tasks 50 --buckets "<5%" --no-scale   # a quick look

The same code as the gateway: `gateway.market.model.Market` (catalog, Spot price process,
interruption hazards, co-interruptions, quarantines) and `gateway.market.policy` (choose_offer,
recovery_plan, cost_migration, migration_cost_usd). Only the passage of time, the instances and
the tasks' progress are simulated here.

Workload (seeded, `workload()`): N tasks submitted uniformly over the first hour; compute time
log-normal (median 45 min, sigma 1.2) clipped to 5 min .. 12 h; memory log-uniform 1 .. 64 GiB;
1, 2, 4, 8 or 16 cores; 20 GB disk; the process holds 30-90% of its memory resident (the capsule
size). Each task runs alone on the cheapest instance that fits (one task per instance, so pools
are shared only through co-interruptions and quarantines).

Policies:
    on_demand            on-demand only; no interruptions
    spot_restart         Spot; a reclaim loses the attempt and the task starts again from the
                         beginning on the cheapest fit (Nextflow maxSpotAttempts, Cromwell
                         preemptible, AWS Batch retries)
    spot_capsules        Spot; periodic capsules every 15 min, a capsule at the notice, restore on
                         the instance `recovery_plan(--recovery)` picks (default next_zone)
    spot_capsules_cost   spot_capsules + cost-triggered migration (cost_migration, evaluated at
                         every price step)

Capsule costs (parameters): a checkpoint freezes the task for `5 s + resident GiB / 0.8 GiB/s`
(--dump-gib-s), a restore takes `5 s + resident GiB / 0.8 GiB/s` (--restore-gib-s) after the new
instance's 60 s boot; 0.8 GiB/s is this machine's capsule pipeline rate, pessimistic for EC2. A
notice gives 120 s; a capsule that cannot finish in it falls back to the last periodic capsule, as
does a reclaim without a usable notice (--no-notice, default 5% of reclaims, an assumption: AWS
says the notice can come too late, not how often). Billing is per second with a 60 s minimum, from
launch to termination, following every Spot price change. Cost migration estimates a task's
remaining time as the time it has run so far (at least 15 min); the simulator knows better but
the scheduler would not.

Reclaims: per instance, an exponential time drawn from the bucket's hazard; each reclaim brings
co-interruptions in its pool (gateway/market/interruptions.py). Every pool of a run is in one
bucket. Common random numbers: attempt n of task i draws the same uniform under every policy and
bucket, so policies are compared on the same luck. `--exposure-hours` 730 reads the Advisor's
"interrupted per month" literally; the default run repeats the buckets at 24 h (30x the hazard) as
a stress test. Each row is the mean over `--seeds` (default 1,2,3: workload, prices and reclaims
all change with the seed).

Reported per bucket and policy: cost, savings against on-demand, makespan (last finish),
wasted core-hours (work done and then lost, so redone, x the instance's vCPUs), overhead
core-hours (boot, restore, checkpoint pauses), reclaims, restores, restarts, cost migrations.

Against a real run: bench/sim_check.py runs a small workload through `tescape serve` and through
`Run` on the same market (`SimParams.instance_types`), with the overheads the real run measured
(`boot_s`, `capsule_fixed_s`, `restore_fixed_s`) and many reclaim seeds (`SimParams.luck`: the
reclaim draws change, the market does not).

Scheduler scale (`scale_bench`): 10,000 queued tasks, one `market_for` + `choose_offer` decision
each over every offer of the market (45 types x 6 zones x 2 markets), decisions per second.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from capsule_runtime.protocol.resources import Resources
from gateway.market.interruptions import Bucket
from gateway.market.model import ON_DEMAND, SPOT, Market, MarketConfig
from gateway.market.policy import (
    CostRule,
    MarketPolicy,
    choose_offer,
    cost_migration,
    market_for,
    migration_cost_usd,
    recovery_plan,
)
from gateway.providers.base import Offer

T0 = datetime(2026, 1, 5, tzinfo=UTC)
HOUR = 3600.0
TARGET_SAVINGS_PCT = 70.0
TARGET_MAKESPAN_RATIO = 1.1
TARGET_WASTE_RATIO = 0.01
TARGET_DECISIONS_PER_S = 1000.0


# -- workload ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    index: int
    arrival_s: float
    work_s: float  # compute time when never interrupted
    need: Resources
    resident_gib: float  # what a capsule holds


def workload(
    n: int,
    seed: int,
    arrival_hours: float = 1.0,
    median_minutes: float = 45.0,
    sigma: float = 1.2,
    min_minutes: float = 5.0,
    max_hours: float = 12.0,
) -> list[Task]:
    rng = random.Random(f"{seed}/workload")
    tasks = []
    for i in range(n):
        minutes = rng.lognormvariate(math.log(median_minutes), sigma)
        work = min(max(minutes * 60.0, min_minutes * 60.0), max_hours * HOUR)
        ram = round(2.0 ** rng.uniform(0.0, 6.0), 1)
        cores = rng.choice((1, 2, 4, 8, 16))
        tasks.append(
            Task(
                index=i,
                arrival_s=rng.uniform(0.0, arrival_hours * HOUR),
                work_s=work,
                need=Resources(cpu_cores=cores, ram_gb=ram, disk_gb=20.0),
                resident_gib=ram * rng.uniform(0.3, 0.9),
            )
        )
    return tasks


def describe(tasks: list[Task]) -> dict[str, Any]:
    hours = sorted(t.work_s / HOUR for t in tasks)
    return {
        "tasks": len(tasks),
        "work_hours_total": round(sum(hours), 1),
        "work_hours_median": round(hours[len(hours) // 2], 3),
        "work_hours_max": round(hours[-1], 2),
        "core_hours_total": round(sum(t.work_s / HOUR * t.need.cpu_cores for t in tasks), 1),
        "ram_gib_range": [min(t.need.ram_gb for t in tasks), max(t.need.ram_gb for t in tasks)],
    }


# -- parameters and policies ------------------------------------------------------------------


@dataclass(frozen=True)
class SimParams:
    seed: int = 1
    exposure_hours: float = 730.0
    notice_s: float = 120.0
    no_notice: float = 0.05  # share of reclaims without a usable notice
    boot_s: float = 60.0
    dump_gib_s: float = 0.8
    restore_gib_s: float = 0.8
    capsule_fixed_s: float = 5.0
    interval_s: float = 900.0  # periodic capsules
    recovery: str = "next_zone"
    co_probability: float = 0.3
    quarantine_s: float = 180.0
    cost_threshold_pct: float = 20.0
    cost_min_interval_s: float = 1800.0
    retry_s: float = 60.0  # when nothing fits, try again this much later
    min_billing_s: float = 60.0
    restore_fixed_s: float | None = None  # None: capsule_fixed_s (bench/sim_check calibrates)
    instance_types: tuple[str, ...] = ()  # types or families offered; (): the whole catalog
    luck: int | None = None  # seed of the reclaim draws alone; None: `seed`

    def dump_s(self, gib: float) -> float:
        return self.capsule_fixed_s + gib / self.dump_gib_s

    def restore_s(self, gib: float) -> float:
        fixed = self.capsule_fixed_s if self.restore_fixed_s is None else self.restore_fixed_s
        return fixed + gib / self.restore_gib_s

    @property
    def draw_seed(self) -> int:
        return self.seed if self.luck is None else self.luck


@dataclass(frozen=True)
class SimPolicy:
    name: str
    market: MarketPolicy
    recovery: str | None  # None: the run's --recovery
    capsules: bool
    cost_migration: bool


POLICIES = (
    SimPolicy("on_demand", MarketPolicy.ON_DEMAND_ONLY, "restart", False, False),
    SimPolicy("spot_restart", MarketPolicy.SPOT_FIRST, "restart", False, False),
    SimPolicy("spot_capsules", MarketPolicy.SPOT_FIRST, None, True, False),
    SimPolicy("spot_capsules_cost", MarketPolicy.SPOT_FIRST, None, True, True),
)


# -- one run ----------------------------------------------------------------------------------


@dataclass
class TaskState:
    task: Task
    offer: Offer | None = None  # the instance it is on now
    left: Offer | None = None  # the instance it lost, while it waits for a new one
    token: int = 0  # the current attempt; events of older attempts are ignored
    launch_t: float = 0.0
    run_start: float = 0.0  # boot (and restore) done: the task computes from here
    base_work: float = 0.0  # work at run_start
    saved_work: float = 0.0  # work in the newest complete capsule
    interruptions: int = 0
    last_move_t: float = -math.inf
    done: bool = False
    finish_t: float = 0.0
    cost: float = 0.0
    wasted_core_s: float = 0.0
    overhead_core_s: float = 0.0
    attempts: dict[str, int] = field(default_factory=lambda: {SPOT: 0, ON_DEMAND: 0})


@dataclass
class RunResult:
    bucket: str
    policy: str
    cost_usd: float
    makespan_h: float
    wasted_core_h: float
    overhead_core_h: float
    interruptions: int
    restores: int
    restarts: int
    cost_migrations: int
    spot_attempts: int
    on_demand_attempts: int
    seconds: float


class Run:
    """One policy in one bucket: an event loop over simulated seconds since T0."""

    def __init__(self, tasks: list[Task], policy: SimPolicy, bucket: Bucket, params: SimParams):
        self.p = params
        self.policy = policy
        self.bucket = bucket
        self.recovery = policy.recovery or params.recovery
        self.now = 0.0
        self.market = Market(
            MarketConfig(
                seed=params.seed,
                start_time=T0.isoformat(),
                instance_types=list(params.instance_types),
                buckets={"*": bucket.value},
                exposure_hours=params.exposure_hours,
                co_interruption_probability=params.co_probability,
                notice_seconds=params.notice_s,
                quarantine_seconds=params.quarantine_s,
            ),
            clock=lambda: T0 + timedelta(seconds=self.now),
        )
        self.states = [TaskState(t) for t in tasks]
        self.events: list[tuple[float, int, str, int, int]] = []
        self.seq = 0
        self.pools: dict[tuple[str, str], set[int]] = {}
        self.restores = self.restarts = self.migrations = 0
        self.rule = CostRule(
            threshold_pct=params.cost_threshold_pct,
            min_interval_seconds=params.cost_min_interval_s,
        )

    # -- helpers ----------------------------------------------------------------------------

    def at(self, t: float) -> datetime:
        return T0 + timedelta(seconds=t)

    def push(self, t: float, kind: str, index: int, token: int) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, kind, index, token))

    def _cycle(self, s: TaskState) -> tuple[float, float]:
        if not self.policy.capsules or self.p.interval_s <= 0:
            return math.inf, 0.0
        return self.p.interval_s, self.p.dump_s(s.task.resident_gib)

    def work_at(self, s: TaskState, t: float) -> float:
        every, pause = self._cycle(s)
        elapsed = t - s.run_start
        if elapsed <= 0:
            return s.base_work
        if math.isinf(every):
            return min(s.task.work_s, s.base_work + elapsed)
        cycles = math.floor(elapsed / (every + pause))
        rest = elapsed - cycles * (every + pause)
        return min(s.task.work_s, s.base_work + cycles * every + min(rest, every))

    def pauses_until(self, s: TaskState, t: float) -> tuple[int, float]:
        """Periodic capsules completed by t, and the pause time spent by t."""
        every, pause = self._cycle(s)
        elapsed = t - s.run_start
        if elapsed <= 0 or math.isinf(every):
            return 0, 0.0
        cycles = math.floor(elapsed / (every + pause))
        rest = elapsed - cycles * (every + pause)
        return cycles, cycles * pause + max(0.0, rest - every)

    def last_capsule(self, s: TaskState, t: float) -> float:
        every, _ = self._cycle(s)
        cycles, _ = self.pauses_until(s, t)
        if cycles == 0:
            return s.saved_work
        return min(s.task.work_s, s.base_work + cycles * every)

    def finish_time(self, s: TaskState) -> float:
        left = s.task.work_s - s.base_work
        every, pause = self._cycle(s)
        checkpoints = 0 if math.isinf(every) else max(0, math.ceil(left / every) - 1)
        return s.run_start + left + checkpoints * pause

    # -- attempts ---------------------------------------------------------------------------

    def launch(self, s: TaskState, offer: Offer, t: float, restore: bool) -> None:
        s.offer = offer
        s.token += 1
        s.launch_t = t
        s.attempts[offer.market] += 1
        setup = self.p.boot_s
        if restore and s.saved_work > 0:
            setup += self.p.restore_s(s.task.resident_gib)
            self.restores += 1
        else:
            s.saved_work = 0.0
        s.base_work = s.saved_work
        s.run_start = t + setup
        self.pools.setdefault((offer.instance_type, offer.zone), set()).add(s.task.index)
        self.push(self.finish_time(s), "finish", s.task.index, s.token)
        if offer.market == SPOT:
            # common random numbers: attempt n of task i draws the same uniform under every
            # policy and bucket (so the policies are compared on the same luck)
            n = sum(s.attempts.values())
            draw = random.Random(f"{self.p.draw_seed}/reclaim/{s.task.index}/{n}")
            wait = self.market.interruptions.next_interruption(
                offer.instance_type, offer.zone, draw
            )
            if math.isfinite(wait):
                self.push(t + wait, "notice", s.task.index, s.token)

    def end(
        self, s: TaskState, t: float, extra_overhead_s: float = 0.0, stop: float | None = None
    ) -> None:
        """Terminate the current instance at t and book its cost and overhead (the task stopped
        computing at `stop`, default t)."""
        offer = s.offer
        assert offer is not None
        billed_to = max(t, s.launch_t + self.p.min_billing_s)
        s.cost += self.market.charge(
            offer.instance_type, offer.zone, offer.market, self.at(s.launch_t), self.at(billed_to)
        )
        setup = min(t, s.run_start) - s.launch_t
        _, paused = self.pauses_until(s, min(t if stop is None else stop, self.finish_time(s)))
        s.overhead_core_s += (setup + paused + extra_overhead_s) * offer.cpu_cores
        self.pools.get((offer.instance_type, offer.zone), set()).discard(s.task.index)
        s.token += 1  # pending events of this attempt are void
        s.offer = None

    def place(self, s: TaskState, t: float, restore: bool, after: Offer | None = None) -> None:
        self.now = t
        offers = self.market.offers(self.at(t))
        quarantined = self.market.quarantined(self.at(t))
        if after is None:
            policy = market_for({"market_policy": self.policy.market.value}, None)
            offer = choose_offer(s.task.need, offers, policy, quarantined)
        else:
            plan = recovery_plan(
                self.recovery,
                after,
                s.interruptions,
                offers,
                s.task.need,
                quarantined,
                self.policy.market,
            )
            offer = plan.offer
            until = self.at(t + self.p.quarantine_s)
            for itype, zone in plan.quarantine:
                self.market.quarantine(itype, zone, until)
            restore = restore and plan.restore_capsule
        if offer is None:
            self.push(t + self.p.retry_s, "retry", s.task.index, s.token)
            s.left = after  # for the retry's recovery plan
            return
        s.left = None
        self.launch(s, offer, t, restore)

    # -- events -----------------------------------------------------------------------------

    def on_notice(self, s: TaskState, t: float, first: bool) -> None:
        offer = s.offer
        assert offer is not None
        if t < s.launch_t:
            return  # a co-notice for an instance launched later (after a notice or a capsule)
        s.interruptions += 1
        if first:  # the burst: others in the pool follow within minutes
            live = [
                _Live(str(i), offer.instance_type, offer.zone, SPOT)
                for i in sorted(self.pools.get((offer.instance_type, offer.zone), ()))
                if i != s.task.index and self.states[i].launch_t <= t
            ]
            burst = random.Random(f"{self.p.draw_seed}/burst/{s.task.index}/{s.interruptions}")
            for other, delay in self.market.interruptions.co_interruptions(
                [_Live(str(s.task.index), offer.instance_type, offer.zone, SPOT)], live, burst
            ):
                o = self.states[int(other.id)]
                self.push(t + delay, "co-notice", o.task.index, o.token)
        luck = random.Random(f"{self.p.draw_seed}/notice/{s.task.index}/{s.interruptions}")
        no_notice = luck.random() < self.p.no_notice
        deadline = t if no_notice else t + self.p.notice_s
        finish = self.finish_time(s)
        if t < s.run_start:  # still booting or restoring: give up on this instance now
            self.end(s, t)
            self.place(s, t, restore=True, after=offer)
            return
        dump = self.p.dump_s(s.task.resident_gib)
        if self.policy.capsules and not no_notice and dump <= self.p.notice_s and t < finish:
            s.saved_work = self.work_at(s, t)
            self.end(s, t + dump, extra_overhead_s=dump, stop=t)
            self.place(s, t + dump, restore=True, after=offer)
            return
        if finish <= deadline:
            return  # it completes before the reclaim; its finish event stands
        done = self.work_at(s, deadline)
        saved = self.last_capsule(s, deadline) if self.policy.capsules else 0.0
        s.saved_work = saved
        s.wasted_core_s += (done - saved) * offer.cpu_cores
        self.end(s, deadline)
        if saved <= 0:
            self.restarts += 1
        self.place(s, deadline, restore=saved > 0, after=offer)

    def on_price_step(self, t: float) -> None:
        self.now = t
        at = self.at(t)
        offers = self.market.offers(at)
        quarantined = self.market.quarantined(at)
        for s in self.states:
            offer = s.offer
            if s.done or offer is None or offer.market != SPOT or t < s.run_start:
                continue
            if t >= self.finish_time(s):
                continue
            price = self.market.price(offer.instance_type, offer.zone, SPOT, at)
            work = self.work_at(s, t)
            gib = s.task.resident_gib
            target = cost_migration(
                price,
                offer,
                offers,
                s.task.need,
                remaining_hours_estimate=max(work, 900.0) / HOUR,  # what ran so far (Lindy)
                migration_cost_usd=migration_cost_usd(
                    gib, price, price, self.p.dump_gib_s, self.p.restore_gib_s, self.p.boot_s
                ),
                rule=self.rule,
                quarantined=quarantined,
                policy=self.policy.market,
                seconds_since_last_move=t - s.last_move_t,
            )
            if target is None:
                continue
            dump = self.p.dump_s(gib)
            s.saved_work = work
            s.last_move_t = t
            self.migrations += 1
            self.end(s, t + dump, extra_overhead_s=dump, stop=t)
            self.now = t + dump
            self.launch(s, target, t + dump, restore=True)

    def run(self) -> RunResult:
        started = time.perf_counter()
        for s in self.states:
            self.push(s.task.arrival_s, "arrive", s.task.index, 0)
        step = self.market.config.price_step_seconds
        if self.policy.cost_migration:
            self.push(step, "price", -1, 0)
        left = len(self.states)
        while self.events and left:
            t, _, kind, index, token = heapq.heappop(self.events)
            self.now = t
            if kind == "price":
                self.on_price_step(t)
                self.push(t + step, "price", -1, 0)
                continue
            s = self.states[index]
            if kind == "arrive":
                self.place(s, t, restore=False)
            elif token != s.token or s.done:
                continue
            elif kind == "retry":
                self.place(s, t, restore=True, after=s.left)
            elif kind == "finish":
                self.end(s, t)
                s.done, s.finish_t = True, t
                left -= 1
            elif kind in ("notice", "co-notice") and s.offer is not None:
                self.on_notice(s, t, first=kind == "notice")
        return RunResult(
            bucket=self.bucket.value,
            policy=self.policy.name,
            cost_usd=sum(s.cost for s in self.states),
            makespan_h=max(s.finish_t for s in self.states) / HOUR,
            wasted_core_h=sum(s.wasted_core_s for s in self.states) / HOUR,
            overhead_core_h=sum(s.overhead_core_s for s in self.states) / HOUR,
            interruptions=sum(s.interruptions for s in self.states),
            restores=self.restores,
            restarts=self.restarts,
            cost_migrations=self.migrations,
            spot_attempts=sum(s.attempts[SPOT] for s in self.states),
            on_demand_attempts=sum(s.attempts[ON_DEMAND] for s in self.states),
            seconds=time.perf_counter() - started,
        )


@dataclass(frozen=True)
class _Live:
    """A running instance as the interruption model sees it."""

    id: str
    instance_type: str
    zone: str
    market: str


# -- the whole simulation ---------------------------------------------------------------------


def _derive(rows: list[dict[str, Any]]) -> None:
    """Add savings against on_demand, the makespan ratio and the waste against spot_restart to
    the rows of one bucket (in place)."""
    named = {r["policy"]: r for r in rows}
    base, restart = named.get("on_demand"), named.get("spot_restart")
    for row in rows:
        if base is not None:
            row["savings_pct"] = 100.0 * (1.0 - row["cost_usd"] / base["cost_usd"])
            row.setdefault("makespan_ratio", row["makespan_h"] / base["makespan_h"])
        if restart is not None and restart["wasted_core_h"] > 0:
            row["waste_vs_restart"] = row["wasted_core_h"] / restart["wasted_core_h"]


def simulate(
    tasks: list[Task],
    params: SimParams,
    buckets: tuple[Bucket, ...] = tuple(Bucket),
    policies: tuple[SimPolicy, ...] = POLICIES,
    engine: str = "model",
) -> list[dict[str, Any]]:
    """One row per bucket and policy. engine `model`: this module's `Run`; `scheduler`: the
    gateway's real scheduler in simulated time (bench/sim_scheduler.py; on_demand and
    spot_restart so far)."""
    from bench.sim_scheduler import SchedulerRun

    runner = SchedulerRun if engine == "scheduler" else Run
    rows: list[dict[str, Any]] = []
    for bucket in buckets:
        mine = []
        for policy in policies:
            row = asdict(runner(tasks, policy, bucket, params).run())
            row["exposure_hours"] = params.exposure_hours
            row["seed"] = params.seed
            mine.append(row)
        _derive(mine)
        rows += mine
    return rows


MEANS = (
    "cost_usd",
    "makespan_h",
    "wasted_core_h",
    "overhead_core_h",
    "interruptions",
    "restores",
    "restarts",
    "cost_migrations",
    "spot_attempts",
    "on_demand_attempts",
    "seconds",
)


def combine(per_seed: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Runs of several seeds (the same buckets and policies in the same order) → one row each:
    the mean of every count, cost and makespan; the makespan ratio is the mean of the seeds'
    ratios; savings and waste ratios are those of the means (pooled)."""
    out: list[dict[str, Any]] = []
    for group in zip(*per_seed, strict=True):
        first = group[0]
        row = {k: first[k] for k in ("bucket", "policy", "exposure_hours")}
        for key in MEANS:
            row[key] = sum(r[key] for r in group) / len(group)
        if all("makespan_ratio" in r for r in group):
            row["makespan_ratio"] = sum(r["makespan_ratio"] for r in group) / len(group)
        row["seeds"] = [r["seed"] for r in group]
        out.append(row)
    for where in dict.fromkeys((r["exposure_hours"], r["bucket"]) for r in out):
        _derive([r for r in out if (r["exposure_hours"], r["bucket"]) == where])
    return out


def evaluate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, per bucket and capsule policy; the waste target also over all
    buckets together (a few reclaims without notice decide a single bucket's ratio)."""
    out: list[dict[str, Any]] = []
    overall: list[dict[str, Any]] = []
    groups: dict[tuple[float, str], list[float]] = {}
    for row in rows:
        key = (row["exposure_hours"], row["policy"])
        acc = groups.setdefault(key, [0.0, 0.0])
        acc[0] += row["wasted_core_h"]
        for other in rows:
            if (
                other["policy"] == "spot_restart"
                and other["bucket"] == row["bucket"]
                and other["exposure_hours"] == row["exposure_hours"]
            ):
                acc[1] += other["wasted_core_h"]
    for (exposure, policy), (wasted, baseline) in groups.items():
        if not policy.startswith("spot_capsules") or baseline <= 0:
            continue
        ratio = wasted / baseline
        overall.append(
            {
                "bucket": "all",
                "policy": policy,
                "exposure_hours": exposure,
                "target": f"wasted core-hours <= {TARGET_WASTE_RATIO:.0%} of spot_restart's",
                "value": round(ratio, 4),
                "met": ratio <= TARGET_WASTE_RATIO,
            }
        )
    for row in rows:
        if not row["policy"].startswith("spot_capsules"):
            continue
        where = {"bucket": row["bucket"], "policy": row["policy"]}
        where["exposure_hours"] = row["exposure_hours"]
        if row["bucket"] in (Bucket.UNDER_5.value, Bucket.FROM_5_TO_10.value):
            out.append(
                {
                    **where,
                    "target": f"cost >= {TARGET_SAVINGS_PCT:g}% below on-demand",
                    "value": round(row["savings_pct"], 1),
                    "met": row["savings_pct"] >= TARGET_SAVINGS_PCT,
                }
            )
            out.append(
                {
                    **where,
                    "target": f"makespan <= {TARGET_MAKESPAN_RATIO}x on-demand",
                    "value": round(row["makespan_ratio"], 3),
                    "met": row["makespan_ratio"] <= TARGET_MAKESPAN_RATIO,
                }
            )
        waste = row.get("waste_vs_restart")
        out.append(
            {
                **where,
                "target": f"wasted core-hours <= {TARGET_WASTE_RATIO:.0%} of spot_restart's",
                "value": None if waste is None else round(waste, 4),
                "met": None if waste is None else waste <= TARGET_WASTE_RATIO,
            }
        )
    return out + overall


# -- scheduler scale --------------------------------------------------------------------------


def scale_bench(n: int = 10_000, seed: int = 1) -> dict[str, Any]:
    """One placement decision (market_for + choose_offer over every offer, a few pools
    quarantined) for each of n queued tasks."""
    market = Market(MarketConfig(seed=seed, start_time=T0.isoformat()), clock=lambda: T0)
    offers = market.offers(T0)
    for itype, zone in (("m5.large", "us-east-1a"), ("c5.xlarge", "us-east-1b")):
        market.quarantine(itype, zone, T0 + timedelta(hours=1))
    quarantined = market.quarantined(T0)
    tasks = workload(n, seed)
    policies = ("spot_first", "spot_only", "on_demand_only")
    started = time.perf_counter()
    placed = 0
    for t in tasks:
        policy = market_for({"market_policy": policies[t.index % 3]}, None)
        if choose_offer(t.need, offers, policy, quarantined) is not None:
            placed += 1
    seconds = time.perf_counter() - started
    return {
        "tasks": n,
        "offers": len(offers),
        "placed": placed,
        "seconds": round(seconds, 3),
        "decisions_per_s": round(n / seconds),
        "target_decisions_per_s": TARGET_DECISIONS_PER_S,
        "met": n / seconds >= TARGET_DECISIONS_PER_S,
    }


# -- output -----------------------------------------------------------------------------------


def markdown(rows: list[dict[str, Any]]) -> str:
    head = (
        "| bucket | policy | cost USD | vs on-demand | makespan h | x on-demand | wasted core-h "
        "| overhead core-h | reclaims | restores | restarts | cost moves |\n"
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
    )
    lines = []
    for r in rows:
        lines.append(
            f"| {r['bucket']} | {r['policy']} | {r['cost_usd']:.2f} "
            f"| {-r.get('savings_pct', 0.0) or 0.0:+.1f}% | {r['makespan_h']:.2f} "
            f"| {r.get('makespan_ratio', 1.0):.3f} | {r['wasted_core_h']:.2f} "
            f"| {r['overhead_core_h']:.2f} | {r['interruptions']:.1f} | {r['restores']:.1f} "
            f"| {r['restarts']:.1f} | {r['cost_migrations']:.1f} |"
        )
    return head + "\n".join(lines) + "\n"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument(
        "--seeds", default="1,2,3", help="comma-separated; each repeats the whole simulation"
    )
    ap.add_argument(
        "--buckets", default=",".join(b.value for b in Bucket), help="comma-separated buckets"
    )
    ap.add_argument(
        "--exposure-hours",
        default="730,24",
        help="comma-separated: each value repeats the buckets (730: 'per month' literally)",
    )
    ap.add_argument("--recovery", default="next_zone", help="for the capsule policies")
    ap.add_argument(
        "--engine",
        choices=("model", "scheduler"),
        default="model",
        help="model: this module's event model; scheduler: the real scheduler in simulated time "
        "(bench/sim_scheduler.py: on_demand and spot_restart only, so far)",
    )
    ap.add_argument(
        "--policies",
        default=",".join(p.name for p in POLICIES),
        help="comma-separated policies to run",
    )
    ap.add_argument("--no-notice", type=float, default=0.05, help="reclaims without a notice")
    ap.add_argument("--dump-gib-s", type=float, default=0.8)
    ap.add_argument("--restore-gib-s", type=float, default=0.8)
    ap.add_argument("--interval-s", type=float, default=900.0, help="periodic capsules")
    ap.add_argument("--scale-tasks", type=int, default=10_000)
    ap.add_argument("--no-scale", action="store_true", help="skip the scheduler-scale bench")
    ap.add_argument("--out", help="write the results as JSON here")
    ap.add_argument("--markdown", help="write the tables as Markdown here")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    started = time.perf_counter()
    seeds = [int(x) for x in args.seeds.split(",")]
    buckets = tuple(Bucket(b.strip()) for b in args.buckets.split(","))
    chosen = {p.strip() for p in args.policies.split(",")}
    policies = tuple(p for p in POLICIES if p.name in chosen)
    base = SimParams(
        no_notice=args.no_notice,
        dump_gib_s=args.dump_gib_s,
        restore_gib_s=args.restore_gib_s,
        interval_s=args.interval_s,
        recovery=args.recovery,
    )
    exposures = [float(x) for x in args.exposure_hours.split(",")]
    per_seed: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    text = []
    for exposure in exposures:
        runs = []
        for seed in seeds:
            params = replace(base, seed=seed, exposure_hours=exposure)
            tasks = workload(args.tasks, seed)
            runs.append(simulate(tasks, params, buckets, policies, args.engine))
        per_seed += [r for run in runs for r in run]
        mine = combine(runs)
        rows += mine
        text.append(
            f"### exposure {exposure:g} h per bucket fraction, mean of seeds {args.seeds}\n\n"
            f"{markdown(mine)}"
        )
    targets = evaluate(rows)
    scale = None if args.no_scale else scale_bench(args.scale_tasks, seeds[0])
    doc: dict[str, Any] = {
        "meta": {
            "bench": "spot_sim",
            "command": "python -m bench.spot_sim " + " ".join(argv or sys.argv[1:]),
            "python": platform.python_version(),
            "machine": platform.machine(),
            "params": {**asdict(base), "seed": seeds, "exposure_hours": exposures},
            "engine": args.engine,
            "seconds": round(time.perf_counter() - started, 2),
        },
        "workload": {str(seed): describe(workload(args.tasks, seed)) for seed in seeds},
        "runs": rows,
        "runs_per_seed": per_seed,
        "targets": targets,
        "scale": scale,
    }
    body = "\n".join(text)
    body += "\n### targets\n\n| exposure h | bucket | policy | target | value | met |\n"
    body += "| ---: | --- | --- | --- | ---: | --- |\n"
    for t in targets:
        body += (
            f"| {t['exposure_hours']:g} | {t['bucket']} | {t['policy']} | {t['target']} "
            f"| {t['value']} | {t['met']} |\n"
        )
    if scale is not None:
        body += (
            f"\nscheduler scale: {scale['tasks']:,} queued tasks over {scale['offers']} offers, "
            f"{scale['decisions_per_s']:,} decisions/s (target >= {TARGET_DECISIONS_PER_S:,.0f})\n"
        )
    print(body)
    print(f"({doc['meta']['seconds']} s)")
    if args.out:
        Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
