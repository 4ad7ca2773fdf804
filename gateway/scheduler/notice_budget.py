"""The notice budget planner: a task on Spot must fit its last capsule into the interruption
notice. From what each instance type's capsules measured and what each task dirties between
capsules, the scheduler takes capsules often enough that the capsule a notice calls for is
predicted to be durable within `margin` of the notice, does not place a task on Spot where even
a capsule just taken would leave too much, and records every notice's prediction next to the
time it really took (docs/capsules.md, "The notice budget").

The model. A capsule of S bytes (the task's memory and files) with N bytes of new chunks to
store is two stages: CRIU dumps all of it (no soft-dirty tracking on these kernels), then the
agent's pipeline reads every byte, names it, and compresses, encrypts and stores what is new:

    dump(S)        = S * criu
    pipeline(S, N) = constant + S * read + N * upload
    T              = overhead + dump + pipeline            a capsule taken in series (periodic)
    T              = overhead + max(dump, pipeline)        one whose pages the pipeline stores
                                                           while CRIU writes them (a notice's,
                                                           with capsules.checkpoint_via: images)

Per instance type the four rates are fitted to its measured capsules (decayed least squares,
pulled towards the priors, which count as one capsule of each kind; checkpoint_rates, migration
0007): `criu` to each capsule's own dump time (the agent's `seconds.dump`: from its start to
CRIU's post-dump), the pipeline to what came after the dump (`total - dump`) — or, for a
followed capsule, to its whole time, which bounds its pipeline from above. A capsule reported
without `dump` (an agent before 2026-12-03) counts wholly as dump: the safe side. The
`overhead` (the notice reaching the gateway, the order the agent, the report coming back) is
the prior `overhead_seconds` averaged with each notice's measured time less the agent's own
(decayed alike, the prior weighing as one notice). N at a notice
is the task's dirty rate (new stored bytes per second between its capsules, from its incremental
capsules: a rise is taken at once, a fall halves the gap) times the time since its newest
capsule, at most its whole stored capsule; a task without a capsule to build on stores
everything.

What it keeps on an attempt (Attempt.data, typed in gateway/store/fleet_data.py):
    capsule_profile     since (the newest capsule's start, or the restore: dirt counts from
                        here), size_bytes, stored_bytes (the newest capsule's), dirty_bps
    notice_prediction   at a notice: heard, deadline, notice_s, budget_s, predicted_s,
                        size_bytes, upload_bytes, basis, requested (the migration order was
                        taken)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from capsule_runtime.protocol.messages import CapsuleReport
from capsule_runtime.protocol.tes import TesTask
from capsule_runtime.protocol.times import Clock, rfc3339, utcnow
from gateway.config import Config, NoticeBudgetConfig
from gateway.migration import Refused, restarts_by
from gateway.providers.base import Offer
from gateway.store.checkpoint_rates import CheckpointRates, Stats
from gateway.store.fleet import Attempt, FleetStore, Instance, InstanceState
from gateway.store.fleet_data import CapsuleProfile, NoticeBudgetNote, NoticePrediction
from gateway.store.tasks import TaskStore
from gateway.tes.states import AttemptPhase, MarketType

if TYPE_CHECKING:
    from gateway.scheduler.loop import Scheduler
    from gateway.scheduler.needs import Want

log = logging.getLogger(__name__)

GIB = float(2**30)
FORGET = 0.8  # an older sample's weight at each new one: about the last five capsules count
PRIOR_WEIGHT = 1.0  # the priors weigh as one 1-GiB capsule of each kind
MIN_SECONDS_PER_GIB = 0.01  # a fit never predicts free bytes
TOLD_KEPT = 10_000  # (task, type) refusals remembered, so each is an event once


@dataclass(frozen=True)
class Rates:
    """An instance type's capsule speed (see the module): CRIU's dump per GiB of capsule; the
    pipeline's seconds per GiB of capsule, per GiB stored anew, and its constant."""

    criu_s_per_gib: float
    read_s_per_gib: float
    upload_s_per_gib: float
    constant_s: float = 0.0
    samples: int = 0
    # what a notice capsule costs besides its capsule (hearing the notice, delivering the order):
    # the prior `overhead_seconds`, then learned from the type's notices (add_overhead)
    overhead_s: float = 0.0
    notices: int = 0

    def dump(self, size_bytes: float) -> float:
        return size_bytes * self.criu_s_per_gib / GIB

    def pipeline(self, size_bytes: float, upload_bytes: float) -> float:
        per_byte = size_bytes * self.read_s_per_gib + upload_bytes * self.upload_s_per_gib
        return self.constant_s + per_byte / GIB

    def seconds(self, size_bytes: float, upload_bytes: float, followed: bool = False) -> float:
        dump, pipeline = self.dump(size_bytes), self.pipeline(size_bytes, upload_bytes)
        return max(dump, pipeline) if followed else dump + pipeline

    def notice(self, size_bytes: float, upload_bytes: float, followed: bool = False) -> float:
        """A notice capsule's predicted time from the notice: the overhead, then the capsule."""
        return self.overhead_s + self.seconds(size_bytes, upload_bytes, followed)


