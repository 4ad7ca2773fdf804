"""EventBridge's EC2 interruption events as the gateway reads them from SQS
(gateway/providers/aws/interruptions.py): the documented event shapes, an SNS envelope, events of
other kinds, malformed bodies, and the queue's ARN for the IAM policy."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.providers.aws.interruptions import Malformed, parse, queue_arn
from gateway.providers.base import CloudNotice


def event(detail_type: str, detail: dict[str, Any], **over: Any) -> str:
    return json.dumps(
        {
            "version": "0",
            "id": "12345678-1234-1234-1234-123456789012",
            "detail-type": detail_type,
            "source": "aws.ec2",
            "account": "123456789012",
            "time": "2026-12-03T07:58:30Z",
            "region": "us-east-2",
            "resources": ["arn:aws:ec2:us-east-2a:instance/i-1234567890abcdef0"],
            "detail": detail,
            **over,
        }
    )


SPOT = "EC2 Spot Instance Interruption Warning"


@pytest.mark.parametrize("action", ["terminate", "stop", "hibernate"])
def test_a_spot_warning_gives_the_deadline_two_minutes_later(action: str) -> None:
    body = event(SPOT, {"instance-id": "i-1234567890abcdef0", "instance-action": action})
    assert parse(body) == (
        "12345678-1234-1234-1234-123456789012",
        CloudNotice("i-1234567890abcdef0", action, "2026-12-03T08:00:30Z"),
    )


def test_a_rebalance_recommendation_and_an_sns_envelope() -> None:
    body = event("EC2 Instance Rebalance Recommendation", {"instance-id": "i-0abc12345678"})
    expected = (
        "12345678-1234-1234-1234-123456789012",
        CloudNotice("i-0abc12345678", "rebalance", "2026-12-03T07:58:30Z"),
    )
    assert parse(body) == expected
    assert parse(json.dumps({"Type": "Notification", "Message": body})) == expected


def test_other_events_need_nothing() -> None:
    body = event("EC2 Instance State-change Notification", {"instance-id": "i-0abc12345678"})
    assert parse(body) is None


@pytest.mark.parametrize(
    "body",
    [
        "",
        "{not json",
        "[]",
        json.dumps({"Records": []}),  # an S3 notification, say
        event(SPOT, {}),
        event(SPOT, {"instance-id": 7}),
        event(SPOT, {"instance-id": "i-0abc12345678", "instance-action": "explode"}),
        event(SPOT, {"instance-id": "i-0abc12345678"}, time="soon"),
        event(SPOT, {"instance-id": "i-0abc12345678"}, time="2026-12-03T07:58:30"),
        event(SPOT, "i-0abc12345678"),  # type: ignore[arg-type]
    ],
)
def test_malformed_bodies_are_refused_not_crashed_on(body: str) -> None:
    with pytest.raises(Malformed):
        parse(body)


def test_the_queue_arn_from_its_url() -> None:
    url = "https://sqs.eu-west-1.amazonaws.com/123456789012/tescape-interruptions"
    assert queue_arn(url, "us-east-1") == "arn:aws:sqs:eu-west-1:123456789012:tescape-interruptions"
    moto = "http://127.0.0.1:5000/123456789012/q"
    assert queue_arn(moto, "us-east-1") == "arn:aws:sqs:us-east-1:123456789012:q"
    assert queue_arn("https://example.org/q", "us-east-1") == "arn:aws:sqs:us-east-1:*:*"
