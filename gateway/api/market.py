"""The market admin API at /api/v1 (JSON, same auth as TES): the simulated Spot market and costs.

GET /api/v1/market          types, zones, current Spot prices, interruption buckets,
                            quarantines (409 when this gateway runs no simulated market)
PUT /api/v1/market/prices   an admin pins a Spot price: {"instance_type", "zone", "price"}
                            (price null clears the pin)
GET /api/v1/costs           per task and in total: cost, on-demand equivalent, savings, from
                            the attempts table; a user sees only their own tasks.
                            ?task_id=ID (repeatable) ?limit=N tasks listed (total covers all)
                            ?attempts=true adds each attempt's cost
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Blueprint, Response, current_app, g, request
from sqlalchemy import select

from capsule_runtime.protocol.times import utcnow
from gateway.api.responses import error_response, json_response
from gateway.market.catalog import on_demand_price
from gateway.market.costs import costs_summary
from gateway.market.model import Market, UnknownOffer
from gateway.store.schema import ATTEMPT_COST_COLUMNS, attempts, tasks

if TYPE_CHECKING:
    from gateway.app import Services

bp = Blueprint("market", __name__, url_prefix="/api/v1")
MARKET_KEY = "tescape_market"
MAX_LIMIT = 10_000


def _market() -> Market | None:
    return current_app.extensions.get(MARKET_KEY)


def _no_market() -> Response:
    return error_response(409, "no market: this gateway runs no simulated Spot market")


@bp.get("/market")
def market_snapshot() -> Response:
    market = _market()
    if market is None:
        return _no_market()
    return json_response(market.snapshot())


@bp.put("/market/prices")
def set_market_price() -> Response:
    if not g.principal.admin:
        return error_response(403, "setting market prices needs an admin")
    market = _market()
    if market is None:
        return _no_market()
    body = request.get_json(silent=True)
    shape = 'the body must be {"instance_type": "m5.large", "zone": "us-east-1a", "price": 0.05}'
    if (
        not isinstance(body, dict)
        or not isinstance(body.get("instance_type"), str)
        or not isinstance(body.get("zone"), str)
        or "price" not in body
    ):
        return error_response(400, shape)
    price = body["price"]
    if price is not None and (isinstance(price, bool) or not isinstance(price, int | float)):
        return error_response(400, "price must be a number (USD per hour) or null to clear")
    try:
        market.set_price(body["instance_type"], body["zone"], price)
        current = market.price(body["instance_type"], body["zone"])
    except UnknownOffer as exc:
        return error_response(400, str(exc))
    return json_response(
        {
            "instance_type": body["instance_type"],
            "zone": body["zone"],
            "spot_price": current,
            "price_source": market.prices.source(body["instance_type"], body["zone"]),
        }
    )


@bp.get("/costs")
def costs() -> Response:
    try:
        limit = int(request.args.get("limit", "1000"))
    except ValueError:
        return error_response(400, "limit must be an integer")
    if not 1 <= limit <= MAX_LIMIT:
        return error_response(400, f"limit must be 1..{MAX_LIMIT}")
    with_attempts = request.args.get("attempts", "false").lower() == "true"
    task_ids = request.args.getlist("task_id")
    services: Services = current_app.extensions["tescape"]
    query = (
        select(*ATTEMPT_COST_COLUMNS)
        .select_from(attempts.join(tasks, tasks.c.id == attempts.c.task_id))
        .order_by(tasks.c.seq, attempts.c.number)
    )
    owner = g.principal.owner_filter
    if owner is not None:
        query = query.where(tasks.c.owner == owner)
    if task_ids:
        query = query.where(attempts.c.task_id.in_(task_ids))
    market = _market()
    with services.fleet.db.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(query)]
    summary = costs_summary(
        rows,
        now=utcnow(),
        on_demand=on_demand_price,
        attempts=with_attempts,
        time_scale=market.time_scale if market is not None else 1.0,
    )
    listed = summary["tasks"]
    summary["tasks"] = listed[-limit:]  # the newest tasks; the total covers all
    summary["truncated"] = len(listed) > limit
    return json_response(summary)
