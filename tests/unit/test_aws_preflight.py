"""`tescape aws check`'s quota and capsule store findings (gateway/providers/aws/preflight.py):
the quota logic on given values, the Service Quotas reads through botocore's Stubber (moto knows
no EC2 quotas), the store probe against an in-process store. tests/integration/test_aws_moto.py
runs the command against moto's S3."""

from __future__ import annotations

from pathlib import Path

import boto3
from botocore.stub import Stubber

from gateway.providers.aws.preflight import (
    QUOTA_CODES,
    quota_findings,
    read_quotas,
    standard,
    store_findings,
)


def levels(findings: list) -> list[str]:
    return [f.level for f in findings]


def test_standard_families_are_the_ones_the_two_quotas_cover() -> None:
    assert standard("m5.large") and standard("c7g.xlarge") and standard("r6i.2xlarge")
    assert standard("t3.micro") and standard("z1d.large")
    assert not standard("g5.xlarge") and not standard("p4d.24xlarge")
    assert not standard("inf2.xlarge") and not standard("trn1.2xlarge")


def test_a_quota_below_one_instance_of_the_largest_type_is_an_error() -> None:
    found = quota_findings({"spot": 4.0}, {"m5.large": 2, "m5.2xlarge": 8}, max_instances=4)
    assert levels(found) == ["error"]
    assert "below one m5.2xlarge (8 vCPUs)" in found[0].text
    assert QUOTA_CODES["spot"] in found[0].text


def test_a_quota_below_the_fleet_says_how_many_fit() -> None:
    found = quota_findings({"on-demand": 20.0}, {"m5.xlarge": 4}, max_instances=10)
    assert levels(found) == ["warning"]
    assert "at most 5 m5.xlarge at once" in found[0].text


def test_enough_quota_is_ok_and_other_families_are_not_checked() -> None:
    found = quota_findings(
        {"spot": 640.0, "on-demand": "not allowed to read it"},
        {"m5.large": 2, "g5.xlarge": 4},
        max_instances=4,
    )
    assert levels(found) == ["warning", "ok", "warning"]
    assert "g5.xlarge not checked" in found[0].text
    assert "not checked: not allowed" in found[2].text


def test_quotas_are_read_from_service_quotas() -> None:
    client = boto3.client(
        "service-quotas",
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    with Stubber(client) as stub:
        stub.add_response(
            "get_service_quota",
            {"Quota": {"QuotaCode": QUOTA_CODES["spot"], "Value": 32.0}},
            {"ServiceCode": "ec2", "QuotaCode": QUOTA_CODES["spot"]},
        )
        stub.add_client_error("get_service_quota", service_error_code="AccessDeniedException")
        found = read_quotas(client, ["spot", "on-demand"])
    assert found["spot"] == 32.0
    assert "servicequotas:GetServiceQuota" in str(found["on-demand"])


def test_a_file_capsule_store_is_an_error_with_the_aws_provider(tmp_path: Path) -> None:
    found = store_findings(str(tmp_path / "capsules"), {}, "us-east-1")
    assert levels(found) == ["error"] and "must be s3://" in found[0].text
    assert levels(store_findings("ftp://x/y", {}, "us-east-1")) == ["error"]
