"""EC2's interruption warnings read by the gateway itself: an EventBridge rule sends "EC2 Spot
Instance Interruption Warning" and "EC2 Instance Rebalance Recommendation" events to an SQS
queue (`providers.aws.interruption_queue_url`; docs/aws.md creates both), and the leading
scheduler reads it on its tick (gateway/scheduler/cloud_notices.py), so a notice is acted on even
when the machine's agent is stuck and never reports the one it saw in IMDS.

The queue is read in a bounded way: at most every `POLL_SECONDS`, one ReceiveMessage waiting at
most `interruption_wait_seconds` (0-20; SQS long polling), then more without waiting while full
batches come back, `MAX_RECEIVES` at most. A message is deleted only once the scheduler has
handled its notice (`acknowledge`): a gateway that dies first gets it again after
`VISIBILITY_SECONDS`. Events of other kinds, bodies that are not EventBridge events (logged) and
copies of an event already handled (EventBridge delivers at least once; the event id tells them
apart) are deleted at once.

The body is the event itself (an EventBridge target with no input transformer), or an SNS
notification that carries it in `Message` (a rule that targets a topic the queue subscribes to).
Event format: EC2's documentation, "Spot Instance interruption notices" and "EC2 instance
rebalance recommendations".
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from gateway.providers.aws.errors import error_code, mapped
from gateway.providers.base import CloudNotice, PrecheckFailed

log = logging.getLogger(__name__)

SPOT_WARNING = "EC2 Spot Instance Interruption Warning"
REBALANCE = "EC2 Instance Rebalance Recommendation"
SPOT_NOTICE_SECONDS = 120  # EC2 reclaims a Spot instance two minutes after its warning
ACTIONS = frozenset({"terminate", "stop", "hibernate"})  # detail.instance-action
POLL_SECONDS = 5.0  # the queue is read at most this often
MAX_RECEIVES = 10  # ReceiveMessage calls per read at most (10 messages each)
VISIBILITY_SECONDS = 30  # a received message not deleted comes back after this long
REMEMBERED = 10_000  # handled event ids kept to recognise copies


class Malformed(ValueError):
    """An SQS message body that is not an EventBridge event tescape can read."""


def parse(body: str) -> tuple[str, CloudNotice] | None:
    """(event id, notice) of one message body; None for an event of another kind (nothing to
    do); Malformed for anything else. The notice's receipt is left empty."""
    try:
        event = json.loads(body)
    except ValueError as exc:
        raise Malformed(f"not JSON: {exc}") from None
    if isinstance(event, dict) and event.get("Type") == "Notification" and "Message" in event:
        return parse(str(event["Message"]))  # through an SNS topic
    if not isinstance(event, dict) or "detail-type" not in event:
        raise Malformed("not an EventBridge event (no detail-type)")
    kind = event["detail-type"]
    if kind not in (SPOT_WARNING, REBALANCE):
        return None
    detail = event.get("detail")
    instance_id = detail.get("instance-id") if isinstance(detail, dict) else None
    if not isinstance(instance_id, str) or not instance_id.startswith("i-"):
        raise Malformed(f"{kind} without detail.instance-id")
    try:
        at = datetime.fromisoformat(str(event.get("time", "")).replace("Z", "+00:00"))
    except ValueError:
        raise Malformed(f"{kind} for {instance_id}: time {event.get('time')!r}") from None
    if at.tzinfo is None:
        raise Malformed(f"{kind} for {instance_id}: time {event.get('time')!r} has no zone")
    if kind == REBALANCE:
        notice = CloudNotice(instance_id, "rebalance", _stamp(at))
    else:
        assert isinstance(detail, dict)
        action = detail.get("instance-action", "terminate")
        if action not in ACTIONS:
            raise Malformed(f"{kind} for {instance_id}: instance-action {action!r}")
        deadline = at + timedelta(seconds=SPOT_NOTICE_SECONDS)
        notice = CloudNotice(instance_id, str(action), _stamp(deadline))
    return str(event.get("id") or ""), notice