def prior(cfg: NoticeBudgetConfig) -> Rates:
    criu = cfg.dump_seconds_per_gib * cfg.criu_share
    return Rates(
        criu,
        cfg.dump_seconds_per_gib - criu,
        cfg.upload_seconds_per_gib,
        overhead_s=cfg.overhead_seconds,
    )


_DUMP_KEYS = ("d_ss", "d_sy")
_PIPE_KEYS = ("p_11", "p_1s", "p_1n", "p_ss", "p_sn", "p_nn", "p_1y", "p_sy", "p_ny")
_OVERHEAD_KEYS = ("o_w", "o_y", "notices")


def add_sample(
    stats: Stats | None,
    size_bytes: float,
    uploaded_bytes: float,
    seconds: float,
    dump_seconds: float | None = None,
    followed: bool = False,
) -> Stats:
    """The decayed least-squares sums (see the module) with one capsule more: S, N in GiB;
    `seconds` its whole time, `dump_seconds` to the end of CRIU's dump (None: unknown, the
    whole time counts as dump), `followed` whether the pipeline ran during the dump. Sums of
    the model before 2026-12-03 (no prefix) are dropped."""
    old = stats or {}
    s, n = size_bytes / GIB, uploaded_bytes / GIB
    out: Stats = {k: FORGET * float(old.get(k, 0.0)) for k in _DUMP_KEYS + _PIPE_KEYS}
    out.update({k: old[k] for k in _OVERHEAD_KEYS if k in old})  # decayed by notices alone
    dump = seconds if dump_seconds is None else min(dump_seconds, seconds)
    out["d_ss"] += s * s
    out["d_sy"] += s * dump
    if dump_seconds is not None:
        y = seconds if followed else seconds - dump
        x = {"1": 1.0, "s": s, "n": n}  # the pipeline's regressors: p_ab = Σ a·b, p_ay = Σ a·y
        for i, a in enumerate("1sn"):
            out[f"p_{a}y"] += x[a] * y
            for b in "1sn"[i:]:
                out[f"p_{a}{b}"] += x[a] * x[b]
    out["samples"] = int(old.get("samples", 0)) + 1
    return out


def add_overhead(stats: Stats | None, seconds: float) -> Stats:
    """The sums with one notice's overhead more: the time from the notice to the durable
    capsule less the capsule's own (the agent's `total`); decayed as the capsules are."""
    out: Stats = dict(stats or {})
    out["o_w"] = FORGET * float(out.get("o_w", 0.0)) + 1.0
    out["o_y"] = FORGET * float(out.get("o_y", 0.0)) + max(seconds, 0.0)
    out["notices"] = int(out.get("notices", 0)) + 1
    return out


def solve(stats: Stats | None, base: Rates) -> Rates:
    """The rates that fit the sums best, pulled towards `base` (a ridge: the systems stay
    solvable with one sample, or with samples that all have the same shape)."""
    if not stats:
        return base
    k = PRIOR_WEIGHT

    def g(key: str) -> float:
        return float(stats.get(key, 0.0))

    criu = (g("d_sy") + k * base.criu_s_per_gib) / (g("d_ss") + k)
    m = [
        [g("p_11") + k, g("p_1s"), g("p_1n")],
        [g("p_1s"), g("p_ss") + k, g("p_sn")],
        [g("p_1n"), g("p_sn"), g("p_nn") + k],
    ]
    r = [
        g("p_1y") + k * base.constant_s,
        g("p_sy") + k * base.read_s_per_gib,
        g("p_ny") + k * base.upload_s_per_gib,
    ]
    constant, read, upload = _solve3(m, r)
    overhead = (g("o_y") + k * base.overhead_s) / (g("o_w") + k)
    return Rates(
        max(criu, MIN_SECONDS_PER_GIB),
        max(read, MIN_SECONDS_PER_GIB),
        max(upload, MIN_SECONDS_PER_GIB),
        max(constant, 0.0),  # a capsule never takes less than its bytes
        int(stats.get("samples", 0)),
        overhead,
        int(stats.get("notices", 0)),
    )


