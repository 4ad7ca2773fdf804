"""The provider interface: where instances come from. Small on purpose; the scheduler owns the
decisions (placement, quarantines, recovery, cost moves), a provider only starts, looks at and
stops machines, says what it can offer, and declares what it can do.

A cloud implements it as a handful of calls (SkyPilot's `sky/provision`, dstack's `Compute`):

    offers()          what can be started now (types, markets, zones, prices when known)
    launch(spec)      start one machine → LaunchRecord(provider_id, zone, provider_data); the
                      record is kept on the instance row, so a later gateway process finds,
                      queries and terminates the machine with it
    launch_many(...)  several in one call where the cloud allows (Capability.BATCH_LAUNCH)
    query(records)    the state of the whole fleet in one call (one DescribeInstances), not one
                      call per instance per tick; None: the provider knows no such machine
    terminate(record) stop it (idempotent)
    compatible_types(instance_type)  the types that can restore a capsule taken on that type
                      (aws: same architecture and processor family); None: cannot tell
    terminate_many(records)  several in one call where the cloud allows (aws: one
                      TerminateInstances per 1000); here, one `terminate` each
    notices()         interruption notices the cloud sent the gateway itself (aws: EventBridge
                      through SQS), so a notice is acted on even if the machine's agent is
                      stuck; acknowledge(notices) once handled. None here: agents report them

Failures are typed: `CapacityUnavailable` (the scheduler quarantines that pool for a while and
tries the next fitting offer), `PrecheckFailed` (this provider cannot launch at all: fix the
configuration), `ProviderError` (anything else). Optional features are declared as capabilities;
the simulation verb `interrupt` exists only on providers that declare
`Capability.INTERRUPT_SIMULATION` (the `SimulatesInterruptions` mixin).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

from capsule_runtime.protocol.resources import Resources

if TYPE_CHECKING:
    from gateway.store.fleet import Instance


@dataclass(frozen=True, kw_only=True)
class Offer(Resources):
    """One kind of instance a provider can start now: its size (cpu_cores, ram_gb, disk_gb)
    and where and at what price."""

    instance_type: str
    market: str  # spot | on-demand
    zone: str
    price_per_hour: float | None
    # how likely a Spot request in this pool succeeds, 1-10 (EC2's Spot placement score), where
    # the provider knows it: among equally priced pools the scheduler takes the higher
    placement_score: int | None = None


def offer_of(instance: Instance, fallback: Offer | None = None) -> Offer:
    """What a running instance is, as an Offer: its type, market, zone, price and the capacity
    recorded at launch (missing sizes from `fallback`, else 0)."""
    cap = instance.data.capacity

    def size(key: str) -> float:
        if cap is not None:
            return float(getattr(cap, key))
        return float(getattr(fallback, key)) if fallback is not None else 0.0

    return Offer(
        instance_type=instance.instance_type,
        market=instance.market,
        zone=instance.zone,
        price_per_hour=instance.price_per_hour,
        cpu_cores=size("cpu_cores"),
        ram_gb=size("ram_gb"),
        disk_gb=size("disk_gb"),
    )


class Capability(StrEnum):
    """What a provider can do beyond launch/query/terminate."""

    SPOT = "spot"  # offers Spot (preemptible) instances
    ON_DEMAND = "on-demand"  # offers on-demand instances
    PRICES = "prices"  # offers carry prices: cost moves, rightsizing and recovery plans run
    INTERRUPT_SIMULATION = "interrupt-simulation"  # interrupt(): a simulated Spot reclaim
    GPUS = "gpus"  # offers instances with GPUs
    INSTANCE_NAMESPACES = "instance-namespaces"  # each instance sees a file system of its own
    BATCH_LAUNCH = "batch-launch"  # launch_many starts several instances in one call
    EPHEMERAL = "ephemeral"  # instances end with the gateway process (close() stops them all)


class CloudState(StrEnum):
    """A machine's state as its provider sees it."""

    PENDING = "pending"  # asked for, not running yet
    RUNNING = "running"
    STOPPING = "stopping"  # on its way out (shutting-down)
    TERMINATED = "terminated"  # gone, still listed


LIVE_STATES = frozenset({CloudState.PENDING, CloudState.RUNNING})


