"""GET /api/v1/market, PUT /api/v1/market/prices, GET /api/v1/costs through the Flask app."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update

from gateway.api import market as market_api
from gateway.app import create_app
from gateway.auth import token_sha256
from gateway.config import load_config
from gateway.market.model import Market, MarketConfig
from gateway.store.schema import attempts

ADMIN = {"Authorization": "Bearer admin-token"}
ALICE = {"Authorization": "Bearer alice-token"}
BOB = {"Authorization": "Bearer bob-token"}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    tokens = [
        {"token_sha256": token_sha256("admin-token"), "user": "root", "admin": True},
        {"token_sha256": token_sha256("alice-token"), "user": "alice"},
        {"token_sha256": token_sha256("bob-token"), "user": "bob"},
    ]
    cfg = load_config(
        overrides={
            "data_dir": str(tmp_path),
            "scheduler": {"enabled": False},
            "auth": {"mode": "bearer", "tokens": tokens},
            "providers": {"local": {"market": {"enabled": False}}},  # tests put their own
        },
        environ={},
    )
    flask_app = create_app(cfg)
    yield flask_app
    flask_app.extensions["tescape"].close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def with_market(app: Flask, **cfg: Any) -> Market:
    m = Market(MarketConfig(instance_types=["m5", "c5.large"], **cfg))
    app.extensions[market_api.MARKET_KEY] = m
    return m


def test_no_market_is_409(client: FlaskClient) -> None:
    for method, path in (("GET", "/api/v1/market"), ("PUT", "/api/v1/market/prices")):
        resp = client.open(path, method=method, headers=ADMIN, json={})
        assert resp.status_code == 409
        assert "no market" in resp.get_json()["message"]


def test_snapshot(app: Flask, client: FlaskClient) -> None:
    with_market(app)
    resp = client.get("/api/v1/market", headers=ALICE)
    assert resp.status_code == 200
    body = resp.get_json()
    assert [t["instance_type"] for t in body["types"]][:2] == ["m5.large", "m5.xlarge"]
    assert len(body["zones"]) == 6 and body["quarantines"] == []
    assert client.get("/api/v1/market").status_code == 401


def test_set_price(app: Flask, client: FlaskClient) -> None:
    m = with_market(app)
    body = {"instance_type": "m5.large", "zone": "us-east-1a", "price": 0.05}
    resp = client.put("/api/v1/market/prices", headers=ADMIN, json=body)
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json() == {
        **{k: body[k] for k in ("instance_type", "zone")},
        "spot_price": 0.05,
        "price_source": "override",
    }
    assert m.price("m5.large", "us-east-1a") == 0.05
    shown = client.get("/api/v1/market", headers=ADMIN).get_json()
    assert shown["types"][0]["zones"]["us-east-1a"]["spot_price"] == 0.05
    cleared = client.put("/api/v1/market/prices", headers=ADMIN, json={**body, "price": None})
    assert cleared.get_json()["price_source"] == "model"
    assert client.put("/api/v1/market/prices", headers=ALICE, json=body).status_code == 403


@pytest.mark.parametrize(
    "body",
    [
        {"instance_type": "m9.large", "zone": "us-east-1a", "price": 0.05},
        {"instance_type": "m5.large", "zone": "us-west-2a", "price": 0.05},
        {"instance_type": "m5.large", "zone": "us-east-1a", "price": -1},
        {"instance_type": "m5.large", "zone": "us-east-1a", "price": 5.0},
        {"instance_type": "m5.large", "zone": "us-east-1a", "price": "0.05"},
        {"instance_type": "m5.large", "zone": "us-east-1a", "price": True},
        {"instance_type": "m5.large", "zone": "us-east-1a"},
        ["m5.large"],
    ],
)
def test_set_price_refuses_bad_bodies(app: Flask, client: FlaskClient, body: Any) -> None:
    with_market(app)
    resp = client.put("/api/v1/market/prices", headers=ADMIN, json=body)
    assert resp.status_code == 400
    assert resp.get_json()["message"]


def _attempt(
    app: Flask, owner: str, market: str, itype: str, price: float, start: str, end: str | None
) -> str:
    services = app.extensions["tescape"]
    task = services.store.create(
        {"executors": [{"image": "alpine", "command": ["true"]}]}, owner=owner
    )
    inst = services.fleet.add_instance(
        provider="local",
        instance_type=itype,
        market=market,
        zone="us-east-1a",
        price_per_hour=price,
        token_sha256="x",
    )
    with services.database.engine.begin() as conn:
        attempt_id = services.fleet.add_attempt(conn, task.id, inst)
        conn.execute(
            update(attempts)
            .where(attempts.c.id == attempt_id)
            .values(start_time=start, end_time=end)
        )
    return str(task.id)


def test_costs(app: Flask, client: FlaskClient) -> None:
    t1 = _attempt(
        app,
        "alice",
        "spot",
        "m5.large",
        0.03,
        "2026-01-01T00:00:00+00:00",
        "2026-01-01T02:00:00+00:00",
    )
    t2 = _attempt(
        app,
        "bob",
        "on-demand",
        "c5.large",
        0.085,
        "2026-01-01T00:00:00+00:00",
        "2026-01-01T01:00:00+00:00",
    )
    running = _attempt(
        app,
        "bob",
        "spot",
        "m5.large",
        0.03,
        datetime.now(UTC).isoformat(timespec="microseconds"),
        None,
    )
    everything = client.get("/api/v1/costs", headers=ADMIN).get_json()
    assert [t["task_id"] for t in everything["tasks"]] == [t1, t2, running]
    first = everything["tasks"][0]
    assert first["cost_usd"] == pytest.approx(0.06)
    assert first["on_demand_usd"] == pytest.approx(0.192)
    assert first["savings_usd"] == pytest.approx(0.132)
    assert everything["total"]["tasks"] == 3
    assert everything["total"]["cost_usd"] == pytest.approx(0.145, abs=1e-3)
    assert everything["truncated"] is False
    # a user sees only their own tasks
    mine = client.get("/api/v1/costs", headers=ALICE).get_json()
    assert [t["task_id"] for t in mine["tasks"]] == [t1]
    assert mine["total"]["cost_usd"] == pytest.approx(0.06)
    one = client.get(f"/api/v1/costs?task_id={t2}&attempts=true", headers=ADMIN).get_json()
    assert [t["task_id"] for t in one["tasks"]] == [t2]
    assert one["tasks"][0]["attempt_costs"][0]["market"] == "on-demand"
    limited = client.get("/api/v1/costs?limit=1", headers=ADMIN).get_json()
    assert [t["task_id"] for t in limited["tasks"]] == [running] and limited["truncated"]
    assert limited["total"]["tasks"] == 3
    assert client.get("/api/v1/costs?limit=0", headers=ADMIN).status_code == 400
    assert client.get("/api/v1/costs?limit=x", headers=ADMIN).status_code == 400


def test_costs_scale_with_the_market_time(app: Flask, client: FlaskClient) -> None:
    _attempt(
        app,
        "alice",
        "spot",
        "m5.large",
        0.03,
        "2026-01-01T00:00:00+00:00",
        "2026-01-01T00:01:00+00:00",
    )
    with_market(app, time_scale=60.0)
    body = client.get("/api/v1/costs", headers=ADMIN).get_json()
    assert body["total"]["instance_hours"] == pytest.approx(1.0)
