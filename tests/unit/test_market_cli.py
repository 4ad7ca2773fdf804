"""`tescape market show|set-price|costs` against a stubbed server call."""

from __future__ import annotations

from typing import Any

import click
import pytest
from click.testing import CliRunner

from gateway import cli
from gateway.cli_market import register
from gateway.market.model import Market, MarketConfig


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, dict[str, Any]]]:
    seen: list[tuple[str, str, dict[str, Any]]] = []
    market = Market(MarketConfig(instance_types=["m5.large", "r5"], zones=["us-east-1a"]))
    market.quarantine("m5.large", "us-east-1a")

    def fake(server: str, method: str, path: str, **kwargs: Any) -> Any:
        seen.append((method, path, kwargs))
        if path == "/api/v1/market":
            return market.snapshot()
        if path == "/api/v1/market/prices":
            body = kwargs["json"]
            return {**body, "spot_price": body["price"] or 0.03, "price_source": "override"}
        return {
            "currency": "USD",
            "tasks": [
                {
                    "task_id": "t1",
                    "attempts": 2,
                    "instance_hours": 1.5,
                    "cost_usd": 0.05,
                    "on_demand_usd": 0.144,
                    "savings_usd": 0.094,
                    "savings_pct": 65.3,
                }
            ],
            "total": {
                "tasks": 1,
                "instance_hours": 1.5,
                "cost_usd": 0.05,
                "on_demand_usd": 0.144,
                "savings_usd": 0.094,
                "savings_pct": 65.3,
            },
            "truncated": False,
        }

    monkeypatch.setattr(cli, "_call", fake)
    return seen


@pytest.fixture
def main() -> click.Group:
    group = click.Group("tescape")
    register(group)
    return group


def test_show(main: click.Group, calls: list[Any]) -> None:
    out = CliRunner().invoke(main, ["market", "show", "--type", "r5"])
    assert out.exit_code == 0, out.output
    assert "r5.large" in out.output and "m5.large" not in out.output.split("quarantined")[0]
    assert "quarantined: m5.large in us-east-1a" in out.output
    as_json = CliRunner().invoke(main, ["market", "show", "--json"])
    assert '"types"' in as_json.output


def test_set_price_and_clear(main: click.Group, calls: list[Any]) -> None:
    out = CliRunner().invoke(main, ["market", "set-price", "m5.large", "us-east-1a", "0.05"])
    assert out.exit_code == 0, out.output
    assert calls[-1] == (
        "PUT",
        "/api/v1/market/prices",
        {"json": {"instance_type": "m5.large", "zone": "us-east-1a", "price": 0.05}},
    )
    CliRunner().invoke(main, ["market", "set-price", "m5.large", "us-east-1a", "clear"])
    assert calls[-1][2]["json"]["price"] is None
    bad = CliRunner().invoke(main, ["market", "set-price", "m5.large", "us-east-1a", "cheap"])
    assert bad.exit_code != 0 and len(calls) == 2  # refused before any call


def test_costs(main: click.Group, calls: list[Any]) -> None:
    out = CliRunner().invoke(main, ["market", "costs", "--task", "t1", "--limit", "5"])
    assert out.exit_code == 0, out.output
    assert calls[-1] == ("GET", "/api/v1/costs", {"params": {"limit": 5, "task_id": ["t1"]}})
    assert "65.3%" in out.output and "total (1 tasks)" in out.output