@dataclass(frozen=True)
class LaunchSpec:
    """One machine to start, for an instance row the scheduler has created."""

    instance_id: str  # the gateway's id: the agent registers with it; a cloud tags the machine
    token: str  # the agent's credential (TESCAPE_AGENT_TOKEN)
    offer: Offer  # type, market, zone (may be "" or a region where the provider chooses)
    # the instance types the machine may be, where the provider chooses among several (an EC2
    # Fleet over types of the offer's size): a capsule's restore names those that can run it
    # (`Provider.compatible_types`); None: any the provider would choose
    types: frozenset[str] | None = None


@dataclass(frozen=True)
class LaunchRecord:
    """What a launch returned: the provider's id for the machine, the zone it landed in, and
    JSON-serialisable data the provider needs to find it again (kept on the instance row)."""

    provider_id: str
    zone: str
    provider_data: dict[str, Any] = field(default_factory=dict)


def record_of(instance: Instance) -> LaunchRecord:
    """The launch record kept on an instance row. Rows whose launch never returned one (or that
    predate records) carry the gateway's id: a provider finds such a machine by the tag it gave
    it (`LaunchSpec.instance_id`)."""
    return LaunchRecord(
        instance.provider_id or instance.id, instance.zone, dict(instance.provider_data)
    )


@dataclass(frozen=True)
class CloudNotice:
    """An interruption notice the cloud sent the gateway (not through the machine's agent):
    the same kinds and times an agent's `Notice` carries."""

    provider_id: str  # the machine (LaunchRecord.provider_id)
    kind: str  # terminate | stop | hibernate | rebalance
    time: str  # the deadline (rebalance: when it was recommended), RFC 3339
    receipt: str = ""  # the provider's handle for `acknowledge`


class ProviderError(RuntimeError):
    """The provider could not do what was asked."""


class PrecheckFailed(ProviderError):
    """This provider cannot launch at all as configured (credentials, permissions, host
    support): launching again will not help until the configuration changes."""


class CapacityUnavailable(ProviderError):
    """No capacity for this instance type in this zone (and market) now (EC2's
    InsufficientInstanceCapacity): the pool is worth avoiding for a while."""

    def __init__(self, instance_type: str, zone: str, market: str = "", message: str = ""):
        self.instance_type = instance_type
        self.zone = zone
        self.market = market
        pool = f"{instance_type} in {zone}" + (f" ({market})" if market else "")
        super().__init__(message or f"no capacity for {pool}")


class Unsupported(ProviderError):
    """The provider does not declare the capability this needs."""


