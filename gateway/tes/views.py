"""The three TES task views, exactly as the spec defines them.

MINIMAL: only `id` and `state`.
BASIC:   everything except `ExecutorLog.stdout`, `ExecutorLog.stderr`, `Input.content` and
         `TaskLog.system_logs`.
FULL:    everything.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class View(StrEnum):
    MINIMAL = "MINIMAL"
    BASIC = "BASIC"
    FULL = "FULL"


def render_task(
    task_id: str,
    state: str,
    view: View,
    spec: dict[str, Any] | None = None,
    creation_time: str | None = None,
    logs: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Build the response document. `spec` is the stored normalised request (already nulls-free);
    `logs` the TaskLogs. MINIMAL needs neither."""
    if view is View.MINIMAL:
        return {"id": task_id, "state": state}
    out: dict[str, Any] = {"id": task_id, "state": state}
    out.update(spec or {})
    if creation_time:
        out["creation_time"] = creation_time
    if logs:
        out["logs"] = logs
    if view is View.BASIC:
        if "inputs" in out:
            out["inputs"] = [{k: v for k, v in i.items() if k != "content"} for i in out["inputs"]]
        if "logs" in out:
            out["logs"] = [_basic_task_log(tl) for tl in out["logs"]]
    return out


def _basic_task_log(task_log: dict[str, Any]) -> dict[str, Any]:
    tl = {k: v for k, v in task_log.items() if k != "system_logs"}
    if "logs" in tl:
        tl["logs"] = [
            {k: v for k, v in el.items() if k not in ("stdout", "stderr")} for el in tl["logs"]
        ]
    return tl
