"""The TES 1.1 routes. Registered three times — under /ga4gh/tes/v1, /v1 and / — because Nextflow,
Cromwell, py-tes 0.4.2 and py-tes 1.1 each build their URLs differently (see CLIENTS.md)."""

from __future__ import annotations

import json
import re
from typing import Any

from flask import Blueprint, Response, current_app, g, request

from gateway.api.openapi import openapi_document
from gateway.api.responses import json_response
from gateway.service import BadRequest, ListQuery, NotFound, TaskService
from gateway.tes.states import State
from gateway.tes.views import View

PREFIXES = {"tes_ga4gh": "/ga4gh/tes/v1", "tes_v1": "/v1", "tes_root": ""}
# In a UTF-8 body a surrogate can come only from a \uD800-\uDFFF escape (UTF-8 cannot encode one),
# so only a body with such an escape, or in another encoding, needs the full lone-surrogate check.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
# A TES task nests six levels at most (task → logs → [i] → logs → [i] → field); anything far
# deeper is refused before it can exhaust the recursion of the code that walks it.
MAX_JSON_DEPTH = 32


def _service() -> TaskService:
    return current_app.extensions["tescape"].tasks


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _json_body() -> Any:
    raw = request.get_data(cache=False)
    if not raw.strip():
        raise BadRequest("", "the request body must be a JSON task document")
    try:
        body = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("", f"malformed JSON: {exc}") from None
    except RecursionError:  # nested past the parser's own limit
        raise BadRequest(
            "", f"the JSON document nests deeper than {MAX_JSON_DEPTH} levels"
        ) from None
    if json_depth(body) > MAX_JSON_DEPTH:
        raise BadRequest("", f"the JSON document nests deeper than {MAX_JSON_DEPTH} levels")
    if _SURROGATE_ESCAPE.search(raw) or json.detect_encoding(raw) != "utf-8":
        try:  # a lone surrogate escape ("\ud800") parses, but can be neither stored nor sent back
            json.dumps(body, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise BadRequest("", "malformed JSON: a string holds a lone surrogate escape") from None
    return body


def json_depth(value: Any) -> int:
    """How deeply `value` nests lists and objects (a scalar: 0), walked without recursion."""
    if not isinstance(value, dict | list):
        return 0
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return deepest


def _view() -> View:
    raw = request.args.get("view")
    if raw is None or raw == "":
        return View.MINIMAL
    try:
        return View(raw.upper())
    except ValueError:
        raise BadRequest("view", "must be MINIMAL, BASIC or FULL") from None


def _list_query() -> ListQuery:
    args = request.args
    cfg = current_app.extensions["tescape"].config.tasks
    page_size = cfg.default_page_size
    if args.get("page_size"):
        try:
            page_size = int(args["page_size"])
        except ValueError:
            raise BadRequest("page_size", "must be an integer") from None
        if page_size < 1:
            raise BadRequest("page_size", "must be at least 1")
        page_size = min(page_size, cfg.max_page_size)
    state = None
    if args.get("state"):
        try:
            state = State(args["state"].upper())
        except ValueError:
            raise BadRequest("state", f"{args['state']!r} is not a TES state") from None
    keys = args.getlist("tag_key")
    values = args.getlist("tag_value")
    if len(values) > len(keys):
        raise BadRequest("tag_value", "has more entries than tag_key")
    tags = {k: (values[i] if i < len(values) else "") for i, k in enumerate(keys)}
    return ListQuery(
        view=_view(),
        name_prefix=args.get("name_prefix") or None,
        state=state,
        tags=tags or None,
        page_size=page_size,
        page_token=args.get("page_token") or None,
    )


def _refuse_nul() -> None:
    """No task id contains NUL, and no filter may (PostgreSQL text cannot hold it): answer 404 and
    400 instead of letting the database fail with a 500."""
    task_id = (request.view_args or {}).get("task_id", "")
    if "\x00" in task_id:
        raise NotFound(task_id)
    for key, value in request.args.items(multi=True):
        if "\x00" in key or "\x00" in value:
            raise BadRequest(key, "must not contain NUL characters")


def bp_prefix(name: str) -> str:
    return PREFIXES[name]


def tes_blueprint(name: str) -> Blueprint:
    bp = Blueprint(name, __name__)
    bp.before_request(_refuse_nul)

    @bp.get("/service-info")
    def service_info() -> Response:
        return json_response(_service().service_info())

    @bp.get("/openapi.json")
    def openapi() -> Response:
        return json_response(openapi_document(request.url_root.rstrip("/") + bp_prefix(name)))

    # Must win over /tasks/<task_id>: a literal segment outranks a converter in Werkzeug.
    @bp.get("/tasks/service-info")
    def legacy_service_info() -> Response:
        return json_response(_service().legacy_service_info())

    @bp.get("/tasks")
    def list_tasks() -> Response:
        return json_response(_service().list(_list_query(), g.principal))

    @bp.post("/tasks")
    def create_task() -> Response:
        return json_response(_service().create(_json_body(), g.principal))

    @bp.get("/tasks/<task_id>")
    def get_task(task_id: str) -> Response:
        return json_response(_service().get(task_id, _view(), g.principal))

    @bp.post("/tasks/<task_id>:cancel")
    def cancel_task(task_id: str) -> Response:
        # The body is ignored: clients send none, or `{}`, with or without a Content-Type.
        return json_response(_service().cancel(task_id, g.principal))

    return bp
