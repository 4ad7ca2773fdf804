"""The `fake` provider: an in-memory cloud, for tests and as the smallest complete example of the
interface (gateway/providers/base.py) for a new provider to copy.

`FakeCloud` is the cloud itself (its machines, capacity per pool, a count of API calls); a
`FakeProvider` is the gateway's client of it. A second FakeProvider over the same cloud is what a
restarted gateway sees: it knows only the launch records kept on the instance rows. Machines get
ids of the cloud's own (`fake-0001`), not the gateway's, and are tagged with the gateway's
instance id, as a real cloud's would be. No agent runs: a test registers one itself.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from gateway.providers.base import (
    Capability,
    CapacityUnavailable,
    CloudState,
    LaunchRecord,
    LaunchSpec,
    Offer,
    PrecheckFailed,
    Provider,
    ProviderError,
    SimulatesInterruptions,
)
from gateway.tes.states import MarketType

if TYPE_CHECKING:
    from gateway.providers.registry import ProviderContext

Pool = tuple[str, str, str]  # (instance type, zone, market)
DEFAULT_CAPABILITIES = frozenset(
    {
        Capability.SPOT,
        Capability.ON_DEMAND,
        Capability.PRICES,
        Capability.BATCH_LAUNCH,
        Capability.INTERRUPT_SIMULATION,
    }
)


def default_offers(
    instance_type: str = "fake.large",
    zones: Sequence[str] = ("fake-1a",),
    cpu_cores: float = 4.0,
    ram_gb: float = 8.0,
    disk_gb: float = 100.0,
    spot_price: float = 0.05,
    on_demand_price: float = 0.10,
) -> list[Offer]:
    out = []
    for zone in zones:
        out.append(
            Offer(
                instance_type=instance_type,
                market=MarketType.SPOT,
                zone=zone,
                price_per_hour=spot_price,
                cpu_cores=cpu_cores,
                ram_gb=ram_gb,
                disk_gb=disk_gb,
            )
        )
        out.append(
            Offer(
                instance_type=instance_type,
                market=MarketType.ON_DEMAND,
                zone=zone,
                price_per_hour=on_demand_price,
                cpu_cores=cpu_cores,
                ram_gb=ram_gb,
                disk_gb=disk_gb,
            )
        )
    return out


@dataclass
class FakeMachine:
    provider_id: str
    tag: str  # the gateway's instance id
    offer: Offer
    token: str
    state: CloudState = CloudState.RUNNING
    reclaim_at: float | None = None  # monotonic time of a simulated reclaim


@dataclass
class FakeCloud:
    """The in-memory cloud: what outlives a FakeProvider (a gateway restart)."""

    # machines left per pool; a pool not listed has room without limit
    capacity: dict[Pool, int] = field(default_factory=dict)
    machines: dict[str, FakeMachine] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)  # API calls by name
    clock: Callable[[], float] = time.monotonic
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def call(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def start(self, spec: LaunchSpec) -> FakeMachine:
        offer = spec.offer
        pool = (offer.instance_type, offer.zone, offer.market)
        with self._lock:
            left = self.capacity.get(pool)
            if left is not None and left <= 0:
                raise CapacityUnavailable(offer.instance_type, offer.zone, offer.market)
            if left is not None:
                self.capacity[pool] = left - 1
            machine = FakeMachine(
                f"fake-{next(self._ids):04d}", spec.instance_id, offer, spec.token
            )
            self.machines[machine.provider_id] = machine
            return machine

    def state(self, provider_id: str) -> CloudState | None:
        machine = self.machines.get(provider_id)
        if machine is None:
            return None
        if machine.reclaim_at is not None and self.clock() >= machine.reclaim_at:
            machine.state = CloudState.TERMINATED
        return machine.state


class FakeProvider(Provider, SimulatesInterruptions):
    name = "fake"

    def __init__(
        self,
        cloud: FakeCloud | None = None,
        offers: Sequence[Offer] | None = None,
        capabilities: frozenset[Capability] = DEFAULT_CAPABILITIES,
        max_instances: int = 4,
        precheck: str | None = None,
        compatible: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        self.cloud = cloud or FakeCloud()
        self.offer_list = list(offers) if offers is not None else default_offers()
        self.capabilities = capabilities
        self.max_instances = max_instances
        self.precheck = precheck  # set: every launch fails PrecheckFailed with this reason
        # type → the types that can restore its capsules (`compatible_types`); None: can't tell
        self.compatible = dict(compatible) if compatible is not None else None
        self.specs: list[LaunchSpec] = []  # what each launch was asked, in order
        self.launched: list[str] = []  # gateway instance ids, in launch order
        self.tokens: dict[str, str] = {}  # gateway instance id → agent token

    def check(self) -> None:
        if self.precheck is not None:
            raise PrecheckFailed(self.precheck)

    def offers(self) -> list[Offer]:
        self.cloud.call("offers")
        return list(self.offer_list)

    def compatible_types(self, instance_type: str) -> frozenset[str] | None:
        if self.compatible is None:
            return None
        return self.compatible.get(instance_type, frozenset())

    def launch(self, spec: LaunchSpec) -> LaunchRecord:
        self.cloud.call("launch")
        return self._start(spec)

    def launch_many(self, specs: Sequence[LaunchSpec]) -> list[LaunchRecord | ProviderError]:
        if not self.supports(Capability.BATCH_LAUNCH):
            return super().launch_many(specs)
        self.cloud.call("launch")  # one call for all of them
        results: list[LaunchRecord | ProviderError] = []
        for spec in specs:
            try:
                results.append(self._start(spec))
            except ProviderError as exc:
                results.append(exc)
        return results

    def _start(self, spec: LaunchSpec) -> LaunchRecord:
        self.check()
        if spec.offer.market == "spot" and not self.supports(Capability.SPOT):
            raise ProviderError(f"the {self.name} provider offers no Spot instances")
        machine = self.cloud.start(spec)
        self.specs.append(spec)
        self.launched.append(spec.instance_id)
        self.tokens[spec.instance_id] = spec.token
        return LaunchRecord(
            machine.provider_id, spec.offer.zone, {"region": "fake-1", "tag": spec.instance_id}
        )

    def query(self, records: Sequence[LaunchRecord]) -> dict[str, CloudState | None]:
        self.cloud.call("query")
        return {r.provider_id: self.cloud.state(r.provider_id) for r in records}

    def terminate(self, record: LaunchRecord) -> None:
        self.cloud.call("terminate")
        machine = self.cloud.machines.get(record.provider_id)
        if machine is not None:
            machine.state = CloudState.TERMINATED

    def interrupt(self, record: LaunchRecord, notice_seconds: float) -> str:
        if not self.supports(Capability.INTERRUPT_SIMULATION):
            raise ProviderError(f"the {self.name} provider cannot simulate interruptions")
        if self.cloud.state(record.provider_id) is not CloudState.RUNNING:
            raise ProviderError(f"instance {record.provider_id} is not running")
        machine = self.cloud.machines[record.provider_id]
        machine.reclaim_at = self.cloud.clock() + notice_seconds
        deadline = datetime.now(UTC) + timedelta(seconds=notice_seconds)
        return deadline.strftime("%Y-%m-%dT%H:%M:%SZ")

    # -- for tests --------------------------------------------------------------------------

    def vanish(self, instance_id: str) -> None:
        """The machine of a gateway instance id (or a provider id) disappears without notice."""
        for machine in list(self.cloud.machines.values()):
            if instance_id in (machine.tag, machine.provider_id):
                del self.cloud.machines[machine.provider_id]

    def running(self) -> list[str]:
        """The gateway instance ids whose machines run."""
        return [
            m.tag
            for m in list(self.cloud.machines.values())
            if self.cloud.state(m.provider_id) in (CloudState.PENDING, CloudState.RUNNING)
        ]


def from_context(context: ProviderContext) -> FakeProvider:
    """`providers.default: fake` (registry): offers from `providers.fake`."""
    cfg = context.config.providers.fake
    offers = default_offers(
        cfg.instance_type,
        cfg.zones,
        cfg.cpu_cores,
        cfg.ram_gb,
        cfg.disk_gb,
        cfg.spot_price,
        cfg.on_demand_price,
    )
    return FakeProvider(offers=offers, max_instances=cfg.max_instances)
