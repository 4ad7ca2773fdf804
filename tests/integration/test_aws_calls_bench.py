"""bench.aws_calls on a small fleet against the session's moto server: every task completes, every
machine is terminated, and the EC2 calls stay within the request-rate budget (one
DescribeInstances per tick for the whole fleet, one RunInstances per launch, one
TerminateInstances per tick that retires machines, however many)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.aws_calls import Bench
from tests.fixtures.moto_server import MotoServer

pytestmark = pytest.mark.timeout(180)


def test_calls_per_task_and_per_tick(tmp_path: Path, moto: MotoServer) -> None:
    result = Bench(tmp_path, moto.url, tasks=24, instances=4, task_s=30).run()
    calls = result["calls"]
    assert result["peak_instances"] == 4
    assert calls["RunInstances"] == 4  # no duplicate
    # no leak: every machine moto holds is terminated, retired ones together in one call a tick
    reservations = moto.client().describe_instances()["Reservations"]
    states = [i["State"]["Name"] for r in reservations for i in r["Instances"]]
    assert len(states) == 4 and set(states) <= {"shutting-down", "terminated"}
    assert 1 <= calls["TerminateInstances"] <= 4
    assert result["terminate_per_tick_max"] == 1
    assert calls["DescribeInstances"] == result["ticks"]
    assert result["describe_per_tick_max"] == 1
    for once in ("DescribeSubnets", "DescribeInstanceTypes", "DescribeImages"):
        assert calls[once] == 1
    # the first tick: the offers are read and the whole fleet launched at once (launch_batch),
    # one RunInstances per instance
    assert result["calls_per_tick_max"] <= 5 + result["peak_instances"]
