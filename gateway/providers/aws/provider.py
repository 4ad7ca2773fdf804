"""The `aws` provider: real EC2 instances (Spot or on-demand) through boto3.

One `run_instances` per instance (its user-data carries that instance's token, so instances of
one call could not differ), Spot through `InstanceMarketOptions` (one-time, terminate on
interruption), into the subnet of the offer's zone. Everything it creates — the instance and its
root volume, both in `run_instances`' TagSpecifications — carries `tescape:gateway` (this
gateway's id) and `tescape:instance` (the gateway's instance id); the root volume is deleted
with the instance, so nothing outlives it. `ClientToken` is the gateway's instance id: a launch
retried after a lost answer starts no second machine.

`query` is one paginated DescribeInstances filtered by this gateway's tag, for the whole fleet.
Offers combine the configured types' sizes (DescribeInstanceTypes), where each is offered
(DescribeInstanceTypeOfferings), the newest Spot price per type and zone
(DescribeSpotPriceHistory) and on-demand prices from configuration, the Pricing API or the
built-in us-east-1 list (pricing.py); sizes and zones are read once, Spot prices at most every
`spot_price_seconds` (PRICE_TTL by default), on-demand prices once.

The same describe feeds the periodic orphan sweep (`_sweep`: tagged machines no record has named
for `orphan_grace_seconds` are terminated) and the limits (`max_instances` over every live tagged
machine, `max_hourly_spend` at current prices; `launch` refuses beyond them). With `launch_api:
fleet` a launch is an instant EC2 Fleet over the types of the offer's size (fleet.py).

Interruptions: the agent watches the instance's IMDSv2 (spot/instance-action, rebalance
recommendations) as it watches the local provider's simulated one; with
`interruption_queue_url` the gateway also reads EC2's warnings from EventBridge through SQS
(`notices`, interruptions.py), so a stuck agent's instance is evacuated too.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from gateway.agent_wheel import AgentWheel
from gateway.config import AwsProviderConfig
from gateway.market import catalog
from gateway.providers.aws import fleet
from gateway.providers.aws.errors import RETRYABLE, error_code, error_message, mapped
from gateway.providers.aws.interruptions import InterruptionQueue
from gateway.providers.aws.placement import PlacementScores
from gateway.providers.aws.pricing import PRICING_REGION, OnDemandPrices
from gateway.providers.aws.processors import Processor, compatible, processor_of
from gateway.providers.aws.userdata import Bootstrap, render
from gateway.providers.base import (
    Capability,
    CapacityUnavailable,
    CloudNotice,
    CloudState,
    LaunchRecord,
    LaunchSpec,
    Offer,
    PrecheckFailed,
    Provider,
    ProviderError,
)

log = logging.getLogger(__name__)

GATEWAY_TAG = "tescape:gateway"
INSTANCE_TAG = "tescape:instance"
BAKE_TAG = "tescape:bake"  # a builder of `tescape aws bake` (bake.py)
TERMINATE_BATCH = 1000  # instance ids TerminateInstances takes at most
INSTANCE_ID = re.compile(r"\bi-[0-9a-f]{8,17}\b")  # in EC2's InvalidInstanceID.NotFound message
PRICE_TTL = 300.0  # default of providers.aws.spot_price_seconds (seconds Spot prices are kept)
LINUX = "Linux/UNIX"
STATES = {
    "pending": CloudState.PENDING,
    "running": CloudState.RUNNING,
    "shutting-down": CloudState.STOPPING,
    "stopping": CloudState.STOPPING,
    "stopped": CloudState.STOPPING,  # not live; terminate finishes it
    "terminated": CloudState.TERMINATED,
}
# botocore retries throttling (RequestLimitExceeded) and server errors with exponential backoff
RETRIES = BotoConfig(retries={"mode": "standard", "max_attempts": 6}, connect_timeout=10)
# ... except for RunInstances: EC2 answers InsufficientInstanceCapacity with HTTP 500, which
# botocore would retry; a capacity error should reach the scheduler at once (next pool), so
# launches retry only throttling and server errors themselves (LAUNCH_BACKOFF, seconds).
NO_RETRIES = BotoConfig(retries={"mode": "standard", "max_attempts": 1}, connect_timeout=10)
LAUNCH_BACKOFF = (0.5, 1.0, 2.0, 4.0)
# the Pricing API is optional (a failure falls back to list prices): one retry, short timeouts
PRICING_RETRIES = BotoConfig(
    retries={"mode": "standard", "max_attempts": 2}, connect_timeout=5, read_timeout=10
)


class AwsProvider(Provider):
    name = "aws"

    def __init__(
        self,
        cfg: AwsProviderConfig,
        gateway_url: str,
        gateway_id: str,
        session: boto3.Session | None = None,
        clock: Callable[[], float] = time.monotonic,
        agent_wheel: AgentWheel | None = None,
    ) -> None:
        self.cfg = cfg
        self.agent_wheel = agent_wheel  # the gateway's own (agent.wheel), when it serves one
        self.gateway_url = cfg.gateway_url or gateway_url
        self.gateway_id = gateway_id
        self.idle_seconds = cfg.idle_seconds
        self.launch_batch = cfg.launch_batch
        self.launch_seconds = cfg.launch_timeout_seconds
        caps = {Capability.PRICES}
        if "spot" in cfg.markets:
            caps.add(Capability.SPOT)
        if "on-demand" in cfg.markets:
            caps.add(Capability.ON_DEMAND)
        self.capabilities = frozenset(caps)
        session = session or boto3.Session(region_name=cfg.region)
        kw: dict[str, Any] = {"region_name": cfg.region, "config": RETRIES}
        if cfg.endpoint_url:
            kw["endpoint_url"] = cfg.endpoint_url
        self.ec2 = session.client("ec2", **kw)
        self.ec2_launch = session.client("ec2", **{**kw, "config": NO_RETRIES})
        self.ssm = session.client("ssm", **kw)
        # on-demand prices: the configured table, the Pricing API (pricing.py), the built-in list
        pricing_kw = {**kw, "region_name": PRICING_REGION, "config": PRICING_RETRIES}
        self.prices = OnDemandPrices(
            session.client("pricing", **pricing_kw),
            cfg.region,
            cfg.on_demand_prices,
            catalog.on_demand_price,
        )
        # Spot placement scores: the tiebreak among equally priced Spot pools (placement.py)
        self.placement = PlacementScores(self.ec2, cfg.region, clock)
        self.placement.off = not cfg.placement_scores
        # EventBridge → SQS interruption warnings (interruptions.py), when a queue is configured
        self.queue: InterruptionQueue | None = None
        if cfg.interruption_queue_url:
            self.queue = InterruptionQueue(
                session.client("sqs", **kw),
                cfg.interruption_queue_url,
                cfg.interruption_wait_seconds,
                clock,
            )
        self.clock = clock
        self.sleep = time.sleep
        self.price_ttl = cfg.spot_price_seconds  # seconds Spot prices are reused
        self.page_size = 1000  # DescribeInstances results per page (EC2 allows 5 to 1000)
        self._lock = threading.Lock()
        self._subnets: dict[str, list[str]] | None = None  # zone → subnet ids
        self._sizes: dict[str, tuple[float, float]] | None = None  # type → (vCPUs, GiB)
        # type → its processor (processors.py), from the same DescribeInstanceTypes as the
        # sizes, and for a capsule's source type no longer configured, one describe more
        self._processors: dict[str, Processor] = {}
        self._where: dict[str, set[str]] | None = None  # type → zones it is offered in
        self._spot: dict[tuple[str, str], float] = {}  # (type, zone) → newest Spot price
        self._spot_read_at: float | None = None
        self._ami: str | None = cfg.ami
        self._root_device: str | None = None
        # the periodic orphan sweep (`_sweep`): when each machine or gateway instance id was
        # last named by a record or launched, and when each tagged machine was first seen
        self._named: dict[str, float] = {}
        self._first_seen: dict[str, float] = {}
        # the live machines tagged with this gateway's id (EC2 id → type, zone, market), from
        # the newest DescribeInstances and the launches and terminations since: the limits
        self._machines: dict[str, tuple[str, str, str]] | None = None
        self._bounded = False  # whether the spend limit holds the fleet now (logged on change)

    # -- what is there -------------------------------------------------------------------------

    def check(self) -> None:
        """Credentials, AMI, subnets and instance types, and an address agents can reach."""
        host = self.gateway_url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
        if self.cfg.endpoint_url is None and host in ("127.0.0.1", "localhost", "[::1]", "::1"):
            raise PrecheckFailed(
                f"agents on EC2 cannot reach the gateway at {self.gateway_url}: set "
                "providers.aws.gateway_url (TESCAPE_PROVIDERS__AWS__GATEWAY_URL) to an address "
                "they can"
            )
        self.ami()
        if not self.subnets():
            raise PrecheckFailed(
                "no subnets: configure providers.aws.subnets, or create a default VPC "
                "(aws ec2 create-default-vpc)"
            )
        self.sizes()
        if self.queue is not None:
            self.queue.check()

    def subnets(self) -> dict[str, list[str]]:
        """Zone → subnet ids: the configured ones, else the default VPC's default subnets."""
        if self._subnets is None:
            if self.cfg.subnets:
                args: dict[str, Any] = {"SubnetIds": list(self.cfg.subnets)}
            else:
                args = {"Filters": [{"Name": "default-for-az", "Values": ["true"]}]}
            found: dict[str, list[str]] = {}
            for page in self._pages("describe_subnets", "list subnets", **args):
                for subnet in page["Subnets"]:
                    found.setdefault(subnet["AvailabilityZone"], []).append(subnet["SubnetId"])
            self._subnets = {zone: sorted(ids) for zone, ids in sorted(found.items())}
        return self._subnets

    def sizes(self) -> dict[str, tuple[float, float]]:
        """Instance type → (vCPUs, memory GiB), from DescribeInstanceTypes (read once)."""
        if self._sizes is None:
            sizes: dict[str, tuple[float, float]] = {}
            types = list(self.cfg.instance_types)
            for page in self._pages(
                "describe_instance_types",
                f"describe instance types {', '.join(types)} (providers.aws.instance_types)",
                InstanceTypes=types,
            ):
                for t in page["InstanceTypes"]:
                    sizes[t["InstanceType"]] = (
                        float(t["VCpuInfo"]["DefaultVCpus"]),
                        round(t["MemoryInfo"]["SizeInMiB"] / 1024, 2),
                    )
                    self._processors[t["InstanceType"]] = processor_of(t["InstanceType"], t)
            unknown = sorted(set(types) - set(sizes))
            if unknown:
                raise PrecheckFailed(f"EC2 does not know instance types {', '.join(unknown)}")
            self._sizes = sizes
        return self._sizes

    def processor(self, instance_type: str) -> Processor:
        """An instance type's processor (processors.py): the configured types' from the
        describe that read their sizes; another type's (a capsule taken before the
        configuration changed) from one DescribeInstanceTypes of its own, kept; from the table
        alone when EC2 does not know it."""
        self.sizes()
        found = self._processors.get(instance_type)
        if found is None:
            info: dict[str, Any] | None = None
            try:
                answer = self.ec2.describe_instance_types(InstanceTypes=[instance_type])
                info = next(iter(answer.get("InstanceTypes", [])), None)
            except ClientError as exc:
                if error_code(exc) != "InvalidInstanceType":
                    raise mapped(exc, f"describe instance type {instance_type}") from exc
            except BotoCoreError as exc:
                raise mapped(exc, f"describe instance type {instance_type}") from exc
            found = self._processors[instance_type] = processor_of(instance_type, info)
        return found

    def compatible_types(self, instance_type: str) -> frozenset[str]:
        """The configured types with the architecture and processor manufacturer and family of
        `instance_type` (processors.py): where a capsule taken on one may be restored."""
        with self._lock:
            source = self.processor(instance_type)
            return compatible(source, self._processors, self.cfg.instance_types)

    def zones_of(self) -> dict[str, set[str]]:
        """Instance type → the zones it is offered in (DescribeInstanceTypeOfferings, once)."""
        if self._where is None:
            where: dict[str, set[str]] = {t: set() for t in self.cfg.instance_types}
            for page in self._pages(
                "describe_instance_type_offerings",
                "list where instance types are offered",
                LocationType="availability-zone",
                Filters=[{"Name": "instance-type", "Values": list(self.cfg.instance_types)}],
            ):
                for o in page["InstanceTypeOfferings"]:
                    where.setdefault(o["InstanceType"], set()).add(o["Location"])
            self._where = where
        return self._where

    def spot_prices(self) -> dict[tuple[str, str], float]:
        """(type, zone) → the newest Spot price, from DescribeSpotPriceHistory with StartTime
        now (the price in effect in each pool), reread at most every `spot_price_seconds`."""
        now = self.clock()
        if self._spot_read_at is not None and now - self._spot_read_at < self.price_ttl:
            return self._spot
        newest: dict[tuple[str, str], tuple[datetime, float]] = {}
        for page in self._pages(
            "describe_spot_price_history",
            "read Spot prices",
            InstanceTypes=list(self.cfg.instance_types),
            ProductDescriptions=[LINUX],
            StartTime=datetime.now(UTC),
        ):
            for p in page["SpotPriceHistory"]:
                pool = (p["InstanceType"], p["AvailabilityZone"])
                when = p["Timestamp"]
                if pool not in newest or when > newest[pool][0]:
                    newest[pool] = (when, float(p["SpotPrice"]))
        self._spot = {pool: price for pool, (_, price) in newest.items()}
        self._spot_read_at = now
        return self._spot

    def on_demand_price(self, instance_type: str) -> float | None:
        """`on_demand_prices`, else the Pricing API (once per type), else the built-in
        us-east-1 list price (pricing.py)."""
        return self.prices.price(instance_type)

    def offers(self) -> list[Offer]:
        """Each configured type in each zone that has a subnet and offers it: Spot where EC2
        lists a Spot price there, on-demand everywhere it is offered."""
        with self._lock:
            zones = self.subnets()
            sizes = self.sizes()
            where = self.zones_of()
            spot = self.spot_prices() if Capability.SPOT in self.capabilities else {}
            scores = self.placement.scores(list(self.cfg.instance_types)) if spot else {}
        out: list[Offer] = []
        disk = float(self.cfg.disk_gb)
        for itype in self.cfg.instance_types:
            cpus, ram = sizes[itype]
            for zone in zones:
                if zone not in where.get(itype, set()):
                    continue
                if (itype, zone) in spot:
                    out.append(
                        Offer(
                            instance_type=itype,
                            market="spot",
                            zone=zone,
                            price_per_hour=spot[itype, zone],
                            placement_score=scores.get((itype, zone)),
                            cpu_cores=cpus,
                            ram_gb=ram,
                            disk_gb=disk,
                        )
                    )
                if Capability.ON_DEMAND in self.capabilities:
                    price = self.on_demand_price(itype)
                    out.append(
                        Offer(
                            instance_type=itype,
                            market="on-demand",
                            zone=zone,
                            price_per_hour=price,
                            cpu_cores=cpus,
                            ram_gb=ram,
                            disk_gb=disk,
                        )
                    )
        return out

    def ami(self) -> str:
        """The configured AMI, else Debian 12's official one from its public SSM parameter."""
        if self._ami is None:
            name = self.cfg.ami_parameter
            try:
                got = self.ssm.get_parameter(Name=name)
            except ClientError as exc:
                if error_code(exc) == "ParameterNotFound":
                    raise PrecheckFailed(
                        f"the SSM parameter {name} (providers.aws.ami_parameter) does not exist "
                        f"in {self.cfg.region}: set providers.aws.ami to an AMI id, or "
                        "ami_parameter to a parameter holding one"
                    ) from exc
                raise mapped(exc, f"read the AMI parameter {name}") from exc
            except BotoCoreError as exc:
                raise mapped(exc, f"read the AMI parameter {name}") from exc
            value = str(got["Parameter"]["Value"]).strip()
            if not value.startswith("ami-"):
                raise PrecheckFailed(
                    f"the SSM parameter {name} holds {value[:40]!r}, not an AMI id (ami-...)"
                )
            log.info("AMI %s from the SSM parameter %s", value, name)
            self._ami = value
        return self._ami

    def root_device(self) -> str:
        """The AMI's root device name, so the launch can size the volume and delete it with
        the instance."""
        if self._root_device is None:
            ami = self.ami()
            try:
                images = self.ec2.describe_images(ImageIds=[ami])["Images"]
            except (ClientError, BotoCoreError) as exc:
                raise mapped(exc, f"describe the AMI {ami}") from exc
            if not images:
                raise PrecheckFailed(f"the AMI {ami} does not exist in {self.cfg.region}")
            self._root_device = str(images[0].get("RootDeviceName") or "/dev/xvda")
        return self._root_device

    # -- limits -------------------------------------------------------------------------------

    @property
    def max_instances(self) -> int:
        """How many instances the scheduler may keep: `max_instances`, or — while the machines
        running now leave less of `max_hourly_spend` than the cheapest offer costs — as many
        as run now (the scheduler launches nothing more, and stops an idle machine when other
        work waits). `launch` checks both limits again against EC2's own list."""
        limit = self.cfg.max_instances
        budget = self.cfg.max_hourly_spend
        if budget is None:
            return limit
        machines = self.machines()
        prices = [o.price_per_hour for o in self.offers() if o.price_per_hour is not None]
        bounded = bool(prices) and self.hourly_spend() + min(prices) > budget
        if bounded != self._bounded:
            self._bounded = bounded
            if bounded:
                log.warning(
                    "launching no more EC2 instances: %d run for %.4f USD/hour and the cheapest "
                    "offer (%.4f) would exceed providers.aws.max_hourly_spend (%g)",
                    len(machines),
                    self.hourly_spend(),
                    min(prices),
                    budget,
                )
            else:
                log.info("below providers.aws.max_hourly_spend again: launches resume")
        return min(limit, len(machines)) if bounded else limit

    @max_instances.setter
    def max_instances(self, value: int) -> None:
        self.cfg = self.cfg.model_copy(update={"max_instances": value})

    def machines(self) -> dict[str, tuple[str, str, str]]:
        """The live machines tagged with this gateway's id (one DescribeInstances if none has
        been made yet by this process)."""
        if self._machines is None:
            self._remember(list(self.tagged(self.gateway_id)))
        assert self._machines is not None
        return self._machines

    def _remember(self, ours: list[dict[str, Any]]) -> None:
        self._machines = {
            i["InstanceId"]: (
                i["InstanceType"],
                i.get("Placement", {}).get("AvailabilityZone", ""),
                "spot" if i.get("InstanceLifecycle") == "spot" else "on-demand",
            )
            for i in ours
            if i["State"]["Name"] in ("pending", "running")
        }

    def price(self, instance_type: str, zone: str, market: str) -> float:
        """What a machine costs per hour now: its pool's Spot price, else the on-demand price
        (the most a Spot machine is billed); 0 when neither is known."""
        if market == "spot":
            spot = self._spot.get((instance_type, zone))
            if spot is not None:
                return spot
        return self.on_demand_price(instance_type) or 0.0

    def hourly_spend(self) -> float:
        """The running machines' cost per hour at current prices."""
        return sum(self.price(*m) for m in self.machines().values())

    def _admit(self, offer: Offer) -> None:
        """Refuse a launch beyond `max_instances` (counting every live machine with this
        gateway's tag, rows or not) or `max_hourly_spend`, with the reason."""
        machines = self.machines()
        if len(machines) >= self.cfg.max_instances:
            message = (
                f"not launching {offer.instance_type}: {len(machines)} EC2 instances tagged "
                f"tescape:gateway={self.gateway_id} run, providers.aws.max_instances is "
                f"{self.cfg.max_instances}"
            )
            log.warning("%s", message)
            raise ProviderError(message)
        budget = self.cfg.max_hourly_spend
        cost = offer.price_per_hour or self.price(offer.instance_type, offer.zone, offer.market)
        if budget is not None and self.hourly_spend() + cost > budget:
            message = (
                f"not launching {offer.instance_type} ({offer.market}, {cost:.4f} USD/hour): "
                f"the {len(machines)} running instances cost {self.hourly_spend():.4f} USD/hour "
                f"and providers.aws.max_hourly_spend is {budget:g}"
            )
            log.warning("%s", message)
            # a cheaper offer may still fit: the scheduler tries the next one
            raise CapacityUnavailable(offer.instance_type, offer.zone, offer.market, message)

    # -- launch, query, terminate ---------------------------------------------------------------

    def launch(self, spec: LaunchSpec) -> LaunchRecord:
        offer = spec.offer
        self._admit(offer)
        zones = self.subnets()
        zone = offer.zone or next(iter(zones), "")
        if zone not in zones:
            raise ProviderError(f"no subnet in zone {zone!r} (subnets in: {', '.join(zones)})")
        subnet = zones[zone][0]
        args = self.run_args(spec, subnet)
        if self.cfg.launch_api == "fleet":
            return self._launch_fleet(spec, args)
        action = f"launch {offer.instance_type} ({offer.market}) in {zone}"
        try:
            answer = self._run_instances(args)
        except (ClientError, BotoCoreError) as exc:
            raise mapped(exc, action, offer.instance_type, zone, offer.market) from exc
        (instance,) = answer["Instances"]
        landed = instance.get("Placement", {}).get("AvailabilityZone") or zone
        log.info("launched EC2 %s for %s (%s)", instance["InstanceId"], spec.instance_id, action)
        return self._launched(
            spec,
            instance["InstanceId"],
            landed,
            {
                "subnet": subnet,
                "ami": args["ImageId"],
                "instance_type": offer.instance_type,
                "spot_request_id": instance.get("SpotInstanceRequestId"),
            },
        )

    def _launch_fleet(self, spec: LaunchSpec, args: dict[str, Any]) -> LaunchRecord:
        """`launch_api: fleet`: an instant EC2 Fleet over the offer's size (fleet.py)."""
        got = fleet.launch(self, spec, args)
        zone_of = {s: z for z, ids in self.subnets().items() for s in ids}
        landed = zone_of.get(got["SubnetId"] or "", spec.offer.zone)
        itype = got["InstanceType"] or spec.offer.instance_type
        log.info(
            "launched EC2 %s (%s in %s, by EC2 Fleet) for %s",
            got["InstanceId"],
            itype,
            landed,
            spec.instance_id,
        )
        data = {"subnet": got["SubnetId"], "ami": args["ImageId"], "instance_type": itype}
        return self._launched(spec, got["InstanceId"], landed, data)

    def _launched(
        self, spec: LaunchSpec, ec2_id: str, zone: str, data: dict[str, Any]
    ) -> LaunchRecord:
        """The launch record; the machine is remembered for the limits and the sweep."""
        now = self.clock()
        self._named[ec2_id] = self._named[spec.instance_id] = now
        itype = str(data.get("instance_type") or spec.offer.instance_type)
        self.machines()[ec2_id] = (itype, zone, spec.offer.market)
        return LaunchRecord(
            ec2_id,
            zone,
            {
                "region": self.cfg.region,
                "zone": zone,
                "market": spec.offer.market,
                "gateway_id": self.gateway_id,
                **data,
            },
        )

    def run_args(self, spec: LaunchSpec, subnet: str) -> dict[str, Any]:
        """The RunInstances request for one instance (tests read what moto received)."""
        offer = spec.offer
        tags = [
            {"Key": GATEWAY_TAG, "Value": self.gateway_id},
            {"Key": INSTANCE_TAG, "Value": spec.instance_id},
            {"Key": "Name", "Value": f"tescape {spec.instance_id}"},
        ]
        wheel_url, wheel_sha256 = self.cfg.agent_wheel_url, None
        if wheel_url is None and self.agent_wheel is not None:
            wheel_url = self.agent_wheel.url(self.gateway_url)
            wheel_sha256 = self.agent_wheel.sha256
        user_data = render(
            Bootstrap(
                gateway_url=self.gateway_url,
                instance_id=spec.instance_id,
                token=spec.token,
                agent_wheel_url=wheel_url,
                cpu_cores=offer.cpu_cores,
                ram_gb=offer.ram_gb,
                disk_gb=offer.disk_gb,
                agent_wheel_sha256=wheel_sha256,
            )
        )
        args: dict[str, Any] = {
            "ImageId": self.ami(),
            "InstanceType": offer.instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "SubnetId": subnet,
            "UserData": user_data,
            "ClientToken": spec.instance_id[:64],
            "InstanceInitiatedShutdownBehavior": "terminate",
            "MetadataOptions": {
                "HttpTokens": "required",  # IMDSv2 only
                "HttpEndpoint": "enabled",
                "HttpPutResponseHopLimit": 1,  # containers (one hop further) get no token
            },
            "BlockDeviceMappings": [
                {
                    "DeviceName": self.root_device(),
                    "Ebs": {
                        "VolumeSize": self.cfg.disk_gb,
                        "VolumeType": "gp3",
                        "DeleteOnTermination": True,
                    },
                }
            ],
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": tags},
                {"ResourceType": "volume", "Tags": tags},
            ],
        }
        if offer.market == "spot":
            if Capability.SPOT not in self.capabilities:
                raise ProviderError("providers.aws.markets does not include spot")
            spot: dict[str, Any] = {
                "SpotInstanceType": "one-time",
                "InstanceInterruptionBehavior": "terminate",
            }
            if self.cfg.spot_max_price is not None:
                spot["MaxPrice"] = f"{self.cfg.spot_max_price:.5f}"
            args["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": spot}
            args["TagSpecifications"].append(
                {"ResourceType": "spot-instances-request", "Tags": tags}
            )
        if self.cfg.security_groups:
            args["SecurityGroupIds"] = list(self.cfg.security_groups)
        if self.cfg.instance_profile:
            key = "Arn" if self.cfg.instance_profile.startswith("arn:") else "Name"
            args["IamInstanceProfile"] = {key: self.cfg.instance_profile}
        if self.cfg.key_name:
            args["KeyName"] = self.cfg.key_name
        return args

    def query(self, records: Sequence[LaunchRecord]) -> dict[str, CloudState | None]:
        """One paginated DescribeInstances per gateway id the records were tagged with (one
        for the whole fleet, unless the gateway's id changed); a record whose machine is not
        among them is None. A record made before its launch returned (its provider id is the
        gateway's instance id) is found by its `tescape:instance` tag."""
        if not records:
            return {}
        gateways = {str(r.provider_data.get("gateway_id") or self.gateway_id) for r in records}
        by_id: dict[str, CloudState] = {}
        by_tag: dict[str, CloudState] = {}
        ours: list[dict[str, Any]] | None = None
        for gateway in sorted(gateways):
            found = list(self.tagged(gateway))
            if gateway == self.gateway_id:
                ours = found
            for instance in found:
                state = STATES.get(instance["State"]["Name"], CloudState.STOPPING)
                by_id[instance["InstanceId"]] = state
                for tag in instance.get("Tags", []):
                    if tag["Key"] == INSTANCE_TAG and _livelier(state, by_tag.get(tag["Value"])):
                        by_tag[tag["Value"]] = state
        if ours is not None:
            self._remember(ours)
            self._sweep(ours, records)
        return {r.provider_id: by_id.get(r.provider_id, by_tag.get(r.provider_id)) for r in records}

    def _sweep(self, ours: list[dict[str, Any]], records: Sequence[LaunchRecord]) -> None:
        """The periodic orphan sweep, from the describe the scheduler's tick made anyway: a
        pending or running machine tagged with this gateway's id that no record has named (by
        EC2 id or by its `tescape:instance` tag) for `orphan_grace_seconds` — since it was
        launched, last named, or first seen by this process — is terminated. The grace covers a
        launch whose row is not stored yet and a caller that queries only some instances; the
        scheduler names every live row on every tick, so a machine with a row is never taken."""
        grace = self.cfg.orphan_grace_seconds
        if grace <= 0:
            return
        now = self.clock()
        for record in records:
            self._named[record.provider_id] = now
        live = set()
        orphans: list[str] = []
        for instance in ours:
            if instance["State"]["Name"] not in ("pending", "running"):
                continue
            ec2_id = instance["InstanceId"]
            live.add(ec2_id)
            tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
            since = max(
                self._first_seen.setdefault(ec2_id, now),
                self._named.get(ec2_id, -math.inf),
                self._named.get(tags.get(INSTANCE_TAG, ""), -math.inf),
            )
            if now - since >= grace:
                orphans.append(ec2_id)
        self._first_seen = {i: t for i, t in self._first_seen.items() if i in live}
        self._named = {k: t for k, t in self._named.items() if now - t < 2 * grace}
        if not orphans:
            return
        log.warning(
            "terminating %d EC2 instances tagged tescape:gateway=%s that no instance row has "
            "named for %.0f s (orphans): %s",
            len(orphans),
            self.gateway_id,
            grace,
            ", ".join(orphans),
        )
        for start in range(0, len(orphans), TERMINATE_BATCH):
            batch = orphans[start : start + TERMINATE_BATCH]
            failed = self._terminate_batch(batch)  # the next tick's sweep tries those again
            for ec2_id in batch:
                if ec2_id in failed:
                    log.warning("orphan %s: %s", ec2_id, failed[ec2_id])
                else:
                    self.machines().pop(ec2_id, None)

    def tagged(self, gateway_id: str) -> Iterable[dict[str, Any]]:
        """Every instance tagged with `gateway_id` (terminated ones stay listed about an hour)."""
        for page in self._pages(
            "describe_instances",
            "describe instances",
            Filters=[{"Name": f"tag:{GATEWAY_TAG}", "Values": [gateway_id]}],
            MaxResults=self.page_size,
        ):
            for reservation in page["Reservations"]:
                yield from reservation["Instances"]

    def orphans(self, records: Sequence[LaunchRecord]) -> list[LaunchRecord]:
        """Pending or running instances tagged with this gateway's id that no record names,
        by EC2 id or by the gateway's instance id in their `tescape:instance` tag."""
        if self.cfg.launch_api == "fleet":
            fleet.delete_templates(self)
        known = {r.provider_id for r in records}
        found = []
        for instance in self.tagged(self.gateway_id):
            tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
            if instance["State"]["Name"] not in ("pending", "running"):
                continue
            if instance["InstanceId"] in known or tags.get(INSTANCE_TAG) in known:
                continue
            if BAKE_TAG in tags:  # `tescape aws bake`'s builder: it terminates its own
                continue
            zone = instance.get("Placement", {}).get("AvailabilityZone", "")
            data = {"region": self.cfg.region, "gateway_id": self.gateway_id}
            found.append(LaunchRecord(instance["InstanceId"], zone, data))
        return found

    def terminate(self, record: LaunchRecord) -> None:
        """Terminate the instance (its root volume goes with it; a Spot request of one-time
        type closes). An instance already gone is fine."""
        error = self.terminate_many([record]).get(record.provider_id)
        if error is not None:
            raise error

    def terminate_many(self, records: Sequence[LaunchRecord]) -> dict[str, ProviderError | None]:
        """Terminate several instances with one TerminateInstances per `TERMINATE_BATCH` ids
        (EC2's limit), not one call each: a tick that retires many idle machines makes one
        call. Instances already gone are fine. EC2 refuses a whole call for one bad id, so an
        id it says does not exist is dropped and the rest sent again, and any other refusal of
        a batch (one instance's termination protection, say) is retried one instance at a
        time: each record gets its own error, and one refusal keeps no other machine running.
        A record whose launch answer was never stored (its provider id is the gateway's
        instance id) is found by its `tescape:instance` tag (one describe per gateway id)."""
        results: dict[str, ProviderError | None] = {r.provider_id: None for r in records}
        owner: dict[str, str] = {}  # EC2 id → the provider id of the record that names it
        for record in records:
            if record.provider_id.startswith("i-"):
                owner[record.provider_id] = record.provider_id
        untagged = [r for r in records if not r.provider_id.startswith("i-")]
        if untagged:
            try:
                owner.update(self._by_instance_tag(untagged))
            except ProviderError as exc:
                for record in untagged:
                    results[record.provider_id] = exc
        ids = list(owner)
        if self._machines is not None:
            for ec2_id in ids:
                self._machines.pop(ec2_id, None)
        for start in range(0, len(ids), TERMINATE_BATCH):
            failed = self._terminate_batch(ids[start : start + TERMINATE_BATCH])
            for ec2_id, error in failed.items():
                results[owner[ec2_id]] = error
        return results

    def _by_instance_tag(self, records: Sequence[LaunchRecord]) -> dict[str, str]:
        """EC2 id → gateway instance id, for the not yet terminated machines tagged
        `tescape:instance` with one of the records' provider ids (a launch whose answer was
        never stored)."""
        wanted = {r.provider_id for r in records}
        gateways = {str(r.provider_data.get("gateway_id") or self.gateway_id) for r in records}
        found: dict[str, str] = {}
        for gateway in sorted(gateways):
            for instance in self.tagged(gateway):
                if instance["State"]["Name"] == "terminated":
                    continue
                for tag in instance.get("Tags", []):
                    if tag["Key"] == INSTANCE_TAG and tag["Value"] in wanted:
                        found[instance["InstanceId"]] = tag["Value"]
        return found

    def _terminate_batch(self, ids: list[str]) -> dict[str, ProviderError]:
        """One TerminateInstances for up to TERMINATE_BATCH ids; the ids that could not be
        terminated, each with its error (none: all terminated or gone already)."""
        pending = list(ids)
        while pending:
            action = f"terminate {', '.join(pending[:5])}" + (
                f" and {len(pending) - 5} more" if len(pending) > 5 else ""
            )
            try:
                self.ec2.terminate_instances(InstanceIds=pending)
                return {}
            except ClientError as exc:
                code = error_code(exc)
                if code == "InvalidInstanceID.NotFound":
                    if len(pending) == 1:
                        return {}
                    named = set(INSTANCE_ID.findall(error_message(exc))) & set(pending)
                    if named:  # gone already: the rest once more
                        pending = [i for i in pending if i not in named]
                        continue
                if code in RETRYABLE or len(pending) == 1:  # botocore has retried already
                    error = mapped(exc, action)
                    return dict.fromkeys(pending, error)
                log.warning(
                    "TerminateInstances for %d instances: %s; one at a time instead",
                    len(pending),
                    code,
                )
                failed: dict[str, ProviderError] = {}
                for ec2_id in pending:
                    failed.update(self._terminate_batch([ec2_id]))
                return failed
            except BotoCoreError as exc:
                error = mapped(exc, action)
                return dict.fromkeys(pending, error)
        return {}

    def notices(self) -> list[CloudNotice]:
        """EC2's Spot interruption warnings and rebalance recommendations from the configured
        SQS queue (interruptions.py); none without one."""
        return self.queue.receive() if self.queue is not None else []

    def acknowledge(self, notices: Sequence[CloudNotice]) -> None:
        if self.queue is not None:
            self.queue.acknowledge(notices)

    def log_hint(self, record: LaunchRecord) -> str:
        region = record.provider_data.get("region", self.cfg.region)
        return (
            f"the instance's console output (aws ec2 get-console-output --region {region} "
            f"--instance-id {record.provider_id}); the bootstrap logs to "
            "/var/log/tescape-bootstrap.log"
        )

    # -- helpers ----------------------------------------------------------------------------

    def _run_instances(self, args: dict[str, Any]) -> dict[str, Any]:
        """RunInstances, retried with backoff on throttling and server errors only (the same
        ClientToken: a retry whose first try did launch returns that instance)."""
        for delay in (*LAUNCH_BACKOFF, None):
            try:
                answer: dict[str, Any] = self.ec2_launch.run_instances(**args)
                return answer
            except ClientError as exc:
                if delay is None or error_code(exc) not in RETRYABLE:
                    raise
                log.warning("RunInstances: %s; retrying in %.1f s", error_code(exc), delay)
                self.sleep(delay)
        raise AssertionError("unreachable")

    def _pages(self, operation: str, action: str, **kwargs: Any) -> Iterable[dict[str, Any]]:
        """Every page of a paginated EC2 call, errors mapped."""
        try:
            paginator = self.ec2.get_paginator(operation)
            yield from paginator.paginate(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise mapped(exc, action) from exc


def _livelier(state: CloudState, before: CloudState | None) -> bool:
    """Of two machines with one instance tag (a retried launch), report the live one."""
    order = [CloudState.TERMINATED, CloudState.STOPPING, CloudState.PENDING, CloudState.RUNNING]
    return before is None or order.index(state) > order.index(before)
