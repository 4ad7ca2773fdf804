"""The gateway status API: `GET /api/v1/status` for monitors (same auth as the API; aggregate
counts only) and `GET /readyz` for load balancers (public: 200 when the database and the capsule
store answer, 503 otherwise). `/healthz` (the process is alive) lives in the app factory."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Blueprint, Response, current_app

from gateway import status as gateway_status
from gateway.api.responses import json_response

if TYPE_CHECKING:
    from gateway.app import Services

bp = Blueprint("status", __name__)
PUBLIC = {"readyz"}  # endpoints a load balancer calls without credentials


def _services() -> Services:
    return current_app.extensions["tescape"]


@bp.get("/api/v1/status")
def status() -> Response:
    """200 with the document while the gateway can take tasks, 503 when it cannot (a monitor
    that reads only the status code still sees it)."""
    doc = gateway_status.status(_services())
    return json_response(doc, status=503 if doc["status"] == "fail" else 200)


@bp.get("/readyz")
def readyz() -> Response:
    ok, checks = gateway_status.ready(_services())
    body = {"status": "ok" if ok else "fail", **{k: c.as_dict() for k, c in checks.items()}}
    return json_response(body, status=200 if ok else 503)
