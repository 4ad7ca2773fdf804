"""The cost simulator's policies run by the real scheduler, in simulated time.

`SchedulerRun` runs one policy of bench/spot_sim.py (`on_demand`, `spot_restart`, `spot_capsules`,
`spot_capsules_cost`) through the gateway's own `Scheduler`, `Dispatcher`, `Migrations` and
stores (SQLite in a temporary directory) on one `ManualClock`, with `SimProvider` (the shipped
fake provider over the simulated market: its offers, prices and reclaims) in place of a cloud,
and a scripted agent per instance in place of processes. Only the tasks' progress, the agents
and the machines' reclaims are simulated; every placement, launch, checkpoint order, recovery
plan, restore placement, cost move, quarantine and retirement is the scheduler's, and every
message goes through the dispatcher's agent endpoints (register, poll, report, capsule).

The scripted agent (`_Agent`), as capsule_runtime/agent.py and sessions.py behave:
- an instance registers at its launch (so the scheduler, which launches one instance at a time
  until the last one registered, is not held up by boot times) and computes from `boot_s` after
  its launch;
- an assignment computes from then (or at once on an instance already up); one with capsules to
  restore first restores the newest (`restore_s(resident GiB)`), reports it `restored`, and goes
  on from the progress that capsule saved; it reports `running` when it computes, `complete`
  when its work is done;
- periodic capsules (`Assignment.capsules.interval_seconds`, the scheduler's config): every
  `interval_s` of computing, the task pauses `dump_s(resident GiB)` and a capsule of its progress
  is reported (as bench.spot_sim's model counts them);
- a checkpoint order with `stop` (a reclaim notice's, a cost move's) freezes the task, and after
  `dump_s` reports the capsule and `interrupted` (the dispatcher then creates the restore
  attempt the scheduler places); a dump that cannot finish before the machine's reclaim deadline
  is never reported (the task runs on and is lost with its instance, as a real one would be);
- an instance told to shut down is terminated. Billing is per instance, launch to termination or
  reclaim, 60 s minimum.

Reclaims (`SimProvider.reclaims`): each Spot machine draws its reclaim time at launch from its
pool's hazard (common random numbers: the n-th machine launched draws the same uniform under every
policy and bucket, as the model's attempts do), a reclaim brings co-interruptions in its pool
(gateway/market/interruptions.py), and a share `no_notice` of reclaims come without a usable
notice (the deadline is now). Time moves from event to event (arrivals, the agents' next steps,
reclaims, deadlines, retirements; price steps for cost moves), a minute at a time while work
waits for room; agents poll when the gateway woke them (their long poll) or when they have
something to say, as real agents do.
"""

from __future__ import annotations

import math
import random
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from capsule_runtime.protocol.messages import (
    Assignment,
    AttemptReport,
    AttemptStatus,
    CapsuleReport,
    CheckpointOrder,
    Poll,
    Registration,
)
from capsule_runtime.protocol.resources import Resources
from capsule_runtime.protocol.times import ManualClock, rfc3339
from gateway.config import load_config
from gateway.dispatch import Dispatcher
from gateway.library import Library
from gateway.market.interruptions import Bucket
from gateway.market.model import SPOT, Market, MarketConfig
from gateway.migration import Migrations
from gateway.providers.base import CloudState, LaunchRecord, LaunchSpec, Offer
from gateway.providers.fake import FakeCloud, FakeProvider
from gateway.scheduler.loop import SCHEDULER, Scheduler
from gateway.scheduler.wakeups import Wakeups
from gateway.secrets import SecretBox
from gateway.store import TaskStore, open_database
from gateway.store.apps import AppStore
from gateway.store.fleet import FleetStore, Instance, InstanceState
from gateway.tes.states import State

HOUR = 3600.0
EPS = 2e-6  # the clock counts whole microseconds
IDLE_S = 1.0  # an instance with nothing to run stops after this
WAIT_STEP_S = 60.0  # the longest the clock moves while work waits for room
STEP_S = 3600.0  # the longest it moves otherwise
ROUNDS = 1_000  # scheduler ticks and agent steps in one instant, at most
LONGEST_S = 90 * 86400.0  # a run longer than this in simulated time has a task stuck
GIB = 2**30


