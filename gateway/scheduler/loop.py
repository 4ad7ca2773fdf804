"""The scheduler: places queued tasks on instances, starts and stops instances, notices lost ones.

One thread, woken by every create and cancel and otherwise every `interval_seconds`. Each tick:

    1. expire   instances that stopped polling (or never registered) become LOST; their tasks go
                on elsewhere (from a capsule, else from the start) or end SYSTEM_ERROR; attempts
                past a deadline (assignment unacknowledged, start or checkpoint unfinished) are
                settled (gateway.scheduler.deadlines)
    2. place    each QUEUED task, oldest first, goes to a READY instance with room, as a new
                attempt: QUEUED → INITIALIZING and the attempt row in one transaction
    3. launch   when queued tasks found no room and the provider allows more instances
    4. cancel   instances running CANCELING tasks are woken so their agents get the stop order
    5. retire   instances idle longer than `idle_timeout_seconds` are stopped
    6. restore  attempts waiting to restore a capsule (a migration) go to another READY
                instance with room (the one asked for, if any); an instance is launched when
                none fits, not counting the instance the task is leaving
    7. collect  capsules of finished tasks are deleted from the capsule store (unless
                `capsules.keep`)
"""

from __future__ import annotations

import functools
import logging
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import OperationalError

from capsule_runtime.protocol.times import Clock, utcnow
from gateway.auth import token_sha256
from gateway.config import Config
from gateway.market.model import Market
from gateway.market.policy import (
    CostRule,
    MarketPolicy,
    ResizeRule,
    Sample,
    choose_offer,
    cost_migration,
    market_for,
    migration_cost_usd,
    recovery_plan,
    resize_decision,
)
from gateway.migration import Migrations, Refused, restarts
from gateway.providers.base import (
    LIVE_STATES,
    Capability,
    CapacityUnavailable,
    CloudState,
    LaunchRecord,
    LaunchSpec,
    Offer,
    Provider,
    ProviderError,
    interrupter,
    offer_of,
    record_of,
)
from gateway.rules import effective_parameters, effective_preemptible
from gateway.scheduler.adoption import adopt_instances
from gateway.scheduler.deadlines import give_up_checkpoint, overdue
from gateway.scheduler.leadership import LostLeadership, SchedulerLease
from gateway.scheduler.quarantine import Quarantines
from gateway.scheduler.unreported import record_unreported
from gateway.scheduler.wakeups import Wakeups
from gateway.store.fleet import Attempt, FleetStore, Instance, InstanceState
from gateway.store.tasks import TaskStore
from gateway.tes.states import TERMINAL, AttemptPhase, State

log = logging.getLogger(__name__)
SCHEDULER = "scheduler"
OVERDUE_EVERY = 5.0  # seconds between looks for attempts past a deadline
MAX_LAUNCH_BACKOFF = 300.0
LAUNCH_TRIES = 5  # offers tried in one tick when launches meet capacity errors
# Placements per transaction: fewer commits, while a batch holds SQLite's write lock only for a
# few milliseconds (docs/benchmarks.md, Scheduler scale).
PLACE_BATCH = 64


@dataclass(frozen=True)
class Request:
    cpu_cores: float
    ram_gb: float
    disk_gb: float

    def minus(self, other: Request) -> Request:
        return Request(
            self.cpu_cores - other.cpu_cores,
            self.ram_gb - other.ram_gb,
            self.disk_gb - other.disk_gb,
        )

    def fits(self, room: Request) -> bool:
        return (
            self.cpu_cores <= room.cpu_cores + 1e-9
            and self.ram_gb <= room.ram_gb + 1e-9
            and self.disk_gb <= room.disk_gb + 1e-9
        )


@dataclass(frozen=True)
class Want:
    """What an unplaced task or restore needs from a new instance."""

    need: Request
    policy: MarketPolicy
    only_type: str | None = None
    offer: Offer | None = None  # a recovery plan's choice, taken as it is
    exclude: frozenset[str] = frozenset()  # instances it may not go to


def task_policy(spec: dict[str, Any], cfg: Config) -> MarketPolicy:
    rules = cfg.tasks.rules
    return market_for(
        effective_parameters(spec, rules),
        effective_preemptible(spec, rules),
        cfg.scheduler.market_policy,
    )


def market_allows(policy: MarketPolicy, market: str) -> bool:
    if policy is MarketPolicy.SPOT_ONLY:
        return market == "spot"
    if policy is MarketPolicy.ON_DEMAND_ONLY:
        return market != "spot"
    return True


def task_request(spec: dict[str, Any], cfg: Config) -> Request:
    res = spec.get("resources", {})
    return Request(
        cpu_cores=float(res.get("cpu_cores", cfg.scheduler.default_cpu_cores)),
        ram_gb=float(res.get("ram_gb", cfg.scheduler.default_ram_gb)),
        disk_gb=float(res.get("disk_gb", 0.0)),
    )


def attempt_need(attempt: Attempt, spec: dict[str, Any] | None, cfg: Config) -> Request:
    """What a live attempt holds of its instance: its own allocation (`limits`, set when a
    task is rightsized) where it has one, else what its task asks for."""
    asked = task_request(spec or {}, cfg)
    limits = attempt.data.get("limits")
    if not limits:
        return asked
    return Request(
        cpu_cores=float(limits.get("cpu_cores", asked.cpu_cores)),
        ram_gb=float(limits.get("ram_gb", asked.ram_gb)),
        disk_gb=float(limits.get("disk_gb", asked.disk_gb)),
    )


def interruption_budget(params: dict[str, Any], cfg: Config) -> int | None:
    """The Spot reclaims a task takes on Spot (backend_parameters.interruption_budget, else the
    scheduler's); None: no budget."""
    value = params.get("interruption_budget", cfg.scheduler.interruption_budget)
    try:
        return None if value is None else max(0, int(value))
    except (TypeError, ValueError):
        return cfg.scheduler.interruption_budget


