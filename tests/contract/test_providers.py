"""One contract for every provider (gateway/providers/base.py): `local` with real agent processes
(talking to a stub gateway on loopback), the in-memory `fake`, with and without the
interruption-simulation capability, and `aws` against moto in server mode (a real HTTP process on
loopback holding EC2's state; moto cannot run out of capacity, so `exhaust` answers RunInstances
for that pool with EC2's InsufficientInstanceCapacity error at botocore's before-call hook).

launch → query says running → terminate → query says gone; one query for several machines;
several launched in one call, several terminated in one call; a pool without capacity fails
CapacityUnavailable; declared capabilities honoured (`interrupt` refused where not declared); a
launch record round-trips through the instance row, and a new provider object (a restarted
gateway) can still query and terminate what the first one launched."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gateway.config import AwsProviderConfig, LocalProviderConfig
from gateway.providers.aws import AwsProvider
from gateway.providers.base import (
    LIVE_STATES,
    Capability,
    CapacityUnavailable,
    CloudState,
    LaunchRecord,
    LaunchSpec,
    Offer,
    Provider,
    Unsupported,
    interrupter,
    record_of,
)
from gateway.providers.fake import DEFAULT_CAPABILITIES, FakeCloud, FakeProvider
from gateway.providers.local import LocalProvider
from gateway.store import open_database
from gateway.store.fleet import FleetStore
from tests.fixtures.moto_server import MotoServer

pytestmark = pytest.mark.timeout(120)
DEADLINE = 30.0  # seconds a machine gets to come up or go away


class StubGateway(ThreadingHTTPServer):
    """Enough of the agent API for a real agent to register and poll (no orders ever)."""

    daemon_threads = True


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.endswith("/poll"):
            time.sleep(0.2)  # a short long poll
        body = json.dumps({}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def stub_gateway() -> Iterator[str]:
    server = StubGateway(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@dataclass
class Subject:
    provider: Provider
    reopen: Callable[[], Provider]  # another provider object over the same machines (a restart)
    exhaust: Callable[[Offer], None]  # the offer's pool has no capacity from now on
    opened: list[Provider]


def _local(tmp: Path, gateway: str) -> Subject:
    cfg = LocalProviderConfig(
        isolation="none",
        cpu_cores=1,
        ram_gb=1,
        disk_gb=1,
        interruption_poll_seconds=0.2,
        market={"enabled": False},  # type: ignore[arg-type]
    )
    opened: list[Provider] = []

    def open_one() -> Provider:
        provider = LocalProvider(cfg, gateway, tmp / "instances")
        opened.append(provider)
        return provider

    first = open_one()

    def exhaust(offer: Offer) -> None:
        for p in opened:
            assert isinstance(p, LocalProvider)
            p.no_capacity.add(f"{offer.instance_type}/{offer.zone}/{offer.market}")

    return Subject(first, open_one, exhaust, opened)


def _fake(capabilities: frozenset[Capability]) -> Subject:
    cloud = FakeCloud()
    opened: list[Provider] = []

    def open_one() -> Provider:
        provider = FakeProvider(cloud, capabilities=capabilities)
        opened.append(provider)
        return provider

    first = open_one()

    def exhaust(offer: Offer) -> None:
        cloud.capacity[(offer.instance_type, offer.zone, offer.market)] = 0

    return Subject(first, open_one, exhaust, opened)


def _aws(moto: MotoServer) -> Subject:
    cfg = AwsProviderConfig(
        endpoint_url=moto.url, ami=moto.ami(), instance_types=["m5.large"], max_instances=8
    )
    opened: list[Provider] = []
    exhausted: set[tuple[str, str, str]] = set()  # (type, subnet, market)

    def open_one() -> Provider:
        provider = AwsProvider(cfg, "http://gateway.test:8000", "gw-contract", moto.session())
        events = provider.ec2_launch.meta.events
        events.register("before-parameter-build.ec2.RunInstances", _remember_pool)
        events.register("before-call.ec2.RunInstances", _no_capacity(exhausted))
        opened.append(provider)
        return provider

    first = open_one()

    def exhaust(offer: Offer) -> None:
        assert isinstance(first, AwsProvider)
        subnet = first.subnets()[offer.zone][0]
        exhausted.add((offer.instance_type, subnet, offer.market))

    return Subject(first, open_one, exhaust, opened)


def _remember_pool(params: dict[str, object], context: dict[str, object], **_: object) -> None:
    market = "spot" if params.get("InstanceMarketOptions") else "on-demand"
    context["pool"] = (params.get("InstanceType"), params.get("SubnetId"), market)


def _no_capacity(exhausted: set[tuple[str, str, str]]) -> Callable[..., object]:
    def handler(context: dict[str, object], **_: object) -> object:
        if context.get("pool") not in exhausted:
            return None
        from botocore.awsrequest import AWSResponse

        error = {
            "Code": "InsufficientInstanceCapacity",
            "Message": "We currently do not have sufficient capacity in the Availability Zone "
            "you requested.",
        }
        return AWSResponse("http://moto", 500, {}, None), {
            "Error": error,
            "ResponseMetadata": {"HTTPStatusCode": 500},
        }

    return handler


@pytest.fixture(params=["local", "fake", "fake-no-interrupt", "aws"])
def subject(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Subject]:
    if request.param == "local":
        made = _local(tmp_path, request.getfixturevalue("stub_gateway"))
    elif request.param == "aws":
        made = _aws(request.getfixturevalue("moto"))
    elif request.param == "fake":
        made = _fake(DEFAULT_CAPABILITIES)
    else:
        made = _fake(DEFAULT_CAPABILITIES - {Capability.INTERRUPT_SIMULATION})
    yield made
    for provider in made.opened:
        provider.close()


def spec_for(provider: Provider, instance_id: str | None = None) -> LaunchSpec:
    offers = provider.offers()
    assert offers, "a provider offers something"
    return LaunchSpec(
        instance_id or f"i-{secrets.token_hex(6)}", secrets.token_urlsafe(16), offers[0]
    )


def wait_for(
    provider: Provider, record: LaunchRecord, want: Callable[[CloudState | None], bool]
) -> CloudState | None:
    deadline = time.monotonic() + DEADLINE
    while True:
        state = provider.query([record])[record.provider_id]
        if want(state) or time.monotonic() > deadline:
            return state
        time.sleep(0.05)


def running(state: CloudState | None) -> bool:
    return state is CloudState.RUNNING


def gone(state: CloudState | None) -> bool:
    return state not in LIVE_STATES


def test_capabilities_are_declared_and_offers_match(subject: Subject) -> None:
    p = subject.provider
    assert p.name and isinstance(p.capabilities, frozenset)
    assert all(isinstance(c, Capability) for c in p.capabilities)
    offers = p.offers()
    markets = {o.market for o in offers}
    assert markets <= {"spot", "on-demand"} and markets
    assert ("spot" in markets) == p.supports(Capability.SPOT)
    assert ("on-demand" in markets) == p.supports(Capability.ON_DEMAND)
    assert p.max_instances >= 1
    p.check()  # configured to launch


def test_compatible_types_are_offered_types_or_unknown(subject: Subject) -> None:
    """Where a provider says which types can restore a capsule taken on one of its types,
    they are among its offers and include that type itself; None: it cannot tell. A launch
    restricted to them (`LaunchSpec.types`) launches the offer's type."""
    p = subject.provider
    offered = {o.instance_type for o in p.offers()}
    for itype in sorted(offered):
        types = p.compatible_types(itype)
        assert types is None or (itype in types and types <= offered), (itype, types)
    spec = spec_for(p)
    restricted = LaunchSpec(
        spec.instance_id, spec.token, spec.offer, frozenset({spec.offer.instance_type})
    )
    record = p.launch(restricted)
    assert wait_for(p, record, running) is CloudState.RUNNING
    p.terminate(record)
    assert gone(wait_for(p, record, gone))