class SimProvider(FakeProvider):
    """The fake provider over the simulated market: its offers and prices now, its reclaims
    (drawn per machine at launch), and the machines' launch and end times for billing."""

    def __init__(self, market: Market, clock: ManualClock, params: Any) -> None:
        super().__init__(cloud=FakeCloud(clock=lambda: clock().timestamp()), max_instances=100_000)
        self.market = market
        self.clock = clock
        self.p = params
        self.started: dict[str, datetime] = {}  # provider id → launch
        self.ended: dict[str, datetime] = {}  # provider id → termination or reclaim
        self.reclaim_at: dict[str, datetime] = {}  # provider id → its reclaim notice
        self.ordinal: dict[str, int] = {}  # provider id → launch number (the draws' key)
        self.co: set[str] = set()  # provider ids whose notice is a co-interruption

    def offers(self) -> list[Offer]:
        return self.market.offers(self.clock())

    def _start(self, spec: LaunchSpec) -> LaunchRecord:
        record = super()._start(spec)
        pid, now = record.provider_id, self.clock()
        self.started[pid] = now
        self.ordinal[pid] = n = len(self.ordinal)
        if spec.offer.market == SPOT:
            draw = random.Random(f"{self.p.draw_seed}/reclaim/{n}")
            wait = self.market.interruptions.next_interruption(
                spec.offer.instance_type, spec.offer.zone, draw
            )
            if wait < 100 * 365 * 86400.0:  # else never, in any simulation
                self.reclaim_at[pid] = now + timedelta(seconds=wait)
        return record

    def terminate(self, record: LaunchRecord) -> None:
        if self.cloud.state(record.provider_id) in (CloudState.PENDING, CloudState.RUNNING):
            # before its reclaim deadline, if it has one: billed until now
            now = self.clock()
            self.ended[record.provider_id] = min(self.ended.get(record.provider_id, now), now)
        self.reclaim_at.pop(record.provider_id, None)
        super().terminate(record)

    def interrupt(self, record: LaunchRecord, notice_seconds: float) -> str:
        super().interrupt(record, notice_seconds)
        deadline = self.clock() + timedelta(seconds=notice_seconds)
        self.ended.setdefault(record.provider_id, deadline)
        self.reclaim_at.pop(record.provider_id, None)
        return rfc3339(deadline)

    def reclaims(self, instances: Any, dt_seconds: float) -> list[tuple[Any, float]]:
        """The instances whose reclaim time has come (the scheduler asks every tick, with the
        live Spot instances); each first reclaim brings co-interruptions in its pool."""
        now = self.clock()
        live = list(instances)
        due = [i for i in live if self._due(i, now)]
        for inst in due:
            pid = inst.provider_id or ""
            if pid in self.co:
                continue  # a follow-up brings no burst of its own
            others = [i for i in live if i not in due and (i.provider_id or "") in self.reclaim_at]
            burst = random.Random(f"{self.p.draw_seed}/burst/{self.ordinal.get(pid, -1)}")
            for other, delay in self.market.interruptions.co_interruptions([inst], others, burst):
                opid = other.provider_id or ""
                when = now + timedelta(seconds=delay)
                if when < self.reclaim_at[opid]:
                    self.reclaim_at[opid] = when
                    self.co.add(opid)
        out = []
        for inst in due:
            n = self.ordinal.get(inst.provider_id or "", -1)
            luck = random.Random(f"{self.p.draw_seed}/notice/{n}")
            out.append((inst, 0.0 if luck.random() < self.p.no_notice else self.p.notice_s))
        return out

    def _due(self, inst: Instance, now: datetime) -> bool:
        at = self.reclaim_at.get(inst.provider_id or "")
        return at is not None and at <= now + timedelta(microseconds=1)

    def next_event(self) -> datetime | None:
        """The next reclaim notice or machine end still to come."""
        now = self.clock()
        times = [t for t in self.reclaim_at.values() if t > now]
        times += [t for t in self.ended.values() if t > now]
        return min(times, default=None)


