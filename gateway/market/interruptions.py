"""Spot interruptions: the Spot Instance Advisor's frequency buckets as hazards; co-interruptions.

Buckets. The Advisor sorts each instance type into one of five frequency-of-interruption buckets,
<5%, 5-10%, 10-15%, 15-20% and >20%: the share of instances AWS reclaimed over the trailing month.
Each bucket stands for one fraction p (`rates`, by default the bucket's middle, 25% for >20%), read
as "an instance that runs `exposure_hours` is reclaimed with probability p". With a constant hazard
that is

    hazard per hour  h = -ln(1 - p) / exposure_hours

(exposure 730 h reads "per month" literally: the <5% bucket gives h ≈ 3.5e-5/h; a shorter exposure
models fleets of short-lived instances, which see the same fraction over less time).

Co-interruptions. Reclaims come in bursts: when EC2 takes capacity back in a pool (type+zone), more
than 92% of the co-interruptions of that pool arrive within 3 minutes of the first. Modelled
simply: when an instance is reclaimed, every other live Spot instance of its type+zone is reclaimed
too with probability `co_probability`, after a delay drawn from an exponential distribution whose
mean puts 92% of the delays inside `co_window_seconds` (mean = window / ln(1/0.08) ≈ 71 s for
3 minutes). Follow-ups do not cascade further.

Time. Hazards are per simulated hour; `time_scale` simulated seconds pass per second of the
caller's clock, so `draw(instances, dt, rng)` with dt in real seconds covers dt x time_scale
simulated seconds (tests run a month of market in seconds). On-demand instances are never
interrupted.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Protocol, TypeVar

from gateway.tes.states import MarketType

CO_QUANTILE = 0.92  # the share of co-interruptions inside the window


class Bucket(StrEnum):
    UNDER_5 = "<5%"
    FROM_5_TO_10 = "5-10%"
    FROM_10_TO_15 = "10-15%"
    FROM_15_TO_20 = "15-20%"
    OVER_20 = ">20%"


DEFAULT_RATES: dict[Bucket, float] = {
    Bucket.UNDER_5: 0.025,
    Bucket.FROM_5_TO_10: 0.075,
    Bucket.FROM_10_TO_15: 0.125,
    Bucket.FROM_15_TO_20: 0.175,
    Bucket.OVER_20: 0.25,
}
# Roughly how the Advisor spreads common x86 types in us-east-1: most in the lowest bucket.
DEFAULT_WEIGHTS: dict[Bucket, float] = {
    Bucket.UNDER_5: 0.55,
    Bucket.FROM_5_TO_10: 0.2,
    Bucket.FROM_10_TO_15: 0.1,
    Bucket.FROM_15_TO_20: 0.05,
    Bucket.OVER_20: 0.1,
}


def hazard_per_hour(monthly_fraction: float, exposure_hours: float = 730.0) -> float:
    """The constant hazard under which an instance running `exposure_hours` is reclaimed with
    probability `monthly_fraction`."""
    if not 0 <= monthly_fraction < 1:
        raise ValueError("the fraction must be in [0, 1)")
    return -math.log1p(-monthly_fraction) / exposure_hours


def co_mean_seconds(window_seconds: float, quantile: float = CO_QUANTILE) -> float:
    """The exponential mean that puts `quantile` of the delays inside the window."""
    return window_seconds / -math.log(1.0 - quantile)


class Placed(Protocol):
    """What an interruption is drawn for: a running instance (gateway.store.fleet.Instance fits)."""

    @property
    def id(self) -> str: ...
    @property
    def instance_type(self) -> str: ...
    @property
    def zone(self) -> str: ...
    @property
    def market(self) -> str: ...


P = TypeVar("P", bound=Placed)


def bucket_lookup(
    overrides: Mapping[str, str], seed: int, weights: Mapping[Bucket, float] | None = None
) -> Callable[[str, str], Bucket]:
    """A type+zone → bucket function: the most specific override ("type/zone", "type", "family",
    "*") wins, else a seeded draw with `weights` (the same seed gives the same buckets)."""
    w = dict(weights or DEFAULT_WEIGHTS)
    labels = [b for b in Bucket if w.get(b, 0) > 0]
    probabilities = [w[b] for b in labels]
    cache: dict[tuple[str, str], Bucket] = {}

    def lookup(instance_type: str, zone: str) -> Bucket:
        key = (instance_type, zone)
        found = cache.get(key)
        if found is not None:
            return found
        family = instance_type.partition(".")[0]
        for name in (f"{instance_type}/{zone}", instance_type, f"{family}/{zone}", family, "*"):
            if name in overrides:
                found = Bucket(overrides[name])
                break
        else:
            rng = random.Random(f"{seed}/{instance_type}/{zone}/bucket")
            found = rng.choices(labels, probabilities)[0]
        cache[key] = found
        return found

    return lookup


class InterruptionModel:
    """Which Spot instances get a reclaim notice, step by step (`draw`) or as event times
    (`next_interruption`, `co_interruptions`) for an event-driven simulation."""

    def __init__(
        self,
        bucket_of: Callable[[str, str], Bucket],
        rates: Mapping[Bucket, float] | None = None,
        exposure_hours: float = 730.0,
        time_scale: float = 1.0,
        co_probability: float = 0.3,
        co_window_seconds: float = 180.0,
    ) -> None:
        self.bucket_of = bucket_of
        self.rates = dict(rates or DEFAULT_RATES)
        self.exposure_hours = exposure_hours
        self.time_scale = time_scale
        self.co_probability = co_probability
        self.co_window_seconds = co_window_seconds
        self.co_mean = co_mean_seconds(co_window_seconds)
        self.elapsed = 0.0  # simulated seconds seen by draw()
        self._pending: list[tuple[float, str]] = []  # (due, instance id) follow-ups
        self._pending_ids: set[str] = set()

    def hazard(self, instance_type: str, zone: str) -> float:
        """Reclaims per simulated hour of one Spot instance of this type+zone."""
        return hazard_per_hour(self.rates[self.bucket_of(instance_type, zone)], self.exposure_hours)

    # -- step by step (the local provider) ----------------------------------------------------

    def draw(self, instances: Iterable[P], dt_seconds: float, rng: random.Random) -> list[P]:
        """The instances whose reclaim notice comes in the next `dt_seconds` of the caller's clock
        (x time_scale simulated). Call it every tick with the live instances; a follow-up of an
        instance no longer passed in is dropped."""
        sim_dt = max(0.0, dt_seconds) * self.time_scale
        self.elapsed += sim_dt
        live = [i for i in instances if i.market == MarketType.SPOT]
        by_id = {i.id: i for i in live}
        hit: dict[str, P] = {}
        while self._pending and self._pending[0][0] <= self.elapsed:
            _, iid = heapq.heappop(self._pending)
            self._pending_ids.discard(iid)
            if iid in by_id:
                hit[iid] = by_id[iid]
        first: list[P] = []
        for inst in live:
            if inst.id in hit or inst.id in self._pending_ids:
                continue
            p = -math.expm1(-self.hazard(inst.instance_type, inst.zone) * sim_dt / 3600.0)
            if rng.random() < p:
                hit[inst.id] = inst
                first.append(inst)
        for inst, delay in self.co_interruptions(first, live, rng, exclude=set(hit)):
            heapq.heappush(self._pending, (self.elapsed + delay, inst.id))
            self._pending_ids.add(inst.id)
        return list(hit.values())

    # -- event times (the simulator) ----------------------------------------------------------

    def next_interruption(self, instance_type: str, zone: str, rng: random.Random) -> float:
        """Simulated seconds from now until this Spot instance's reclaim (inf: never)."""
        h = self.hazard(instance_type, zone)
        return math.inf if h <= 0 else rng.expovariate(h) * 3600.0

    def co_interruptions(
        self,
        reclaimed: Sequence[P],
        live: Iterable[P],
        rng: random.Random,
        exclude: set[str] | None = None,
    ) -> list[tuple[P, float]]:
        """Follow-up reclaims of the other Spot instances in the reclaimed ones' pools:
        (instance, simulated seconds after the first reclaim)."""
        pools = {(i.instance_type, i.zone) for i in reclaimed}
        skip = set(exclude or ()) | {i.id for i in reclaimed}
        out: list[tuple[P, float]] = []
        for inst in live:
            if inst.market != MarketType.SPOT or inst.id in skip:
                continue
            if (inst.instance_type, inst.zone) in pools and rng.random() < self.co_probability:
                out.append((inst, rng.expovariate(1.0 / self.co_mean)))
                skip.add(inst.id)
        return out