def container_limits(attempt: Attempt, spec: dict[str, Any], inst: Instance) -> dict[str, float]:
    """What the attempt's container may use: the limits a size move gave it, else the task's
    resources; what neither says, the whole instance (its type's size, scaled to the machine
    for local instances) — a task cannot outgrow the machine it was placed on unnoticed."""
    given = attempt.data.get("limits") or {}
    asked = spec.get("resources") or {}
    capacity = inst.data.get("capacity") or {}
    limits: dict[str, float] = {}
    for key in ("cpu_cores", "ram_gb"):
        value = given.get(key, asked.get(key, capacity.get(key)))
        if value:
            limits[key] = float(value)
    return limits


def allocation(attempt: Attempt, spec: dict[str, Any], inst: Instance) -> Request:
    """container_limits as a Request: what the attempt's use is measured against."""
    limits = container_limits(attempt, spec, inst)
    disk = float((spec.get("resources") or {}).get("disk_gb", 0.0))
    return Request(limits.get("cpu_cores", 0.0), limits.get("ram_gb", 0.0), disk)


def _cheapest_first(inst: Instance) -> tuple[bool, float]:
    """Spot before on-demand, then by price: where a task placed on running capacity goes."""
    return inst.market != "spot", inst.price_per_hour or 0.0


def _only_type(spec: dict[str, Any], cfg: Config) -> str | None:
    value = effective_parameters(spec, cfg.tasks.rules).get("instance_type")
    return str(value) if value else None


def _parking(attempt: Attempt | None) -> bool:
    """Whether a shutdown checkpoint of the attempt is still under way (not yet left in its
    capsule, nor failed back to RUNNING)."""
    if attempt is None or attempt.phase in (AttemptPhase.DONE, AttemptPhase.INTERRUPTED):
        return False
    return attempt.phase is AttemptPhase.CHECKPOINTING or bool(attempt.data.get("checkpoint"))


def _age_s(then: datetime, now: datetime) -> float:
    return (now - then).total_seconds()


def _gone(states: dict[str, CloudState | None] | None, inst: Instance) -> bool:
    """Whether the provider says the instance's machine is gone (not when it could not say)."""
    return states is not None and states.get(inst.id) not in LIVE_STATES


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _age(timestamp: str | None, now: datetime) -> float:
    if timestamp is None:
        return float("inf")
    return (now - datetime.fromisoformat(timestamp)).total_seconds()