@dataclass
class _Run:
    """An attempt the scripted agent runs: its progress as a function of time (the same
    arithmetic as bench.spot_sim's model)."""

    attempt_id: str
    task_index: int
    cores: float
    gib: float
    work_s: float  # the task's whole work
    base: float  # work done when this attempt computes
    assigned: float  # when the assignment could start (its instance booted)
    start: float  # when it computes (boot and restore done)
    every: float  # periodic capsules: computing seconds between two (inf: none)
    pause: float  # a checkpoint's pause
    restored: CapsuleReport | None = None  # the capsule it restored, reported when it computes
    sequence: int = 1  # its next capsule's sequence number
    periodic: int = 0  # periodic capsules reported
    stop_at: float | None = None  # a stop checkpoint froze it here
    order: CheckpointOrder | None = None  # that checkpoint's order
    computing: bool = False  # `running` reported
    usage_sent: bool = False

    def work_at(self, t: float) -> float:
        if self.stop_at is not None:
            t = min(t, self.stop_at)
        elapsed = t - self.start
        if elapsed <= 0:
            return self.base
        if math.isinf(self.every):
            return min(self.work_s, self.base + elapsed)
        cycles = math.floor(elapsed / (self.every + self.pause))
        rest = elapsed - cycles * (self.every + self.pause)
        return min(self.work_s, self.base + cycles * self.every + min(rest, self.every))

    def paused_until(self, t: float) -> float:
        """Seconds of periodic checkpoint pauses by t."""
        elapsed = min(t, self.finish) - self.start
        if elapsed <= 0 or math.isinf(self.every):
            return 0.0
        cycles = math.floor(elapsed / (self.every + self.pause))
        rest = elapsed - cycles * (self.every + self.pause)
        return cycles * self.pause + max(0.0, rest - self.every)

    @property
    def checkpoints(self) -> int:
        """Periodic capsules before the work is done."""
        left = self.work_s - self.base
        return 0 if math.isinf(self.every) else max(0, math.ceil(left / self.every) - 1)

    @property
    def finish(self) -> float:
        return self.start + (self.work_s - self.base) + self.checkpoints * self.pause

    def periodic_time(self, k: int) -> float:
        """When periodic capsule k (1, 2, …) is complete."""
        return self.start + k * (self.every + self.pause)

    def next_time(self) -> float:
        """When this run next has something to say that the scheduler acts on. (Periodic
        capsules are reported at the next instant anything happens, at the latest at their
        machine's end, before the scheduler recovers the task: they change nothing before.)"""
        if self.stop_at is not None:
            return self.stop_at + self.pause
        return self.finish if self.computing else min(self.start, self.finish)


@dataclass
class _Agent:
    instance_id: str
    provider_id: str
    cores: float
    ready_at: float  # boot done
    runs: dict[str, _Run] = field(default_factory=dict)  # attempt id → attempt
    received: set[str] = field(default_factory=set)  # checkpoint order ids held
    seen: int = -1  # the instance's wake-up version at its last poll
    must_poll: bool = True


