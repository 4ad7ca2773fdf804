"""The scheduler: places queued tasks on instances, starts and stops instances, notices lost ones.

One thread, woken by every create and cancel and otherwise every `interval_seconds`. Each tick,
with each step in a module of its own (this one keeps the thread, leadership and the tick):

    1. expire   (losses)     instances that stopped polling (or never registered) become LOST;
                             their tasks go on elsewhere (from a capsule, else from the start) or
                             end SYSTEM_ERROR; attempts past a deadline (assignment
                             unacknowledged, start or checkpoint unfinished) are settled
                             (deadlines)
    2. market   (prices)     Spot prices move; a simulated market reclaims instances
    3. triggers (triggers)   moves on purpose: rightsizing, OOM protection, price; capsules
                (notice_budget)  that keep each Spot task's notice capsule within its budget
    4. restore  (placement)  attempts waiting to restore a capsule (a migration) or to recover
                             after a loss go to another READY instance with room, before new work
    5. place    (placement)  each QUEUED task, oldest first, goes to a READY instance with room, as
                             a new attempt: QUEUED → INITIALIZING and the attempt row in one
                             transaction
    6. launch   (launches)   when restores or queued tasks found no room and the provider allows
                             more instances (not counting the instances tasks are leaving)
    7. upkeep   (upkeep)     instances running CANCELING tasks are woken so their agents get the
                             stop order; instances idle longer than `idle_timeout_seconds` are
                             stopped; capsules of finished tasks are deleted from the store
                             (unless `capsules.keep`)

What a task needs of an instance (`Want`) is in `needs`; small shared helpers in
`common`. Each part is a set of functions of the `Scheduler`, whose state (stores, provider,
clock, lease, backoff) they share.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from datetime import datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import OperationalError

from capsule_runtime.protocol.times import Clock, utcnow
from gateway.config import Config
from gateway.market.model import Market
from gateway.migration import Migrations, Refused
from gateway.providers.base import Provider, ProviderError, record_of
from gateway.scheduler import (
    cloud_notices,
    launches,
    losses,
    placement,
    prices,
    triggers,
    upkeep,
)
from gateway.scheduler.adoption import adopt_instances
from gateway.scheduler.common import first_line, gone
from gateway.scheduler.leadership import LostLeadership, SchedulerLease
from gateway.scheduler.notice_budget import NoticeBudget, plan_capsules
from gateway.scheduler.quarantine import Quarantines
from gateway.scheduler.wakeups import Wakeups
from gateway.store.fleet import Attempt, FleetStore, InstanceState
from gateway.store.tasks import TaskStore
from gateway.tes.states import AttemptPhase

log = logging.getLogger(__name__)
SCHEDULER = "scheduler"


def _parking(attempt: Attempt | None) -> bool:
    """Whether a shutdown checkpoint of the attempt is still under way (not yet left in its
    capsule, nor failed back to RUNNING)."""
    if attempt is None or attempt.phase in (AttemptPhase.DONE, AttemptPhase.INTERRUPTED):
        return False
    return attempt.phase is AttemptPhase.CHECKPOINTING or attempt.data.checkpoint is not None


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
        self.last_tick: datetime | None = None
        self.last_triggers: datetime | None = None
        self.last_budget_look: datetime | None = None
        self.last_overdue: datetime | None = None
        self.tasks = tasks
        self.fleet = fleet
        self.provider = provider
        self.wakeups = wakeups
        self.migrations = migrations or Migrations(tasks, fleet, wakeups, clock=clock)
        # the notice budget planner: measured capsule speeds, planned capsules, Spot refusals
        self.budget = NoticeBudget(config, tasks, fleet, clock=clock)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Instances that died before their agent registered, in a row: each one doubles the wait
        # before the next launch (capped), so a broken worker setup does not spin.
        self.failed_launches = 0
        self.next_launch = clock()
        self.capsule_store_: Any = None
        # pools avoided after a capacity error (or a reclaim, without a market of its own)
        self.quarantines = Quarantines(clock)
        # Since when this gateway could record every agent's heartbeat: its start, or the end of
        # the last database outage. An agent is judged silent only for time the gateway could
        # have heard it (a heartbeat that could not be stored is not a missed one).
        self.hearing_since: datetime | None = clock()

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
                if self.hearing_since is not None:
                    log.error("database unavailable, scheduling paused: %s", first_line(exc))
                self.hearing_since = None
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

    def fence(self, conn: Connection) -> None:
        """In a scheduler transaction that matters: LostLeadership unless this gateway still
        leads with its epoch (gateway.scheduler.leadership)."""
        if self.lease is not None:
            self.lease.fence(conn)

    def _recover_on_start(self) -> None:
        """Instances a previous gateway process left: those whose agents still run are adopted
        (their tasks go on where they run), the rest are LOST and their tasks settled
        (gateway.scheduler.adoption)."""
        found = self.fleet.instances({InstanceState.LAUNCHING, InstanceState.READY})
        states = losses.query(self, found)
        adopted = adopt_instances(
            self.fleet,
            self.provider,
            lambda inst: gone(states, inst),
            functools.partial(losses.lose, self),
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
            orphans = self.provider.orphans([record_of(i) for i in rows])
        except ProviderError as exc:
            log.warning("looking for orphaned machines: %s", exc)
            return
        if not orphans:
            return
        log.warning(
            "terminating %d orphaned machines: %s",
            len(orphans),
            ", ".join(r.provider_id for r in orphans),
        )
        for provider_id, error in self.provider.terminate_many(orphans).items():
            if error is not None:
                log.warning("terminating orphaned machine %s: %s", provider_id, error)

    def tick(self) -> None:
        now = self.clock()
        if self.hearing_since is None:  # the first tick since the database came back
            self.fleet.instances({InstanceState.READY})  # raises while it is still down
            log.warning("database available again, scheduling resumed")
            self.hearing_since = now
        losses.expire(self, now)
        losses.settle_overdue(self, now)
        cloud_notices.read(self)  # the cloud's own reclaim warnings, before any placement
        if self.failed_launches and self.fleet.instances({InstanceState.READY}):
            self.failed_launches = 0
        prices.market_tick(self, now)
        triggers.run_triggers(self, now)
        plan_capsules(self, now)
        # Evacuated work first: a task waiting to continue from its capsule (or restart after a
        # loss) takes the room before new work, and the next launch is for it.
        restores, leaving = placement.place_restores(self)
        wants = placement.place_queued(self)
        if wants or restores:
            launches.launch(self, restores + wants, not_counting=leaving)
        self.budget.tell_refusals()  # Spot placements the notice budget refused, as events
        upkeep.wake_canceling(self)
        upkeep.retire(self, now)
        upkeep.collect_capsules(self)
