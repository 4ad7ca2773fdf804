"""The cost simulator's policies run by the real scheduler, in simulated time.

`SchedulerRun` is `bench.spot_sim.Run`'s counterpart for the policies that need no capsules
(`on_demand`, `spot_restart`): the gateway's own `Scheduler`, `Dispatcher` and stores (SQLite in
a temporary directory) on one `ManualClock`, with `SimProvider` (the shipped fake provider over
the simulated market: its offers, prices and reclaims) in place of a cloud, and a scripted agent
per instance in place of processes. Only the tasks' progress and the agents are simulated; every
placement, launch, reclaim, recovery and retirement is the scheduler's.

What the agent does: an instance registers at its launch (so the scheduler, which launches one
instance at a time until the last one registered, is not held up by boot times) and computes from
`boot_s` after its launch; an assignment runs from then (or at once on an instance already up),
reports `running`, and `complete` when its work is done; an instance told to shut down is
terminated. Billing is per instance, launch to termination or reclaim, 60 s minimum.

Not yet here (bench.spot_sim.Run still models them): the capsule policies (`spot_capsules`,
`spot_capsules_cost`: the agent would have to answer checkpoint orders with capsule reports and
restores with their download time), and the common-random-number reclaim draws (the market draws
reclaims itself, per tick, as in a running gateway).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from capsule_runtime.protocol.messages import (
    AttemptReport,
    AttemptStatus,
    Poll,
    Registration,
    Resources,
)
from capsule_runtime.protocol.times import ManualClock, rfc3339
from gateway.config import load_config
from gateway.dispatch import Dispatcher
from gateway.library import Library
from gateway.market.interruptions import Bucket
from gateway.market.model import SPOT, Market, MarketConfig
from gateway.migration import Migrations
from gateway.providers.base import CloudState, LaunchRecord, LaunchSpec, Offer
from gateway.providers.fake import FakeCloud, FakeProvider
from gateway.scheduler.loop import Scheduler
from gateway.scheduler.wakeups import Wakeups
from gateway.secrets import SecretBox
from gateway.store import TaskStore, open_database
from gateway.store.apps import AppStore
from gateway.store.fleet import FleetStore, Instance, InstanceState

HOUR = 3600.0
EPS = 2e-6  # the clock counts whole microseconds
IDLE_S = 1.0  # an instance with nothing to run stops after this
STEP_S = 60.0  # the longest the simulated clock moves between two ticks
SUPPORTED = ("on_demand", "spot_restart")


class SimProvider(FakeProvider):
    """The fake provider over the simulated market: its offers and prices now, its reclaims,
    and the machines' launch and end times for billing."""

    def __init__(self, market: Market, clock: ManualClock) -> None:
        super().__init__(cloud=FakeCloud(clock=lambda: clock().timestamp()), max_instances=100_000)
        self.market = market
        self.clock = clock
        self.started: dict[str, datetime] = {}  # provider id → launch
        self.ended: dict[str, datetime] = {}  # provider id → termination or reclaim

    def offers(self) -> list[Offer]:
        return self.market.offers(self.clock())

    def _start(self, spec: LaunchSpec) -> LaunchRecord:
        record = super()._start(spec)
        self.started[record.provider_id] = self.clock()
        return record

    def terminate(self, record: LaunchRecord) -> None:
        if self.cloud.state(record.provider_id) in (CloudState.PENDING, CloudState.RUNNING):
            self.ended.setdefault(record.provider_id, self.clock())
        super().terminate(record)

    def interrupt(self, record: LaunchRecord, notice_seconds: float) -> str:
        super().interrupt(record, notice_seconds)
        deadline = self.clock() + timedelta(seconds=notice_seconds)
        self.ended.setdefault(record.provider_id, deadline)
        return rfc3339(deadline)

    def reclaims(self, instances: Any, dt_seconds: float) -> list[tuple[Any, float]]:
        notice = self.market.config.notice_seconds
        return [(i, notice) for i in self.market.draw_interruptions(instances, dt_seconds)]


@dataclass
class _Running:
    """An attempt the scripted agent runs."""

    task_index: int
    instance_id: str
    cores: float
    start: float  # simulated seconds since T0 when it computes
    finish: float


@dataclass
class _Agent:
    ready_at: float  # boot done
    running: dict[str, _Running] = field(default_factory=dict)  # attempt id → attempt


