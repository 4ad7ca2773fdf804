"""Cost accounting: price x hours per attempt, the on-demand equivalent, savings, summaries."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.market.costs import attempt_cost, costs_summary, window_totals

NOW = datetime(2026, 2, 1, 12, tzinfo=UTC)


def row(
    task: str,
    market: str | None,
    itype: str | None,
    price: float | None,
    start: str | None,
    end: str | None,
    **extra: object,
) -> dict[str, object]:
    return {
        "task_id": task,
        "id": f"a-{task}-{start}",
        "market": market,
        "instance_type": itype,
        "zone": "us-east-1a",
        "price_per_hour": price,
        "start_time": start,
        "end_time": end,
        "instance_id": "i-1",
        **extra,
    }


def test_spot_attempt_against_on_demand() -> None:
    c = attempt_cost(
        row(
            "t", "spot", "m5.large", 0.03, "2026-02-01T10:00:00+00:00", "2026-02-01T11:30:00+00:00"
        ),
        NOW,
    )
    assert c is not None
    assert c.hours == pytest.approx(1.5)
    assert c.cost_usd == pytest.approx(0.045)
    assert c.on_demand_usd == pytest.approx(0.144)
    assert c.savings_usd == pytest.approx(0.099)


def test_on_demand_unknown_open_and_unstarted_attempts() -> None:
    od = attempt_cost(
        row("t", "on-demand", "m5.large", 0.096, "2026-02-01T11:00:00+00:00", None), NOW
    )
    assert od is not None and od.hours == pytest.approx(1.0)  # open: until now
    assert od.on_demand_usd == od.cost_usd == pytest.approx(0.096)
    local = attempt_cost(
        row("t", "on-demand", "local", 0.0, "2026-02-01T11:00:00+00:00", None), NOW
    )
    assert local is not None and local.cost_usd == local.on_demand_usd == 0
    assert attempt_cost(row("t", None, None, None, None, None), NOW) is None
    pending = row("t", None, None, None, "2026-02-01T11:00:00+00:00", None, instance_id=None)
    assert attempt_cost(pending, NOW) is None
    scaled = attempt_cost(
        row(
            "t", "spot", "m5.large", 0.03, "2026-02-01T11:59:00+00:00", "2026-02-01T12:00:00+00:00"
        ),
        NOW,
        time_scale=60,
    )
    assert scaled is not None and scaled.hours == pytest.approx(1.0)


def test_summary_per_task_and_total() -> None:
    rows = [
        row(
            "t1", "spot", "m5.large", 0.03, "2026-02-01T08:00:00+00:00", "2026-02-01T09:00:00+00:00"
        ),
        row(
            "t1", "spot", "m5.large", 0.04, "2026-02-01T09:00:00+00:00", "2026-02-01T10:00:00+00:00"
        ),
        row(
            "t2",
            "on-demand",
            "c5.large",
            0.085,
            "2026-02-01T08:00:00+00:00",
            "2026-02-01T10:00:00+00:00",
        ),
        row("t3", None, None, None, None, None),
    ]
    out = costs_summary(rows, NOW, attempts=True)
    assert out["currency"] == "USD"
    t1, t2 = out["tasks"]
    assert (t1["task_id"], t1["attempts"]) == ("t1", 2)
    assert t1["cost_usd"] == pytest.approx(0.07)
    assert t1["on_demand_usd"] == pytest.approx(0.192)
    assert t1["savings_pct"] == pytest.approx(63.54, abs=0.01)
    assert len(t1["attempt_costs"]) == 2 and t1["attempt_costs"][0]["hours"] == 1.0
    assert t2["savings_usd"] == 0
    total = out["total"]
    assert total["tasks"] == 2
    assert total["cost_usd"] == pytest.approx(0.24)
    assert total["on_demand_usd"] == pytest.approx(0.362)
    assert total["instance_hours"] == pytest.approx(4.0)
    assert costs_summary([], NOW)["total"]["savings_pct"] == 0.0


def test_window_totals_equal_the_summary_of_clipped_rows() -> None:
    """The system page's fast totals agree with costs_summary over the same attempts, each
    counted from the window's start (attempts that ended before it left out)."""
    rows = [
        row(
            "t1", "spot", "m5.large", 0.04, "2026-01-20T09:00:00+00:00", "2026-01-30T10:00:00+00:00"
        ),
        row("t1", "spot", "m5.large", 0.05, "2026-01-31T09:00:00+00:00", None),
        row("t2", "on-demand", "c5.large", 0.085, "2026-01-01T08:00:00+00:00", None),
        row(
            "t3", "spot", "m5.large", 0.04, "2026-01-02T08:00:00+00:00", "2026-01-03T08:00:00+00:00"
        ),
        row("t4", None, None, None, None, None),
        row("t5", "spot", "local", 0.01, "2026-01-31T00:00:00+00:00", None, instance_id=None),
    ]
    since = {"week": datetime(2026, 1, 25, tzinfo=UTC), "month": datetime(2026, 1, 2, tzinfo=UTC)}
    fast = window_totals(rows, NOW, since)
    for name, first in since.items():
        first_s = first.isoformat()
        clipped = [
            {**r, "start_time": max(str(r["start_time"]), first_s)}
            for r in rows
            if r["start_time"] and (r["end_time"] is None or str(r["end_time"]) >= first_s)
        ]
        slow = costs_summary(clipped, NOW)["total"]
        assert fast[name] == pytest.approx(slow), name
    assert fast["week"]["tasks"] == 2 and fast["month"]["tasks"] == 3
