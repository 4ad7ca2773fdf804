"""EC2's errors as the provider boundary's typed errors (gateway/providers/base.py).

The scheduler acts on the type: `CapacityUnavailable` quarantines the pool for a while and tries
the next fitting offer (another type, zone or market); `PrecheckFailed` means no launch can
succeed until the configuration or the account changes; `ProviderError` is anything else
(throttling and server errors have already been retried by botocore's standard retry mode with
backoff, so what reaches here is worth reporting). Codes from EC2's API reference, "Error codes
for the Amazon EC2 API".
"""

from __future__ import annotations

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)

from gateway.providers.base import CapacityUnavailable, PrecheckFailed, ProviderError

# No room in this pool now: another type, zone or market may have some.
CAPACITY = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientHostCapacity",
        "InsufficientCapacity",
        "InsufficientFreeAddressesInSubnet",
        "SpotMaxPriceTooLow",  # the Spot price is above our maximum in this pool
        "Unsupported",  # the type is not offered in this zone (or not with this market)
    }
)
# Account limits: this market (or all launches) is full until something ends or a quota rises.
QUOTA = frozenset(
    {
        "MaxSpotInstanceCountExceeded",
        "InstanceLimitExceeded",
        "VcpuLimitExceeded",
        "MaxSpotFleetRequestCountExceeded",
    }
)
# Fix the configuration, credentials or account first.
PRECHECK = frozenset(
    {
        "AuthFailure",
        "UnauthorizedOperation",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "OptInRequired",
        "PendingVerification",
        "Blocked",
        "InvalidAMIID.NotFound",
        "InvalidAMIID.Malformed",
        "InvalidAMIID.Unavailable",
        "InvalidSubnetID.NotFound",
        "InvalidSubnetID.Malformed",
        "InvalidGroup.NotFound",
        "InvalidGroupId.Malformed",
        "InvalidKeyPair.NotFound",
        "InvalidParameterValue",
        "InvalidParameterCombination",
        "InvalidInstanceType",
        "InvalidUserData.Malformed",
        "NoSuchEntity",  # IAM: the instance profile does not exist
        "ParameterNotFound",  # SSM: the AMI parameter does not exist in this region
        "AccessDeniedException",
        "AccessDenied",
    }
)
RETRYABLE = frozenset(
    {
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "InternalError",
        "ServiceUnavailable",
        "Unavailable",
    }
)


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def error_message(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", "")) or str(exc)


def mapped(
    exc: Exception, action: str, instance_type: str = "", zone: str = "", market: str = ""
) -> ProviderError:
    """The boundary's error for a botocore exception met while doing `action` (a short phrase
    for the message: "launch m5.large in us-east-1a")."""
    if isinstance(exc, ClientError):
        code, message = error_code(exc), error_message(exc)
        text = f"EC2 could not {action}: {code}: {message}"
        if code in CAPACITY:
            return CapacityUnavailable(instance_type, zone, market, text)
        if code in QUOTA:
            return CapacityUnavailable(
                instance_type,
                zone,
                market,
                f"{text} (an account quota: raise it in Service Quotas)",
            )
        if code in PRECHECK:
            return PrecheckFailed(text)
        if code in RETRYABLE:
            return ProviderError(f"{text} (still failing after retries with backoff)")
        return ProviderError(text)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return PrecheckFailed(
            f"cannot {action}: no AWS credentials (environment, ~/.aws or an instance profile)"
        )
    if isinstance(exc, NoRegionError):
        return PrecheckFailed(f"cannot {action}: set providers.aws.region")
    if isinstance(exc, EndpointConnectionError):
        return ProviderError(f"cannot {action}: EC2 cannot be reached: {exc}")
    if isinstance(exc, BotoCoreError):
        return ProviderError(f"cannot {action}: {exc}")
    return ProviderError(f"cannot {action}: {exc}")