def _stamp(moment: datetime) -> str:
    """The time as IMDS gives it (spot/instance-action): 2026-12-03T08:22:00Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class InterruptionQueue:
    """The SQS queue EventBridge sends EC2's interruption events to."""

    def __init__(self, sqs: Any, url: str, wait_seconds: int, clock: Callable[[], float]) -> None:
        self.sqs = sqs
        self.url = url
        self.wait_seconds = wait_seconds
        self.clock = clock
        self._read_at: float | None = None
        self._handled: dict[str, None] = {}  # event ids handled, oldest first
        self._event_of: dict[str, str] = {}  # receipt → event id, until acknowledged

    def check(self) -> None:
        """The queue exists and may be read (GetQueueAttributes)."""
        try:
            self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])
        except ClientError as exc:
            raise PrecheckFailed(
                f"cannot read the interruption queue {self.url} "
                f"(providers.aws.interruption_queue_url): {error_code(exc)}: {exc}"
            ) from exc
        except BotoCoreError as exc:
            raise mapped(exc, f"read the interruption queue {self.url}") from exc

    def receive(self) -> list[CloudNotice]:
        """The notices waiting now (at most every POLL_SECONDS; [] in between)."""
        now = self.clock()
        if self._read_at is not None and now - self._read_at < POLL_SECONDS:
            return []
        self._read_at = now
        # notices of an earlier read never acknowledged (a deposed leader's) come back with new
        # receipts: forget the old ones
        self._event_of = {}
        notices: list[CloudNotice] = []
        drop: list[str] = []  # receipts of messages to delete at once
        events: set[str] = set()
        wait = self.wait_seconds
        for _ in range(MAX_RECEIVES):
            try:
                answer = self.sqs.receive_message(
                    QueueUrl=self.url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=wait,
                    VisibilityTimeout=VISIBILITY_SECONDS,
                )
            except (ClientError, BotoCoreError) as exc:
                log.warning("%s", mapped(exc, f"read the interruption queue {self.url}"))
                break
            messages = answer.get("Messages", [])
            for message in messages:
                receipt = str(message["ReceiptHandle"])
                found = self._read(message)
                if found is None:
                    drop.append(receipt)
                    continue
                event_id, notice = found
                if event_id and (event_id in self._handled or event_id in events):
                    log.info("interruption queue: event %s again (a copy): deleted", event_id)
                    drop.append(receipt)
                    continue
                events.add(event_id)
                self._event_of[receipt] = event_id
                notices.append(CloudNotice(notice.provider_id, notice.kind, notice.time, receipt))
            if len(messages) < 10:
                break
            wait = 0  # more waiting: take them without waiting
        self._delete(drop)
        return notices

    def _read(self, message: dict[str, Any]) -> tuple[str, CloudNotice] | None:
        """The message's notice; None (logged when malformed) when there is nothing to do."""
        try:
            return parse(str(message.get("Body", "")))
        except Malformed as exc:
            log.warning(
                "interruption queue: message %s is not an EC2 interruption event tescape can "
                "read (%s): deleted",
                message.get("MessageId", "?"),
                exc,
            )
            return None

    def acknowledge(self, notices: Sequence[CloudNotice]) -> None:
        """Delete the notices' messages; their events count as handled (copies deleted)."""
        for notice in notices:
            event_id = self._event_of.pop(notice.receipt, "")
            if event_id:
                self._handled[event_id] = None
        while len(self._handled) > REMEMBERED:
            del self._handled[next(iter(self._handled))]
        self._delete([n.receipt for n in notices if n.receipt])

    def _delete(self, receipts: list[str]) -> None:
        """DeleteMessageBatch, 10 at a time; a failure is logged (the message comes back and
        is handled again: handling a notice twice changes nothing)."""
        for start in range(0, len(receipts), 10):
            batch = receipts[start : start + 10]
            entries = [{"Id": str(n), "ReceiptHandle": r} for n, r in enumerate(batch)]
            try:
                answer = self.sqs.delete_message_batch(QueueUrl=self.url, Entries=entries)
            except (ClientError, BotoCoreError) as exc:
                log.warning("%s", mapped(exc, f"delete messages from {self.url}"))
                continue
            for failed in answer.get("Failed", []):
                log.warning(
                    "interruption queue: a message was not deleted: %s",
                    failed.get("Message") or failed.get("Code"),
                )


def queue_arn(url: str, region: str) -> str:
    """The queue's ARN from its URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME), for the
    IAM policy; `*` parts where the URL does not say."""
    parts = url.rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2].isdigit():
        host = parts[2] if len(parts) > 2 else ""
        if host.startswith("sqs.") and host.endswith(".amazonaws.com"):
            region = host.split(".")[1]
        return f"arn:aws:sqs:{region}:{parts[-2]}:{parts[-1]}"
    return f"arn:aws:sqs:{region}:*:*"