def test_launch_query_terminate(subject: Subject) -> None:
    p = subject.provider
    spec = spec_for(p)
    record = p.launch(spec)
    assert record.provider_id and isinstance(record.provider_data, dict)
    assert record.zone == spec.offer.zone
    json.dumps(record.provider_data)  # kept on the instance row as JSON
    assert wait_for(p, record, running) is CloudState.RUNNING
    assert p.log_hint(record)
    p.terminate(record)
    assert gone(wait_for(p, record, gone))
    p.terminate(record)  # idempotent
    assert gone(p.query([record])[record.provider_id])


def test_one_query_answers_for_the_fleet(subject: Subject) -> None:
    p = subject.provider
    first, second = p.launch(spec_for(p)), p.launch(spec_for(p))
    assert first.provider_id != second.provider_id
    stranger = LaunchRecord("never-launched", first.zone, {})
    for record in (first, second):
        assert wait_for(p, record, running) is CloudState.RUNNING
    states = p.query([first, second, stranger])
    assert states == {
        first.provider_id: CloudState.RUNNING,
        second.provider_id: CloudState.RUNNING,
        "never-launched": None,
    }
    p.terminate(first)
    assert gone(wait_for(p, first, gone))
    states = p.query([first, second])
    assert gone(states[first.provider_id]) and states[second.provider_id] is CloudState.RUNNING
    assert p.query([]) == {}


