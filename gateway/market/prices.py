"""Spot prices per instance type and zone: a seedable model, a replayed trace, manual overrides.

The model, per type+zone
------------------------
Time is cut into steps of `step_seconds` from the market's start and the price is constant within
a step, as EC2's price history is a step function. With x the log price and
mu = ln(on_demand x (1 - d)) its long-run level, d the type+zone's discount drawn uniformly from
[discount_min, discount_max]:

    x[0]   = mu + s*Z                                   a draw from the stationary distribution
    x[k+1] = mu + (x[k] - mu)*a + s*sqrt(1 - a²)*Z + J     a = 2^(-step / half_life)
    J      = Exp(mean = jump_mean) with probability 1 - exp(-jump_rate * step), else 0
    price  = clamp(exp(x[k]), floor * on_demand, on_demand), rounded to $0.0001 (as EC2 quotes)

that is an Ornstein-Uhlenbeck process in log space sampled exactly at the steps (s is its stationary
standard deviation, `volatility`), plus occasional upward jumps that decay with the same half-life.
A Spot price never exceeds on-demand (EC2 caps the default maximum price there).

Determinism: the random numbers of steps [b*64, (b+1)*64) come from `random.Random` seeded with
the text "seed/type/zone/b", so a price depends only on (seed, type, zone, step) and not on which
other prices were asked for, or in what order. Asking for step k costs O(k) once per type+zone
(the state at each block's start is kept), then O(1).

Replay: `PriceTrace` reads EC2's DescribeSpotPriceHistory JSON
(`{"SpotPriceHistory": [{"AvailabilityZone", "InstanceType", "ProductDescription", "SpotPrice",
"Timestamp"}]}`) into a step function per type+zone: the price at t is that of the newest entry
at or before t (before the first entry: the first entry's). `SpotPrices` puts the sources
together: a manual override (`set_price`) wins until cleared, then the trace for the types+zones it
covers, then the model.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.market.catalog import InstanceType

BLOCK = 64  # steps per random-number block
LINUX = ("Linux/UNIX", "Linux/UNIX (Amazon VPC)")


def quote(price: float) -> float:
    """A price as EC2 quotes it: 4 decimals."""
    return round(price, 4)


@dataclass(frozen=True)
class PriceModelParams:
    discount_min: float = 0.55
    discount_max: float = 0.75
    step_seconds: float = 3600.0
    half_life_hours: float = 24.0
    volatility: float = 0.08
    jump_rate_per_day: float = 0.1
    jump_mean: float = 0.4
    floor: float = 0.1


@dataclass
class _Series:
    mu: float
    starts: list[float]  # log price at the first step of each generated block
    block: int = -1  # the block whose values are cached
    values: list[float] = field(default_factory=list)


class SpotPriceModel:
    """The mean-reverting, jumping price process of every type+zone, from one seed."""

    def __init__(self, params: PriceModelParams, seed: int):
        self.params = params
        self.seed = seed
        p = params
        self.a = 2.0 ** (-(p.step_seconds / 3600.0) / p.half_life_hours)
        self.noise = p.volatility * math.sqrt(max(0.0, 1.0 - self.a * self.a))
        self.jump_p = 1.0 - math.exp(-p.jump_rate_per_day * p.step_seconds / 86400.0)
        self._series: dict[tuple[str, str], _Series] = {}
        self._lock = threading.Lock()

    def step_of(self, t: float) -> int:
        """The step holding `t` (simulated seconds since the market's start; before it: 0)."""
        return max(0, int(t // self.params.step_seconds))

    def discount(self, instance_type: str, zone: str) -> float:
        rng = random.Random(f"{self.seed}/{instance_type}/{zone}/discount")
        return rng.uniform(self.params.discount_min, self.params.discount_max)

    def mean_price(self, it: InstanceType, zone: str) -> float:
        """The long-run level of the price (before jumps)."""
        return it.on_demand_usd * (1.0 - self.discount(it.name, zone))

    def price_at_step(self, it: InstanceType, zone: str, step: int) -> float:
        with self._lock:
            x = self._log_price(it, zone, step)
        low = self.params.floor * it.on_demand_usd
        return quote(min(it.on_demand_usd, max(low, math.exp(x))))

    def price(self, it: InstanceType, zone: str, t: float) -> float:
        return self.price_at_step(it, zone, self.step_of(t))

    # -- the process -----------------------------------------------------------------------

    def _series_of(self, it: InstanceType, zone: str) -> _Series:
        key = (it.name, zone)
        series = self._series.get(key)
        if series is None:
            mu = math.log(self.mean_price(it, zone))
            rng = random.Random(f"{self.seed}/{it.name}/{zone}/start")
            series = _Series(mu=mu, starts=[mu + self.params.volatility * rng.gauss(0.0, 1.0)])
            self._series[key] = series
        return series

    def _next(self, x: float, mu: float, rng: random.Random) -> float:
        z, u, size = rng.gauss(0.0, 1.0), rng.random(), rng.expovariate(1.0)
        x = mu + (x - mu) * self.a + self.noise * z
        if u < self.jump_p:
            x += size * self.params.jump_mean
        return x

    def _block(self, it: InstanceType, zone: str, series: _Series, b: int) -> list[float]:
        rng = random.Random(f"{self.seed}/{it.name}/{zone}/{b}")
        x = series.starts[b]
        values = [x]
        for _ in range(BLOCK - 1):
            x = self._next(x, series.mu, rng)
            values.append(x)
        if len(series.starts) == b + 1:
            series.starts.append(self._next(x, series.mu, rng))
        return values

    def _log_price(self, it: InstanceType, zone: str, step: int) -> float:
        series = self._series_of(it, zone)
        b = step // BLOCK
        if series.block != b:
            while len(series.starts) <= b:  # walk forward once, keeping only block starts
                self._block(it, zone, series, len(series.starts) - 1)
            series.values = self._block(it, zone, series, b)
            series.block = b
        return series.values[step - b * BLOCK]


def parse_timestamp(text: str) -> datetime:
    """EC2's timestamps: `2024-05-01T12:00:00+00:00`, `…T12:00:00.000Z`."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class PriceTrace:
    """A replayed DescribeSpotPriceHistory: a step function per type+zone (Linux/UNIX only)."""

    def __init__(self, points: dict[tuple[str, str], list[tuple[datetime, float]]]):
        self._times: dict[tuple[str, str], list[float]] = {}
        self._prices: dict[tuple[str, str], list[float]] = {}
        for key, rows in points.items():
            rows = sorted(rows)
            if rows:
                self._times[key] = [t.timestamp() for t, _ in rows]
                self._prices[key] = [p for _, p in rows]

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> PriceTrace:
        entries = doc.get("SpotPriceHistory")
        if not isinstance(entries, list):
            raise ValueError('a price trace is {"SpotPriceHistory": [...]}')
        points: dict[tuple[str, str], list[tuple[datetime, float]]] = {}
        for i, e in enumerate(entries):
            try:
                if e.get("ProductDescription", LINUX[0]) not in LINUX:
                    continue
                key = (str(e["InstanceType"]), str(e["AvailabilityZone"]))
                row = (parse_timestamp(str(e["Timestamp"])), float(e["SpotPrice"]))
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise ValueError(f"SpotPriceHistory[{i}]: {exc!r}") from None
            if not math.isfinite(row[1]) or row[1] <= 0:
                raise ValueError(f"SpotPriceHistory[{i}]: SpotPrice must be positive")
            points.setdefault(key, []).append(row)
        return cls(points)

    @classmethod
    def load(cls, path: str | Path) -> PriceTrace:
        return cls.from_document(json.loads(Path(path).read_text()))

    def covers(self, instance_type: str, zone: str) -> bool:
        return (instance_type, zone) in self._times

    @property
    def pools(self) -> list[tuple[str, str]]:
        return sorted(self._times)

    @property
    def start(self) -> datetime | None:
        firsts = [times[0] for times in self._times.values()]
        return datetime.fromtimestamp(min(firsts), UTC) if firsts else None

    def price(self, instance_type: str, zone: str, at: datetime) -> float | None:
        key = (instance_type, zone)
        times = self._times.get(key)
        if times is None:
            return None
        i = bisect.bisect_right(times, at.timestamp()) - 1
        return self._prices[key][max(i, 0)]

    def changes(self, instance_type: str, zone: str, start: datetime, end: datetime) -> list[float]:
        """The change times (epoch seconds) strictly inside (start, end)."""
        times = self._times.get((instance_type, zone), [])
        lo = bisect.bisect_right(times, start.timestamp())
        hi = bisect.bisect_left(times, end.timestamp())
        return times[lo:hi]


def history_document(
    rows: list[tuple[str, str, datetime, float]],
) -> dict[str, list[dict[str, str]]]:
    """(type, zone, time, price) rows → a DescribeSpotPriceHistory document, newest first as EC2
    returns it."""
    ordered = sorted(rows, key=lambda r: (r[2], r[0], r[1]), reverse=True)
    return {
        "SpotPriceHistory": [
            {
                "AvailabilityZone": zone,
                "InstanceType": name,
                "ProductDescription": LINUX[0],
                "SpotPrice": f"{price:.6f}",
                "Timestamp": at.astimezone(UTC).isoformat(timespec="seconds"),
            }
            for name, zone, at, price in ordered
        ]
    }


class SpotPrices:
    """The Spot price of a type+zone at a simulated moment: override ← trace ← model.

    `start` is the simulated moment of the model's step 0."""

    def __init__(
        self, model: SpotPriceModel, start: datetime, trace: PriceTrace | None = None
    ) -> None:
        self.model = model
        self.start = start
        self.trace = trace
        self._overrides: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self.version = 0  # bumped by every override change (cache keys)

    def set_price(self, instance_type: str, zone: str, price: float | None) -> None:
        """Pin a price until cleared (None clears)."""
        with self._lock:
            if price is None:
                self._overrides.pop((instance_type, zone), None)
            else:
                self._overrides[(instance_type, zone)] = quote(price)
            self.version += 1

    def overrides(self) -> dict[tuple[str, str], float]:
        with self._lock:
            return dict(self._overrides)

    def source(self, instance_type: str, zone: str) -> str:
        """override | trace | model."""
        if (instance_type, zone) in self._overrides:
            return "override"
        if self.trace is not None and self.trace.covers(instance_type, zone):
            return "trace"
        return "model"

    def seconds(self, at: datetime) -> float:
        return (at - self.start).total_seconds()

    def price(self, it: InstanceType, zone: str, at: datetime) -> float:
        pinned = self._overrides.get((it.name, zone))
        if pinned is not None:
            return pinned
        if self.trace is not None:
            traced = self.trace.price(it.name, zone, at)
            if traced is not None:
                return traced
        return self.model.price(it, zone, self.seconds(at))

    def segments(
        self, it: InstanceType, zone: str, start: datetime, end: datetime
    ) -> Iterator[tuple[datetime, datetime, float]]:
        """(from, to, price) pieces of constant price covering [start, end)."""
        if end <= start:
            return
        cuts: list[datetime]
        source = self.source(it.name, zone)
        if source == "override":
            cuts = []
        elif source == "trace":
            assert self.trace is not None
            cuts = [
                datetime.fromtimestamp(t, UTC)
                for t in self.trace.changes(it.name, zone, start, end)
            ]
        else:
            step = self.model.params.step_seconds
            first = self.model.step_of(self.seconds(start)) + 1
            last = math.ceil(self.seconds(end) / step)
            cuts = [self.start + timedelta(seconds=k * step) for k in range(first, last)]
        edges = [start, *(c for c in cuts if start < c < end), end]
        for a, b in itertools.pairwise(edges):
            yield a, b, self.price(it, zone, a)

    def charge(self, it: InstanceType, zone: str, start: datetime, end: datetime) -> float:
        """USD for running one instance from start to end (per-second billing)."""
        return sum(
            p * (b - a).total_seconds() / 3600.0 for a, b, p in self.segments(it, zone, start, end)
        )