def _solve3(m: list[list[float]], r: list[float]) -> tuple[float, float, float]:
    """x with m·x = r for a symmetric positive definite 3-by-3 m (Cramer's rule; the ridge keeps
    the determinant above 0)."""

    def det(a: list[list[float]]) -> float:
        return (
            a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1])
            - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
            + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0])
        )

    whole = det(m)
    out = []
    for col in range(3):
        swapped = [[r[i] if j == col else m[i][j] for j in range(3)] for i in range(3)]
        out.append(det(swapped) / whole)
    return out[0], out[1], out[2]


@dataclass(frozen=True)
class Footprint:
    """What a task's capsule would carry: its size, the most it stores, how fast it dirties
    (None: not measured yet), and since when (None: no capsule to build on, all is new)."""

    size_bytes: float
    stored_bytes: float
    dirty_bps: float | None = None
    since: datetime | None = None
    # what the size comes from: capsule | usage (a memory sample) | request (ram_gb) | limit
    # (the memory the container may use: an upper bound, before any sample)
    basis: str = "capsule"

    def upload_after(self, seconds: float) -> float:
        if self.since is None or self.dirty_bps is None:
            return self.stored_bytes
        return min(self.dirty_bps * max(seconds, 0.0), self.stored_bytes)


@dataclass(frozen=True)
class Prediction:
    seconds: float
    size_bytes: float
    upload_bytes: float


def followed(report: CapsuleReport) -> bool:
    """Whether the capsule's pipeline stored the pages while CRIU dumped them (the agent's
    `seconds.dump_followed`, checkpoint_via: images)."""
    return "dump_followed" in report.seconds


def next_dirty_rate(old: float | None, sample: float) -> float:
    """A rise is believed at once (a notice now would pay for it), a fall halves the gap."""
    if old is None or sample >= old:
        return sample
    return (old + sample) / 2


