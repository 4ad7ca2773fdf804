"""The agent routes (capsule_runtime.protocol.messages): authenticated by each instance's own
token, never by user credentials."""

from __future__ import annotations

import threading
from typing import Any

from flask import Blueprint, Response, current_app, request, send_file
from pydantic import BaseModel, ValidationError

from capsule_runtime.protocol.messages import (
    AGENT_API,
    AttemptReport,
    CapsuleReport,
    Notice,
    Poll,
    Registration,
)
from gateway.api.responses import error_response, json_response
from gateway.dispatch import Dispatcher, Fenced, StreamGap
from gateway.store.fleet import CapsuleConflict, Instance

bp = Blueprint("agent", __name__, url_prefix=AGENT_API)
INSTANCE_HEADER = "X-Tescape-Instance"
# app.extensions key: the semaphore bounding the long polls held at once (server.long_poll_slots)
LONG_POLLS = "tescape.long_polls"


def _dispatcher() -> Dispatcher:
    return current_app.extensions["tescape"].dispatcher


def _caller(instance_id: str | None = None, registering: bool = False) -> Instance:
    iid = instance_id or request.headers.get(INSTANCE_HEADER, "")
    return _dispatcher().authenticate(
        iid, request.headers.get("Authorization"), registering=registering
    )


def _body(model: type[BaseModel]) -> Any:
    try:
        return model.model_validate_json(request.get_data() or b"{}")
    except ValidationError as exc:
        raise _Invalid(str(exc)) from None


class _Invalid(ValueError):
    pass


@bp.errorhandler(_Invalid)
def _invalid(exc: _Invalid) -> Response:
    return error_response(400, f"invalid agent message: {exc}")


@bp.errorhandler(Fenced)
def _fenced(exc: Fenced) -> Response:
    """A superseded attempt, another instance's attempt, or an instance given up on: the agent
    stops that work (409 is never retried)."""
    return error_response(409, str(exc))


@bp.errorhandler(CapsuleConflict)
def _capsule_conflict(exc: CapsuleConflict) -> Response:
    return error_response(409, f"capsule id {exc.args[0]!r} is taken by another capsule")


@bp.post("/instances/<instance_id>/register")
def register(instance_id: str) -> Response:
    answer = _dispatcher().register(_caller(instance_id, registering=True), _body(Registration))
    return json_response(answer.model_dump(mode="json", exclude_none=True))


@bp.post("/instances/<instance_id>/poll")
def poll(instance_id: str) -> Response:
    """A long poll holds a server thread while it waits: when every long-poll slot is taken the
    poll is answered at once (its agent waits on its side before the next), so agents never
    hold the threads the TES API needs."""
    caller, body = _caller(instance_id), _body(Poll)
    slots: threading.BoundedSemaphore = current_app.extensions[LONG_POLLS]
    held = body.wait_seconds > 0 and slots.acquire(blocking=False)
    if not held:
        body = body.model_copy(update={"wait_seconds": 0.0})
    try:
        orders = _dispatcher().poll(caller, body)
    finally:
        if held:
            slots.release()
    return json_response(orders.model_dump(mode="json"))


@bp.post("/instances/<instance_id>/notice")
def notice(instance_id: str) -> Response:
    _dispatcher().notice(_caller(instance_id), _body(Notice))
    return json_response({})


@bp.post("/attempts/<attempt_id>/report")
def report(attempt_id: str) -> Response:
    _dispatcher().report(_caller(), attempt_id, _body(AttemptReport))
    return json_response({})


@bp.post("/attempts/<attempt_id>/capsules")
def capsule(attempt_id: str) -> Response:
    _dispatcher().capsule(_caller(), attempt_id, _body(CapsuleReport))
    return json_response({})


@bp.put("/attempts/<attempt_id>/streams/<int:executor>/<stream>")
def stream(attempt_id: str, executor: int, stream: str) -> Response:
    if stream not in ("stdout", "stderr"):
        return error_response(404, f"no stream {stream!r}")

    # a full log is streamed to disk: stored whatever its size, not bound by max_request_bytes
    request.max_content_length = current_app.extensions["tescape"].config.server.max_upload_bytes

    def chunks() -> Any:
        while chunk := request.stream.read(1 << 16):
            yield chunk

    offset = request.args.get("offset")
    if offset is not None and not offset.isdigit():
        return error_response(400, "offset must be a byte count")
    try:
        size = _dispatcher().save_stream(
            _caller(),
            attempt_id,
            executor,
            stream,
            chunks(),
            offset=int(offset) if offset is not None else None,
        )
    except StreamGap as gap:  # the agent resends from the size the gateway has
        return json_response(
            {"code": 416, "message": str(gap), "size_bytes": str(gap.size)}, status=416
        )
    return json_response({"size_bytes": str(size)})


@bp.get("/dist/<name>")
def agent_wheel(name: str) -> Response:
    """The agent wheel this gateway serves (`agent.wheel`, gateway/agent_wheel.py) to an
    instance installing its agent at boot: its registration token is all it holds yet."""
    _caller(registering=True)
    wheel = current_app.extensions["tescape"].agent_wheel
    if wheel is None or name != wheel.name:
        return error_response(404, f"this gateway serves no agent wheel {name!r} (agent.wheel)")
    return send_file(wheel.path, mimetype="application/zip", as_attachment=True)


@bp.get("/apps/<name>/archive")
def app_archive(name: str) -> Response:
    _caller()
    path = current_app.extensions["tescape"].library.archive_path(name)
    if not path.exists():
        return error_response(404, f"no archive for app {name!r}")
    return send_file(path, mimetype="application/x-tar")