class SchedulerRun:
    """One policy in one bucket through the real scheduler."""

    def __init__(self, tasks: list[Any], policy: Any, bucket: Bucket, params: Any) -> None:
        from bench.spot_sim import T0

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
        self.ids: dict[str, int] = {}  # task id → workload index
        self.by_index: dict[int, Any] = {t.index: t for t in tasks}
        self.agents: dict[str, _Agent] = {}
        self.finished: dict[int, float] = {}
        self.progress: dict[str, float] = {}  # capsule id → the work it saved
        # task index → (work its last attempt reached, that instance's cores): what a new
        # attempt that does not start from there redoes
        self.reached: dict[int, tuple[float, float]] = {}
        self.wasted_core_s = 0.0
        self.overhead_core_s = 0.0
        self.restores = 0
        self.restored_attempts: set[str] = set()
        self.wake: list[float] = []  # when a tick must look again (an instance falls idle)
        self.polls = self.ticks = 0

    def now_s(self) -> float:
        return (self.clock() - self.t0).total_seconds()

    def run(self) -> Any:
        from bench.spot_sim import RunResult

        started = time.perf_counter()
        shm = "/dev/shm" if Path("/dev/shm").is_dir() else None  # the store in memory if it can
        with tempfile.TemporaryDirectory(prefix="spot-sim-", dir=shm) as tmp:
            result = self._run(Path(tmp))
        return RunResult(**result, seconds=time.perf_counter() - started)

    # -- the world ----------------------------------------------------------------------------

    def _world(self, tmp: Path) -> None:
        p, policy = self.p, self.policy
        cfg = load_config(
            overrides={
                "data_dir": str(tmp),
                "capsules": {
                    "keep": True,
                    "interval_seconds": p.interval_s if policy.capsules else 0.0,
                    "encryption": {"mode": "none"},
                    # the notice budget planner with this simulation's own capsule costs (its
                    # dump covers the whole capsule: nothing more per stored byte)
                    "notice_budget": {
                        "notice_seconds": {"default": p.notice_s},
                        "overhead_seconds": p.capsule_fixed_s,
                        "dump_seconds_per_gib": 1.0 / p.dump_gib_s,
                        "upload_seconds_per_gib": 1e-6,
                        "criu_share": 1.0,
                    },
                },
                "scheduler": {
                    "market_policy": policy.market.value,
                    "recovery": policy.recovery or p.recovery,
                    "max_interruptions": 1_000,
                    "interruption_budget": None,  # the model has none
                    "heartbeat_timeout_seconds": 10 * 365 * 86400,
                    "launch_timeout_seconds": 10 * 365 * 86400,
                    "idle_timeout_seconds": IDLE_S,
                    "delivery_timeout_seconds": 0,
                    "starting_timeout_seconds": 0,
                    "quarantine_seconds": p.quarantine_s,
                    "cost_migration": {
                        "enabled": policy.cost_migration,
                        "threshold_pct": p.cost_threshold_pct,
                        "min_interval_seconds": p.cost_min_interval_s,
                    },
                    "rightsizing": {"enabled": False},
                    # cost moves are looked at on each price step (prices move only then), as
                    # the model does, not at every tick: each look reads every running attempt
                    "triggers_interval_seconds": self.market.config.price_step_seconds - 1.0,
                },
            },
            environ={},
        )
        db = open_database(f"sqlite:///{tmp / 'sim.db'}")
        self.store = TaskStore(db, self.clock)
        self.fleet = FleetStore(db, self.clock)
        self.wakeups = Wakeups()
        self.provider = SimProvider(self.market, self.clock, p)
        self.scheduler = Scheduler(
            cfg,
            self.store,
            self.fleet,
            self.provider,
            self.wakeups,
            self.market,
            migrations=Migrations(self.store, self.fleet, self.wakeups, self.clock),
            clock=self.clock,
        )
        library = Library(AppStore(db, self.clock), SecretBox(tmp / "secret.key"), tmp / "apps")
        self.dispatch = Dispatcher(
            cfg, self.store, self.fleet, self.wakeups, library, clock=self.clock
        )

    # -- the event loop -----------------------------------------------------------------------

    def _run(self, tmp: Path) -> dict[str, Any]:
        self._world(tmp)
        arrivals = sorted(self.tasks, key=lambda t: t.arrival_s)
        step = self.market.config.price_step_seconds
        next_arrival = 0
        while len(self.finished) < len(self.tasks):
            now = self.now_s()
            if now > LONGEST_S:
                left = self.store.ids_in_state(State.QUEUED) + self.store.ids_in_state(
                    State.SYSTEM_ERROR
                )
                raise RuntimeError(f"tasks still unfinished after {now / 86400:.0f} days: {left}")
            while next_arrival < len(arrivals) and arrivals[next_arrival].arrival_s <= now + EPS:
                self._submit(arrivals[next_arrival])
                next_arrival += 1
            self._instant(now)
            upcoming = [r.next_time() for a in self.agents.values() for r in a.runs.values()]
            upcoming += self.wake
            if (event := self.provider.next_event()) is not None:
                upcoming.append((event - self.t0).total_seconds())
            if next_arrival < len(arrivals):
                upcoming.append(arrivals[next_arrival].arrival_s)
            if self.policy.cost_migration:  # cost moves are judged on every price step
                upcoming.append((math.floor(now / step) + 1) * step)
            waiting = self.store.ids_in_state(State.QUEUED, limit=1) or any(
                a.instance_id is None for a in self.fleet.unplaced_attempts()
            )
            later = [t for t in upcoming if t > now + EPS]
            longest = WAIT_STEP_S if waiting else STEP_S
            self.clock.advance(min([now + longest, *later]) - now)
            self.wake = [t for t in self.wake if t > now + EPS]
        self.clock.advance(WAIT_STEP_S)
        self._instant(self.now_s())  # the last idle instances retire
        for inst in self.fleet.instances({InstanceState.READY, InstanceState.TERMINATING}):
            self.provider.terminate(LaunchRecord(inst.provider_id or "", inst.zone, {}))
        return self._account()

    def _submit(self, task: Any) -> None:
        spec = {
            "executors": [{"image": "sim", "command": ["true"]}],
            "resources": {
                "cpu_cores": task.need.cpu_cores,
                "ram_gb": task.need.ram_gb,
                "disk_gb": task.need.disk_gb,
            },
        }
        self.ids[self.store.create(spec).id] = task.index

    def _instant(self, now: float) -> None:
        """Everything that happens at this instant: the agents say what they have to say (so
        a capsule finished before its machine's end is heard before the scheduler recovers
        the task), the scheduler ticks, the agents it woke poll; again while a report woke
        the scheduler (a real gateway's scheduler wakes on every settled attempt)."""
        for _ in range(ROUNDS):
            self._agents_report(now)
            self._tick_until_settled()
            seen = self.wakeups.version(SCHEDULER)
            self._agents_poll(now)
            self._agents_report(now)
            if self.wakeups.version(SCHEDULER) == seen:
                return
        raise RuntimeError("the scheduler and the agents keep waking each other in one instant")

    def _tick_until_settled(self) -> None:
        """Tick in this instant until no instance is left launching: each launch registers at
        once (its boot time is the agent's `ready_at`), so the next can follow."""
        for _ in range(10_000):
            self.scheduler.tick()
            self.ticks += 1
            launching = self.fleet.instances({InstanceState.LAUNCHING})
            if not launching:
                return
            for inst in launching:
                self._register(inst)
        raise RuntimeError("the scheduler keeps launching in one instant")

    def _register(self, inst: Instance) -> None:
        cap = inst.data.capacity or Resources(cpu_cores=1.0, ram_gb=1.0, disk_gb=1.0)
        self.dispatch.register(
            inst,
            Registration(agent_version="sim", hostname=inst.id, capacity=cap),
        )
        self.agents[inst.id] = _Agent(
            inst.id,
            inst.provider_id or "",
            float(cap.cpu_cores),
            ready_at=self.now_s() + self.p.boot_s,
        )

    # -- the scripted agents ------------------------------------------------------------------

    def _live(self) -> dict[str, Instance]:
        """Instances whose agents run (a retiring one still polls: its answer is `shutdown`);
        agents of the others are gone, and what their attempts did with them."""
        live = {
            i.id: i for i in self.fleet.instances({InstanceState.READY, InstanceState.TERMINATING})
        }
        for iid in [i for i in self.agents if i not in live]:
            agent = self.agents.pop(iid)
            gone = self._end_s(agent, self.now_s())
            for run in agent.runs.values():
                self._left(run, gone)
        return live

    def _end_s(self, agent: _Agent, now: float) -> float:
        """When the agent's machine ends (a reclaim deadline, a termination), or `now`."""
        end = self.provider.ended.get(agent.provider_id)
        return now if end is None else min(now, (end - self.t0).total_seconds())

    def _dead(self, agent: _Agent, now: float) -> bool:
        end = self.provider.ended.get(agent.provider_id)
        return end is not None and (end - self.t0).total_seconds() <= now + EPS

    def _agents_report(self, now: float) -> None:
        live = self._live()
        for iid, agent in list(self.agents.items()):
            for run in list(agent.runs.values()):
                self._run_step(live[iid], agent, run, now)

    def _run_step(self, inst: Instance, agent: _Agent, run: _Run, now: float) -> None:
        """What one attempt reports by `now`, in the order it happened (before its machine's
        end: what would come after is never said)."""
        end = self._end_s(agent, math.inf)
        upto = min(now + EPS, end - EPS)
        if not run.computing and run.start <= upto:
            if run.restored is not None:
                self._capsule(inst, run.attempt_id, run.restored)
            self._report(inst, run.attempt_id, "running")
            run.computing = True
            agent.must_poll |= self.policy.cost_migration  # its usage, for the cost trigger
        while (
            run.periodic < run.checkpoints
            and run.periodic_time(run.periodic + 1) <= upto
            and (run.stop_at is None or run.periodic_time(run.periodic + 1) <= run.stop_at)
        ):
            run.periodic += 1
            at = run.periodic_time(run.periodic)
            self._capsule_taken(inst, run, run.work_at(at), None)
        if run.stop_at is not None and run.order is not None:
            if run.stop_at + run.pause <= upto:
                self._capsule_taken(inst, run, run.work_at(run.stop_at), run.order)
                self._report(inst, run.attempt_id, "interrupted")
                self._left(run, run.stop_at, pause=run.pause)
                del agent.runs[run.attempt_id]
                self.wake.append(now + IDLE_S + 2 * EPS)
        elif run.finish <= upto:
            self._report(inst, run.attempt_id, "complete")
            self.finished[run.task_index] = run.finish
            self.overhead_core_s += (run.start - run.assigned + run.paused_until(run.finish)) * (
                run.cores
            )
            del agent.runs[run.attempt_id]
            self.wake.append(now + IDLE_S + 2 * EPS)

    def _capsule_taken(
        self, inst: Instance, run: _Run, work: float, order: CheckpointOrder | None
    ) -> None:
        capsule_id = f"{run.attempt_id}-{run.sequence}"
        self.progress[capsule_id] = work
        self._capsule(
            inst,
            run.attempt_id,
            CapsuleReport(
                state="complete",
                capsule_id=capsule_id,
                sequence=run.sequence,
                request_id=order.request_id if order is not None else None,
                stop=order.stop if order is not None else False,
                reason=order.reason if order is not None else "periodic",
                manifest_key=f"sim/{capsule_id}",
                manifest_sha256="0" * 64,
                size_bytes=int(run.gib * GIB),
                seconds={"total": run.pause},
            ),
        )
        run.sequence += 1

    def _left(self, run: _Run, t: float, pause: float = 0.0) -> None:
        """The attempt ended at t without finishing its work: what it reached, and the time
        it spent on setup and checkpoints."""
        self.reached[run.task_index] = (run.work_at(t), run.cores)
        setup = max(0.0, min(t, run.start) - run.assigned)
        self.overhead_core_s += (setup + run.paused_until(t) + pause) * run.cores

    def _agents_poll(self, now: float) -> None:
        live = self._live()
        for iid, agent in list(self.agents.items()):
            inst = live[iid]
            if self._dead(agent, now):
                continue  # its machine is gone; the scheduler will find out
            if not agent.must_poll and agent.seen == self.wakeups.version(iid):
                continue  # its long poll would still be waiting
            self._poll(inst, agent, now)

    def _poll(self, inst: Instance, agent: _Agent, now: float) -> None:
        agent.seen = self.wakeups.version(inst.id)
        agent.must_poll = False
        usage: dict[str, dict[str, float | int | None]] = {}
        if self.policy.cost_migration:
            for run in agent.runs.values():
                if run.computing and not run.usage_sent:
                    usage[run.attempt_id] = {"cpu_cores": run.cores, "memory_bytes": run.gib * GIB}
                    run.usage_sent = True
        orders = self.dispatch.poll(
            inst,
            Poll(
                running=list(agent.runs),
                received=sorted(agent.received),
                usage=usage,
                wait_seconds=0,
            ),
        )
        self.polls += 1
        for assignment in orders.assign:
            if assignment.attempt_id not in agent.runs:
                self._assigned(inst, agent, assignment, now)
        for attempt_id in orders.cancel:
            if (cancelled := agent.runs.pop(attempt_id, None)) is not None:
                self._left(cancelled, now)
        for order in orders.checkpoint:
            self._checkpoint(inst, agent, order, now)
        if orders.shutdown:
            self.provider.terminate(LaunchRecord(agent.provider_id, inst.zone, {}))

    def _assigned(self, inst: Instance, agent: _Agent, a: Assignment, now: float) -> None:
        task = self.by_index[self.ids[a.task_id]]
        base, restored, setup = 0.0, None, 0.0
        if a.restore:
            ref = a.restore[0]  # newest first; every simulated capsule is usable
            base = self.progress[ref.capsule_id]
            setup = self.p.restore_s(task.resident_gib)
            restored = CapsuleReport(
                state="restored",
                capsule_id=ref.capsule_id,
                sequence=ref.sequence,
                seconds={"total": setup},
            )
            self.restores += 1
            self.restored_attempts.add(a.attempt_id)
        reached, cores = self.reached.pop(task.index, (0.0, 0.0))
        self.wasted_core_s += max(0.0, reached - base) * cores
        interval = a.capsules.interval_seconds if a.capsules.store else 0.0
        agent.runs[a.attempt_id] = _Run(
            attempt_id=a.attempt_id,
            task_index=task.index,
            cores=agent.cores,
            gib=task.resident_gib,
            work_s=task.work_s,
            base=base,
            assigned=max(now, agent.ready_at),  # boot counts per instance
            start=max(now, agent.ready_at) + setup,
            every=interval if interval > 0 else math.inf,
            pause=self.p.dump_s(task.resident_gib),
            restored=restored,
            sequence=a.next_sequence,
        )

    def _checkpoint(
        self, inst: Instance, agent: _Agent, order: CheckpointOrder, now: float
    ) -> None:
        if order.request_id in agent.received:
            return  # resent: under way or done
        agent.received.add(order.request_id)
        run = agent.runs.get(order.attempt_id)
        if run is None:
            self._capsule(
                inst,
                order.attempt_id,
                CapsuleReport(
                    state="failed",
                    capsule_id=f"{order.attempt_id}-none",
                    request_id=order.request_id,
                    stop=order.stop,
                    reason=order.reason,
                    error="the attempt is not running on this instance",
                ),
            )
            return
        if not order.stop or run.stop_at is not None:
            return  # the scheduler orders only moves
        if now + run.pause > self._end_s(agent, math.inf) - EPS:
            return  # the dump would outlast the machine: the task runs on until the end
        run.stop_at, run.order = now, order

    def _report(self, inst: Instance, attempt_id: str, status: AttemptStatus) -> None:
        self.dispatch.report(
            inst, attempt_id, AttemptReport(status=status, task_log={"logs": [], "outputs": []})
        )

    def _capsule(self, inst: Instance, attempt_id: str, report: CapsuleReport) -> None:
        self.dispatch.capsule(inst, attempt_id, report)

    # -- results ------------------------------------------------------------------------------

    def _account(self) -> dict[str, Any]:
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
        restarts = migrations = 0
        for task_id in self.ids:
            for attempt in self.fleet.attempts_of(task_id):
                ran_on = by_id.get(attempt.instance_id or "")
                if ran_on is not None:
                    markets[ran_on.market] = markets.get(ran_on.market, 0) + 1
                if attempt.reason in ("reclaim", "lost") and (
                    attempt.id not in self.restored_attempts
                ):
                    restarts += 1
                if attempt.reason == "cost":
                    migrations += 1
        reclaims = sum(1 for i in by_id.values() if i.data.interruption)
        return {
            "bucket": self.bucket.value,
            "policy": self.policy.name,
            "cost_usd": cost,
            "makespan_h": max(self.finished.values()) / HOUR,
            "wasted_core_h": self.wasted_core_s / HOUR,
            "overhead_core_h": (overhead + self.overhead_core_s) / HOUR,
            "interruptions": reclaims,
            "restores": self.restores,
            "restarts": restarts,
            "cost_migrations": migrations,
            "spot_attempts": markets[SPOT],
            "on_demand_attempts": markets["on-demand"],
        }
