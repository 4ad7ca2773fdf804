"""tescape's typed, layered configuration.

Layers, later wins: the defaults in these classes ← a YAML file (`--config FILE`) ← environment
variables `TESCAPE_<SECTION>__<KEY>` (e.g. `TESCAPE_SERVER__PORT=9000`, values parsed as YAML
scalars) ← command-line flags. Every layer is validated: an unknown key anywhere is an error that
names it. `configs/default.yaml` documents every key; a test keeps it equal to these defaults.
"""

from __future__ import annotations

import os
from itertools import chain
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from capsule_runtime.protocol.local_paths import install_dirs, real, url_local_path
from capsule_runtime.protocol.s3_paths import S3Location
from gateway.market.config import MarketConfig
from gateway.tes.validation import TaskLimits

ENV_PREFIX = "TESCAPE_"
MARKETS: tuple[Literal["spot", "on-demand"], ...] = ("spot", "on-demand")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerConfig(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # Sized for TES clients plus agents (docs/benchmarks.md, "Load"): every agent holds a
    # connection, and a long poll holds a thread while it waits, at most `long_poll_slots` at once.
    threads: int = Field(default=24, ge=2, le=512)
    long_poll_slots: int = Field(default=8, ge=0)
    connection_limit: int = Field(default=2000, ge=1)
    channel_timeout: float = Field(default=300.0, gt=0)
    max_request_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    max_upload_bytes: int = Field(default=32 * 1024**3, ge=1024)
    cors_origins: list[str] = Field(default_factory=list)

    @property
    def long_polls_held(self) -> int:
        """Long polls held at once: `long_poll_slots`, but never more than half the threads, so
        at least half are always left to the TES API."""
        return min(self.long_poll_slots, self.threads // 2)


class DatabaseConfig(Section):
    url: str | None = None  # default: sqlite:///<data_dir>/tescape.db
    echo: bool = False


class BasicUser(Section):
    name: str
    password_hash: str  # from `tescape hash-password`
    admin: bool = False


class StaticToken(Section):
    token_sha256: str  # hex sha256 of the token: `tescape hash-password --token`
    user: str
    admin: bool = False


class OidcConfig(Section):
    issuer: str
    audience: str | None = None
    jwks_file: str  # a JWKS document on disk (no network fetch at request time)
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    user_claim: str = "sub"
    admin_claim: str = "groups"
    admin_values: list[str] = Field(default_factory=lambda: ["tescape-admin"])


class AuthConfig(Section):
    mode: Literal["none", "basic", "bearer"] = "none"
    realm: str = "tescape"
    users: list[BasicUser] = Field(default_factory=list)
    tokens: list[StaticToken] = Field(default_factory=list)
    oidc: OidcConfig | None = None
    # Failed logins allowed per user name and client address within the window; more get 429.
    max_failed_logins: int = Field(default=10, ge=1)
    failed_login_window_seconds: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _usable(self) -> AuthConfig:
        if self.mode == "basic" and not self.users:
            raise ValueError("auth.mode is basic but auth.users is empty")
        if self.mode == "bearer" and not (self.tokens or self.oidc):
            raise ValueError("auth.mode is bearer but neither auth.tokens nor auth.oidc is set")
        return self


class ServiceInfoConfig(Section):
    id: str = "org.tescape.tes"
    name: str = "tescape"
    description: str = "GA4GH TES 1.1 on Spot capacity with CRIU checkpoint/restore"
    organization_name: str = "tescape"
    organization_url: str = "https://github.com/tescape/tescape"
    contact_url: str | None = None
    documentation_url: str | None = None
    environment: str | None = None
    storage: list[str] = Field(default_factory=list)


class TaskRule(Section):
    # Applies to tasks whose name matches this glob (case-sensitive) and that carry all these
    # tags ("*": any value); both optional (a rule with neither applies to every task).
    name_glob: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    # What the rule sets when the task does not say: backend parameters (market_policy,
    # recovery, checkpoint_interval, tcp_established, ...) and TES `preemptible`.
    backend_parameters: dict[str, str] = Field(default_factory=dict)
    preemptible: bool | None = None


class TasksConfig(Section):
    # backend_parameters keys accepted as-is beyond tescape's own (gateway/tes/backend_parameters)
    extra_backend_parameters: list[str] = Field(default_factory=list)
    # Server-side rules by task name or tags (gateway/rules.py): for clients that cannot say
    # which market or recovery a task wants (nf-ga4gh never sends preemptible).
    rules: list[TaskRule] = Field(default_factory=list)
    default_page_size: int = Field(default=256, ge=1, le=2047)
    max_page_size: int = Field(default=2047, ge=1, le=2047)


class LocalProviderConfig(Section):
    # At most this many local instances (agent processes on this machine) run at once.
    max_instances: int = Field(default=1, ge=1, le=64)
    instance_type: str = "local"
    # Capacity each local instance offers; null: this machine's own CPU count, memory and free disk.
    cpu_cores: float | None = None
    ram_gb: float | None = None
    disk_gb: float | None = None
    # How often each agent polls its instance's metadata service for interruption notices.
    interruption_poll_seconds: float = Field(default=1.0, gt=0)
    # Each instance in a mount namespace of its own, its files at one standard path
    # (/var/lib/tescape/instance) as on a machine of its own: a restore finds only what its
    # capsule brought. "auto": when this process may (root, unshare); "none": all instances
    # share this machine's view, each in its own folder.
    isolation: Literal["auto", "namespace", "none"] = "auto"
    # Pools whose launches fail for lack of capacity, as EC2's InsufficientInstanceCapacity
    # (to try the scheduler's capacity quarantines): "type/zone" (both markets) or
    # "type/zone/market", e.g. "m5.large/us-east-1a/spot".
    no_capacity: list[str] = Field(default_factory=list)
    # The simulated Spot market local instances come from (gateway/market/).
    market: MarketConfig = Field(default_factory=MarketConfig)

    @model_validator(mode="after")
    def _pools(self) -> LocalProviderConfig:
        for entry in self.no_capacity:
            parts = entry.split("/")
            if len(parts) not in (2, 3) or not all(parts):
                raise ValueError(f"no_capacity: {entry!r} is not type/zone or type/zone/market")
        return self


class FakeProviderConfig(Section):
    # The in-memory provider (gateway/providers/fake.py): no machine starts and no agent runs,
    # for tests and trying the API. One instance type, Spot and on-demand in each zone.
    max_instances: int = Field(default=4, ge=1, le=64)
    instance_type: str = "fake.large"
    zones: list[str] = Field(default_factory=lambda: ["fake-1a"])
    cpu_cores: float = Field(default=4.0, gt=0)
    ram_gb: float = Field(default=8.0, gt=0)
    disk_gb: float = Field(default=100.0, gt=0)
    spot_price: float = Field(default=0.05, ge=0)
    on_demand_price: float = Field(default=0.10, ge=0)


class AwsProviderConfig(Section):
    # Real EC2 instances (gateway/providers/aws/; docs/aws.md). Credentials come from boto3's
    # usual chain (environment, ~/.aws, an instance profile), never from this file.
    region: str = "us-east-1"
    # Another EC2 endpoint (moto, LocalStack); null: AWS's own for the region.
    endpoint_url: str | None = None
    # The AMI instances boot; null: Debian 12's official AMI, from the public SSM parameter.
    ami: str | None = None
    ami_parameter: str = "/aws/service/debian/release/bookworm/latest/amd64"
    # Subnets to launch into (one or more per zone); empty: the default VPC's default subnets.
    subnets: list[str] = Field(default_factory=list)
    # Instance types offered, in each zone of the subnets.
    instance_types: list[str] = Field(default_factory=lambda: ["m5.large", "m5.xlarge"])
    # Markets offered: spot, on-demand or both.
    markets: list[Literal["spot", "on-demand"]] = Field(default_factory=lambda: [*MARKETS])
    # How instances are launched: run_instances (one RunInstances into the offer's type and
    # zone) or fleet (an instant EC2 Fleet over every configured type of the offer's size in
    # every zone, Spot by price-capacity-optimized; a launch template per launch).
    launch_api: Literal["run_instances", "fleet"] = "run_instances"
    # At most this many EC2 instances run at once.
    max_instances: int = Field(default=4, ge=1, le=1000)
    # At most this many launched instances on their way (booting, not yet registered) at once:
    # a fleet grows by this many per scheduler tick instead of one instance per boot.
    launch_batch: int = Field(default=10, ge=1, le=100)
    # At most this much (USD/hour) for the running instances together, at their current prices;
    # a launch that would go beyond it is refused; null: no limit but max_instances.
    max_hourly_spend: float | None = Field(default=None, gt=0)
    # An instance with no task this long is terminated; null: scheduler.idle_timeout_seconds.
    idle_seconds: float | None = Field(default=None, gt=0)
    # A launched instance whose agent has not registered this long is given up (LOST) and
    # terminated: booting and installing podman, CRIU and the agent from user-data takes minutes
    # on a plain Debian AMI (a baked AMI: seconds).
    launch_timeout_seconds: float = Field(default=900.0, gt=0)
    # Where agents on EC2 reach this gateway (https://…); null: the address the gateway serves.
    gateway_url: str | None = None
    # The value of the `tescape:gateway` tag on everything this gateway creates; null: an id
    # made once and kept in the data dir (aws-gateway-id).
    gateway_id: str | None = None
    # Size of each instance's root EBS volume (GB); deleted with the instance.
    disk_gb: int = Field(default=100, ge=8)
    # Security groups for the instances (ids); empty: the VPC's default group.
    security_groups: list[str] = Field(default_factory=list)
    # IAM instance profile (name or ARN) the instances get, for S3 access; null: none.
    instance_profile: str | None = None
    # EC2 key pair for SSH access; null: none.
    key_name: str | None = None
    # Highest Spot price to pay (USD/hour); null: up to the on-demand price (EC2's default).
    spot_max_price: float | None = Field(default=None, gt=0)
    # Spot prices (DescribeSpotPriceHistory) are read again at most this often (seconds): how
    # soon a pool's price change reaches the offers, running instances' prices and cost moves.
    spot_price_seconds: float = Field(default=300.0, gt=0)
    # On-demand prices (USD/hour) by instance type, used first; a type not listed: the AWS
    # Pricing API (pricing:GetProducts, once per type per run; gateway/providers/aws/pricing.py),
    # else the built-in us-east-1 list price (gateway/market/catalog.py), else no price.
    on_demand_prices: dict[str, float] = Field(default_factory=dict)
    # Where the bootstrap installs the agent from when the AMI lacks it (a wheel's https:// or
    # s3:// URL); null: the AMI must have it already.
    agent_wheel_url: str | None = None
    # User-data carries a one-time registration token, good for this long after the launch
    # (boot and bootstrap included) and for one registration; the agent then gets its own
    # credential and the token in user-data is useless.
    token_ttl_seconds: float = Field(default=1800.0, gt=0)
    # A live machine tagged with this gateway's id that no instance row has named for this long
    # is terminated (checked on every scheduler tick, from its one DescribeInstances); 0: only
    # when the gateway starts.
    orphan_grace_seconds: float = Field(default=600.0, ge=0)
    # Spot placement scores (ec2:GetSpotPlacementScores) as the tiebreak among equally priced
    # Spot pools; where EC2 (or an emulator) does not offer them, off for the run by itself.
    placement_scores: bool = True
    # With launch_api: fleet, the Spot pools (type, zone) whose placement score (1-10) is below
    # this are left out of a launch's fleet, unless that would leave none (then all are kept,
    # and the log says so); a pool without a score is kept. 0: off (scores only break ties).
    min_placement_score: int = Field(default=0, ge=0, le=10)
    # The SQS queue an EventBridge rule sends EC2's Spot interruption warnings and rebalance
    # recommendations to (docs/aws.md): the gateway acts on them even when an instance's agent
    # is stuck. Empty: off (agents report the notices they see in IMDS).
    interruption_queue_url: str = ""
    # Seconds one read of that queue waits for a message (SQS long polling, 0-20); the
    # scheduler reads it at most every 5 seconds, on its tick.
    interruption_wait_seconds: int = Field(default=1, ge=0, le=20)

    @model_validator(mode="before")
    @classmethod
    def _lists(cls, data: Any) -> Any:
        """Lists from the environment may be comma-separated (`TESCAPE_PROVIDERS__AWS__SUBNETS=
        subnet-1,subnet-2`), as well as YAML flow lists (`[subnet-1, subnet-2]`)."""
        if isinstance(data, dict):
            for key in ("subnets", "instance_types", "markets", "security_groups"):
                value = data.get(key)
                if isinstance(value, str):
                    data = {**data, key: [v.strip() for v in value.split(",") if v.strip()]}
        return data


class ProvidersConfig(Section):
    # Which provider instances come from, by name (gateway/providers/registry.py); each has a
    # section of its own below.
    default: str = "local"
    local: LocalProviderConfig = Field(default_factory=LocalProviderConfig)
    fake: FakeProviderConfig = Field(default_factory=FakeProviderConfig)
    aws: AwsProviderConfig = Field(default_factory=AwsProviderConfig)

    @model_validator(mode="after")
    def _known(self) -> ProvidersConfig:
        from gateway.providers.registry import names

        if self.default not in names():
            raise ValueError(
                f"providers.default: no provider {self.default!r} (known: {', '.join(names())})"
            )
        return self


class CostMigrationConfig(Section):
    # Move a running task for price: when a fitting offer is cheaper per hour by more than
    # threshold_pct and the saving over its expected remaining time (taken as the time it has
    # run so far) exceeds the move's own cost; or when its price rises above max_price (USD/h,
    # with hysteresis_pct). Never sooner than min_interval_seconds after its last move.
    enabled: bool = True
    threshold_pct: float = Field(default=20.0, ge=0, le=100)
    max_price: float | None = Field(default=None, gt=0)
    hysteresis_pct: float = Field(default=5.0, ge=0)
    min_interval_seconds: float = Field(default=1800.0, ge=0)


class RightsizingConfig(Section):
    # Move a running task to another size (WaveRider's defaults): CPU use above cpu_upper or
    # below cpu_lower of its instance for duration_seconds; and, before the kernel kills it,
    # when its memory reaches memory_upper of the instance's (OOM protection).
    enabled: bool = True
    cpu_upper: float = Field(default=0.90, gt=0, le=1)
    cpu_lower: float = Field(default=0.05, ge=0, lt=1)
    duration_seconds: float = Field(default=30.0, gt=0)
    memory_upper: float = Field(default=0.90, gt=0, le=1)


RECOVERY_PATTERN = r"^(same_type|next_zone|restart|on_demand_after:\d+)$"


class SchedulerConfig(Section):
    enabled: bool = True
    interval_seconds: float = Field(default=1.0, gt=0)
    # An instance whose agent has not polled for this long is LOST.
    heartbeat_timeout_seconds: float = Field(default=60.0, gt=0)
    # An instance whose agent has not registered this long after launch is LOST.
    launch_timeout_seconds: float = Field(default=120.0, gt=0)
    # An instance with no task for this long is stopped.
    idle_timeout_seconds: float = Field(default=300.0, gt=0)
    # An assignment its agent has not acknowledged (listed as running) this long after it was
    # first sent is given up on that instance; the task goes on elsewhere. 0: no deadline.
    delivery_timeout_seconds: float = Field(default=120.0, ge=0)
    # An attempt still starting (images, inputs) or restoring this long after its assignment
    # was sent is given up on its instance; the task goes on elsewhere. 0: no deadline.
    starting_timeout_seconds: float = Field(default=3600.0, ge=0)
    # A checkpoint order not answered this long after it was sent is given up: the task runs on
    # where it is and its system_logs say why. 0: no deadline.
    checkpoint_timeout_seconds: float = Field(default=600.0, ge=0)
    # Gateways sharing one database: the one holding the scheduler lease schedules, renewing it
    # every tick; the others serve the API and take over once it has not been renewed this long.
    lease_seconds: float = Field(default=15.0, gt=0)
    # What a task gets when it asks for nothing.
    default_cpu_cores: int = Field(default=1, ge=1)
    default_ram_gb: float = Field(default=1.0, gt=0)
    # Where a task runs when it says nothing (TES `preemptible` unset): spot_first (Spot, else
    # on-demand), spot_only or on_demand_only. backend_parameters.market_policy overrides it.
    market_policy: Literal["spot_first", "spot_only", "on_demand_only"] = "spot_first"
    # Where a reclaimed task goes: same_type, next_zone (quarantining the reclaimed type+zone),
    # on_demand_after:N (N Spot reclaims, then on-demand) or restart (from the beginning, no
    # capsule: the baseline). backend_parameters.recovery overrides it.
    recovery: str = Field(
        default="same_type", pattern=r"^(same_type|next_zone|restart|on_demand_after:\d+)$"
    )
    cost_migration: CostMigrationConfig = Field(default_factory=CostMigrationConfig)
    rightsizing: RightsizingConfig = Field(default_factory=RightsizingConfig)
    # How often the cost, size and memory triggers are looked at (each look reads every running
    # attempt's usage); agents report usage every few seconds.
    triggers_interval_seconds: float = Field(default=1.0, ge=0)
    # Spot reclaims a task takes on Spot, whatever its recovery strategy: the one that uses the
    # budget up sends it on on-demand (not under spot_only). Apart from failure retries.
    # backend_parameters.interruption_budget overrides it; null: no budget.
    interruption_budget: int | None = Field(default=3, ge=0)
    # Instance losses (reclaims, crashes) a task survives — restored from its newest capsule, else
    # restarted — before it ends SYSTEM_ERROR. Apart from any retry budget for failures.
    max_interruptions: int = Field(default=10, ge=0)
    # A pool (instance type + zone + market) whose launch failed for lack of capacity is not
    # tried again for this long; the next fitting offer is. Also how long a reclaimed Spot pool
    # is avoided (next_zone) with a provider that has no market of its own (the simulated
    # market keeps providers.local.market.quarantine_seconds, in simulated time).
    quarantine_seconds: float = Field(default=600.0, ge=0)


class S3Config(Section):
    """How to reach an S3 endpoint, and as whom."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    addressing_style: Literal["auto", "path", "virtual"] = "auto"


class StagingS3Config(S3Config):
    # `bucket` or `bucket/prefix` entries task s3:// URLs must lie inside; null: any bucket. The
    # capsule store's location is refused whatever this says (capsule_runtime/protocol/s3_paths.py).
    allowed: list[str] | None = None
    # A user's own list instead of `allowed` (user name as auth knows it: basic user, token user,
    # OIDC subject).
    allowed_by_user: dict[str, list[str]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _entries(self) -> StagingS3Config:
        for entry in [*(self.allowed or []), *chain.from_iterable(self.allowed_by_user.values())]:
            S3Location.parse(entry)  # ValueError names the entry
        return self

    def connection(self) -> dict[str, Any]:
        """The connection settings the agent gets (no allow-lists, no unset values)."""
        return self.model_dump(exclude_none=True, exclude={"allowed", "allowed_by_user"})


class StorageConfig(Section):
    # Local paths (bare paths, file://) tasks may read inputs from and write outputs to; none by
    # default (null or []). Never reachable, even under an allowed parent: the data dir, the
    # capsule store, the SQLite database, the install tree and the virtualenv (Config.denied_dirs).
    allowed_dirs: list[str] | None = None
    # Local directories every instance sees at the same path (a shared file system; for the local
    # provider, this machine's own). Advertised in service-info `storage` as `file://` prefixes.
    # A task's input or output whose URL names a path inside one, at that same container path,
    # is bind-mounted read-write there (never copied, never uploaded): Toil's file job store
    # needs this. Any other use is an ordinary local path (as allowed_dirs). The deny-list above
    # still holds; a capsule does not carry their data (docs/toil-and-cwl-tes.md).
    shared_dirs: list[str] = Field(default_factory=list)
    # Refuse http(s)/s3 URLs that resolve to loopback or private addresses. Instance-metadata
    # addresses (169.254.0.0/16, fd00:ec2::254) are always refused. auto: on unless instances
    # come from the local provider (they run on this machine, beside its own services).
    block_private_networks: bool | Literal["auto"] = "auto"
    s3: StagingS3Config = Field(default_factory=StagingS3Config)
    # The capsule store's own S3 identity (when capsules.store is s3://); null: storage.s3's.
    capsules_s3: S3Config | None = None


class ImagesConfig(Section):
    # Image rewrite rules, applied before pulling: a task image equal to a key, or starting with a
    # key followed by ':' or '@', is replaced by the value (the tag or digest kept).
    rewrites: dict[str, str] = Field(default_factory=dict)
    # Registry hosts (as in an image reference: `host[:port]`) that workers pull from over plain
    # HTTP or without verifying their TLS certificate.
    insecure_registries: list[str] = Field(default_factory=list)


class ExecutorLogsConfig(Section):
    # How much of each executor's stdout/stderr goes into ExecutorLog (the tail); the full streams
    # stay retrievable at /api/v1/tasks/{id}/logs.
    tail_bytes: int = Field(default=65536, ge=0)


class CapsuleEncryptionConfig(Section):
    # Capsules hold a task's whole memory. `key`: each task's capsules are encrypted at rest
    # (AES-256-GCM, a data key per task wrapped by the master key; docs/capsules.md); `none`:
    # written in the clear. Capsules written either way stay readable.
    mode: Literal["none", "key"] = "key"
    # The 256-bit master key (base64 or 32 raw bytes); null: <data_dir>/capsule.key, created
    # (0600) on first use. Keep it: capsules written with a lost key cannot be restored.
    key_file: str | None = None


class NoticeBudgetConfig(Section):
    # The notice budget planner (gateway/scheduler/notice_budget.py, docs/capsules.md): periodic
    # capsules of a task on Spot are taken often enough that the capsule an interruption notice
    # calls for is predicted to be durable within `margin` of the notice, and a task too large
    # for that on an instance type is not placed on Spot there.
    enabled: bool = True
    # The notice each provider gives before a reclaim (s), by provider name; `default` for the
    # others (AWS: two minutes).
    notice_seconds: dict[str, float] = Field(default_factory=lambda: {"default": 120.0})
    # The share of the notice the prediction may use (the rest is left for surprises).
    margin: float = Field(default=0.7, gt=0, le=1)
    # What every notice capsule costs besides the capsule (s): hearing the notice, the order's
    # delivery, the report. The prior: each instance type learns its own from its notices.
    overhead_seconds: float = Field(default=2.0, ge=0)
    # Never a planner capsule sooner than this after the task's last capsule (s).
    min_interval_seconds: float = Field(default=60.0, ge=1)
    # Priors per instance type until its capsules are measured (docs/benchmarks.md, Capsules:
    # this 2-core machine under load): seconds per GiB of capsule for what every byte costs
    # (CRIU's dump, podman's export, reading and hashing), and per GiB stored for what only new
    # chunks cost (compression, encryption, the store's writes).
    dump_seconds_per_gib: float = Field(default=4.5, gt=0)
    upload_seconds_per_gib: float = Field(default=2.5, gt=0)
    # The share of dump_seconds_per_gib that is CRIU's own dump (the rest is the pipeline
    # reading the images): a notice's capsule, which stores the pages while CRIU dumps them,
    # takes the longer of the two, not their sum.
    criu_share: float = Field(default=0.4, gt=0, le=1)

    @field_validator("notice_seconds")
    @classmethod
    def _has_default(cls, value: dict[str, float]) -> dict[str, float]:
        if "default" not in value:
            raise ValueError("needs a `default` entry")
        if any(v <= 0 for v in value.values()):
            raise ValueError("every notice must be longer than 0 s")
        return value


class CapsulesConfig(Section):
    # Where capsules (checkpoints of running tasks) are stored: a directory (`/abs/dir` or
    # `file:///abs/dir`) or `s3://bucket/prefix` (connection settings from storage.capsules_s3,
    # else storage.s3). Tasks can never reach it, by path or s3:// URL.
    # null: <data_dir>/capsules.
    store: str | None = None
    # Keep a task's capsules after it ends (diagnostics); by default they are deleted.
    keep: bool = False
    # Periodic checkpoint interval of a running task (the task keeps running); 0 disables.
    # A task may set its own with backend_parameters.checkpoint_interval.
    interval_seconds: float = Field(default=900.0, ge=0)
    # Capsule streams are cut into chunks of this size, compressed (zstd) and hashed one by one;
    # a later capsule of the same task uploads only the chunks that changed.
    chunk_mib: int = Field(default=4, ge=1, le=64)
    compression_level: int = Field(default=1, ge=1, le=19)
    # Chunks compressed and uploaded in parallel.
    workers: int = Field(default=4, ge=1, le=64)
    # How a checkpoint's memory reaches the store: "images" (CRIU's pages images stored while
    # CRIU writes them; docs/capsules.md) or "export" (podman's export archive, streamed).
    checkpoint_via: Literal["export", "images"] = "images"
    # When the gateway stops and its instances go with it (the local provider), each running
    # task is moved into a capsule first, for this long at most; the next start restores it, so
    # a restart of tescape loses no work. 0: running tasks are stopped (SYSTEM_ERROR).
    shutdown_seconds: float = Field(default=120.0, ge=0)
    # A restore that cannot reach the capsule store (down, restarting, unreachable) waits this
    # long for it, retrying, before it gives the capsule up; a capsule that is missing or
    # corrupt is given up at once.
    store_wait_seconds: float = Field(default=300.0, ge=0)
    # Instances a capsule's restore is tried on when it fails for the instance's reasons
    # (podman, CRIU, its disk or images) before older capsules, then the beginning, are tried
    restore_tries: int = Field(default=3, ge=1, le=20)
    encryption: CapsuleEncryptionConfig = Field(default_factory=CapsuleEncryptionConfig)
    notice_budget: NoticeBudgetConfig = Field(default_factory=NoticeBudgetConfig)


class LoggingConfig(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class AgentConfig(Section):
    """What every instance's agent is told at launch."""

    # An agent that has not reached the gateway for this long takes each running task into a
    # capsule, stops its containers, keeps trying to deliver its reports for as long again,
    # then exits; 0: it never gives up (its tasks run on without a gateway)
    gateway_lost_seconds: float = Field(default=600.0, ge=0)
    # A tescape wheel (`pip wheel --no-deps -w dist .` in a checkout) this gateway serves to its
    # instances at GET /agent/v1/dist/<file name>: a cloud instance's bootstrap installs the agent
    # from it, checked against its sha256, when the provider names no agent_wheel_url of its own
    # (gateway/agent_wheel.py); null: none served.
    wheel: str | None = None


class Config(Section):
    data_dir: str | None = None  # default: the directory `tescape serve` runs in
    server: ServerConfig = Field(default_factory=ServerConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    limits: TaskLimits = Field(default_factory=TaskLimits)
    tasks: TasksConfig = Field(default_factory=TasksConfig)
    service_info: ServiceInfoConfig = Field(default_factory=ServiceInfoConfig)
    providers: ProvidersConfig = Field(default_factory=ProvidersConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    images: ImagesConfig = Field(default_factory=ImagesConfig)
    executor_logs: ExecutorLogsConfig = Field(default_factory=ExecutorLogsConfig)
    capsules: CapsulesConfig = Field(default_factory=CapsulesConfig)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir or os.getcwd()).resolve()

    @property
    def allowed_dirs(self) -> list[str]:
        """The configured local directories tasks may use, resolved; none unless configured."""
        return [str(Path(d).resolve()) for d in self.storage.allowed_dirs or []]

    @property
    def shared_dirs(self) -> list[str]:
        """storage.shared_dirs resolved, without those inside tescape's own state or code
        (never usable; `tescape serve` warns about them)."""
        denied = [Path(d) for d in self.denied_dirs]
        shared = (Path(d).resolve() for d in self.storage.shared_dirs)
        usable = (d for d in shared if not any(d == x or x in d.parents for x in denied))
        return list(dict.fromkeys(str(d) for d in usable))

    @property
    def denied_dirs(self) -> list[str]:
        """tescape's own state and code, which no task may read or write whatever allowed_dirs
        says: the data dir, a local capsule store, the SQLite database (and its WAL/SHM), the
        directory holding the gateway and capsule_runtime packages, and the virtualenv."""
        denied = [self.data_path]
        store = self.capsule_store
        if store.startswith("/") or store.lower().startswith("file://"):
            denied.append(Path(url_local_path(store) or store))
        if database := sqlite_file(self.database_url):
            denied += [database.with_name(database.name + s) for s in ("", "-wal", "-shm")]
        denied.append(self.capsule_key_file)
        denied += install_dirs()
        return list(dict.fromkeys(str(real(d)) for d in denied))

    @property
    def blocks_private_networks(self) -> bool:
        """storage.block_private_networks, `auto` decided: on unless the provider is local."""
        setting = self.storage.block_private_networks
        return self.providers.default != "local" if setting == "auto" else setting

    def s3_allowed(self, user: str) -> list[str] | None:
        """The s3 allow-list for tasks of `user`: their own, else storage.s3.allowed (None: any
        bucket but the capsule store's)."""
        s3 = self.storage.s3
        return s3.allowed_by_user.get(user, s3.allowed)

    @property
    def s3_denied(self) -> list[str]:
        """s3 locations no task may use: the capsule store's bucket/prefix when it is in S3."""
        store = self.capsule_store
        return [store[5:]] if store[:5].lower() == "s3://" else []

    @property
    def capsule_s3(self) -> dict[str, Any]:
        """Connection settings of an s3:// capsule store: storage.capsules_s3, else storage.s3."""
        own = self.storage.capsules_s3
        return own.model_dump(exclude_none=True) if own else self.storage.s3.connection()

    @property
    def capsule_store(self) -> str:
        return self.capsules.store or str(self.data_path / "capsules")

    @property
    def capsule_key_file(self) -> Path:
        """The capsule master key's file (capsules.encryption.key_file or the data dir's)."""
        key_file = self.capsules.encryption.key_file
        return Path(key_file).expanduser() if key_file else self.data_path / "capsule.key"

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.data_path / 'tescape.db'}"


def s3_notes(cfg: Config) -> list[str]:
    """What an operator should know at start about tasks' S3 access: allow-list entries inside
    the capsule store (never usable), a capsule store sharing task staging's S3 identity."""
    notes = []
    denied = [S3Location.parse(d) for d in cfg.s3_denied]
    lists = [cfg.storage.s3.allowed or [], *cfg.storage.s3.allowed_by_user.values()]
    for entry in dict.fromkeys(e for entries in lists for e in entries):
        if any(d.covers(S3Location.parse(entry)) for d in denied):
            notes.append(
                f"storage.s3 allow-list entry {entry} lies in the capsule store: never used"
            )
    if denied and cfg.storage.capsules_s3 is None:
        notes.append(
            f"capsules.store {cfg.capsule_store} uses storage.s3's identity, which task staging "
            "uses too: tescape's checks alone keep tasks off it (storage.capsules_s3 gives it an "
            "identity of its own)"
        )
    return notes


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL; None for other databases and in-memory SQLite."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).resolve()


class ConfigError(ValueError):
    """The configuration cannot be loaded; the message says which layer and which key."""


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def env_layer(environ: dict[str, str]) -> dict[str, Any]:
    """`TESCAPE_SERVER__PORT=9000` → {"server": {"port": 9000}}. Variables without `__` are config
    only when they name a top-level scalar key (`TESCAPE_DATA_DIR`); others (`TESCAPE_SERVER`, the
    CLI's server URL) belong to the client commands and are skipped."""
    scalars = {
        name for name, f in Config.model_fields.items() if not isinstance(f.default_factory, type)
    }
    layer: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        if len(path) == 1 and path[0] not in scalars:
            continue
        value = yaml.safe_load(raw) if raw.strip() else ""
        node = layer
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment variable {name} conflicts with another one")
        node[path[-1]] = value
    return layer


def load_config(
    file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Config:
    merged: dict[str, Any] = {}
    if file is not None:
        try:
            loaded = yaml.safe_load(Path(file).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config file {file}: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {file} must hold a mapping at the top level")
        merged = loaded
    merged = deep_merge(merged, env_layer(dict(os.environ if environ is None else environ)))
    merged = deep_merge(merged, overrides or {})
    try:
        return Config.model_validate(merged)
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False):
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            lines.append(f"  {where}: {msg}")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None
