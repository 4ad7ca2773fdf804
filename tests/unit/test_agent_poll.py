"""The agent's poll loop against a gateway that answers at once (its long-poll slots are taken):
the agent waits out the poll period on its side instead of polling in a tight loop."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from capsule_runtime import agent as agent_module
from capsule_runtime.agent import Agent
from capsule_runtime.protocol.messages import Orders, Resources


class BusyGateway:
    """Answers every poll at once with no orders; asks the agent to shut down after `polls`."""

    def __init__(self, polls: int):
        self.polls = polls
        self.times: list[float] = []
        self.hurry = False
        self.instance_id = "i-test"

    def register(self, registration: Any) -> None:
        pass

    def poll(
        self, running: list[str], wait_seconds: float, usage: Any = None, received: Any = None
    ) -> Orders:
        self.times.append(time.monotonic())
        return Orders(shutdown=len(self.times) >= self.polls)


def test_an_empty_answer_at_once_is_not_polled_again_at_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(agent_module, "POLL_WAIT", 0.2)
    gateway = BusyGateway(polls=4)
    agent = Agent(gateway, Resources(cpu_cores=1, ram_gb=1, disk_gb=1), tmp_path, None)  # type: ignore[arg-type]
    monkeypatch.setattr(agent, "facts", lambda: [])
    runner = threading.Thread(target=agent.run)
    runner.start()
    runner.join(timeout=10)
    assert not runner.is_alive()
    gaps = [b - a for a, b in zip(gateway.times, gateway.times[1:], strict=False)]
    assert len(gaps) == 3 and min(gaps) >= 0.15, gaps