class NoticeBudget:
    """The planner's state and decisions, shared by the scheduler (capsules, placement), the
    dispatcher (measurements, notices) and Migrations (the prediction at a notice)."""

    def __init__(
        self, cfg: Config, tasks: TaskStore, fleet: FleetStore, *, clock: Clock = utcnow
    ) -> None:
        self.cfg = cfg.capsules.notice_budget
        self.config = cfg
        self.tasks = tasks
        self.fleet = fleet
        self.clock = clock
        self.store = CheckpointRates(fleet.db, clock)
        self._rates: dict[tuple[str, str], Stats] | None = None  # read once per look
        self._told: set[tuple[str, str]] = set()
        self._untold: list[tuple[str, str, str, Prediction, bool]] = []
        self._asked: dict[str, datetime] = {}  # attempt → the planner's last capsule request
        # a notice's capsule stores the pages while CRIU dumps them (checkpointing, "images")
        self.followed = cfg.capsules.checkpoint_via == "images"

    @property
    def enabled(self) -> bool:
        return self.cfg.enabled

    def may_ask(self, attempt_id: str, now: datetime) -> bool:
        """Whether `min_interval_seconds` has passed since the planner last asked for a capsule
        of the attempt (its newest capsule may be older: the one asked for failed)."""
        then = self._asked.get(attempt_id)
        return then is None or (now - then).total_seconds() >= self.cfg.min_interval_seconds

    def asked(self, attempt_id: str, now: datetime) -> None:
        if len(self._asked) >= TOLD_KEPT:  # in memory: a restart forgets, costing one capsule
            self._asked.clear()
        self._asked[attempt_id] = now

    # -- what a notice allows ---------------------------------------------------------------

    def notice_seconds(self, provider: str) -> float:
        table = self.cfg.notice_seconds
        return float(table.get(provider, table["default"]))

    def budget_seconds(self, provider: str) -> float:
        return self.notice_seconds(provider) * self.cfg.margin

    def refresh(self) -> None:
        """Read the measured rates again (once per scheduler look, not per task)."""
        self._rates = self.store.all()

    def rates(self, provider: str, instance_type: str) -> Rates:
        if self._rates is None:
            self.refresh()
        assert self._rates is not None
        return solve(self._rates.get((provider, instance_type)), prior(self.cfg))

    def predict(self, fp: Footprint, rates: Rates, elapsed: float) -> Prediction:
        upload = fp.upload_after(elapsed)
        seconds = rates.notice(fp.size_bytes, upload, self.followed)
        return Prediction(seconds, fp.size_bytes, upload)

    def best_case(self, fp: Footprint, rates: Rates) -> Prediction:
        """A notice right after a capsule, with capsules as often as allowed: what the task
        costs at the least on this type (an unmeasured dirty rate counts as none)."""
        upload = min((fp.dirty_bps or 0.0) * self.cfg.min_interval_seconds, fp.stored_bytes)
        seconds = rates.notice(fp.size_bytes, upload, self.followed)
        return Prediction(seconds, fp.size_bytes, upload)

    # -- what a task is ------------------------------------------------------------------------

    def footprint(
        self, attempts: list[Attempt], task: TesTask | None, limit_gb: float | None = None
    ) -> Footprint | None:
        """The task's footprint from its attempts (newest last: the newest capsule profile and
        memory sample), else from the memory it asks for, else from `limit_gb` (the memory its
        container may use); None when nothing says. `basis` says which."""
        profile = CapsuleProfile()
        for attempt in reversed(attempts):
            if attempt.data.capsule_profile is not None:
                profile = attempt.data.capsule_profile
                break
        current = attempts[-1] if attempts else None
        usage = current.data.usage if current is not None else []
        memory = float((usage[-1].memory_bytes if usage else 0) or 0)
        size = float(profile.size_bytes or 0)
        stored = float(profile.stored_bytes or 0)
        basis = "capsule" if size else "usage"
        if not size and not memory:
            ram_gb = task.resources.ram_gb if task is not None and task.resources else None
            basis = "request"
            if not ram_gb:
                ram_gb, basis = limit_gb, "limit"
            if not ram_gb:
                return None
            memory = float(ram_gb) * GIB
        grown = max(memory - size, 0.0)
        since = None
        own = current.data.capsule_profile if current is not None else None
        if own is not None and own.since:
            since = datetime.fromisoformat(own.since)
        dirty = profile.dirty_bps
        return Footprint(
            size_bytes=size + grown,
            stored_bytes=(stored + grown) if stored else size + grown,
            dirty_bps=float(dirty) if dirty is not None else None,
            since=since,
            basis=basis,
        )

    def placing(self, attempts: list[Attempt], task: TesTask | None) -> Footprint | None:
        """The footprint placement checks (None: nothing to check: the planner is off, or the
        task's recovery is `restart`, which takes no capsule at a notice)."""
        if not self.enabled or restarts_by(self.config, task):
            return None
        return self.footprint(attempts, task)

    # -- placement -------------------------------------------------------------------------------

    def spot_refusal(
        self, task_id: str | None, fp: Footprint | None, provider: str, instance_type: str
    ) -> Prediction | None:
        """The best case on Spot of `instance_type` when it does not fit the notice budget
        (None: it fits, or nothing is known of the task)."""
        if not self.enabled or fp is None:
            return None
        best = self.best_case(fp, self.rates(provider, instance_type))
        return best if best.seconds > self.budget_seconds(provider) else None

    def allows(self, task_id: str, fp: Footprint | None, inst: Instance, spot_only: bool) -> bool:
        """Whether the task may go to a READY instance as far as the notice is concerned."""
        if inst.market != MarketType.SPOT:
            return True
        refused = self.spot_refusal(task_id, fp, inst.provider, inst.instance_type)
        if refused is None:
            return True
        self.tell_refusal(task_id, inst.provider, inst.instance_type, refused, spot_only)
        return False

    def spot_offers(
        self, want: Want, offers: list[Offer], provider: str, spot_only: bool
    ) -> list[Offer]:
        """`offers` less the Spot ones whose type cannot carry the want's task in the notice."""
        if not self.enabled or want.footprint is None:
            return offers
        kept: list[Offer] = []
        verdicts: dict[str, Prediction | None] = {}
        for offer in offers:
            if offer.market != MarketType.SPOT:
                kept.append(offer)
                continue
            if offer.instance_type not in verdicts:
                verdicts[offer.instance_type] = self.spot_refusal(
                    want.task_id, want.footprint, provider, offer.instance_type
                )
            refused = verdicts[offer.instance_type]
            if refused is None:
                kept.append(offer)
            elif want.task_id is not None:
                self.tell_refusal(want.task_id, provider, offer.instance_type, refused, spot_only)
        return kept

    def tell_refusal(
        self,
        task_id: str | None,
        provider: str,
        instance_type: str,
        best: Prediction,
        spot_only: bool,
    ) -> None:
        """A `spot_refused` event, once per task and type: kept until `tell_refusals` (the
        placement that refuses may hold a transaction open)."""
        if task_id is None or (task_id, instance_type) in self._told:
            return
        if len(self._told) >= TOLD_KEPT:
            self._told.clear()
        self._told.add((task_id, instance_type))
        self._untold.append((task_id, provider, instance_type, best, spot_only))

    def tell_refusals(self) -> None:
        """Record the refusals kept since the last call (the scheduler's, once per tick)."""
        untold, self._untold = self._untold, []
        for refusal in untold:
            self._record_refusal(*refusal)

    def _record_refusal(
        self, task_id: str, provider: str, instance_type: str, best: Prediction, spot_only: bool
    ) -> None:
        notice = self.notice_seconds(provider)
        budget = self.budget_seconds(provider)
        then = (
            "it waits for a type where it fits (market_policy spot_only)"
            if spot_only
            else "it goes on-demand or to another type"
        )
        self.tasks.record(
            task_id,
            "spot_refused",
            message=(
                f"not placed on Spot {instance_type}: a capsule of its "
                f"{best.size_bytes / GIB:.1f} GiB at a reclaim notice would take ~"
                f"{best.seconds:.0f} s there, more than {budget:.0f} s "
                f"({self.cfg.margin:g} of the {notice:.0f} s notice); {then}"
            ),
            data={
                "instance_type": instance_type,
                "predicted_s": round(best.seconds, 3),
                "budget_s": round(budget, 3),
                "notice_s": notice,
                "size_bytes": int(best.size_bytes),
            },
        )

    # -- measurements (the dispatcher, after a capsule report) ---------------------------------

    def observe(
        self, conn: Connection, attempt_id: str, inst: Instance, report: CapsuleReport
    ) -> tuple[str, str, CapsuleReport, float | None] | None:
        """A capsule report applied in `conn`: the task's profile on its attempt, and at a
        notice the prediction next to the measured time (a `notice_budget` event). Returns
        what the type's rates learn (`learn`, after the commit: the capsule, and a notice's
        overhead), or None."""
        if not self.enabled:
            return None
        attempt = self.fleet.lock_attempt(conn, attempt_id)
        if attempt is None:
            return None
        now = self.clock()
        if report.state == "restored":
            carried = self._carried(attempt)
            restored = carried.model_copy(
                update={
                    "since": rfc3339(now),
                    "size_bytes": report.size_bytes or carried.size_bytes or 0,
                    "stored_bytes": report.stored_bytes or carried.stored_bytes or 0,
                }
            )
            self.fleet.write_attempt_data(conn, attempt, capsule_profile=restored)
            return None
        if report.state not in ("complete", "failed"):
            return None
        overhead = None
        if report.stop and report.reason == "reclaim":
            overhead = self._settle_notice(conn, attempt, inst, report, now)
        if report.state != "complete":
            return None
        total = float(report.seconds.get("total") or 0.0)
        started = now - timedelta(seconds=total)
        profile = attempt.data.capsule_profile or self._carried(attempt)
        update: dict[str, Any] = {
            "since": rfc3339(started),
            "size_bytes": report.size_bytes,
            "stored_bytes": report.stored_bytes,
        }
        if profile.since and report.parent:
            gap = (started - datetime.fromisoformat(profile.since)).total_seconds()
            if gap > 0:
                sample = report.uploaded_bytes / gap
                update["dirty_bps"] = next_dirty_rate(profile.dirty_bps, sample)
        profile = profile.model_copy(update=update)
        self.fleet.write_attempt_data(conn, attempt, capsule_profile=profile)
        if total <= 0 or not report.size_bytes:
            return None
        return inst.provider, inst.instance_type, report, overhead

    def learn(
        self,
        provider: str,
        instance_type: str,
        report: CapsuleReport,
        overhead_s: float | None = None,
    ) -> None:
        """The type's rates with one measured capsule more, and a notice's overhead (own
        transaction; never raises)."""
        total = float(report.seconds.get("total") or 0.0)
        dump = report.seconds.get("dump")

        def change(old: Stats | None) -> Stats:
            new = add_sample(
                old, report.size_bytes, report.uploaded_bytes, total, dump, followed(report)
            )
            return new if overhead_s is None else add_overhead(new, overhead_s)

        try:
            self.store.update(provider, instance_type, change)
        except Exception as exc:  # a statistic must never fail the report it came with
            log.warning("checkpoint rate of %s not recorded: %s", instance_type, exc)
        self._rates = None

    def _carried(self, attempt: Attempt) -> CapsuleProfile:
        """The newest profile of the task's earlier attempts (its dirty rate and size), for an
        attempt that continues it elsewhere (without `since`: its dirt counts from here)."""
        for earlier in reversed(self.fleet.attempts_of(attempt.task_id)):
            old = earlier.data.capsule_profile
            if earlier.id != attempt.id and old is not None:
                kept = {k: v for k, v in old.dump().items() if k != "since"}
                return CapsuleProfile.model_validate(kept)
        return CapsuleProfile()

    # -- notices --------------------------------------------------------------------------------

    def noticed(self, attempt: Attempt, inst: Instance, deadline: str) -> NoticePrediction | None:
        """At a notice: the attempt's predicted notice capsule, kept on it (notice_prediction)
        for the `notice_budget` event its capsule report brings. None when the planner is off."""
        if not self.enabled:
            return None
        now = self.clock()
        try:
            notice = (datetime.fromisoformat(deadline.replace("Z", "+00:00")) - now).total_seconds()
            notice = max(notice, 0.0)
        except ValueError:
            notice = self.notice_seconds(inst.provider)
        self.refresh()  # a notice is rare: the rates as stored now
        attempts = self.fleet.attempts_of(attempt.task_id)
        record = self.tasks.get(attempt.task_id)
        task = record.task if record is not None else None
        fp = self.footprint(attempts, task, limit_gb=memory_limit_gb(attempt, inst))
        rates = self.rates(inst.provider, inst.instance_type)
        elapsed = (now - fp.since).total_seconds() if fp is not None and fp.since else 0.0
        predicted = self.predict(fp, rates, elapsed) if fp is not None else None
        note = NoticePrediction(
            heard=rfc3339(now),
            deadline=deadline,
            notice_s=round(notice, 3),
            budget_s=round(notice * self.cfg.margin, 3),
            predicted_s=round(predicted.seconds, 3) if predicted else None,
            size_bytes=int(predicted.size_bytes) if predicted else None,
            upload_bytes=int(predicted.upload_bytes) if predicted else None,
            basis=fp.basis if fp is not None else None,
            requested=False,
        )
        self.fleet.update_attempt_data(attempt.id, notice_prediction=note)
        return note

    def requested(self, attempt_id: str, note: NoticePrediction) -> None:
        self.fleet.update_attempt_data(
            attempt_id, notice_prediction=note.model_copy(update={"requested": True})
        )

    def _settle_notice(
        self,
        conn: Connection,
        attempt: Attempt,
        inst: Instance,
        report: CapsuleReport,
        now: datetime,
    ) -> float | None:
        """The `notice_budget` event: the prediction made at the notice, the time it took, and
        `model_s` — the type's rates applied to the capsule as it came out (its real size and
        new bytes), which tells the rates' error apart from what was not known of the task.
        Returns the notice's overhead (the measured time less the agent's own), or None."""
        note = attempt.data.notice_prediction
        if note is None:
            return None
        model = None
        rates = self.rates(inst.provider, inst.instance_type)
        if report.state == "complete" and report.size_bytes:
            seconds = rates.notice(report.size_bytes, report.uploaded_bytes, followed(report))
            model = round(seconds, 3)
        measured = (now - datetime.fromisoformat(note.heard)).total_seconds()
        agent = report.seconds.get("total")
        overhead = None
        if report.state == "complete" and agent is not None:
            overhead = max(measured - float(agent), 0.0)
        predicted = note.predicted_s
        ok = report.state == "complete"
        said = "no prediction"
        if predicted is not None:
            said = f"predicted {predicted:.1f} s"
            if note.basis == "limit":
                said += " from its memory limit, before any memory sample"
        what = "durable" if ok else "failed"
        self.tasks.record(
            attempt.task_id,
            "notice_budget",
            attempt_id=attempt.id,
            instance_id=attempt.instance_id,
            message=(
                f"notice capsule {what} {measured:.1f} s after the notice ({said}; budget "
                f"{note.budget_s:.0f} s of the {note.notice_s:.0f} s notice)"
            ),
            data={
                **{k: v for k, v in note.dump().items() if k != "requested"},
                "measured_s": round(measured, 3),
                "model_s": model,
                "agent_s": agent,
                "overhead_s": round(overhead, 3) if overhead is not None else None,
                "overhead_model_s": round(rates.overhead_s, 3),
                "dump_s": report.seconds.get("dump"),  # the agent's, to CRIU's post-dump
                "followed": followed(report),
                "outcome": "durable" if ok else "failed",
                "within_notice": ok and measured <= note.notice_s,
            },
            conn=conn,
        )
        return overhead