class SchedulerRun:
    """One policy in one bucket through the real scheduler (same result as spot_sim.Run)."""

    def __init__(self, tasks: list[Any], policy: Any, bucket: Bucket, params: Any) -> None:
        from bench.spot_sim import T0

        if policy.name not in SUPPORTED:
            raise ValueError(f"the scheduler engine runs {', '.join(SUPPORTED)}, not {policy.name}")
        self.t0 = T0
        self.tasks, self.policy, self.bucket, self.p = tasks, policy, bucket, params
        self.clock = ManualClock(T0)
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
            clock=self.clock,
        )

    def now_s(self) -> float:
        return (self.clock() - self.t0).total_seconds()

    def run(self) -> Any:
        from bench.spot_sim import RunResult

        started = time.perf_counter()
        shm = "/dev/shm" if Path("/dev/shm").is_dir() else None  # the store in memory if it can
        with tempfile.TemporaryDirectory(prefix="spot-sim-", dir=shm) as tmp:
            result = self._run(Path(tmp))
        return RunResult(**result, seconds=time.perf_counter() - started)

    def _world(self, tmp: Path) -> None:
        cfg = load_config(
            overrides={
                "data_dir": str(tmp),
                "capsules": {"keep": True},
                "scheduler": {
                    "market_policy": self.policy.market.value,
                    "recovery": "restart",
                    "max_interruptions": 1_000,
                    "heartbeat_timeout_seconds": 10 * 365 * 86400,
                    "launch_timeout_seconds": 10 * 365 * 86400,
                    "idle_timeout_seconds": IDLE_S,
                    "delivery_timeout_seconds": 0,
                    "starting_timeout_seconds": 0,
                    "quarantine_seconds": self.p.quarantine_s,
                    "cost_migration": {"enabled": False},
                    "rightsizing": {"enabled": False},
                },
            },
            environ={},
        )
        db = open_database(f"sqlite:///{tmp / 'sim.db'}")
        self.store = TaskStore(db, self.clock)
        self.fleet = FleetStore(db, self.clock)
        wakeups = Wakeups()
        self.provider = SimProvider(self.market, self.clock)
        self.scheduler = Scheduler(
            cfg,
            self.store,
            self.fleet,
            self.provider,
            wakeups,
            self.market,
            migrations=Migrations(self.store, self.fleet, wakeups, self.clock),
            clock=self.clock,
        )
        library = Library(AppStore(db, self.clock), SecretBox(tmp / "secret.key"), tmp / "apps")
        self.dispatch = Dispatcher(cfg, self.store, self.fleet, wakeups, library, clock=self.clock)

    def _run(self, tmp: Path) -> dict[str, Any]:
        self._world(tmp)
        arrivals = sorted(self.tasks, key=lambda t: t.arrival_s)
        self.ids: dict[str, int] = {}  # task id → workload index
        self.wake: list[float] = []  # when a tick must look again (an instance falls idle)
        ids = self.ids
        agents: dict[str, _Agent] = {}
        finished: dict[int, float] = {}
        wasted_core_s = 0.0
        next_arrival = 0
        while len(finished) < len(self.tasks):
            now = self.now_s()
            while next_arrival < len(arrivals) and arrivals[next_arrival].arrival_s <= now + EPS:
                task = arrivals[next_arrival]
                spec = {
                    "executors": [{"image": "sim", "command": ["true"]}],
                    "resources": {
                        "cpu_cores": task.need.cpu_cores,
                        "ram_gb": task.need.ram_gb,
                        "disk_gb": task.need.disk_gb,
                    },
                }
                ids[self.store.create(spec).id] = task.index
                next_arrival += 1
            self._tick_until_settled(agents)
            # a retiring instance (TERMINATING) still polls: its answer says `shutdown`
            ready = {
                i.id: i
                for i in self.fleet.instances({InstanceState.READY, InstanceState.TERMINATING})
            }
            for iid in [i for i in agents if i not in ready]:  # lost, reclaimed or retired
                gone = self._end_s(iid, now)
                for run in agents.pop(iid).running.values():
                    wasted_core_s += max(0.0, min(gone, run.finish) - run.start) * run.cores
            for inst in ready.values():
                self._agent_step(inst, agents, ids, finished, now)
            upcoming = [r.finish for a in agents.values() for r in a.running.values()]
            upcoming += [(e - self.t0).total_seconds() for e in self.provider.ended.values()]
            upcoming += self.wake
            upcoming += [a.ready_at for a in agents.values() if a.ready_at > now]
            if next_arrival < len(arrivals):
                upcoming.append(arrivals[next_arrival].arrival_s)
            later = [t for t in upcoming if t > now + EPS]
            self.clock.advance(min([now + STEP_S, *later]) - now)
        self.clock.advance(STEP_S)
        self._tick_until_settled(agents)  # the last idle instances retire
        for inst in self.fleet.instances({InstanceState.READY, InstanceState.TERMINATING}):
            self.provider.terminate(LaunchRecord(inst.provider_id or "", inst.zone, {}))
        return self._account(finished, wasted_core_s)

    def _tick_until_settled(self, agents: dict[str, _Agent]) -> None:
        """Tick in this instant until no instance is left launching: each launch registers at
        once (its boot time is the agent's `ready_at`), so the next can follow."""
        for _ in range(10_000):
            self.scheduler.tick()
            launching = self.fleet.instances({InstanceState.LAUNCHING})
            if not launching:
                return
            for inst in launching:
                cap = inst.data.capacity or Resources(cpu_cores=1.0, ram_gb=1.0, disk_gb=1.0)
                self.dispatch.register(
                    inst,
                    Registration(agent_version="sim", hostname=inst.id, capacity=cap),
                )
                agents[inst.id] = _Agent(ready_at=self.now_s() + self.p.boot_s)
        raise RuntimeError("the scheduler keeps launching in one instant")

    def _agent_step(
        self,
        inst: Instance,
        agents: dict[str, _Agent],
        ids: dict[str, int],
        finished: dict[int, float],
        now: float,
    ) -> None:
        agent = agents.setdefault(inst.id, _Agent(ready_at=now))
        for aid, run in list(agent.running.items()):
            if run.finish <= now + EPS:
                self._report(inst, aid, "complete")
                finished[run.task_index] = run.finish
                del agent.running[aid]
                # the scheduler retires an instance idle longer than idle_timeout_seconds
                self.wake.append(now + IDLE_S + 2 * EPS)
        orders = self.dispatch.poll(
            inst, Poll(running=list(agent.running), received=[], wait_seconds=0)
        )
        for assignment in orders.assign:
            task = self.tasks[ids[assignment.task_id]]
            start = max(now, agent.ready_at)
            agent.running[assignment.attempt_id] = _Running(
                task.index,
                inst.id,
                float(inst.data.capacity.cpu_cores if inst.data.capacity else 0.0),
                start,
                start + task.work_s,
            )
            self._report(inst, assignment.attempt_id, "running")
        if orders.shutdown:
            self.provider.terminate(LaunchRecord(inst.provider_id or "", inst.zone, {}))

    def _report(self, inst: Instance, attempt_id: str, status: AttemptStatus) -> None:
        self.dispatch.report(
            inst, attempt_id, AttemptReport(status=status, task_log={"logs": [], "outputs": []})
        )

    def _account(self, finished: dict[int, float], wasted_core_s: float) -> dict[str, Any]:
        cost = overhead = 0.0
        markets = {SPOT: 0, "on-demand": 0}
        by_id = {i.id: i for i in self.fleet.instances()}
        for inst in by_id.values():
            start = self.provider.started.get(inst.provider_id or "")
            if start is None:
                continue  # never launched (no capacity)
            end = self.provider.ended.get(inst.provider_id or "", self.clock())
            end = max(end, start + timedelta(seconds=self.p.min_billing_s))
            cost += self.market.charge(inst.instance_type, inst.zone, inst.market, start, end)
            cores = float(inst.data.capacity.cpu_cores if inst.data.capacity else 0.0)
            overhead += min(self.p.boot_s, (end - start).total_seconds()) * cores
        restarts = 0
        for task_id in self._task_ids():
            for attempt in self.fleet.attempts_of(task_id):
                ran_on = by_id.get(attempt.instance_id or "")
                if ran_on is not None:
                    markets[ran_on.market] = markets.get(ran_on.market, 0) + 1
                if attempt.reason in ("reclaim", "lost"):
                    restarts += 1
        reclaims = sum(1 for i in by_id.values() if i.data.interruption)
        return {
            "bucket": self.bucket.value,
            "policy": self.policy.name,
            "cost_usd": cost,
            "makespan_h": max(finished.values()) / HOUR,
            "wasted_core_h": wasted_core_s / HOUR,
            "overhead_core_h": overhead / HOUR,
            "interruptions": reclaims,
            "restores": 0,
            "restarts": restarts,
            "cost_migrations": 0,
            "spot_attempts": markets[SPOT],
            "on_demand_attempts": markets["on-demand"],
        }

    def _task_ids(self) -> list[str]:
        return list(self.ids)

    def _end_s(self, instance_id: str, now: float) -> float:
        """When the instance's machine ended (its reclaim deadline), in simulated seconds."""
        inst = self.fleet.instance(instance_id)
        end = self.provider.ended.get(inst.provider_id or "") if inst is not None else None
        return now if end is None else min(now, (end - self.t0).total_seconds())
