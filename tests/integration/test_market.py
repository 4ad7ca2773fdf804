"""The simulated Spot market through a real `tescape serve`: tasks land on the cheapest fitting
Spot instance of real EC2 types (on-demand when they ask for it), their TaskLog carries the price,
and a reclaim's recovery strategy decides where the task goes next — `on_demand_after:1` moves it
to on-demand, `next_zone` quarantines the reclaimed type+zone and moves to another zone — with
the task's state continuous (restored from its capsule)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fixtures.server import RunningServer, tescape_server
from tests.fixtures.stateful import count_lines, numbers, stateful_task
from tests.fixtures.tasks import admin, ended, events, get, instance_of, submit, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="CRIU needs root")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("market")


@pytest.fixture(scope="module")
def server(root: Path, busybox_image: str) -> Iterator[RunningServer]:
    config = {
        "images": {"rewrites": {"alpine": busybox_image}},
        "storage": {"allowed_dirs": [str(root)]},
        "scheduler": {
            "interval_seconds": 0.2,
            "cost_migration": {"max_price": 0.06, "min_interval_seconds": 0},
        },
        "providers": {
            "local": {
                "max_instances": 2,
                "market": {"seed": 7, "instance_types": ["m5", "c5"], "interruptions": False},
            }
        },
        "capsules": {"store": str(root / "capsules"), "interval_seconds": 0},
    }
    with tescape_server(root / "data", config=config, run_tasks=True) as srv:
        yield srv


def instance(srv: RunningServer, instance_id: str) -> dict[str, Any]:
    [found] = [
        i for i in admin(srv, "GET", "/instances").json()["instances"] if i["id"] == instance_id
    ]
    return found


def test_tasks_go_to_the_cheapest_spot_offer_unless_they_ask_for_on_demand(
    server: RunningServer,
) -> None:
    market = admin(server, "GET", "/market").json()
    assert market and "m5.large" in str(market)
    spot = submit(server, {"executors": [{"image": "alpine", "command": ["true"]}]})
    done = ended(server, spot)
    assert done["state"] == "COMPLETE"
    meta = done["logs"][0]["metadata"]
    assert meta["market"] == "spot" and float(meta["vm_price_per_hour_usd"]) > 0
    dedicated = submit(
        server,
        {
            "executors": [{"image": "alpine", "command": ["true"]}],
            "resources": {"preemptible": False},
        },
    )
    done = ended(server, dedicated)
    assert done["state"] == "COMPLETE"
    assert done["logs"][0]["metadata"]["market"] == "on-demand"
    costs = admin(server, "GET", "/costs").json()
    assert costs["total"]


def reclaim(
    server: RunningServer,
    root: Path,
    name: str,
    recovery: str,
    policy: str = "spot_first",
    **params: str,
) -> tuple[str, str]:
    task = stateful_task(root, name, 60, 0.1, 4)
    task["resources"]["backend_parameters"].update(recovery=recovery, market_policy=policy)
    task["resources"]["backend_parameters"].update(params)
    task_id = submit(server, task)
    wait_for("the counter to pass 10", lambda: count_lines(root, task_id) >= 10, srv=server)
    victim = instance_of(server, task_id)
    resp = admin(server, "POST", f"/instances/{victim}:interrupt", json={"notice_seconds": 30})
    assert resp.status_code == 202, resp.text
    done = ended(server, task_id)
    assert done["state"] == "COMPLETE", done
    assert numbers(root / "out" / name / "count") == list(range(1, 61))
    return task_id, victim


def test_on_demand_after_one_reclaim(server: RunningServer, root: Path) -> None:
    task_id, victim = reclaim(server, root, "ondemand", "on_demand_after:1")
    assert instance(server, victim)["market"] == "spot"
    moved = instance_of(server, task_id)
    assert instance(server, moved)["market"] == "on-demand"
    meta = get(server, task_id)["logs"][0]["metadata"]  # its telemetry (docs/telemetry.md)
    assert (meta["spot_interruptions"], meta["markets"]) == ("1", "spot,on-demand")
    assert float(meta["on_demand_usd"]) >= float(meta["cost_usd"]) > 0


def test_an_exhausted_interruption_budget_goes_on_demand(server: RunningServer, root: Path) -> None:
    """same_type would stay on Spot; the task's budget of one reclaim sends it on-demand, with
    its state (restored from the capsule)."""
    # pinned to a type no other test uses: an idle on-demand instance left by another test
    # would take the task first
    task_id, victim = reclaim(
        server, root, "budget", "same_type", interruption_budget="1", instance_type="m5.xlarge"
    )
    assert instance(server, victim)["market"] == "spot"
    assert instance(server, instance_of(server, task_id))["market"] == "on-demand"
    budget = [e for e in events(server, task_id) if e["kind"] == "interruption_budget"]
    assert budget and "used up" in budget[0]["message"], events(server, task_id)
    attempts = admin(server, "GET", f"/tasks/{task_id}/attempts").json()["attempts"]
    assert [a["reason"] for a in attempts] == ["first", "reclaim"]


def test_next_zone_quarantines_the_reclaimed_pool(server: RunningServer, root: Path) -> None:
    task_id, victim = reclaim(server, root, "nextzone", "next_zone", "spot_only")
    before, after = instance(server, victim), instance(server, instance_of(server, task_id))
    assert after["instance_type"] == before["instance_type"]
    assert after["zone"] != before["zone"]
    assert "quarantine" in [e["kind"] for e in events(server, task_id)]
    quarantines = str(admin(server, "GET", "/market").json())
    assert before["zone"] in quarantines
    requests.get(server.url + "/healthz", timeout=5)


def test_a_price_spike_moves_the_task_to_a_cheaper_pool(server: RunningServer, root: Path) -> None:
    task = stateful_task(root, "spike", 80, 0.1, 4)
    task["resources"]["backend_parameters"]["market_policy"] = "spot_only"
    task_id = submit(server, task)
    wait_for("the counter to pass 10", lambda: count_lines(root, task_id) >= 10, srv=server)
    before = instance(server, instance_of(server, task_id))
    assert before["market"] == "spot" and before["price_per_hour"] < 0.06
    spike = {"instance_type": before["instance_type"], "zone": before["zone"], "price": 0.08}
    resp = admin(server, "PUT", "/market/prices", json=spike)
    assert resp.status_code == 200, resp.text
    done = ended(server, task_id)
    assert done["state"] == "COMPLETE", done
    assert numbers(root / "out" / "spike" / "count") == list(range(1, 81))
    attempts = admin(server, "GET", f"/tasks/{task_id}/attempts").json()["attempts"]
    assert [a["reason"] for a in attempts] == ["first", "cost"], attempts
    after = instance(server, attempts[-1]["instance_id"])
    assert (after["instance_type"], after["zone"]) != (before["instance_type"], before["zone"])
    assert after["price_per_hour"] <= 0.06
    admin(server, "PUT", "/market/prices", json={**spike, "price": None})


def test_spot_pools_without_capacity_are_avoided_for_the_next_offer(
    tmp_path: Path, busybox_image: str
) -> None:
    """Both Spot pools of the one type answer "no capacity" (providers.local.no_capacity, as
    EC2's InsufficientInstanceCapacity): each is quarantined in turn and the task runs
    on-demand (spot_first's fallback), in the same tick, with real agents."""
    config = {
        "images": {"rewrites": {"alpine": busybox_image}},
        "scheduler": {"interval_seconds": 0.2},
        "providers": {
            "local": {
                "no_capacity": ["c5.large/us-east-1a/spot", "c5.large/us-east-1b/spot"],
                "market": {
                    "seed": 7,
                    "instance_types": ["c5.large"],
                    "zones": ["us-east-1a", "us-east-1b"],
                    "interruptions": False,
                },
            }
        },
    }
    with tescape_server(tmp_path / "data", config=config, run_tasks=True) as srv:
        task_id = submit(srv, {"executors": [{"image": "alpine", "command": ["true"]}]})
        done = ended(srv, task_id)
        assert done["state"] == "COMPLETE", done
        assert done["logs"][0]["metadata"]["market"] == "on-demand"
        rows = admin(srv, "GET", "/instances").json()["instances"]
        tried = sorted((i["market"], i["zone"], i["state"]) for i in rows if i["market"] == "spot")
        assert tried == [
            ("spot", "us-east-1a", "TERMINATED"),
            ("spot", "us-east-1b", "TERMINATED"),
        ]
        assert any(i["market"] == "on-demand" for i in rows)
