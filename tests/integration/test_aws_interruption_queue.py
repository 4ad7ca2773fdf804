"""EC2's interruption warnings read by the gateway from SQS (moto in server mode holds EC2 and the
queue; the real scheduler on a ManualClock): a Spot warning for an instance running a task gives
the same checkpoint order and events as the agent's own notice; copies of a message are handled
once; rebalance recommendations are recorded; events of other kinds, malformed bodies and other
machines' warnings are deleted without effect; a message is deleted only once handled (a deposed
leader handles and deletes nothing)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from gateway.config import AwsProviderConfig
from gateway.providers.aws import AwsProvider
from gateway.providers.aws.plan import iam_policy
from gateway.providers.base import PrecheckFailed
from gateway.scheduler.leadership import LostLeadership
from gateway.store.events import read_events
from gateway.store.fleet import Instance, InstanceState
from gateway.tes.states import State
from tests.fixtures.aws_world import AwsWorld
from tests.fixtures.moto_server import MotoServer

pytestmark = pytest.mark.timeout(180)
DEADLINE = "2026-12-03T08:02:00Z"  # EC2 reclaims two minutes after its warning
IDS = re.compile(r"\b[a-z]{1,3}-[0-9a-z]{17,26}\b")  # gateway ids (ULIDs) and EC2 ids


def event(instance_id: str, event_id: str = "e-1", **over: Any) -> str:
    """An EventBridge "EC2 Spot Instance Interruption Warning" as EC2's documentation shows it."""
    body: dict[str, Any] = {
        "version": "0",
        "id": event_id,
        "detail-type": "EC2 Spot Instance Interruption Warning",
        "source": "aws.ec2",
        "account": "123456789012",
        "time": "2026-12-03T08:00:00Z",
        "region": "us-east-1",
        "resources": [f"arn:aws:ec2:us-east-1a:instance/{instance_id}"],
        "detail": {"instance-id": instance_id, "instance-action": "terminate"},
    }
    body.update(over)
    return json.dumps(body)


@pytest.fixture
def queue(moto: MotoServer) -> str:
    url: str = moto.client("sqs").create_queue(QueueName="tescape-interruptions")["QueueUrl"]
    return url


def new_world(
    worlds: list[AwsWorld], tmp: Path, moto: MotoServer, queue: str | None = None
) -> AwsWorld:
    tmp.mkdir(parents=True, exist_ok=True)
    aws: dict[str, Any] = {"idle_seconds": 3600}
    if queue is not None:
        aws.update(interruption_queue_url=queue, interruption_wait_seconds=0)
    world = AwsWorld(tmp, moto, **aws)
    worlds.append(world)
    return world


def running_task(world: AwsWorld) -> tuple[Instance, str, str, str]:
    """A task running on a booted instance: (instance, agent credential, task, attempt)."""
    task = world.submit()
    inst, credential = world.boot()
    world.scheduler.tick()
    (order,) = world.poll(inst, credential).get_json()["assign"]
    answer = world.call(
        inst,
        credential,
        f"/attempts/{order['attempt_id']}/report",
        {"status": "running", "task_log": {"logs": [], "outputs": []}},
    )
    assert answer.status_code < 300, answer.get_data(as_text=True)
    assert world.tasks.get(task, full=False).state is State.RUNNING  # type: ignore[union-attr]
    return inst, credential, task, order["attempt_id"]


def outcome(world: AwsWorld, inst: Instance, credential: str, task: str) -> dict[str, Any]:
    """What a notice produced: the checkpoint orders the agent's next poll gets, the events of
    the task and the instance (kinds and messages), and what the instance row says."""
    world.scheduler.tick()
    orders = world.poll(inst, credential).get_json()["checkpoint"]
    row = world.fleet.instance(inst.id)
    assert row is not None and row.data.interruption is not None
    task_events, instance_events = world_events(world, task, inst)
    return {
        "orders": [
            {k: v for k, v in o.items() if k not in ("request_id", "attempt_id")} for o in orders
        ],
        "task_events": task_events,
        "instance_events": instance_events,
        "interruption": row.data.interruption.model_dump(),
    }


