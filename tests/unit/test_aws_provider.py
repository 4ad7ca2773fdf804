"""The aws provider's pure parts: EC2 errors → the boundary's types, the newest Spot price per
pool across pages (botocore's Stubber: canned EC2 answers, no process), and the user-data script
(rendered, quoted, accepted by `bash -n`)."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError, NoCredentialsError
from botocore.stub import ANY, Stubber

from gateway.config import AwsProviderConfig
from gateway.providers.aws import AwsProvider
from gateway.providers.aws.errors import mapped
from gateway.providers.aws.userdata import Bootstrap, render
from gateway.providers.base import CapacityUnavailable, PrecheckFailed, ProviderError


def client_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}}, "RunInstances")


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("InsufficientInstanceCapacity", CapacityUnavailable),
        ("SpotMaxPriceTooLow", CapacityUnavailable),
        ("Unsupported", CapacityUnavailable),
        ("MaxSpotInstanceCountExceeded", CapacityUnavailable),
        ("VcpuLimitExceeded", CapacityUnavailable),
        ("UnauthorizedOperation", PrecheckFailed),
        ("InvalidAMIID.NotFound", PrecheckFailed),
        ("InvalidSubnetID.NotFound", PrecheckFailed),
        ("RequestLimitExceeded", ProviderError),
        ("SomethingNew", ProviderError),
    ],
)
def test_ec2_errors_map_to_the_boundary(code: str, kind: type[ProviderError]) -> None:
    err = mapped(client_error(code), "launch m5.large", "m5.large", "us-east-1a", "spot")
    assert type(err) is kind and code in str(err)
    if isinstance(err, CapacityUnavailable):
        assert (err.instance_type, err.zone, err.market) == ("m5.large", "us-east-1a", "spot")
    if code == "MaxSpotInstanceCountExceeded":
        assert "Service Quotas" in str(err)


def test_missing_credentials_are_a_precheck_failure() -> None:
    assert isinstance(mapped(NoCredentialsError(), "launch"), PrecheckFailed)


def stubbed(**settings: object) -> tuple[AwsProvider, Stubber]:
    session = boto3.Session(
        region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s"
    )
    cfg = AwsProviderConfig(ami="ami-1", **settings)  # type: ignore[arg-type]
    p = AwsProvider(cfg, "https://gw.example", "gw", session)
    return p, Stubber(p.ec2)


def price(itype: str, zone: str, value: str, day: int) -> dict[str, object]:
    return {
        "InstanceType": itype,
        "AvailabilityZone": zone,
        "SpotPrice": value,
        "ProductDescription": "Linux/UNIX",
        "Timestamp": datetime(2026, 12, day, tzinfo=UTC),
    }


def test_the_newest_spot_price_per_pool_across_pages() -> None:
    p, stub = stubbed(instance_types=["m5.large"])
    params = {
        "InstanceTypes": ["m5.large"],
        "ProductDescriptions": ["Linux/UNIX"],
        "StartTime": ANY,
    }
    stub.add_response(
        "describe_spot_price_history",
        {
            "SpotPriceHistory": [
                price("m5.large", "us-east-1a", "0.030", 1),
                price("m5.large", "us-east-1b", "0.040", 2),
            ],
            "NextToken": "more",
        },
        params,
    )
    stub.add_response(
        "describe_spot_price_history",
        {"SpotPriceHistory": [price("m5.large", "us-east-1a", "0.035", 2)]},
        {**params, "NextToken": "more"},
    )
    with stub:
        assert p.spot_prices() == {
            ("m5.large", "us-east-1a"): 0.035,
            ("m5.large", "us-east-1b"): 0.04,
        }
        assert p.spot_prices() is p._spot  # within PRICE_TTL: no second call
    stub.assert_no_pending_responses()


def test_throttled_launches_back_off_and_capacity_errors_do_not_retry() -> None:
    p, _ = stubbed()
    stub = Stubber(p.ec2_launch)
    slept: list[float] = []
    p.sleep = slept.append  # type: ignore[assignment]
    stub.add_client_error("run_instances", "RequestLimitExceeded", http_status_code=503)
    stub.add_response("run_instances", {"Instances": [{"InstanceId": "i-1"}]})
    stub.add_client_error("run_instances", "InsufficientInstanceCapacity", http_status_code=500)
    args = {"ImageId": "ami-1", "MinCount": 1, "MaxCount": 1}
    with stub:
        assert p._run_instances(args)["Instances"][0]["InstanceId"] == "i-1"
        with pytest.raises(ClientError):
            p._run_instances(args)
    assert slept == [0.5]


def test_user_data_renders_quoted_and_bash_accepts_it(tmp_path: Path) -> None:
    script = render(
        Bootstrap(
            gateway_url="https://gw.example:8000/x y",
            instance_id="inst-1",
            token="tok_ABC-123",
            agent_wheel_url="s3://bucket/tescape-0.1.0-py3-none-any.whl",
            cpu_cores=2,
            ram_gb=7.5,
            disk_gb=100,
        )
    )
    assert "GATEWAY_URL='https://gw.example:8000/x y'" in script
    assert "TESCAPE_AGENT_TOKEN=tok_ABC-123" in script
    assert "--ram-gb 7.5" in script and "--imds-url http://169.254.169.254" in script
    path = tmp_path / "user-data.sh"
    path.write_text(script)
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_a_token_that_would_need_quoting_is_refused() -> None:
    with pytest.raises(ValueError):
        render(Bootstrap("https://gw", "i", "a\nB=1", None, 1, 1, 1))


def test_a_loopback_gateway_url_is_refused_on_real_aws() -> None:
    """Agents on EC2 cannot reach 127.0.0.1: said at start, before any call to AWS."""
    session = boto3.Session(
        region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s"
    )
    p = AwsProvider(AwsProviderConfig(ami="ami-1"), "http://127.0.0.1:8000", "gw", session)
    with pytest.raises(PrecheckFailed, match="gateway_url"):
        p.check()
