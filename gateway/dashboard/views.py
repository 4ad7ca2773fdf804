"""The dashboard's routes: parse the query string → read (`queries`) → render a template.
Each live page has a JSON twin under /ui/live/ that its script polls; the JSON carries rendered
HTML fragments from the same templates, so a row is written in one place only."""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, current_app, g, render_template, request, url_for

from capsule_runtime.protocol.times import rfc3339, utcnow
from gateway import __version__
from gateway import status as gateway_status
from gateway.api.responses import json_response
from gateway.dashboard import charts, queries
from gateway.tes.states import State

if TYPE_CHECKING:
    from gateway.app import Services

COST_WINDOWS = (7, 30, 90)
CSV_FIELDS = (
    "id",
    "instance_type",
    "market",
    "zone",
    "state",
    "price_per_hour",
    "cpu_cores",
    "ram_gb",
    "cpu_pct",
    "mem_pct",
    "created",
    "last_heartbeat",
    "notice",
    "deadline",
    "task_ids",
    "tasks_run",
)


def _services() -> Services:
    return current_app.extensions["tescape"]


def dashboard_blueprint() -> Blueprint:
    bp = Blueprint(
        "dashboard",
        __name__,
        template_folder="templates",
        static_folder="static",
        static_url_path="/static",
    )
    bp.add_url_rule("/", "tasks", tasks_page)
    bp.add_url_rule("/live/tasks", "live_tasks", live_tasks)
    bp.add_url_rule("/tasks/<task_id>", "task", task_page)
    bp.add_url_rule("/live/tasks/<task_id>", "live_task", live_task)
    bp.add_url_rule("/instances", "instances", instances_page)
    bp.add_url_rule("/instances.csv", "instances_csv", instances_csv)
    bp.add_url_rule("/system", "system", system_page)
    bp.add_url_rule("/costs", "costs", costs_page)

    @bp.context_processor
    def _common() -> dict[str, Any]:
        principal = g.get("principal")
        return {
            "version": __version__,
            "user": principal.user if principal else "",
            "admin": bool(principal and principal.admin),
            "states": [s.value for s in State],
        }

    return bp


def _page(template: str, status: int = 200, **context: Any) -> Response:
    return Response(render_template(template, **context), status=status, mimetype="text/html")


# -- tasks -------------------------------------------------------------------------------------


def _task_list() -> tuple[queries.TaskFilter | None, dict[str, Any], str | None]:
    try:
        f = queries.TaskFilter.parse(request.args)
    except queries.FilterError as exc:
        return None, {"tasks": [], "next": None}, str(exc)
    return f, queries.task_page(_services(), g.principal, f), None


def tasks_page() -> Response:
    f, page, error = _task_list()
    counts = queries.state_counts(_services(), g.principal)
    next_url = None
    if f is not None and page["next"] is not None:
        next_url = url_for("dashboard.tasks", **f.query_args(before=page["next"]))
    return _page(
        "tasks.html",
        status=400 if error else 200,
        f=f or queries.TaskFilter(),
        page=page,
        error=error,
        counts=counts,
        total=sum(counts.values()),
        next_url=next_url,
        first_url=url_for("dashboard.tasks", **(f.query_args() if f else {})),
        live_url=url_for("dashboard.live_tasks", **(f.query_args(before=f.before) if f else {})),
    )


def live_tasks() -> Response:
    """The rows of the page the browser shows, re-rendered (for the 3-second refresh)."""
    _, page, error = _task_list()
    if error:
        return json_response({"error": error}, status=400)
    rows = render_template("_task_rows.html", tasks=page["tasks"])
    return json_response({"rows": rows, "count": len(page["tasks"])})


def _task_context(task_id: str) -> dict[str, Any] | None:
    now = utcnow()
    task = queries.task_detail(_services(), g.principal, task_id, now)
    if task is None:
        return None
    _with_live_output(task)
    return {
        "task": task,
        "usage": charts.usage_charts(task["usage"]),
        "timeline": charts.timeline(
            task["created"], task["attempts"], task["events"], rfc3339(now)
        ),
    }


def _with_live_output(task: dict[str, Any]) -> None:
    """A running executor's output so far — its agent pushes it as it grows — in place of the
    tail TES keeps, which arrives only when the executor ends."""
    if task.get("terminal") or not task.get("logs"):
        return
    dispatcher = _services().dispatcher
    limit = _services().config.executor_logs.tail_bytes
    for index, entry in enumerate(task["logs"][-1].get("logs") or []):
        if entry.get("end_time"):
            continue
        for stream in ("stdout", "stderr"):
            path = dispatcher.stream_path(task["id"], index, stream)
            try:
                with open(path, "rb") as f:
                    f.seek(max(0, path.stat().st_size - limit))
                    entry[stream] = f.read(limit).decode("utf-8", "replace")
            except OSError:
                continue


def task_page(task_id: str) -> Response:
    context = _task_context(task_id)
    if context is None:
        return _page("not_found.html", status=404, what=f"task {task_id}")
    return _page("task.html", **context)


def live_task(task_id: str) -> Response:
    """The parts of the task page that change while it runs, re-rendered."""
    context = _task_context(task_id)
    if context is None:
        return json_response({"code": 404, "message": f"task {task_id!r} not found"}, 404)
    task = context["task"]
    parts = {
        name: render_template(f"_task_{name}.html", **context)
        for name in ("summary", "timeline", "usage", "attempts", "events", "logs")
    }
    return json_response({"state": task["state"], "terminal": task["terminal"], "parts": parts})


# -- instances, system, costs ------------------------------------------------------------------


def instances_page() -> Response:
    if not g.principal.admin:
        return _page("forbidden.html", status=403, what="the instances")
    include_ended = request.args.get("all") == "1"
    rows = queries.instance_rows(_services(), include_ended)
    return _page("instances.html", instances=rows, include_ended=include_ended)


def instances_csv() -> Response:
    if not g.principal.admin:
        return _page("forbidden.html", status=403, what="the instances")
    rows = queries.instance_rows(_services(), request.args.get("all") == "1")
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "task_ids": " ".join(row["task_ids"])})
    return Response(
        out.getvalue(),
        mimetype="text/csv",
        headers={"Content-Disposition": 'attachment; filename="tescape-instances.csv"'},
    )


def system_page() -> Response:
    services = _services()
    doc = gateway_status.status(services)
    now = utcnow()
    spent = {}
    if doc["database"]["status"] == "ok":
        spent = queries.spend(services, g.principal, now, {"week": 7, "month": 30})
    return _page("system.html", status=503 if doc["status"] == "fail" else 200, s=doc, spent=spent)


def costs_page() -> Response:
    try:
        days = int(request.args.get("days", "30"))
    except ValueError:
        days = 30
    if days not in COST_WINDOWS:
        days = 30
    data = queries.cost_breakdown(_services(), g.principal, utcnow(), days)
    chart = charts.bar_chart(
        [(d["day"][5:], d["cost_usd"], d["on_demand_usd"]) for d in data["by_day"]],
        every_label=1 if days <= 7 else 5 if days <= 30 else 15,
    )
    return _page("costs.html", c=data, chart=chart, windows=COST_WINDOWS)