def sqs_messages(moto: MotoServer, queue: str) -> int:
    attrs = moto.client("sqs").get_queue_attributes(
        QueueUrl=queue,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


def test_a_queued_warning_does_what_the_agents_notice_does(
    worlds: list[AwsWorld], tmp_path: Path, moto: MotoServer, queue: str
) -> None:
    by_agent = new_world(worlds, tmp_path / "agent", moto)
    inst, credential, task, attempt = running_task(by_agent)
    answer = by_agent.call(
        inst, credential, f"/instances/{inst.id}/notice", {"kind": "terminate", "time": DEADLINE}
    )
    assert answer.status_code < 300
    assert world_orders(by_agent, inst, credential) == [
        {"attempt_id": attempt, "stop": True, "reason": "reclaim"}
    ]
    expected = outcome(by_agent, inst, credential, task)

    by_queue = new_world(worlds, tmp_path / "queue", moto, queue)
    inst, credential, task, attempt = running_task(by_queue)
    assert inst.provider_id is not None
    sqs = moto.client("sqs")
    sqs.send_message(QueueUrl=queue, MessageBody=event(inst.provider_id))
    by_queue.clock.advance(5)  # the queue is read at most every 5 s
    by_queue.scheduler.tick()
    assert world_orders(by_queue, inst, credential) == [
        {"attempt_id": attempt, "stop": True, "reason": "reclaim"}
    ]
    got = outcome(by_queue, inst, credential, task)
    for key in expected:
        assert got[key] == expected[key], json.dumps([key, got[key], expected[key]], indent=0)
    assert got["interruption"]["deadline"] == DEADLINE
    assert sqs_messages(moto, queue) == 0  # deleted once handled

    # a copy of the same event (EventBridge delivers at least once), and the agent's own
    # notice later: nothing more happens
    sqs.send_message(QueueUrl=queue, MessageBody=event(inst.provider_id))
    by_queue.clock.advance(5)
    by_queue.scheduler.tick()
    by_queue.call(
        inst, credential, f"/instances/{inst.id}/notice", {"kind": "terminate", "time": DEADLINE}
    )
    by_queue.clock.advance(5)
    by_queue.scheduler.tick()
    assert world_events(by_queue, task, inst) == (
        got["task_events"],
        got["instance_events"],
    )
    assert [
        {"stop": o["stop"], "reason": o["reason"]} for o in world_orders(by_queue, inst, credential)
    ] == got["orders"]
    assert sqs_messages(moto, queue) == 0


def world_events(world: AwsWorld, task: str, inst: Instance) -> tuple[list[Any], list[Any]]:
    """The task's and the instance's events: kinds, states and messages, ids made alike."""
    skip = {"id", "time", "task_id", "attempt_id", "instance_id", "data"}

    def alike(e: dict[str, Any]) -> dict[str, Any]:
        return {k: IDS.sub("<id>", str(v)) for k, v in e.items() if k not in skip}

    return (
        [alike(e) for e in read_events(world.db, task_id=task)],
        [alike(e) for e in read_events(world.db, instance_id=inst.id)],
    )


def world_orders(world: AwsWorld, inst: Instance, credential: str) -> list[dict[str, Any]]:
    orders = world.poll(inst, credential).get_json()["checkpoint"]
    return [{k: v for k, v in o.items() if k != "request_id"} for o in orders]


def test_other_events_malformed_bodies_and_other_machines_are_deleted_without_effect(
    worlds: list[AwsWorld],
    tmp_path: Path,
    moto: MotoServer,
    queue: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = new_world(worlds, tmp_path, moto, queue)
    inst, credential, task, _ = running_task(world)
    assert inst.provider_id is not None
    sqs = moto.client("sqs")
    for body in (
        "not json {",
        json.dumps({"hello": "world"}),
        json.dumps([1, 2]),
        event(inst.provider_id, "e-2", detail={}),  # no instance id
        event(inst.provider_id, "e-3", time="yesterday"),
        event(inst.provider_id, "e-4", **{"detail-type": "EC2 Instance State-change Notification"}),
        event("i-0fffffffffffffff0", "e-5"),  # not this gateway's machine
    ):
        sqs.send_message(QueueUrl=queue, MessageBody=body)
    before = world_events(world, task, inst)
    world.clock.advance(5)
    with caplog.at_level(logging.WARNING, logger="gateway.providers.aws.interruptions"):
        world.scheduler.tick()
    assert sqs_messages(moto, queue) == 0
    malformed = [r for r in caplog.records if "is not an EC2 interruption event" in r.message]
    assert len(malformed) == 5, [r.message for r in caplog.records]
    row = world.fleet.instance(inst.id)
    assert row is not None and row.data.interruption is None
    assert row.state is InstanceState.READY
    assert world_events(world, task, inst) == before
    assert world_orders(world, inst, credential) == []


def test_a_rebalance_recommendation_through_sns_is_recorded(
    worlds: list[AwsWorld], tmp_path: Path, moto: MotoServer, queue: str
) -> None:
    world = new_world(worlds, tmp_path, moto, queue)
    inst, credential, _, _ = running_task(world)
    assert inst.provider_id is not None
    rebalance = event(
        inst.provider_id,
        "e-9",
        **{"detail-type": "EC2 Instance Rebalance Recommendation"},
        detail={"instance-id": inst.provider_id},
    )
    envelope = json.dumps({"Type": "Notification", "MessageId": "m", "Message": rebalance})
    moto.client("sqs").send_message(QueueUrl=queue, MessageBody=envelope)
    world.clock.advance(5)
    world.scheduler.tick()
    kinds = [e["kind"] for e in read_events(world.db, instance_id=inst.id)]
    assert kinds.count("rebalance") == 1
    row = world.fleet.instance(inst.id)
    assert row is not None and row.data.interruption is None  # a recommendation, not a notice
    assert world_orders(world, inst, credential) == []
    assert sqs_messages(moto, queue) == 0


def test_a_deposed_leader_handles_and_deletes_nothing(
    worlds: list[AwsWorld],
    tmp_path: Path,
    moto: MotoServer,
    queue: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = new_world(worlds, tmp_path, moto, queue)
    inst, _, _, _ = running_task(world)
    assert inst.provider_id is not None
    moto.client("sqs").send_message(QueueUrl=queue, MessageBody=event(inst.provider_id))

    def deposed(conn: object) -> None:
        raise LostLeadership("another gateway leads now")

    monkeypatch.setattr(world.scheduler, "fence", deposed)
    world.clock.advance(5)
    with pytest.raises(LostLeadership):
        world.scheduler.tick()
    row = world.fleet.instance(inst.id)
    assert row is not None and row.data.interruption is None
    assert sqs_messages(moto, queue) == 1  # seen, not deleted: visible again for the leader


def test_the_queue_is_checked_and_named_in_the_policy(moto: MotoServer, queue: str) -> None:
    cfg = AwsProviderConfig(
        endpoint_url=moto.url,
        ami=moto.ami(),
        instance_types=["m5.large"],
        interruption_queue_url=queue,
    )
    AwsProvider(cfg, "https://gw.example", "gw", moto.session()).check()
    policy = iam_policy(cfg, "gw")
    (statement,) = [s for s in policy["Statement"] if s["Sid"] == "InterruptionQueue"]
    assert sorted(statement["Action"]) == [
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:ReceiveMessage",
    ]
    assert statement["Resource"] == "arn:aws:sqs:us-east-1:123456789012:tescape-interruptions"
    missing = cfg.model_copy(update={"interruption_queue_url": queue + "-missing"})
    with pytest.raises(PrecheckFailed, match="interruption queue"):
        AwsProvider(missing, "https://gw.example", "gw", moto.session()).check()
    assert "InterruptionQueue" not in json.dumps(
        iam_policy(cfg.model_copy(update={"interruption_queue_url": ""}))
    )
