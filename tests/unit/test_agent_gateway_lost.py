"""An agent whose gateway stays away past gateway_lost_seconds parks its tasks and exits: each
run is checkpointed with stop (the capsule first); a run that could not be is stopped
unreported; reports are then retried until the delivery window ends."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from capsule_runtime.agent import Agent
from capsule_runtime.client import GatewayUnreachable
from capsule_runtime.protocol.messages import Assignment, CheckpointOrder, Orders, Resources
from tests.fixtures.documents import tes_task


class ParkableRun:
    def __init__(self, assignment: Assignment, checkpoints: bool) -> None:
        self.assignment = assignment
        self.can_checkpoint = checkpoints
        self.orders: list[CheckpointOrder] = []
        self.abandoned: str | None = None
        self.left_in_capsule = False

    def start(self) -> None:
        pass

    def is_alive(self) -> bool:
        return not (self.left_in_capsule or self.abandoned)

    def join(self, timeout: float | None = None) -> None:
        pass

    def checkpoint(self, order: CheckpointOrder) -> None:
        self.orders.append(order)
        self.left_in_capsule = self.can_checkpoint

    def abandon(self, reason: str) -> None:
        self.abandoned = reason

    def abort(self, reason: str) -> None:  # the agent's shutdown: these have ended already
        pass


class AwayGateway:
    """Assigns two attempts, then never answers again."""

    def __init__(self) -> None:
        self.polls = 0
        self.on_fenced: Any = None
        self.hurry = False
        self.instance_id = "i-1"
        self.patience = 0.0
        self.deliver_until = 0.0
        self.last_answer = time.monotonic()

    def register(self, registration: Any) -> None:
        pass

    def poll(self, *args: Any, **kwargs: Any) -> Orders:
        self.polls += 1
        if self.polls == 1:
            self.last_answer = time.monotonic()
            return Orders(
                assign=[Assignment(attempt_id=a, task_id=a, task=tes_task({})) for a in "ab"]
            )
        self.last_answer -= 100.0  # as if a long time went by without an answer
        raise GatewayUnreachable("connection refused")


def test_a_lost_gateway_parks_every_task_then_the_agent_exits(tmp_path: Path) -> None:
    client = AwayGateway()
    runs: dict[str, ParkableRun] = {}

    def factory(assignment: Assignment, *args: Any, **kwargs: Any) -> ParkableRun:
        run = ParkableRun(assignment, checkpoints=assignment.attempt_id == "a")
        runs[assignment.attempt_id] = run
        return run

    agent = Agent(
        client,  # type: ignore[arg-type]
        Resources(cpu_cores=1, ram_gb=1, disk_gb=1),
        tmp_path,
        factory,
        gateway_lost_seconds=60.0,
    )
    agent.facts = lambda: []  # type: ignore[method-assign]
    assert client.patience == 60.0  # attempt reports are retried as long
    agent.run()  # returns: the agent gave up on the gateway
    assert client.polls == 2
    [order] = runs["a"].orders
    assert order.stop and order.reason == "gateway_lost" and not order.request_id
    assert runs["a"].abandoned is None
    assert runs["b"].abandoned  # no capsule could be taken: stopped, unreported
    assert client.deliver_until > time.monotonic() + 30  # its last reports still go out


def test_no_limit_never_gives_up(tmp_path: Path) -> None:
    client = AwayGateway()
    agent = Agent(
        client,  # type: ignore[arg-type]
        Resources(cpu_cores=1, ram_gb=1, disk_gb=1),
        tmp_path,
        lambda *a, **k: None,
        gateway_lost_seconds=0.0,
    )
    assert not agent._gateway_lost()