class Scheduler:
    def __init__(
        self,
        config: Config,
        tasks: TaskStore,
        fleet: FleetStore,
        provider: Provider,
        wakeups: Wakeups,
        market: Market | None = None,
        lease: SchedulerLease | None = None,
        *,
        migrations: Migrations | None = None,
        clock: Clock = utcnow,
    ):
        self.cfg = config
        # several gateways on one database: this one schedules only while it holds the lease
        # (gateway.scheduler.leadership); None: it always does
        self.lease = lease
        # Every time the scheduler reads comes from `clock`: tests and the cost simulator
        # (bench/spot_sim.py) move it by hand.
        self.clock = clock
        self.market = market
        self._last_tick: datetime | None = None
        self._last_triggers: datetime | None = None
        self._last_overdue: datetime | None = None
        self.tasks = tasks
        self.fleet = fleet
        self.provider = provider
        self.wakeups = wakeups
        self.migrations = migrations or Migrations(tasks, fleet, wakeups, clock=clock)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Instances that died before their agent registered, in a row: each one doubles the wait
        # before the next launch (capped), so a broken worker setup does not spin.
        self.failed_launches = 0
        self.next_launch = clock()
        self._capsule_store: Any = None
        # pools avoided after a capacity error (or a reclaim, without a market of its own)
        self.quarantines = Quarantines(clock)
        # Since when this gateway could record every agent's heartbeat: its start, or the end of
        # the last database outage. An agent is judged silent only for time the gateway could
        # have heard it (a heartbeat that could not be stored is not a missed one).
        self._hearing_since: datetime | None = clock()

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        if self.lease is None:
            self._recover_on_start()
        self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.wakeups.notify(SCHEDULER)
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self.lease is None or self.lease.leading:  # a follower parks no one's tasks
            self._park()
        self.provider.close()
        if self.lease is not None:
            self.lease.release()  # another gateway takes over at its next tick

    def _park(self) -> None:
        """The gateway is stopping and its instances go with it: move every running task into a
        capsule first (a migration whose restore waits, unplaced, for the next start), for at
        most `capsules.shutdown_seconds`. What could not be checkpointed is stopped as before.
        The API still answers meanwhile: the agents report through it."""
        limit = self.cfg.capsules.shutdown_seconds
        if limit <= 0 or not getattr(self.provider, "ephemeral", False):
            return
        parked: list[str] = []
        for inst in self.fleet.instances({InstanceState.READY}):
            for attempt in self.fleet.live_attempts(inst.id):
                if attempt.phase is not AttemptPhase.RUNNING:
                    continue
                try:
                    self.migrations.request(attempt.task_id, stop=True, reason="shutdown")
                except Refused as exc:
                    log.info("not parking %s: %s", attempt.task_id, exc)
                    continue
                parked.append(attempt.id)
        if not parked:
            return
        log.warning("moving %d running tasks into capsules before stopping", len(parked))
        deadline = time.monotonic() + limit
        while parked and time.monotonic() < deadline:
            time.sleep(0.2)
            parked = [a for a in parked if _parking(self.fleet.attempt(a))]
        if parked:
            log.error("%d tasks could not be moved into capsules in %.0f s", len(parked), limit)

    def _run(self) -> None:
        seen = self.wakeups.version(SCHEDULER)
        while not self._stop.is_set():
            try:
                if self._lead():
                    self.tick()
            except LostLeadership as exc:  # its transaction was rolled back: follow from now on
                log.error("scheduler tick stopped: %s", exc)
            except OperationalError as exc:  # the database is down: heartbeats are not stored
                if self._hearing_since is not None:
                    log.error("database unavailable, scheduling paused: %s", _first_line(exc))
                self._hearing_since = None
            except Exception:  # a bad tick must not kill the scheduler
                log.exception("scheduler tick failed")
            seen = self.wakeups.wait(SCHEDULER, seen, self.cfg.scheduler.interval_seconds)

    def _lead(self) -> bool:
        """Whether this gateway schedules now: it holds (or just took) the lease. One that has
        just become the leader takes over the instances first, as a restarted one does."""
        if self.lease is None:
            return True
        was = self.lease.leading
        if not self.lease.hold():
            return False
        if not was:
            self._recover_on_start()
        return True

    def _fence(self, conn: Connection) -> None:
        """In a scheduler transaction that matters: LostLeadership unless this gateway still
        leads with its epoch (gateway.scheduler.leadership)."""
        if self.lease is not None:
            self.lease.fence(conn)

    def _recover_on_start(self) -> None:
        """Instances a previous gateway process left: those whose agents still run are adopted
        (their tasks go on where they run), the rest are LOST and their tasks settled
        (gateway.scheduler.adoption)."""
        found = self.fleet.instances({InstanceState.LAUNCHING, InstanceState.READY})
        states = self._query(found)
        adopted = adopt_instances(
            self.fleet, self.provider, lambda inst: _gone(states, inst), self._lose
        )
        if self.lease is not None:
            for instance_id in adopted:
                self.fleet.set_owner(instance_id, self.lease.holder)
        self._terminate_orphans()

    def _terminate_orphans(self) -> None:
        """Machines the provider says this gateway started but no live row names (a crash
        between launch and record, a terminate that failed): terminated, never left billing."""
        rows = self.fleet.instances(
            {InstanceState.LAUNCHING, InstanceState.READY, InstanceState.TERMINATING}
        )
        try:
            for record in self.provider.orphans([record_of(i) for i in rows]):
                log.warning("terminating orphaned machine %s", record.provider_id)
                self.provider.terminate(record)
        except ProviderError as exc:
            log.warning("looking for orphaned machines: %s", exc)

    # -- one tick -----------------------------------------------------------------------------

    def tick(self) -> None:
        now = self.clock()
        if self._hearing_since is None:  # the first tick since the database came back
            self.fleet.instances({InstanceState.READY})  # raises while it is still down
            log.warning("database available again, scheduling resumed")
            self._hearing_since = now
        self._expire(now)
        self._overdue(now)
        if self.failed_launches and self.fleet.instances({InstanceState.READY}):
            self.failed_launches = 0
        self._market_tick(now)
        self._triggers(now)
        # Evacuated work first: a task waiting to continue from its capsule (or restart after a
        # loss) takes the room before new work, and the next launch is for it.
        restores, leaving = self._place_restores()
        wants = self._place()
        if wants or restores:
            self._launch(restores + wants, not_counting=leaving)
        self._cancel()
        self._retire(now)
        self._collect_capsules()

    def _expire(self, now: datetime) -> None:
        sch = self.cfg.scheduler
        fleet = self.fleet.instances(
            {InstanceState.TERMINATING, InstanceState.LAUNCHING, InstanceState.READY}
        )
        states = self._query(fleet)  # one call for the whole fleet
        for inst in fleet:
            if inst.state is not InstanceState.TERMINATING:
                continue
            if _gone(states, inst) or _age(inst.updated_time, now) > 60:
                self.provider.terminate(record_of(inst))
                self.fleet.set_instance_state(inst.id, InstanceState.TERMINATED)
        for inst in fleet:
            if inst.state is InstanceState.TERMINATING:
                continue
            if inst.state is InstanceState.LAUNCHING:
                if _gone(states, inst):
                    self._lose(inst, "its agent exited before registering")
                elif _age(inst.created_time, now) > sch.launch_timeout_seconds:
                    self._lose(inst, "its agent never registered")
            elif self._silent_s(inst, now) > sch.heartbeat_timeout_seconds:
                self._lose(inst, "its agent stopped answering")
            elif _gone(states, inst):
                self._lose(
                    inst,
                    "reclaimed" if inst.data.get("interruption") else "its machine is gone",
                )

    def _query(self, instances: list[Instance]) -> dict[str, CloudState | None] | None:
        """The provider's state of each instance (by instance id), in one call; None when the
        provider could not be asked (nothing is taken as gone on a failed look)."""
        if not instances:
            return {}
        records = {inst.id: record_of(inst) for inst in instances}
        try:
            found = self.provider.query(list(records.values()))
        except ProviderError as exc:
            log.warning("asking the provider about %d instances: %s", len(records), exc)
            return None
        return {iid: found.get(r.provider_id) for iid, r in records.items()}

    def _silent_s(self, inst: Instance, now: datetime) -> float:
        """How long the agent has not been heard, counting only time the gateway could hear it."""
        heard = self._hearing_since or now
        return min(_age(inst.last_heartbeat, now), _age_s(heard, now))

    def _lose(self, inst: Instance, why: str) -> None:
        log.warning("instance %s lost: %s", inst.id, why)
        if inst.state is InstanceState.LAUNCHING:
            self.failed_launches += 1
            delay = min(2.0**self.failed_launches, MAX_LAUNCH_BACKOFF)
            self.next_launch = self.clock() + timedelta(seconds=delay)
            log.error(
                "instance %s never came up (%d in a row); next launch in %.0fs; see %s",
                inst.id,
                self.failed_launches,
                delay,
                self.provider.log_hint(record_of(inst)),
            )
        with self.tasks.batch() as conn:  # a deposed leader loses nothing
            self._fence(conn)
            self.fleet.set_instance_state(inst.id, InstanceState.LOST, conn=conn)
        self.provider.terminate(record_of(inst))
        reason = "reclaim" if inst.data.get("interruption") else "lost"
        for attempt in self.fleet.live_attempts(inst.id):
            self._lose_attempt(attempt.id, inst.id, reason, why)

    def _lose_attempt(self, attempt_id: str, instance_id: str, reason: str, why: str) -> None:
        """One attempt is gone with its instance (or given up on there): LOST → DONE, then its
        task goes on elsewhere or ends — in one transaction, so a report racing with this
        either lands before it or is refused (gateway.dispatch), never half-applied."""
        self._take_unreported(attempt_id)
        with self.tasks.batch() as conn:
            self._fence(conn)
            attempt = self.fleet.lock_attempt(conn, attempt_id)
            if attempt is None or not attempt.live:
                return
            lost = self.fleet.change_phase(conn, attempt, AttemptPhase.LOST, message=why)
            self.fleet.change_phase(conn, lost or attempt, AttemptPhase.DONE)
            record = self.tasks.get(attempt.task_id)
            if record is None:
                return
            state = self.tasks.state(attempt.task_id, conn) or record.state
            if state in (State.RUNNING, State.INITIALIZING) and self._recover(
                conn, attempt, instance_id, reason, why
            ):
                return
            target = State.CANCELED if state is State.CANCELING else State.SYSTEM_ERROR
            logs = record.logs or [{"logs": [], "outputs": []}]
            message = f"instance {instance_id} was lost ({why}); the task cannot continue"
            logs[-1].setdefault("system_logs", []).append(message)
            self.tasks.transition(
                attempt.task_id,
                target,
                message=message,
                attempt_id=attempt.id,
                logs=logs,
                conn=conn,
            )

    def _take_unreported(self, attempt_id: str) -> None:
        """Capsules the lost attempt wrote but never reported count for its recovery
        (gateway.scheduler.unreported); the store being away costs only those."""
        attempt = self.fleet.attempt(attempt_id)
        if attempt is None or not attempt.live:
            return
        try:
            record_unreported(self._store(), self.fleet, self.tasks, attempt)
        except Exception as exc:
            log.warning("looking for unreported capsules of %s: %s", attempt_id, exc)

    def _store(self) -> Any:
        if self._capsule_store is None:
            from capsule_runtime.capsules.store import open_store

            store = self.cfg.capsule_store
            self._capsule_store = open_store({"url": store, "s3": self.cfg.capsule_s3})
        return self._capsule_store

    def _recover(
        self, conn: Connection, attempt: Attempt, instance_id: str, reason: str, why: str
    ) -> bool:
        """A task whose instance is gone goes on elsewhere: from its newest capsule, else from
        the beginning — unless it has used up `max_interruptions`. False: it cannot. In the
        caller's transaction."""
        losses = [
            a for a in self.fleet.attempts_of(attempt.task_id) if a.reason in ("reclaim", "lost")
        ]
        if len(losses) >= self.cfg.scheduler.max_interruptions:
            return False
        capsules = self.fleet.capsules_of(attempt.task_id, {"complete"})
        record = self.tasks.get(attempt.task_id)
        if record is not None and record.logs:
            how = f"from capsule {capsules[0].id}" if capsules else "from the beginning"
            logs = record.logs
            logs[-1].setdefault("system_logs", []).append(
                f"instance {instance_id} was lost ({why}); the task continues elsewhere, {how}"
            )
            self.tasks.set_logs(attempt.task_id, logs, conn=conn)
        migrations = int(attempt.data.get("migrations", 0))
        self.fleet.add_pending_attempt(
            attempt.task_id,
            reason=reason,
            data={
                "restore": bool(capsules),
                "exclude": [instance_id],
                "migrations": migrations + 1 if capsules else migrations,
                **({"limits": attempt.data["limits"]} if attempt.data.get("limits") else {}),
            },
            message=f"recovery after instance {instance_id} was lost ({why})",
            conn=conn,
        )
        return True

    def _overdue(self, now: datetime) -> None:
        """Attempts past a deadline (gateway.scheduler.deadlines): an assignment never
        acknowledged or a start that never finished is given up on its instance and the task
        recovered elsewhere; a checkpoint never answered is given up and the task runs on."""
        # deadlines are minutes long: a look every few seconds is soon enough (each reads every
        # live attempt)
        if self._last_overdue is not None and _age_s(self._last_overdue, now) < OVERDUE_EVERY:
            return
        self._last_overdue = now
        attempts = self.fleet.live_attempts()
        if not attempts:
            return
        registered = {
            i.id: i.data.get("registered") for i in self.fleet.instances({InstanceState.READY})
        }
        for attempt in attempts:
            if attempt.instance_id is None:
                continue
            why = overdue(attempt, now, self.cfg.scheduler, registered.get(attempt.instance_id))
            if why is None:
                continue
            log.warning("attempt %s of %s: %s", attempt.id, attempt.task_id, why)
            if attempt.phase is AttemptPhase.CHECKPOINTING:
                give_up_checkpoint(self.tasks, self.fleet, attempt.id, why)
            else:
                self._lose_attempt(attempt.id, attempt.instance_id, "lost", why)
                self.wakeups.notify(attempt.instance_id)

    def _placeable(self) -> list[Instance]:
        """READY instances that take new work (not under an interruption notice)."""
        return [
            i for i in self.fleet.instances({InstanceState.READY}) if not i.data.get("interruption")
        ]

    def _room(self, inst: Instance) -> Request:
        return self._rooms([inst])[inst.id]

    def _rooms(self, instances: list[Instance]) -> dict[str, Request]:
        """Each instance's capacity less what its live attempts hold (`attempt_need`), from one
        query however many instances and attempts there are."""
        used: dict[str, list[float]] = {inst.id: [0.0, 0.0, 0.0] for inst in instances}
        only = instances[0].id if len(instances) == 1 else None  # `_room`: that one's only
        for attempt, spec in self.fleet.live_load(only):
            acc = used.get(attempt.instance_id or "")
            if acc is None or not spec:
                continue
            r = attempt_need(attempt, spec, self.cfg)
            acc[0] += r.cpu_cores
            acc[1] += r.ram_gb
            acc[2] += r.disk_gb
        rooms: dict[str, Request] = {}
        for inst in instances:
            cap = inst.data.get("capacity", {})
            cpu, ram, disk = used[inst.id]
            rooms[inst.id] = Request(
                cap.get("cpu_cores", 0.0) - cpu,
                cap.get("ram_gb", 0.0) - ram,
                cap.get("disk_gb", 0.0) - disk,
            )
        return rooms

    def _largest_offer(self) -> Offer | None:
        offers = self.provider.offers()
        return max(offers, key=lambda o: (o.cpu_cores, o.ram_gb)) if offers else None

    def _place(self) -> list[Want]:
        """Place what fits; return what the queued tasks that found no room need."""
        queued = self.tasks.in_state(State.QUEUED)
        if not queued:
            return []
        # Cheapest first, sorted once: prices do not change within a tick.
        ready = sorted(self._placeable(), key=_cheapest_first)
        rooms = self._rooms(ready)
        biggest = self._largest_offer()
        largest = Request(biggest.cpu_cores, biggest.ram_gb, biggest.disk_gb) if biggest else None
        unplaced: list[Want] = []
        # Placements commit PLACE_BATCH at a time (one transaction, not one each); the agents
        # are woken and the refusals written once their batch has committed.
        for start in range(0, len(queued), PLACE_BATCH):
            placed: dict[str, None] = {}
            refused: list[tuple[str, Request]] = []
            with self.tasks.batch() as conn:
                self._fence(conn)
                for record in queued[start : start + PLACE_BATCH]:
                    if record.spec is None:
                        continue
                    need = task_request(record.spec, self.cfg)
                    if largest is not None and not need.fits(largest):
                        refused.append((record.id, need))
                        continue
                    policy = task_policy(record.spec, self.cfg)
                    only = _only_type(record.spec, self.cfg)
                    target = next(
                        (
                            i
                            for i in ready
                            if need.fits(rooms[i.id])
                            and market_allows(policy, i.market)
                            and only in (None, i.instance_type)
                        ),
                        None,
                    )
                    if target is None:
                        unplaced.append(Want(need, policy, only))
                    elif self._assign(conn, record.id, target):
                        rooms[target.id] = rooms[target.id].minus(need)
                        placed[target.id] = None
            for instance_id in placed:
                self.wakeups.notify(instance_id)
            for task_id, need in refused:
                assert biggest is not None
                self._refuse(task_id, need, biggest)
        return unplaced

    def _assign(self, conn: Connection, task_id: str, target: Instance) -> bool:
        """QUEUED → INITIALIZING with a new attempt on `target`, in the caller's transaction."""
        result = self.tasks.transition(
            task_id,
            State.INITIALIZING,
            expect={State.QUEUED},
            instance_id=target.id,
            message=f"placed on {target.id} ({target.instance_type}, {target.market})",
            on_apply=functools.partial(self._attempt, task_id=task_id, inst=target),
            conn=conn,
        )
        return result.applied

    def _attempt(self, conn: Connection, *, task_id: str, inst: Instance) -> None:
        self.fleet.add_attempt(conn, task_id, inst)

    def _refuse(self, task_id: str, need: Request, offer: Offer) -> None:
        message = (
            f"no instance fits this task: it asks for {need.cpu_cores:g} CPU cores, "
            f"{need.ram_gb:g} GB RAM and {need.disk_gb:g} GB disk; the largest instance "
            f"({offer.instance_type}) offers {offer.cpu_cores:g} cores, {offer.ram_gb:g} GB RAM "
            f"and {offer.disk_gb:g} GB disk"
        )
        self.tasks.transition(
            task_id,
            State.SYSTEM_ERROR,
            expect={State.QUEUED},
            message=message,
            logs=[{"logs": [], "outputs": [], "system_logs": [message]}],
        )

    def _launch(self, wants: list[Want], not_counting: frozenset[str] = frozenset()) -> None:
        """Start one instance for the first want that any offer serves (one at a time: each
        new instance registers before the next is started)."""
        if self.clock() < self.next_launch:
            return
        active = self.fleet.instances({InstanceState.LAUNCHING, InstanceState.READY})
        if any(i.state is InstanceState.LAUNCHING for i in active):
            return  # one at a time: let it register first
        counted = [i for i in active if i.id not in not_counting and not i.data.get("interruption")]
        if len(counted) >= self.provider.max_instances:
            self._make_room(counted)
            return
        all_offers = self.provider.offers()
        for _ in range(LAUNCH_TRIES):
            offers = self.quarantines.usable(all_offers)
            offer = self._launch_offer(wants, offers)
            if offer is None or not self._launch_one(offer):
                return  # nothing fits now, or the launch happened (or failed for good)

    def _launch_offer(self, wants: list[Want], offers: list[Offer]) -> Offer | None:
        """The offer for the first want that one serves (a recovery plan's own offer unless its
        pool is quarantined)."""
        for want in wants:
            if want.offer is not None:
                if not self.quarantines.blocks(want.offer):
                    return want.offer
                continue
            offer = choose_offer(
                want.need, offers, want.policy, self._quarantined(), only_type=want.only_type
            )
            if offer is not None:
                return offer
        return None

    def _launch_one(self, offer: Offer) -> bool:
        """Launch one instance of `offer`; True when its pool had no capacity (quarantined
        now: the caller tries the next fitting offer)."""
        token = secrets.token_urlsafe(32)
        with self.tasks.batch() as conn:
            self._fence(conn)
            inst = self._add_instance(conn, offer, token)
        try:
            (result,) = self.provider.launch_many([LaunchSpec(inst.id, token, offer)])
        except ProviderError as exc:
            result = exc
        if isinstance(result, LaunchRecord):
            self.fleet.set_launch_record(
                inst.id, result.provider_id, result.zone or inst.zone, result.provider_data
            )
            return False
        if isinstance(result, CapacityUnavailable):
            seconds = self.cfg.scheduler.quarantine_seconds
            log.warning("launch failed: %s; avoiding that pool for %.0fs", result, seconds)
            self.quarantines.add(offer.instance_type, offer.zone, offer.market, seconds)
            self.fleet.set_instance_state(inst.id, InstanceState.TERMINATED)
            return seconds > 0  # with no quarantine the same pool would come first again
        # a launch that fails for another reason will likely fail again: wait longer each time
        self.failed_launches += 1
        delay = min(2.0**self.failed_launches, MAX_LAUNCH_BACKOFF)
        self.next_launch = self.clock() + timedelta(seconds=delay)
        log.error("launch failed: %s; next launch in %.0fs", result, delay)
        self.fleet.set_instance_state(inst.id, InstanceState.LOST)
        return False

    def _add_instance(self, conn: Connection, offer: Offer, token: str) -> Instance:
        return self.fleet.add_instance(
            provider=self.provider.name,
            instance_type=offer.instance_type,
            market=offer.market,
            zone=offer.zone,
            price_per_hour=offer.price_per_hour,
            token_sha256=token_sha256(token),
            data={
                "capacity": {
                    "cpu_cores": offer.cpu_cores,
                    "ram_gb": offer.ram_gb,
                    "disk_gb": offer.disk_gb,
                }
            },
            owner=self.lease.holder if self.lease is not None else None,
            conn=conn,
        )

    def _quarantined(self) -> frozenset[tuple[str, str]]:
        """The Spot pools (type, zone) the simulated market quarantines (the scheduler's own
        quarantines are taken out of the offers: `Quarantines.usable`)."""
        return self.market.quarantined() if self.market is not None else frozenset()

    def _offers(self) -> list[Offer]:
        """What the provider offers, less the quarantined pools."""
        return self.quarantines.usable(self.provider.offers())

    def _triggers(self, now: datetime) -> None:
        """Migrations on purpose: OOM protection and rightsizing from each running task's usage
        samples, and moves for price (gateway/market/policy.py decides; Migrations acts)."""
        sch = self.cfg.scheduler
        if not self.provider.supports(Capability.PRICES) or not (
            sch.rightsizing.enabled or sch.cost_migration.enabled
        ):
            return
        # usage samples arrive with the agents' polls (seconds apart) and prices move in steps:
        # a look every triggers_interval_seconds is soon enough, however often the tick runs
        every = sch.triggers_interval_seconds
        if self._last_triggers is not None and _age_s(self._last_triggers, now) < every:
            return
        self._last_triggers = now
        if self.market is None:
            self._refresh_prices()
        offers: list[Offer] | None = None
        quarantined = self._quarantined()
        for inst in self._placeable():
            for attempt in self.fleet.live_attempts(inst.id):
                if attempt.phase is not AttemptPhase.RUNNING or attempt.data.get("checkpoint"):
                    continue
                record = self.tasks.get(attempt.task_id)
                if record is None or record.state is not State.RUNNING or not record.spec:
                    continue
                offers = offers if offers is not None else self._offers()
                spec = record.spec
                move = self._trigger(attempt, inst, spec, offers, quarantined, now)
                if move is None:
                    continue
                reason, offer, limits = move
                if limits is not None and self._resize_in_place(
                    attempt, inst, spec, reason, limits
                ):
                    continue
                plan = asdict(offer)
                try:
                    self.migrations.request(
                        attempt.task_id, stop=True, reason=reason, plan=plan, limits=limits
                    )
                except Refused as exc:
                    log.info("no %s move for %s: %s", reason, attempt.task_id, exc)
                    continue
                log.info(
                    "moving %s (%s): %s %s → %s %s %s",
                    attempt.task_id,
                    reason,
                    inst.instance_type,
                    inst.market,
                    offer.instance_type,
                    offer.market,
                    offer.zone,
                )

    def _resize_in_place(
        self,
        attempt: Attempt,
        inst: Instance,
        spec: dict[str, Any],
        reason: str,
        limits: dict[str, float],
    ) -> bool:
        """Grow the container where it runs when its instance has room for the new limits (no
        checkpoint, no new instance); False: it has not, the task must move."""
        held = attempt_need(attempt, spec, self.cfg)
        wanted = Request(limits["cpu_cores"], limits["ram_gb"], held.disk_gb)
        if wanted.cpu_cores < held.cpu_cores or wanted.ram_gb < held.ram_gb:
            return False  # a smaller size saves money only on a smaller instance
        if not wanted.minus(held).fits(self._room(inst)):
            return False
        self.fleet.update_attempt_data(
            attempt.id, limits=limits, resize={**limits, "reason": reason, "sent": False}
        )
        old = attempt.data.get("limits") or spec.get("resources") or {}
        before = f"cpu {old.get('cpu_cores', '-')}, memory {old.get('ram_gb', '-')} GB"
        after = f"cpu {limits['cpu_cores']:g}, memory {limits['ram_gb']:g} GB"
        self.tasks.record(
            attempt.task_id,
            "resized",
            attempt_id=attempt.id,
            instance_id=inst.id,
            message=f"{reason}: grown in place on {inst.id} ({before} → {after})",
            data={"reason": reason, "limits": limits},
        )
        log.info("resizing %s in place on %s (%s): %s", attempt.task_id, inst.id, reason, after)
        self.wakeups.notify(inst.id)
        return True

    def _trigger(
        self,
        attempt: Attempt,
        inst: Instance,
        spec: dict[str, Any],
        offers: list[Offer],
        quarantined: frozenset[tuple[str, str]],
        now: datetime,
    ) -> tuple[str, Offer, dict[str, float] | None] | None:
        """Whether the attempt should move, why, where, and (for a size move) the container's
        new limits."""
        sch = self.cfg.scheduler
        current = offer_of(inst)
        need = task_request(spec, self.cfg)
        history = attempt.data.get("usage") or []
        if sch.rightsizing.enabled and history:
            r = sch.rightsizing
            samples = [
                Sample(
                    t=datetime.fromisoformat(u["time"]).timestamp(),
                    cpu_cores=float(u.get("cpu_cores") or 0.0),
                    mem_gb=float(u.get("memory_bytes") or 0) / 2**30,
                )
                for u in history
                if u.get("time")
            ]
            rule = ResizeRule(
                cpu_upper=r.cpu_upper,
                cpu_lower=r.cpu_lower,
                duration_seconds=r.duration_seconds,
                mem_upper=r.memory_upper,
            )
            allocated = allocation(attempt, spec, inst)
            limited = "ram_gb" in (attempt.data.get("limits") or spec.get("resources") or {})
            resize = resize_decision(
                samples,
                current,
                offers,
                need,
                rule,
                quarantined,
                allocated=allocated,
                keep_memory=limited,
            )
            if resize is not None:
                limits = {"cpu_cores": resize.limits.cpu_cores, "ram_gb": resize.limits.ram_gb}
                return resize.reason, resize.offer, limits
        c = sch.cost_migration
        if not c.enabled or inst.price_per_hour is None or inst.market != "spot":
            return None  # on-demand is where a policy or a recovery strategy put the task
        ran = _age(attempt.start_time, now)
        ran = self.market.simulated_seconds(ran) if self.market is not None else ran
        memory_gib = float((history[-1].get("memory_bytes") if history else 0) or 0) / 2**30
        offer = cost_migration(
            inst.price_per_hour,
            current,
            offers,
            need,
            remaining_hours_estimate=ran / 3600.0,
            migration_cost_usd=migration_cost_usd(
                memory_gib, inst.price_per_hour, inst.price_per_hour
            ),
            rule=CostRule(c.threshold_pct, c.max_price, c.hysteresis_pct, c.min_interval_seconds),
            quarantined=quarantined,
            policy=task_policy(spec, self.cfg),
            seconds_since_last_move=_age(attempt.start_time, now),
        )
        return ("cost", offer, None) if offer is not None else None

    def _refresh_prices(self) -> None:
        """A priced provider without the simulated market: each running Spot instance's price
        follows its pool's current offer (the market tick does this for the market)."""
        prices = {
            (o.instance_type, o.zone): o.price_per_hour
            for o in self.provider.offers()
            if o.market == "spot" and o.price_per_hour is not None
        }
        for inst in self.fleet.instances({InstanceState.READY}):
            price = prices.get((inst.instance_type, inst.zone))
            if inst.market != "spot" or price is None:
                continue
            if inst.price_per_hour is None or abs(price - inst.price_per_hour) > 1e-9:
                self.fleet.set_price(inst.id, price)

    def _market_tick(self, now: datetime) -> None:
        """Spot prices move (each running Spot instance's price follows its market pool) and a
        provider that simulates the Spot market reclaims instances: each gets a notice now and
        dies at the deadline."""
        simulates = self.provider.supports(Capability.INTERRUPT_SIMULATION)
        if self.market is None and not simulates:
            return
        dt = 0.0 if self._last_tick is None else (now - self._last_tick).total_seconds()
        self._last_tick = now
        spot = [i for i in self.fleet.instances({InstanceState.READY}) if i.market == "spot"]
        if self.market is not None:
            for inst in spot:
                price = self.market.price(inst.instance_type, inst.zone, "spot")
                if inst.price_per_hour is None or abs(price - inst.price_per_hour) > 1e-9:
                    self.fleet.set_price(inst.id, price)
        if dt <= 0 or not simulates or not spot:
            return
        simulation = interrupter(self.provider)
        live = [i for i in spot if not i.data.get("interruption")]
        for inst, notice in simulation.reclaims(live, dt):
            try:
                deadline = simulation.interrupt(record_of(inst), notice)
            except ProviderError as exc:
                log.warning("reclaiming %s: %s", inst.id, exc)
                continue
            self.migrations.on_notice(
                inst, "terminate", deadline, stays=lambda t: restarts(self.tasks, self.cfg, t)
            )

    def _place_restores(self) -> tuple[list[Want], frozenset[str]]:
        """Place the attempts that continue a task elsewhere (a migration's restore, a
        reclaimed or lost instance's recovery); return what the unplaced ones need and the
        instances their tasks are leaving."""
        pending = self.fleet.unplaced_attempts()
        if not pending:
            return [], frozenset()
        ready = self._placeable()
        rooms = {inst.id: self._room(inst) for inst in ready}
        unplaced: list[Want] = []
        leaving: set[str] = set()
        for attempt in pending:
            record = self.tasks.get(attempt.task_id)
            if record is None or record.state not in (State.RUNNING, State.INITIALIZING):
                with self.tasks.batch() as conn:  # the attempt and the cancel, or neither
                    if (
                        self.fleet.set_phase(
                            attempt.id,
                            AttemptPhase.DONE,
                            expect={AttemptPhase.PROVISIONING},
                            message="the task ended before its restore",
                            conn=conn,
                        )
                        and self.tasks.state(attempt.task_id, conn) is State.CANCELING
                    ):
                        self.tasks.transition(
                            attempt.task_id,
                            State.CANCELED,
                            message="cancelled between instances",
                            attempt_id=attempt.id,
                            conn=conn,
                        )
                continue
            spec = record.spec or {}
            need = attempt_need(attempt, spec, self.cfg)
            exclude = frozenset(attempt.data.get("exclude") or [])
            plan = self._plan(attempt, spec, need, exclude)
            policy = task_policy(spec, self.cfg)
            planned = plan.get("offer")
            wanted = attempt.data.get("target")
            fits = [
                i
                for i in ready
                if i.id not in exclude
                and need.fits(rooms[i.id])
                and market_allows(policy, i.market)
                and (
                    planned is None
                    or (
                        i.instance_type == planned["instance_type"]
                        and i.market == planned["market"]
                        and (i.zone == planned["zone"] or not plan.get("zone_matters"))
                    )
                )
            ]
            target = next((i for i in fits if i.id == wanted), fits[0] if fits else None)
            if target is None:
                offer = Offer(**planned) if planned else None
                unplaced.append(Want(need, policy, _only_type(spec, self.cfg), offer, exclude))
                leaving |= exclude
                continue
            with self.tasks.batch() as conn:
                self._fence(conn)
                placed = self.fleet.place_attempt(attempt.id, target, conn=conn)
            if placed:
                rooms[target.id] = rooms[target.id].minus(need)
                self.wakeups.notify(target.id)
        return unplaced, frozenset(leaving)

    def _plan(
        self, attempt: Attempt, spec: dict[str, Any], need: Request, exclude: frozenset[str]
    ) -> dict[str, Any]:
        """A reclaimed task's recovery plan (market/policy.py), made once and kept on the
        attempt: the offer to go to, and the pools to quarantine."""
        if "plan" in attempt.data:
            return dict(attempt.data["plan"])
        plan: dict[str, Any] = {}
        left = [self.fleet.instance(i) for i in exclude]
        source = next((i for i in left if i is not None), None)
        if (
            attempt.reason == "reclaim"
            and source is not None
            and self.provider.supports(Capability.PRICES)
        ):
            params = effective_parameters(spec, self.cfg.tasks.rules)
            strategy = params.get("recovery") or self.cfg.scheduler.recovery
            reclaims = [a for a in self.fleet.attempts_of(attempt.task_id) if a.reason == "reclaim"]
            result = recovery_plan(
                strategy,
                source,
                len(reclaims),
                self._offers(),
                need,
                self._quarantined(),
                task_policy(spec, self.cfg),
                budget=interruption_budget(params, self.cfg),
            )
            if "budget" in result.reason:
                self.tasks.record(attempt.task_id, "interruption_budget", message=result.reason)
            for instance_type, zone in result.quarantine:
                if self.market is not None:
                    self.market.quarantine(instance_type, zone)
                else:
                    seconds = self.cfg.scheduler.quarantine_seconds
                    self.quarantines.add(instance_type, zone, "spot", seconds)
                self.tasks.record(
                    attempt.task_id,
                    "quarantine",
                    message=f"{instance_type} in {zone} quarantined after a reclaim",
                )
            if result.offer is not None:
                plan["offer"] = asdict(result.offer)
                plan["zone_matters"] = strategy.startswith("next_zone")
            plan["strategy"] = strategy
            if not result.restore_capsule and attempt.data.get("restore"):
                self.fleet.update_attempt_data(attempt.id, restore=False)
        self.fleet.update_attempt_data(attempt.id, plan=plan)
        return plan

    def _collect_capsules(self) -> None:
        if self.cfg.capsules.keep:
            return
        task_ids = self.fleet.tasks_with_capsules_to_delete({s.value for s in TERMINAL})
        if not task_ids:
            return
        from capsule_runtime.capsules.pipeline import delete_task_capsules

        for task_id in task_ids:
            try:
                deleted = delete_task_capsules(self._store(), task_id)
            except Exception as exc:  # the store may be away; try again next tick
                log.warning("deleting the capsules of %s: %s", task_id, exc)
                return
            self.fleet.mark_capsules_deleted(task_id)
            self.tasks.record(task_id, "capsules_deleted", message=f"{deleted} objects deleted")

    def _cancel(self) -> None:
        canceling = set(self.tasks.ids_in_state(State.CANCELING))
        if not canceling:
            return
        for attempt in self.fleet.live_attempts():
            if attempt.task_id in canceling and attempt.instance_id:
                self.wakeups.notify(attempt.instance_id)

    def _make_room(self, counted: list[Instance]) -> None:
        """Every instance slot is taken while work waits for an instance of another kind: stop
        an idle one now rather than after the idle timeout (its slot goes to the launch)."""
        for inst in counted:
            if inst.state is InstanceState.READY and not self.fleet.live_attempts(inst.id):
                log.info("stopping idle instance %s to make room for a launch", inst.id)
                self.fleet.set_instance_state(inst.id, InstanceState.TERMINATING)
                self.wakeups.notify(inst.id)
                return

    def _retire(self, now: datetime) -> None:
        if self.tasks.ids_in_state(State.QUEUED, limit=1):
            return
        for inst in self.fleet.instances({InstanceState.READY}):
            if self.fleet.live_attempts(inst.id):
                continue
            idle_from = self.fleet.last_attempt_end(inst.id) or inst.created_time
            idle_limit = self.provider.idle_seconds or self.cfg.scheduler.idle_timeout_seconds
            if _age(idle_from, now) > idle_limit:
                log.info("stopping idle instance %s", inst.id)
                self.fleet.set_instance_state(inst.id, InstanceState.TERMINATING)
                self.wakeups.notify(inst.id)  # its next poll answers `shutdown`