def test_several_launched_in_one_call(subject: Subject) -> None:
    p = subject.provider
    specs = [spec_for(p), spec_for(p)]
    results = p.launch_many(specs)
    assert len(results) == 2 and all(isinstance(r, LaunchRecord) for r in results)
    records = [r for r in results if isinstance(r, LaunchRecord)]
    assert len({r.provider_id for r in records}) == 2
    for record in records:
        assert wait_for(p, record, running) is CloudState.RUNNING
        p.terminate(record)


def test_several_terminated_in_one_call(subject: Subject) -> None:
    """`terminate_many`: every machine stopped, one result per record (None: stopped or gone
    already, a machine never launched included), idempotent; aws sends one TerminateInstances
    for all of them (EC2 refuses a whole call for one unknown id: the provider drops it and
    sends the rest again)."""
    p = subject.provider
    records = [p.launch(spec_for(p)) for _ in range(3)]
    for record in records:
        assert wait_for(p, record, running) is CloudState.RUNNING
    stranger = LaunchRecord("i-0123456789abcdef0", records[0].zone, {})  # never launched
    calls: list[str] = []
    if isinstance(p, AwsProvider):
        p.ec2.meta.events.register(
            "before-parameter-build.ec2.TerminateInstances",
            lambda params, **_: calls.append(",".join(params["InstanceIds"])),
        )
    every = [*records, stranger]
    assert p.terminate_many(every) == {r.provider_id: None for r in every}
    for record in records:
        assert gone(wait_for(p, record, gone))
    if isinstance(p, AwsProvider):  # all of them, then all but the unknown one
        assert calls == [
            ",".join(r.provider_id for r in every),
            ",".join(r.provider_id for r in records),
        ]
    assert p.terminate_many(records) == {r.provider_id: None for r in records}  # idempotent
    assert p.terminate_many([]) == {}


def test_no_cloud_notices_unless_the_cloud_sent_some(subject: Subject) -> None:
    """`notices` (interruption warnings the cloud sends the gateway itself): none here (aws
    without an interruption queue; the others have no such channel), and acknowledging none
    is harmless."""
    p = subject.provider
    assert p.notices() == []
    p.acknowledge([])


def test_a_pool_without_capacity_fails_typed(subject: Subject) -> None:
    p = subject.provider
    spec = spec_for(p)
    subject.exhaust(spec.offer)
    with pytest.raises(CapacityUnavailable) as raised:
        p.launch(spec)
    assert raised.value.instance_type == spec.offer.instance_type
    assert raised.value.zone == spec.offer.zone
    (result,) = p.launch_many([spec])  # in a batch: that launch's result, not a raise
    assert isinstance(result, CapacityUnavailable)


def test_interrupt_only_where_declared(subject: Subject) -> None:
    p = subject.provider
    record = p.launch(spec_for(p))
    assert wait_for(p, record, running) is CloudState.RUNNING
    if not p.supports(Capability.INTERRUPT_SIMULATION):
        with pytest.raises(Unsupported):
            interrupter(p)
        p.terminate(record)
        return
    deadline = interrupter(p).interrupt(record, 0.2)
    assert deadline.endswith("Z") and "T" in deadline
    assert gone(wait_for(p, record, gone))  # reclaimed at the deadline


def test_a_restarted_gateway_finds_what_it_launched(subject: Subject, tmp_path: Path) -> None:
    p = subject.provider
    db = open_database(f"sqlite:///{tmp_path / 'fleet.db'}")
    try:
        fleet = FleetStore(db)
        spec = spec_for(p)
        row = fleet.add_instance(
            provider=p.name,
            instance_type=spec.offer.instance_type,
            market=spec.offer.market,
            zone=spec.offer.zone,
            price_per_hour=spec.offer.price_per_hour,
            token_sha256="x",
        )
        spec = LaunchSpec(row.id, spec.token, spec.offer)
        record = p.launch(spec)
        fleet.set_launch_record(row.id, record.provider_id, record.zone, record.provider_data)
        stored = fleet.instance(row.id)
        assert stored is not None and record_of(stored) == record
    finally:
        db.close()
    assert wait_for(p, record, running) is CloudState.RUNNING
    again = subject.reopen()  # knows nothing but the row
    assert again.query([record_of(stored)]) == {record.provider_id: CloudState.RUNNING}
    again.terminate(record_of(stored))
    assert gone(wait_for(again, record, gone))
    assert gone(wait_for(p, record, gone))
