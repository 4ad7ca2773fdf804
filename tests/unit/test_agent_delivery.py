"""The agent's side of delivery and fencing, with a scripted gateway client and fake runs: a
resent assignment or order is carried out once and acknowledged in the next poll; an attempt
the gateway refuses (409) is stopped and never started again."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from capsule_runtime.agent import Agent
from capsule_runtime.protocol.messages import (
    Assignment,
    CheckpointOrder,
    Orders,
    ResizeOrder,
    Resources,
)
from tests.fixtures.documents import tes_task


class FakeRun:
    def __init__(self, assignment: Assignment) -> None:
        self.assignment = assignment
        self.cancelled = threading.Event()
        self.checkpoints: list[str] = []
        self.resizes: list[tuple[float | None, float | None]] = []
        self.alive = True

    def start(self) -> None:
        pass

    def is_alive(self) -> bool:
        return self.alive

    def cancel(self) -> None:
        self.cancelled.set()

    def checkpoint(self, order: CheckpointOrder) -> None:
        self.checkpoints.append(order.request_id)

    def resize(self, cpu: float | None, ram: float | None) -> None:
        self.resizes.append((cpu, ram))


class ScriptedClient:
    """Answers each poll with the next Orders; records what the agent acknowledged."""

    def __init__(self, script: list[Orders]) -> None:
        self.script = script
        self.polls: list[dict[str, Any]] = []
        self.on_fenced: Any = None
        self.hurry = False
        self.instance_id = "i-1"

    def poll(
        self,
        running: list[str],
        wait: float,
        usage: Any = None,
        received: list[str] | None = None,
    ) -> Orders:
        self.polls.append({"running": sorted(running), "received": sorted(received or [])})
        if not self.script:
            return Orders(shutdown=True)
        return self.script.pop(0)

    def register(self, registration: Any) -> None:
        pass


def agent(client: ScriptedClient, runs: list[FakeRun], tmp_path: Path) -> Agent:
    def factory(assignment: Assignment, *args: Any, **kwargs: Any) -> FakeRun:
        run = FakeRun(assignment)
        runs.append(run)
        return run

    made = Agent(client, Resources(cpu_cores=1, ram_gb=1, disk_gb=1), tmp_path, factory)  # type: ignore[arg-type]
    made.facts = lambda: []  # type: ignore[method-assign]
    made.shutdown = lambda: None  # type: ignore[method-assign]
    return made


def assign(aid: str) -> Assignment:
    return Assignment(attempt_id=aid, task_id="t", task=tes_task({}))


def test_resent_orders_run_once_and_are_acknowledged(tmp_path: Path) -> None:
    order = CheckpointOrder(attempt_id="a1", request_id="ck-1")
    resize = ResizeOrder(attempt_id="a1", cpu_cores=2, ram_gb=2, order_id="rs-1")
    client = ScriptedClient(
        [
            Orders(assign=[assign("a1")]),
            Orders(assign=[assign("a1")]),  # its acknowledgement was lost: sent again
            Orders(checkpoint=[order], resize=[resize]),
            Orders(checkpoint=[order], resize=[resize]),  # sent again
            Orders(),
        ]
    )
    runs: list[FakeRun] = []
    a = agent(client, runs, tmp_path)
    a.run()
    assert len(runs) == 1
    for t in threading.enumerate():  # the checkpoint ran on a thread of its own
        if t.name.startswith("checkpoint-"):
            t.join(10)
    assert runs[0].checkpoints == ["ck-1"] and runs[0].resizes == [(2, 2)]
    assert client.polls[1]["running"] == ["a1"]
    assert client.polls[3]["received"] == ["ck-1", "rs-1"]
    assert client.polls[4]["received"] == ["ck-1", "rs-1"]


def test_a_fenced_attempt_is_stopped_and_never_started_again(tmp_path: Path) -> None:
    client = ScriptedClient(
        [Orders(assign=[assign("a1")]), Orders(), Orders(), Orders(assign=[assign("a1")])]
    )
    runs: list[FakeRun] = []
    a = agent(client, runs, tmp_path)
    original = client.poll

    def poll(*args: Any, **kwargs: Any) -> Orders:
        if len(client.polls) == 1:  # a runner thread's report was refused (409)
            client.on_fenced("a1")
        if len(client.polls) == 2:  # the loop stopped it before this poll
            assert runs[0].cancelled.wait(10)
            runs[0].alive = False
        return original(*args, **kwargs)

    client.poll = poll  # type: ignore[method-assign]
    a.run()
    assert len(runs) == 1 and runs[0].cancelled.is_set()  # the resend started nothing
    assert "a1" in a.fenced and client.polls[3]["running"] == []
