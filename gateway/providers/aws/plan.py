"""What the aws provider will create and the least-privilege IAM policy it needs, from the
configuration: `tescape aws plan` prints both (docs/aws.md shows the same policy). The actions
are exactly the API calls the provider makes (a test checks the two agree)."""

from __future__ import annotations

from typing import Any

from gateway.config import AwsProviderConfig
from gateway.providers.aws.interruptions import queue_arn
from gateway.providers.aws.preflight import QUOTA_CODES

# EC2 calls the provider makes (gateway/providers/aws/provider.py), as IAM actions
READ_ACTIONS = [
    "ec2:DescribeInstances",
    "ec2:DescribeSubnets",
    "ec2:DescribeImages",
    "ec2:DescribeInstanceTypes",
    "ec2:DescribeInstanceTypeOfferings",
    "ec2:DescribeSpotPriceHistory",
]
LAUNCH_ACTIONS = ["ec2:RunInstances", "ec2:CreateTags"]  # tags are set in RunInstances itself
TERMINATE_ACTIONS = ["ec2:TerminateInstances"]
# Spot placement scores (gateway/providers/aws/placement.py), with Spot and placement_scores
PLACEMENT_ACTIONS = ["ec2:GetSpotPlacementScores", "ec2:DescribeAvailabilityZones"]
# on-demand prices of the types not in on_demand_prices (gateway/providers/aws/pricing.py)
PRICING_ACTIONS = ["pricing:GetProducts"]
# interruption_queue_url (gateway/providers/aws/interruptions.py): EventBridge → SQS warnings
QUEUE_ACTIONS = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"]
# launch_api: fleet (gateway/providers/aws/fleet.py): a launch template per launch
FLEET_ACTIONS = [
    "ec2:CreateFleet",
    "ec2:CreateLaunchTemplate",
    "ec2:DeleteLaunchTemplate",
    "ec2:DescribeLaunchTemplates",
]


def iam_policy(cfg: AwsProviderConfig, gateway_id: str | None = None) -> dict[str, Any]:
    """The gateway's policy: reads anywhere, launches, and terminates only instances carrying
    this gateway's tag (any tescape gateway's when its id is not known yet)."""
    statements: list[dict[str, Any]] = [
        {"Sid": "Read", "Effect": "Allow", "Action": READ_ACTIONS, "Resource": "*"},
        {"Sid": "Launch", "Effect": "Allow", "Action": LAUNCH_ACTIONS, "Resource": "*"},
        {
            "Sid": "TerminateOnlyOurs",
            "Effect": "Allow",
            "Action": TERMINATE_ACTIONS[0],
            "Resource": "*",
            "Condition": {"StringLike": {"aws:ResourceTag/tescape:gateway": gateway_id or "*"}},
        },
    ]
    if cfg.launch_api == "fleet":
        statements.append(
            {"Sid": "Fleet", "Effect": "Allow", "Action": FLEET_ACTIONS, "Resource": "*"}
        )
        statements.append(
            {
                "Sid": "FleetServiceLinkedRole",
                "Effect": "Allow",
                "Action": "iam:CreateServiceLinkedRole",
                "Resource": "*",
                "Condition": {"StringEquals": {"iam:AWSServiceName": "ec2fleet.amazonaws.com"}},
            }
        )
    priced = "on-demand" in cfg.markets or cfg.max_hourly_spend is not None
    if priced and not set(cfg.instance_types) <= set(cfg.on_demand_prices):
        statements.append(
            {"Sid": "OnDemandPrices", "Effect": "Allow", "Action": PRICING_ACTIONS, "Resource": "*"}
        )
    if cfg.interruption_queue_url:
        statements.append(
            {
                "Sid": "InterruptionQueue",
                "Effect": "Allow",
                "Action": QUEUE_ACTIONS,
                "Resource": queue_arn(cfg.interruption_queue_url, cfg.region),
            }
        )
    if cfg.ami is None:
        parameter = cfg.ami_parameter.lstrip("/")
        statements.append(
            {
                "Sid": "AmiParameter",
                "Effect": "Allow",
                "Action": "ssm:GetParameter",
                "Resource": f"arn:aws:ssm:{cfg.region}::parameter/{parameter}",
            }
        )
    if cfg.instance_profile:
        role = cfg.instance_profile.rsplit("/", 1)[-1]
        statements.append(
            {
                "Sid": "PassInstanceRole",
                "Effect": "Allow",
                "Action": "iam:PassRole",
                "Resource": f"arn:aws:iam::*:role/{role}",
            }
        )
    if "spot" in cfg.markets and cfg.placement_scores:
        statements[0]["Action"] = [*READ_ACTIONS, *PLACEMENT_ACTIONS]
    if "spot" in cfg.markets:
        statements.append(
            {
                "Sid": "SpotServiceLinkedRole",
                "Effect": "Allow",
                "Action": "iam:CreateServiceLinkedRole",
                "Resource": "*",
                "Condition": {"StringEquals": {"iam:AWSServiceName": "spot.amazonaws.com"}},
            }
        )
    # `tescape aws check` reads the markets' vCPU quotas (gateway/providers/aws/preflight.py)
    statements.append(
        {
            "Sid": "CheckQuotas",
            "Effect": "Allow",
            "Action": "servicequotas:GetServiceQuota",
            "Resource": [
                f"arn:aws:servicequotas:{cfg.region}:*:ec2/{QUOTA_CODES[m]}" for m in cfg.markets
            ],
        }
    )
    return {"Version": "2012-10-17", "Statement": statements}


def plan_lines(cfg: AwsProviderConfig, gateway_id: str | None = None) -> list[str]:
    """What a gateway with this configuration creates, in words."""
    markets = " and ".join(cfg.markets)
    where = ", ".join(cfg.subnets) if cfg.subnets else "the default VPC's default subnets"
    ami = cfg.ami or f"Debian 12 (SSM parameter {cfg.ami_parameter})"
    tag = gateway_id or "<made at first start, kept in the data dir>"
    return [
        f"region {cfg.region}; up to {cfg.max_instances} EC2 instances at once ({markets})",
        f"types: {', '.join(cfg.instance_types)}; subnets: {where}",
        f"AMI: {ami}; root volume {cfg.disk_gb} GB gp3, deleted with its instance",
        f"each instance and its volume tagged tescape:gateway={tag} and tescape:instance=<id>",
        "IMDSv2 only (hop limit 1); user-data carries the gateway URL and a one-time "
        "registration token",
        "launch: "
        + (
            "an instant EC2 Fleet over the types of the offer's size, through a launch "
            "template made and deleted per launch"
            if cfg.launch_api == "fleet"
            else "one RunInstances per instance"
        ),
        f"instance profile: {cfg.instance_profile or 'none (no S3 access from instances)'}",
        "idle instances terminated after "
        + (f"{cfg.idle_seconds:g} s" if cfg.idle_seconds else "scheduler.idle_timeout_seconds"),
        "interruption warnings: "
        + (
            f"read from the SQS queue {cfg.interruption_queue_url} (EventBridge) and from IMDS"
            if cfg.interruption_queue_url
            else "from IMDS by each agent (no interruption_queue_url)"
        ),
        "nothing else is created: no VPC, security group, key pair, role, bucket or queue",
    ]