# -- the scheduler's step ------------------------------------------------------------------------


def plan_capsules(s: Scheduler, now: datetime) -> None:
    """Capsules for the running tasks on Spot whose notice capsule would no longer fit the
    budget (never sooner than `min_interval_seconds` after their newest one), and the migration
    a notice could not order because a capsule was under way then."""
    budget = s.budget
    if not budget.enabled:
        return
    every = s.cfg.scheduler.triggers_interval_seconds
    if s.last_budget_look is not None and (now - s.last_budget_look).total_seconds() < every:
        return
    s.last_budget_look = now
    budget.refresh()
    ready = s.fleet.instances({InstanceState.READY})
    spot = {i.id: i for i in ready if i.market == MarketType.SPOT}
    if not spot:
        return
    for attempt in s.fleet.live_attempts():
        inst = spot.get(attempt.instance_id or "")
        if inst is None or attempt.phase is not AttemptPhase.RUNNING:
            continue
        if attempt.data.checkpoint is not None:
            continue
        note = attempt.data.notice_prediction
        if inst.data.interruption is not None:
            if note is not None and not note.requested:
                try:  # the notice found a capsule under way: the move follows it now
                    s.migrations.request(
                        attempt.task_id, stop=True, reason="reclaim", fence=s.fence
                    )
                except Refused as exc:
                    log.info("task %s not moved after its notice: %s", attempt.task_id, exc)
                    continue
                budget.requested(attempt.id, note)
            continue
        fp = budget.footprint([attempt], None)  # a running task: its samples and capsules
        if fp is None:
            continue
        base = fp.since or (
            datetime.fromisoformat(attempt.start_time) if attempt.start_time else now
        )
        elapsed = (now - base).total_seconds()
        floor = budget.cfg.min_interval_seconds
        if elapsed < floor or not budget.may_ask(attempt.id, now):
            continue
        rates = budget.rates(inst.provider, inst.instance_type)
        predicted = budget.predict(fp, rates, elapsed)
        limit = budget.budget_seconds(inst.provider)
        if predicted.seconds <= limit:
            continue
        record = s.tasks.get(attempt.task_id)
        if record is None or restarts_by(s.cfg, record.task):
            continue
        why = NoticeBudgetNote(
            predicted_s=round(predicted.seconds, 3),
            budget_s=round(limit, 3),
            since_capsule_s=round(elapsed, 1),
            upload_bytes=int(predicted.upload_bytes),
        )
        budget.asked(attempt.id, now)  # a capsule that fails is not asked for again at once
        try:
            s.migrations.request(
                attempt.task_id,
                stop=False,
                reason="notice_budget",
                fence=s.fence,
                notice_budget=why,
            )
        except Refused as exc:
            log.info("no notice-budget capsule of %s: %s", attempt.task_id, exc)


def memory_limit_gb(attempt: Attempt, inst: Instance) -> float | None:
    """The memory the attempt's container may use (gateway.scheduler.needs.container_limits
    without the task's own ask, which the footprint reads first)."""
    limits = attempt.data.limits
    capacity = inst.data.capacity
    value = (limits.ram_gb if limits is not None else None) or (
        capacity.ram_gb if capacity is not None else None
    )
    return float(value) if value else None
