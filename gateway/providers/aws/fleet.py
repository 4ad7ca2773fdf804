"""Launch through an instant EC2 Fleet (`providers.aws.launch_api: fleet`): one `CreateFleet` of
type `instant` for one instance, over every configured type of the offer's size (vCPUs and
memory: the scheduler's plan for the instance holds on any of them) in every zone with a subnet
that offers it, Spot by `price-capacity-optimized`, on-demand by `lowest-price`. EC2 picks the
pool; one call replaces the scheduler's walk through pools after capacity errors.

The instance's user-data (its own registration token) cannot be given to `CreateFleet`, only
to a launch template, so each launch makes a launch template (tagged like everything else),
launches from it, and deletes it: three calls instead of one `RunInstances`. A template left by
a gateway that died in between is deleted with the orphans at the next start.
"""

from __future__ import annotations

import base64
import logging
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from gateway.providers.aws.errors import CAPACITY, PRECHECK, QUOTA, error_code, mapped
from gateway.providers.base import (
    CapacityUnavailable,
    LaunchSpec,
    PrecheckFailed,
    ProviderError,
)

if TYPE_CHECKING:
    from gateway.providers.aws.provider import AwsProvider

log = logging.getLogger(__name__)

# RunInstances' arguments that a launch template does not hold (CreateFleet decides them)
NOT_IN_TEMPLATE = (
    "MinCount",
    "MaxCount",
    "SubnetId",
    "ClientToken",
    "InstanceType",
    "InstanceMarketOptions",
)


def template_name(gateway_id: str, instance_id: str) -> str:
    return f"tescape-{gateway_id}-{instance_id}"[:128]


def template_data(run_args: dict[str, Any]) -> dict[str, Any]:
    """The launch template for one instance: its RunInstances request less what the fleet
    decides (type, subnet, market), the user-data base64-encoded as templates require."""
    data = {k: v for k, v in run_args.items() if k not in NOT_IN_TEMPLATE}
    data["UserData"] = base64.b64encode(run_args["UserData"].encode()).decode()
    data["TagSpecifications"] = [
        t for t in run_args["TagSpecifications"] if t["ResourceType"] in ("instance", "volume")
    ]
    return data


def overrides(provider: AwsProvider, spec: LaunchSpec) -> list[dict[str, Any]]:
    """Every (type, subnet) the instance may land in: the configured types of the offer's size
    (of those a capsule's restore can run on, `spec.types`), each in the zones that offer it
    and have a subnet, less the Spot pools scored below `min_placement_score`; the offer's own
    pool first."""
    offer = spec.offer
    sizes = provider.sizes()
    size = sizes.get(offer.instance_type)
    where = provider.zones_of()
    subnets = provider.subnets()
    pools: list[tuple[str, str]] = [(offer.instance_type, offer.zone)]
    for itype in provider.cfg.instance_types:
        if sizes.get(itype) != size or (spec.types is not None and itype not in spec.types):
            continue
        for zone in subnets:
            if zone in where.get(itype, set()) and (itype, zone) not in pools:
                pools.append((itype, zone))
    if offer.market == "spot":
        pools = well_placed(provider, pools)
    out = []
    for itype, zone in pools:
        if zone not in subnets:
            continue
        override: dict[str, Any] = {"InstanceType": itype, "SubnetId": subnets[zone][0]}
        if offer.market == "spot" and provider.cfg.spot_max_price is not None:
            override["MaxPrice"] = f"{provider.cfg.spot_max_price:.5f}"
        out.append(override)
    return out


