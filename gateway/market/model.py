"""The simulated Spot market: catalog x zones, Spot prices, interruption buckets and quarantines,
on a simulated clock.

Simulated time: `now() = start + (clock() - clock() at creation) x time_scale`. Every method that
takes `at` means a simulated moment (None: now). The bench simulator passes a clock that already
returns simulated time and `time_scale` 1.

Thread-safe: the API, the scheduler and the provider share one Market.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from capsule_runtime.protocol.times import Clock, rfc3339, utcnow
from gateway.market.catalog import ZONES, InstanceType, select
from gateway.market.config import BUCKET_LABELS, MarketConfig
from gateway.market.interruptions import (
    Bucket,
    InterruptionModel,
    P,
    bucket_lookup,
    hazard_per_hour,
)
from gateway.market.prices import (
    PriceModelParams,
    PriceTrace,
    SpotPriceModel,
    SpotPrices,
    history_document,
    parse_timestamp,
)
from gateway.providers.base import Offer
from gateway.tes.states import MarketType

SPOT, ON_DEMAND = MarketType.SPOT, MarketType.ON_DEMAND
MARKETS = (SPOT, ON_DEMAND)

__all__ = ["ON_DEMAND", "SPOT", "Market", "MarketConfig", "UnknownOffer"]


class UnknownOffer(ValueError):
    """An instance type, zone or market this market does not offer, or a bad price."""


class Market:
    def __init__(
        self, config: MarketConfig | None = None, seed: int | None = None, clock: Clock = utcnow
    ) -> None:
        self.config = cfg = config or MarketConfig()
        self.seed = cfg.seed if seed is None else seed
        self.clock = clock
        self.time_scale = cfg.time_scale
        self.types: tuple[InstanceType, ...] = select(cfg.instance_types)
        self.by_name = {t.name: t for t in self.types}
        self.zones: tuple[str, ...] = tuple(cfg.zones) or ZONES
        trace = PriceTrace.load(cfg.price_trace) if cfg.price_trace else None
        self._real_start = clock()
        if cfg.start_time:
            self.start = parse_timestamp(cfg.start_time)
        elif trace is not None and trace.start is not None:
            self.start = trace.start
        else:
            self.start = self._real_start
        params = PriceModelParams(
            discount_min=cfg.discount_min,
            discount_max=cfg.discount_max,
            step_seconds=cfg.price_step_seconds,
            half_life_hours=cfg.price_half_life_hours,
            volatility=cfg.price_volatility,
            jump_rate_per_day=cfg.jump_rate_per_day,
            jump_mean=cfg.jump_mean,
            floor=cfg.price_floor,
        )
        self.prices = SpotPrices(SpotPriceModel(params, self.seed), self.start, trace)
        weights = {Bucket(k): v for k, v in cfg.bucket_weights.items()}
        self.bucket_of = bucket_lookup(cfg.buckets, self.seed, weights)
        self.interruptions = InterruptionModel(
            self.bucket_of,
            rates={Bucket(k): v for k, v in cfg.bucket_rates.items()},
            exposure_hours=cfg.exposure_hours,
            time_scale=cfg.time_scale,
            co_probability=cfg.co_interruption_probability,
            co_window_seconds=cfg.co_interruption_window_seconds,
        )
        self.rng = random.Random(f"{self.seed}/draws")
        self._quarantines: dict[tuple[str, str], datetime] = {}
        self._lock = threading.Lock()
        self._offers_cache: tuple[Any, list[Offer]] | None = None

    # -- time -----------------------------------------------------------------------------

    def now(self) -> datetime:
        """The simulated moment."""
        elapsed = self.clock() - self._real_start
        return self.start + elapsed * self.time_scale

    def _at(self, at: datetime | None) -> datetime:
        return self.now() if at is None else at

    def simulated_seconds(self, real_seconds: float) -> float:
        return real_seconds * self.time_scale

    def real_seconds(self, simulated_seconds: float) -> float:
        """How long a simulated span lasts on the caller's clock (e.g. a quarantine window)."""
        return simulated_seconds / self.time_scale

    # -- what is offered ------------------------------------------------------------------

    def instance_type(self, name: str) -> InstanceType:
        found = self.by_name.get(name)
        if found is None:
            raise UnknownOffer(f"unknown instance type {name!r}")
        return found

    def _check(self, instance_type: str, zone: str) -> InstanceType:
        it = self.instance_type(instance_type)
        if zone not in self.zones:
            raise UnknownOffer(f"unknown zone {zone!r} (offered: {', '.join(self.zones)})")
        return it

    def price(
        self, instance_type: str, zone: str, market: str = SPOT, at: datetime | None = None
    ) -> float:
        """USD per hour of one instance of this type in this zone and market."""
        it = self._check(instance_type, zone)
        if market == ON_DEMAND:
            return it.on_demand_usd
        if market != SPOT:
            raise UnknownOffer(f"unknown market {market!r} (spot | on-demand)")
        return self.prices.price(it, zone, self._at(at))

    def on_demand_price(self, instance_type: str) -> float | None:
        it = self.by_name.get(instance_type)
        return it.on_demand_usd if it else None

    def charge(
        self, instance_type: str, zone: str, market: str, start: datetime, end: datetime
    ) -> float:
        """USD for one instance from start to end (simulated), following every price change."""
        it = self._check(instance_type, zone)
        if market == ON_DEMAND:
            return it.on_demand_usd * max(0.0, (end - start).total_seconds()) / 3600.0
        return self.prices.charge(it, zone, start, end)

    def offers(self, at: datetime | None = None) -> list[Offer]:
        """Every type x zone, Spot and on-demand, at its price at `at`. Quarantines are not
        applied here: pass `quarantined(at)` to the policy functions."""
        at = self._at(at)
        key: Any = None
        if self.prices.trace is None:
            key = (self.prices.model.step_of(self.prices.seconds(at)), self.prices.version)
            cached = self._offers_cache
            if cached is not None and cached[0] == key:
                return list(cached[1])
        disk = self.config.disk_gb
        out: list[Offer] = []
        for it in self.types:
            cpu = it.vcpu * self.config.cpu_scale
            ram = round(it.memory_gib * self.config.memory_scale, 6)
            for zone in self.zones:
                spot = self.prices.price(it, zone, at)
                out.append(
                    Offer(
                        instance_type=it.name,
                        market=SPOT,
                        zone=zone,
                        price_per_hour=spot,
                        cpu_cores=cpu,
                        ram_gb=ram,
                        disk_gb=disk,
                    )
                )
                out.append(
                    Offer(
                        instance_type=it.name,
                        market=ON_DEMAND,
                        zone=zone,
                        price_per_hour=it.on_demand_usd,
                        cpu_cores=cpu,
                        ram_gb=ram,
                        disk_gb=disk,
                    )
                )
        if key is not None:
            self._offers_cache = (key, out)
        return list(out)

    # -- manual prices --------------------------------------------------------------------

    def set_price(self, instance_type: str, zone: str, price: float | None) -> None:
        """Pin the Spot price of a type+zone (USD/h, above 0, at most on-demand) until cleared
        with None. Raises UnknownOffer."""
        it = self._check(instance_type, zone)
        if price is not None:
            if isinstance(price, bool) or not isinstance(price, int | float):
                raise UnknownOffer("the price must be a number (USD per hour)")
            if not 0 < price <= it.on_demand_usd:
                raise UnknownOffer(
                    f"a Spot price of {instance_type} must be above 0 and at most its on-demand "
                    f"price {it.on_demand_usd}"
                )
        self.prices.set_price(instance_type, zone, None if price is None else float(price))

    # -- quarantines ----------------------------------------------------------------------

    def quarantine(self, instance_type: str, zone: str, until: datetime | None = None) -> datetime:
        """Avoid Spot instances of this type+zone until `until` (default: now +
        quarantine_seconds). A later `until` extends; an earlier one does not shorten."""
        self._check(instance_type, zone)
        if until is None:
            until = self.now() + timedelta(seconds=self.config.quarantine_seconds)
        with self._lock:
            key = (instance_type, zone)
            current = self._quarantines.get(key)
            if current is None or until > current:
                self._quarantines[key] = until
            return self._quarantines[key]

    def quarantines(self, at: datetime | None = None) -> dict[tuple[str, str], datetime]:
        """The quarantines still in force at `at`: (type, zone) → until."""
        at = self._at(at)
        with self._lock:
            for key in [k for k, until in self._quarantines.items() if until <= at]:
                del self._quarantines[key]
            return dict(self._quarantines)

    def quarantined(self, at: datetime | None = None) -> frozenset[tuple[str, str]]:
        return frozenset(self.quarantines(at))

    def lift_quarantine(self, instance_type: str, zone: str) -> None:
        with self._lock:
            self._quarantines.pop((instance_type, zone), None)

    # -- interruptions --------------------------------------------------------------------

    def bucket(self, instance_type: str, zone: str) -> Bucket:
        return self.bucket_of(instance_type, zone)

    def draw_interruptions(
        self, instances: Iterable[P], dt_seconds: float, rng: random.Random | None = None
    ) -> list[P]:
        """The live instances that get a reclaim notice within the next `dt_seconds` of the
        caller's clock; [] when automatic interruptions are off."""
        if not self.config.interruptions:
            return []
        with self._lock:
            return self.interruptions.draw(instances, dt_seconds, rng or self.rng)

    # -- views ----------------------------------------------------------------------------

    def snapshot(self, at: datetime | None = None) -> dict[str, Any]:
        """What GET /api/v1/market shows."""
        at = self._at(at)
        rates = self.interruptions.rates
        types = []
        for it in self.types:
            zones = {}
            for zone in self.zones:
                bucket = self.bucket_of(it.name, zone)
                zones[zone] = {
                    "spot_price": self.prices.price(it, zone, at),
                    "price_source": self.prices.source(it.name, zone),
                    "interruption_bucket": bucket.value,
                }
            types.append(
                {
                    "instance_type": it.name,
                    "vcpu": it.vcpu,
                    "memory_gib": it.memory_gib,
                    # what an instance of the type offers here (cpu_scale, memory_scale)
                    "cpu_cores": it.vcpu * self.config.cpu_scale,
                    "ram_gb": round(it.memory_gib * self.config.memory_scale, 6),
                    "on_demand_price": it.on_demand_usd,
                    "zones": zones,
                }
            )
        return {
            "time": rfc3339(at),
            "time_scale": self.time_scale,
            "seed": self.seed,
            "currency": "USD",
            "zones": list(self.zones),
            "interruptions": self.config.interruptions,
            "notice_seconds": self.config.notice_seconds,
            "buckets": [
                {
                    "bucket": label,
                    "monthly_fraction": rates[Bucket(label)],
                    "hazard_per_hour": hazard_per_hour(
                        rates[Bucket(label)], self.interruptions.exposure_hours
                    ),
                }
                for label in BUCKET_LABELS
            ],
            "types": types,
            "quarantines": [
                {"instance_type": t, "zone": z, "until": rfc3339(until)}
                for (t, z), until in sorted(self.quarantines(at).items())
            ],
        }

    def price_history(
        self, start: datetime, end: datetime, pools: Iterable[tuple[str, str]] | None = None
    ) -> dict[str, Any]:
        """The prices between start and end as a DescribeSpotPriceHistory document (a trace
        `price_trace` replays)."""
        rows = []
        for name, zone in pools or [(t.name, z) for t in self.types for z in self.zones]:
            it = self._check(name, zone)
            for a, _, price in self.prices.segments(it, zone, start, end):
                rows.append((name, zone, a, price))
        return history_document(rows)
