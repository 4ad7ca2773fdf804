"""What `tescape aws check` asks beyond the provider's own check (credentials, AMI, subnets,
types): whether the account's vCPU quotas let the configured fleet launch at all, and whether the
capsule store is one the instances can share and this gateway can write.

EC2 limits running instances by vCPUs per family group and market (Service Quotas, service
`ec2`); a new account's Spot quota is often below one large type, and then every launch fails
with `MaxSpotInstanceCountExceeded` / `VcpuLimitExceeded` long after the gateway started. The
quota names are AWS's; only the "standard" families (A, C, D, H, I, M, R, T, Z) have the two
quotas read here, other families (G, P, X, Inf, …) have their own and are reported as not checked.

The capsule store must be S3 with the aws provider: a capsule taken on one instance is restored on
another, which cannot read the gateway's or the first instance's disk. The probe writes, reads and
deletes one small object under the store's prefix with the gateway's credentials (the instances
use their instance profile's, which this cannot test from here).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from gateway.config import AwsProviderConfig

# Service Quotas codes of EC2's vCPU limits for the standard families
QUOTA_CODES = {
    "spot": "L-34B43A08",  # All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests
    "on-demand": "L-1216C47A",  # Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances
}
STANDARD_FAMILIES = frozenset("acdhimrtz")

Level = Literal["ok", "warning", "error"]


@dataclass(frozen=True)
class Finding:
    level: Level
    text: str


def standard(instance_type: str) -> bool:
    """Whether a type counts against the standard-family quotas (m5.large yes, g5.xlarge no)."""
    family = instance_type.split(".", 1)[0].lower()
    if family.startswith(("inf", "trn", "dl", "vt", "mac", "hpc", "u-")):
        return False
    return family[:1] in STANDARD_FAMILIES


def quotas_client(cfg: AwsProviderConfig) -> Any:
    """A Service Quotas client for the provider's region (and endpoint, for moto)."""
    import boto3

    kw = {"endpoint_url": cfg.endpoint_url} if cfg.endpoint_url else {}
    return boto3.Session(region_name=cfg.region).client("service-quotas", **kw)


def read_quotas(client: Any, markets: list[str]) -> dict[str, float | str]:
    """Market → its vCPU quota, or why it could not be read."""
    found: dict[str, float | str] = {}
    for market in markets:
        try:
            answer = client.get_service_quota(ServiceCode="ec2", QuotaCode=QUOTA_CODES[market])
            found[market] = float(answer["Quota"]["Value"])
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("AccessDeniedException", "AccessDenied"):
                found[market] = "not allowed to read it: grant servicequotas:GetServiceQuota"
            elif code == "NoSuchResourceException":
                found[market] = "Service Quotas does not know it in this region"
            else:
                found[market] = f"{code or 'error'}: {exc}"
        except BotoCoreError as exc:
            found[market] = str(exc)
    return found


def quota_findings(
    quotas: Mapping[str, float | str],
    vcpus: Mapping[str, float],
    max_instances: int,
) -> list[Finding]:
    """What the quotas mean for the configured types (`vcpus`: type → vCPUs) and count."""
    out: list[Finding] = []
    checked = {t: v for t, v in vcpus.items() if standard(t)}
    others = sorted(set(vcpus) - set(checked))
    if others:
        out.append(
            Finding(
                "warning",
                f"vCPU quotas of {', '.join(others)} not checked (not a standard family: their "
                "quota has another code; see Service Quotas → Amazon EC2)",
            )
        )
    if not checked:
        return out
    largest_type = max(checked, key=lambda t: checked[t])
    largest = checked[largest_type]
    for market, quota in quotas.items():
        name = f"{market} vCPU quota ({QUOTA_CODES[market]})"
        if isinstance(quota, str):
            out.append(Finding("warning", f"{name} not checked: {quota}"))
        elif quota < largest:
            out.append(
                Finding(
                    "error",
                    f"{name} is {quota:g} vCPUs, below one {largest_type} ({largest:g} vCPUs): "
                    f"EC2 refuses every {market} launch of it. Ask for more in Service Quotas, "
                    "or leave the type out of providers.aws.instance_types",
                )
            )
        elif quota < max_instances * largest:
            fits = math.floor(quota / largest)
            out.append(
                Finding(
                    "warning",
                    f"{name} is {quota:g} vCPUs: at most {fits} {largest_type} at once, not "
                    f"providers.aws.max_instances = {max_instances}",
                )
            )
        else:
            out.append(Finding("ok", f"{name}: {quota:g} vCPUs"))
    return out


def store_findings(store_url: str, s3: Mapping[str, Any], region: str) -> list[Finding]:
    """Whether the capsule store is S3 and writable, and in the instances' region."""
    from capsule_runtime.capsules.errors import CapsuleStoreError
    from capsule_runtime.capsules.s3store import S3Store
    from capsule_runtime.capsules.store import open_store

    try:
        store = open_store({"url": store_url, "s3": dict(s3)})
    except ValueError as exc:
        return [Finding("error", f"capsules.store: {exc}")]
    if not isinstance(store, S3Store):
        return [
            Finding(
                "error",
                f"capsules.store is {store_url}: with the aws provider it must be "
                "s3://bucket/prefix (a capsule taken on one instance is restored on another, "
                "which cannot read this disk)",
            )
        ]
    probe = f"check/{secrets.token_hex(8)}"
    body = b"tescape aws check\n"
    try:
        store.put(probe, body)
        if store.get(probe) != body:
            return [Finding("error", f"{store.describe()}: a probe object read back changed")]
        store.delete_prefix(probe)
    except CapsuleStoreError as exc:
        return [Finding("error", f"capsule store not writable with these credentials: {exc}")]
    out = [Finding("ok", f"capsule store {store.describe()} can be written, read and deleted")]
    try:
        where = store.client().get_bucket_location(Bucket=store.bucket)
        bucket_region = where.get("LocationConstraint") or "us-east-1"
    except (ClientError, BotoCoreError):
        return out  # not every S3-compatible server answers it
    if bucket_region != region:
        out.append(
            Finding(
                "warning",
                f"the capsule bucket is in {bucket_region}, the instances in {region}: every "
                "capsule crosses regions (slower, and billed per GB)",
            )
        )
    return out
