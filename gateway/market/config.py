"""`providers.local.market`: the simulated Spot market's settings (typed, validated at load).

Only pydantic here, so gateway.config can import it without importing the market itself.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.market.catalog import CATALOG, ZONES, select

BUCKET_LABELS = ("<5%", "5-10%", "10-15%", "15-20%", ">20%")
DEFAULT_RATES = {"<5%": 0.025, "5-10%": 0.075, "10-15%": 0.125, "15-20%": 0.175, ">20%": 0.25}


class MarketConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # false: the local provider offers one instance of this machine's size, at no price.
    enabled: bool = True
    # Every random choice of the market (discounts, price paths, buckets, interruptions) follows
    # from this seed: the same seed gives the same market.
    seed: int = 0
    # Simulated seconds per real second: prices move, interruptions come and quarantines expire
    # this much faster. 1: real time. Prices stay per simulated hour.
    time_scale: float = Field(default=1.0, gt=0, le=1_000_000)
    # Simulated time at which the market starts (RFC 3339); null: the price trace's first
    # timestamp when there is one, else the moment the gateway starts.
    start_time: str | None = None
    # Instance types or families offered (m5.large, r5); empty: the whole catalog.
    instance_types: list[str] = Field(default_factory=list)
    # Zones offered; empty: us-east-1a … us-east-1f.
    zones: list[str] = Field(default_factory=list)
    # Disk each instance offers (GB): the EBS volume it would be launched with.
    disk_gb: float = Field(default=100.0, gt=0)
    # The size of a simulated instance on this machine: its type's vCPUs and memory times these
    # (every instance shares this machine). 1/32 turns an m5.large (2 vCPU, 8 GiB) into
    # 0.0625 vCPU and 256 MiB: tasks that outgrow a type do so with little real memory.
    # Prices stay those of the real type.
    cpu_scale: float = Field(default=1.0, gt=0, le=1)
    memory_scale: float = Field(default=1.0, gt=0, le=1)

    # -- Spot prices (see gateway/market/prices.py) --
    # Each type+zone gets a long-run discount from on-demand, drawn uniformly from this range.
    discount_min: float = Field(default=0.55, ge=0, lt=1)
    discount_max: float = Field(default=0.75, ge=0, lt=1)
    # Prices change in steps, this many simulated seconds apart.
    price_step_seconds: float = Field(default=3600.0, gt=0)
    # How fast a price returns to its long-run level (half-life, simulated hours).
    price_half_life_hours: float = Field(default=24.0, gt=0)
    # Standard deviation of the log price around its long-run level (0.08: about ±8%).
    price_volatility: float = Field(default=0.08, ge=0)
    # Upward price jumps per type+zone per simulated day, and their mean size in log price
    # (0.4: x1.5). A price never goes above on-demand nor below `price_floor` x on-demand.
    jump_rate_per_day: float = Field(default=0.1, ge=0)
    jump_mean: float = Field(default=0.4, ge=0)
    price_floor: float = Field(default=0.1, gt=0, lt=1)
    # A DescribeSpotPriceHistory JSON file to replay instead of the model, for the types+zones it
    # covers (`aws ec2 describe-spot-price-history --output json > trace.json`).
    price_trace: str | None = None

    # -- interruptions (see gateway/market/interruptions.py) --
    # false: no automatic reclaims (POST /api/v1/instances/{id}:interrupt still works).
    interruptions: bool = True
    # Frequency bucket per type+zone. Keys: "m5.large/us-east-1a", "m5.large", "m5" (a family) or
    # "*"; the most specific wins. Values: "<5%", "5-10%", "10-15%", "15-20%", ">20%".
    buckets: dict[str, str] = Field(default_factory=dict)
    # Types+zones without a bucket above draw one (seeded) with these weights.
    bucket_weights: dict[str, float] = Field(
        default_factory=lambda: {
            "<5%": 0.55,
            "5-10%": 0.2,
            "10-15%": 0.1,
            "15-20%": 0.05,
            ">20%": 0.1,
        }
    )
    # The fraction of instances interrupted per month that stands for each bucket (a bucket left
    # out keeps its default).
    bucket_rates: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_RATES))
    # The instance lifetime (simulated hours) over which a bucket's fraction is reached: 730 reads
    # "interrupted per month" literally; a smaller value makes interruptions more frequent.
    exposure_hours: float = Field(default=730.0, gt=0)
    # When an instance is reclaimed, each other instance of its type+zone is reclaimed too with
    # this probability, 92% of them within `co_interruption_window_seconds`.
    co_interruption_probability: float = Field(default=0.3, ge=0, le=1)
    co_interruption_window_seconds: float = Field(default=180.0, gt=0)
    # The warning before a reclaim (AWS: two minutes). Real seconds, not scaled by time_scale:
    # the agent checkpoints a real container in it.
    notice_seconds: float = Field(default=120.0, ge=0)
    # How long a reclaimed type+zone is avoided by the next_zone recovery (simulated seconds).
    quarantine_seconds: float = Field(default=180.0, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> MarketConfig:
        if self.discount_min > self.discount_max:
            raise ValueError("discount_min is larger than discount_max")
        for zone in self.zones:
            if zone not in ZONES:
                raise ValueError(f"unknown zone {zone!r} (known: {', '.join(ZONES)})")
        for where, labels in (
            ("buckets", set(self.buckets.values())),
            ("bucket_weights", set(self.bucket_weights)),
            ("bucket_rates", set(self.bucket_rates)),
        ):
            unknown = labels - set(BUCKET_LABELS)
            if unknown:
                raise ValueError(
                    f"{where}: unknown bucket {sorted(unknown)} (known: {', '.join(BUCKET_LABELS)})"
                )
        missing = set(BUCKET_LABELS) - set(self.bucket_rates)
        if missing:
            raise ValueError(f"bucket_rates lacks {sorted(missing)}")
        if any(not 0 <= r < 1 for r in self.bucket_rates.values()):
            raise ValueError("bucket_rates must be fractions in [0, 1)")
        if any(w < 0 for w in self.bucket_weights.values()) or not any(
            self.bucket_weights.values()
        ):
            raise ValueError("bucket_weights must be non-negative and not all zero")
        names = {t.name for t in CATALOG}
        families = {t.family for t in CATALOG}
        for key in self.buckets:
            type_part, _, zone = key.partition("/")
            if type_part != "*" and type_part not in names and type_part not in families:
                raise ValueError(f"buckets: unknown instance type or family in {key!r}")
            if zone and zone not in ZONES:
                raise ValueError(f"buckets: unknown zone in {key!r}")
        return self

    @model_validator(mode="before")
    @classmethod
    def _types_known(cls, data: object) -> object:
        if isinstance(data, dict):
            rates = data.get("bucket_rates")
            if isinstance(rates, dict):
                data = {**data, "bucket_rates": {**DEFAULT_RATES, **rates}}
            try:
                select(data.get("instance_types") or [])
            except KeyError as exc:
                raise ValueError(f"instance_types: {exc.args[0]}") from None
        return data