def well_placed(provider: AwsProvider, pools: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The Spot pools whose placement score (placement.py) is at least
    `providers.aws.min_placement_score`; a pool without a score (none read, or the feature off)
    is kept. When every scored pool is below it, all are kept (a launch somewhere beats none),
    and the log says so."""
    floor = provider.cfg.min_placement_score
    if floor <= 0:
        return pools
    scores = provider.placement.scores(list(provider.cfg.instance_types))
    low = [p for p in pools if scores.get(p) is not None and scores[p] < floor]
    if not low:
        return pools
    named = ", ".join(f"{t} in {z} ({scores[t, z]})" for t, z in low)
    if len(low) == len(pools):
        log.warning(
            "every pool of this EC2 Fleet launch has a Spot placement score below "
            "providers.aws.min_placement_score (%d): %s; keeping them all",
            floor,
            named,
        )
        return pools
    log.info(
        "leaving Spot pools out of the EC2 Fleet launch, their placement score below "
        "providers.aws.min_placement_score (%d): %s",
        floor,
        named,
    )
    return [p for p in pools if p not in low]


def fleet_request(
    provider: AwsProvider, spec: LaunchSpec, template_id: str, tags: list[dict[str, str]]
) -> dict[str, Any]:
    market = spec.offer.market
    request: dict[str, Any] = {
        "Type": "instant",
        "ClientToken": spec.instance_id[:64],
        "LaunchTemplateConfigs": [
            {
                "LaunchTemplateSpecification": {
                    "LaunchTemplateId": template_id,
                    "Version": "1",
                },
                "Overrides": overrides(provider, spec),
            }
        ],
        "TargetCapacitySpecification": {
            "TotalTargetCapacity": 1,
            "DefaultTargetCapacityType": market,
            "SpotTargetCapacity": 1 if market == "spot" else 0,
            "OnDemandTargetCapacity": 0 if market == "spot" else 1,
        },
        "TagSpecifications": [{"ResourceType": "fleet", "Tags": tags}],
    }
    if market == "spot":
        request["SpotOptions"] = {
            "AllocationStrategy": "price-capacity-optimized",
            "InstanceInterruptionBehavior": "terminate",
        }
    else:
        request["OnDemandOptions"] = {"AllocationStrategy": "lowest-price"}
    return request


def launch(provider: AwsProvider, spec: LaunchSpec, run_args: dict[str, Any]) -> dict[str, Any]:
    """Launch one instance through a launch template and an instant fleet; the fleet's
    answer for it: {"InstanceId", "InstanceType", "SubnetId", "Lifecycle"}."""
    offer = spec.offer
    tags = next(t["Tags"] for t in run_args["TagSpecifications"] if t["ResourceType"] == "instance")
    action = f"launch {offer.instance_type} or a type of its size ({offer.market})"
    try:
        made = provider.ec2.create_launch_template(
            LaunchTemplateName=template_name(provider.gateway_id, spec.instance_id),
            LaunchTemplateData=template_data(run_args),
            TagSpecifications=[{"ResourceType": "launch-template", "Tags": tags}],
            ClientToken=spec.instance_id[:64],
        )
    except (ClientError, BotoCoreError) as exc:
        raise mapped(exc, f"create a launch template to {action}") from exc
    template_id = made["LaunchTemplate"]["LaunchTemplateId"]
    try:
        request = fleet_request(provider, spec, template_id, tags)
        try:
            answer = provider.ec2_launch.create_fleet(**request)
        except (ClientError, BotoCoreError) as exc:
            raise mapped(exc, action, offer.instance_type, offer.zone, offer.market) from exc
    finally:
        try:
            provider.ec2.delete_launch_template(LaunchTemplateId=template_id)
        except (ClientError, BotoCoreError) as exc:  # deleted with the orphans at next start
            log.warning("deleting launch template %s: %s", template_id, exc)
    for group in answer.get("Instances", []):
        for instance_id in group.get("InstanceIds", []):
            chosen = group.get("LaunchTemplateAndOverrides", {}).get("Overrides", {})
            return {
                "InstanceId": instance_id,
                "InstanceType": group.get("InstanceType") or chosen.get("InstanceType"),
                "SubnetId": chosen.get("SubnetId"),
                "Lifecycle": group.get("Lifecycle", offer.market),
            }
    raise fleet_error(answer.get("Errors", []), action, spec)


def fleet_error(errors: list[dict[str, Any]], action: str, spec: LaunchSpec) -> ProviderError:
    """An instant fleet that launched nothing says why per pool: capacity everywhere is
    `CapacityUnavailable` for the offer's pool, a configuration error `PrecheckFailed`."""
    offer = spec.offer
    codes = sorted({str(e.get("ErrorCode", "")) for e in errors}) or ["no instance launched"]
    detail = "; ".join(
        f"{e.get('ErrorCode')}: {e.get('ErrorMessage', '')}".strip() for e in errors[:5]
    )
    text = f"EC2 Fleet could not {action}: {detail or codes[0]}"
    if any(c in PRECHECK for c in codes):
        return PrecheckFailed(text)
    if all(c in CAPACITY or c in QUOTA for c in codes):
        return CapacityUnavailable(offer.instance_type, offer.zone, offer.market, text)
    return ProviderError(text)


def delete_templates(provider: AwsProvider) -> int:
    """Delete the launch templates tagged with this gateway's id (a launch interrupted between
    making its template and deleting it); how many."""
    deleted = 0
    try:
        pages = provider.ec2.get_paginator("describe_launch_templates").paginate(
            Filters=[{"Name": "tag:tescape:gateway", "Values": [provider.gateway_id]}]
        )
        for page in pages:
            for template in page.get("LaunchTemplates", []):
                provider.ec2.delete_launch_template(LaunchTemplateId=template["LaunchTemplateId"])
                deleted += 1
    except ClientError as exc:
        if error_code(exc) != "InvalidLaunchTemplateId.NotFound":
            log.warning("deleting leftover launch templates: %s", exc)
    except BotoCoreError as exc:
        log.warning("deleting leftover launch templates: %s", exc)
    if deleted:
        log.warning("deleted %d launch templates a previous launch left", deleted)
    return deleted
