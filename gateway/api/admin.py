"""The admin API at /api/v1 (JSON, same auth as TES): instances, task events, full executor logs.
Later issues add verbs here (checkpoint, migrate, interrupt, market, costs); keep these names."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Blueprint, Response, current_app, g, request, send_file
from werkzeug.exceptions import RequestedRangeNotSatisfiable

from capsule_runtime.protocol.messages import Notice
from gateway.api.responses import error_response, json_response
from gateway.library import LibraryError, stream_chunks
from gateway.migration import Migrations, Refused
from gateway.providers.base import ProviderError, interrupter, record_of
from gateway.service import NotFound

if TYPE_CHECKING:
    from gateway.app import Services

bp = Blueprint("admin", __name__, url_prefix="/api/v1")

STREAM_HEADER = "X-Tescape-Stream"  # on GET .../logs: `final` or `live` (gateway.cli_logs reads it)


def _services() -> Services:
    return current_app.extensions["tescape"]


def _own_task(task_id: str) -> None:
    if _services().store.get(task_id, owner=g.principal.owner_filter, full=False) is None:
        raise NotFound(task_id)


@bp.get("/instances")
def instances() -> Response:
    if not g.principal.admin:
        return error_response(403, "listing instances needs an admin")
    fleet = _services().fleet
    out = []
    for inst in fleet.instances():
        # a reclaim notice: the instance takes no new work and its tasks are moving (draining)
        notice = inst.data.interruption.dump() if inst.data.interruption else None
        out.append(
            {
                "id": inst.id,
                "provider": inst.provider,
                "instance_type": inst.instance_type,
                "market": inst.market,
                "zone": inst.zone,
                "state": inst.state.value,
                "price_per_hour": inst.price_per_hour,
                "created_time": inst.created_time,
                "last_heartbeat": inst.last_heartbeat,
                "capacity": inst.data.capacity.sizes() if inst.data.capacity else None,
                "task_ids": sorted({a.task_id for a in fleet.live_attempts(inst.id)}),
                "owner": inst.owner,  # the gateway that launched or adopted it
                "draining": notice is not None and inst.state.value in ("LAUNCHING", "READY"),
                "interruption": notice,
            }
        )
    return json_response({"instances": out})


@bp.post("/instances/<instance_id>:interrupt")
def interrupt_instance(instance_id: str) -> Response:
    """Simulate a Spot reclaim: body {"notice_seconds": N} (default 120, AWS's two minutes)."""
    if not g.principal.admin:
        return error_response(403, "interrupting instances needs an admin")
    body = request.get_json(silent=True) if request.get_data() else {}
    notice = body.get("notice_seconds", 120) if isinstance(body, dict) else None
    if not isinstance(notice, int | float) or isinstance(notice, bool) or not 0 <= notice <= 3600:
        return error_response(400, 'the body must be {"notice_seconds": 0..3600}')
    scheduler = _services().scheduler
    if scheduler is None:
        return error_response(409, "this gateway runs no instances (scheduler disabled)")
    inst = _services().fleet.instance(instance_id)
    if inst is None:
        return error_response(404, f"no instance {instance_id!r}")
    try:
        deadline = interrupter(scheduler.provider).interrupt(record_of(inst), float(notice))
    except ProviderError as exc:
        return error_response(409, str(exc))
    # the gateway hears of it at once (as from EC2's interruption event), besides the agent's
    # watcher polling the instance's metadata
    _services().dispatcher.notice(inst, Notice(kind="terminate", time=deadline))
    return json_response({"instance_id": instance_id, "deadline": deadline}, status=202)


@bp.get("/tasks/<task_id>/events")
def task_events(task_id: str) -> Response:
    _own_task(task_id)
    return json_response({"events": _services().store.events(task_id)})


@bp.get("/tasks/<task_id>/logs")
def task_logs(task_id: str) -> Response:
    """The full stdout or stderr of one executor (text/plain); the TES ExecutorLog keeps a tail."""
    _own_task(task_id)
    stream = request.args.get("stream", "stdout")
    try:
        executor = int(request.args.get("executor", "0"))
        path = _services().dispatcher.stream_path(task_id, executor, stream)
    except ValueError as exc:
        return error_response(400, str(exc))
    if not path.exists():
        return error_response(
            404, "no such log yet (an executor's output arrives a few seconds after it starts)"
        )
    final = _services().dispatcher.stream_is_final(task_id, executor, stream)
    try:
        resp = send_file(path, mimetype="text/plain", conditional=True)
    except RequestedRangeNotSatisfiable:  # nothing past the bytes the client has
        resp = error_response(416, "no bytes past that offset yet")
        resp.headers["Content-Range"] = f"bytes */{path.stat().st_size}"
    # `final`: the whole stream, uploaded when the task ended; `live`: what the agent has
    # pushed while it runs (a follower keeps asking until it reads `final`)
    resp.headers[STREAM_HEADER] = "final" if final else "live"
    return resp


# -- checkpoints and migrations ---------------------------------------------------------------


CAPSULE_FIELDS = ("reason", "stored_bytes", "uploaded_bytes", "uploaded_chunks", "seconds")


def _move(task_id: str, stop: bool) -> Response:
    _own_task(task_id)
    body = request.get_json(silent=True) if request.get_data() else {}
    if not isinstance(body, dict) or not isinstance(body.get("instance", ""), str):
        return error_response(400, 'the body must be empty or {"instance": "<instance id>"}')
    try:
        s = _services()
        out = Migrations(s.store, s.fleet, s.wakeups).request(
            task_id, stop=stop, target=body.get("instance")
        )
    except Refused as exc:
        return error_response(exc.status, str(exc))
    return json_response(out, status=202)


@bp.post("/tasks/<task_id>:checkpoint")
def checkpoint_task(task_id: str) -> Response:
    """Checkpoint a RUNNING task into a capsule; it keeps running where it is."""
    return _move(task_id, stop=False)


@bp.post("/tasks/<task_id>:migrate")
def migrate_task(task_id: str) -> Response:
    """Checkpoint, stop, and restore on another instance (body {"instance": ID} optional)."""
    return _move(task_id, stop=True)


@bp.get("/tasks/<task_id>/capsules")
def task_capsules(task_id: str) -> Response:
    _own_task(task_id)
    out = [
        {
            "id": c.id,
            "attempt_id": c.attempt_id,
            "sequence": c.sequence,
            "state": c.state,
            "manifest_key": c.store_key,
            "manifest_sha256": c.manifest_sha256,
            "size_bytes": c.size_bytes,
            "parent_id": c.parent_id,
            "created_time": c.created_time,
            **{k: v for k, v in c.data.items() if k in CAPSULE_FIELDS},
        }
        for c in _services().fleet.capsules_of(task_id)
    ]
    return json_response({"capsules": out})


@bp.get("/tasks/<task_id>/attempts")
def task_attempts(task_id: str) -> Response:
    _own_task(task_id)
    out = [
        {
            "id": a.id,
            "number": a.number,
            "instance_id": a.instance_id,
            "phase": a.phase.value,
            "reason": a.reason,
            "start_time": a.start_time,
            "end_time": a.end_time,
            "usage": a.data.usage[-1].dump() if a.data.usage else None,
        }
        for a in _services().fleet.attempts_of(task_id)
    ]
    return json_response({"attempts": out})


# -- the Application Library -----------------------------------------------------------------


def _admin_only() -> Response | None:
    if not g.principal.admin:
        return error_response(403, "changing the Application Library needs an admin")
    return None


@bp.get("/apps")
def list_apps() -> Response:
    library = _services().library
    return json_response({"apps": [library.public(a) for a in library.store.all()]})


@bp.put("/apps/<name>")
def put_app(name: str) -> Response:
    """Body: {"image": REF, "username"?: U, "password"?: P} (credentials for REF's registry)."""
    if (refused := _admin_only()) is not None:
        return refused
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("image"), str):
        return error_response(400, 'the body must be {"image": "...", "username"?, "password"?}')
    try:
        app = _services().library.add(
            name, body["image"], body.get("username"), body.get("password")
        )
    except LibraryError as exc:
        return error_response(400, str(exc))
    return json_response(_services().library.public(app))


@bp.put("/apps/<name>/archive")
def import_app(name: str) -> Response:
    """Body: an image archive (`podman save` / `docker save`), streamed."""
    if (refused := _admin_only()) is not None:
        return refused
    # streamed to disk in chunks: bound by server.max_upload_bytes, not max_request_bytes
    request.max_content_length = _services().config.server.max_upload_bytes
    try:
        app = _services().library.import_archive(name, stream_chunks(request.stream))
    except LibraryError as exc:
        return error_response(400, str(exc))
    return json_response(_services().library.public(app))


@bp.delete("/apps/<name>")
def delete_app(name: str) -> Response:
    if (refused := _admin_only()) is not None:
        return refused
    if not _services().library.remove(name):
        return error_response(404, f"no app {name!r}")
    return json_response({})