class Provider(ABC):
    """A source of instances. Subclasses set `name` and `capabilities` (on the class, or per
    object when they depend on the configuration)."""

    name: ClassVar[str]
    capabilities: frozenset[Capability] = frozenset({Capability.ON_DEMAND})
    max_instances: int = 1  # instances the scheduler keeps at most (LAUNCHING + READY)
    # instances that may be on their way (launched, not yet registered) at once: 1 starts one
    # at a time, each registering before the next; a cloud that boots in parallel sets more
    launch_batch: int = 1
    # seconds an instance may sit without a task before the scheduler stops it; None: the
    # scheduler's own `idle_timeout_seconds` (a cloud bills idle machines: aws sets its own)
    idle_seconds: float | None = None
    # seconds a launched instance may take to register before it is given up; None: the
    # scheduler's own `launch_timeout_seconds` (a cloud machine that installs podman and CRIU at
    # boot takes minutes: aws sets its own)
    launch_seconds: float | None = None

    def supports(self, capability: Capability) -> bool:
        return capability in self.capabilities

    @property
    def ephemeral(self) -> bool:
        return self.supports(Capability.EPHEMERAL)

    def check(self) -> None:  # noqa: B027 (optional: most providers have nothing to check)
        """Raise PrecheckFailed when nothing can be launched as configured (called at start)."""

    @abstractmethod
    def offers(self) -> list[Offer]:
        """What can be started now."""

    @abstractmethod
    def launch(self, spec: LaunchSpec) -> LaunchRecord:
        """Start one machine; its agent registers with `spec.token`. Raises
        CapacityUnavailable, PrecheckFailed or ProviderError."""

    def launch_many(self, specs: Sequence[LaunchSpec]) -> list[LaunchRecord | ProviderError]:
        """Start several machines, one result per spec in order (a record, or the error that
        one met). One call where the provider declares BATCH_LAUNCH; here, one at a time."""
        results: list[LaunchRecord | ProviderError] = []
        for spec in specs:
            try:
                results.append(self.launch(spec))
            except ProviderError as exc:
                results.append(exc)
        return results

    @abstractmethod
    def query(self, records: Sequence[LaunchRecord]) -> dict[str, CloudState | None]:
        """The state of each machine, keyed by provider_id, in one call for the whole fleet;
        None for a machine the provider does not know (never launched, or long gone). Works on
        records from an earlier gateway process too."""

    @abstractmethod
    def terminate(self, record: LaunchRecord) -> None:
        """Stop the machine (idempotent; records from an earlier gateway process too)."""

    def terminate_many(self, records: Sequence[LaunchRecord]) -> dict[str, ProviderError | None]:
        """Stop several machines (idempotent, as `terminate`): for each record's provider_id,
        None when it is stopped (or was gone already), else the error that one met — one
        machine's failure never keeps the others running. A cloud that can stop several in one
        call overrides this (fewer calls in a tick that retires many at once); here, one
        `terminate` each."""
        results: dict[str, ProviderError | None] = {}
        for record in records:
            try:
                self.terminate(record)
                results[record.provider_id] = None
            except ProviderError as exc:
                results[record.provider_id] = exc
        return results

    def compatible_types(self, instance_type: str) -> frozenset[str] | None:
        """The instance types among this provider's offers that can restore a capsule taken on
        an instance of `instance_type` (the same CPU architecture and processor family: CRIU
        refuses a CPU without the dumped process's features), so the scheduler launches only
        those for the restore; an empty set: none can. None here: the provider cannot tell
        (every offer may be launched; the agent's registered CPU profile is still checked before
        a restore is placed, gateway/scheduler/compat.py)."""
        return None

    def notices(self) -> list[CloudNotice]:
        """Interruption notices the cloud sent the gateway itself since the last call, each
        until it is acknowledged (a gateway that dies before handling one gets it again). Called
        by the leading scheduler on its tick: a provider waits briefly at most. None here: a
        provider without such a channel relies on its agents' notices."""
        return []

    def acknowledge(self, notices: Sequence[CloudNotice]) -> None:  # noqa: B027 (optional)
        """The scheduler has handled these notices (or found they are not its machines'): the
        cloud need not send them again."""

    def orphans(self, records: Sequence[LaunchRecord]) -> list[LaunchRecord]:
        """Live machines this gateway started that none of `records` (its live instance rows)
        names: left by a crash or a failed terminate; the scheduler terminates them at start.
        None here: a provider that cannot list its machines by owner finds none."""
        return []

    def close(self) -> None:  # noqa: B027 (optional: only ephemeral providers stop all)
        """The gateway stops: an ephemeral provider stops every machine it started."""

    def log_hint(self, record: LaunchRecord) -> str:
        """Where to look when an instance fails to come up."""
        return f"the {self.name} provider's console for {record.provider_id}"


class SimulatesInterruptions(ABC):
    """The simulation verb, on providers that declare Capability.INTERRUPT_SIMULATION."""

    @abstractmethod
    def interrupt(self, record: LaunchRecord, notice_seconds: float) -> str:
        """Simulate a Spot reclaim: a notice now, the machine gone `notice_seconds` later;
        return the deadline (RFC 3339). ProviderError for a machine not running."""

    def reclaims(
        self, instances: Sequence[Instance], dt_seconds: float
    ) -> list[tuple[Instance, float]]:
        """The running Spot instances a simulated market reclaims within the next `dt_seconds`,
        each with its notice (seconds); the scheduler then calls `interrupt`. None here: only
        a provider with a simulated market draws reclaims of its own."""
        return []


def interrupter(provider: Provider) -> SimulatesInterruptions:
    """The provider as one that simulates interruptions; Unsupported when it does not declare
    the capability (real clouds reclaim on their own)."""
    if not provider.supports(Capability.INTERRUPT_SIMULATION) or not isinstance(
        provider, SimulatesInterruptions
    ):
        raise Unsupported(f"the {provider.name} provider cannot simulate interruptions")
    return provider
