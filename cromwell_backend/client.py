"""The HTTP side of the Cromwell replay harness: the requests Cromwell's TES backend makes and the
strict parsing its spray-json formats apply to the answers.

Cromwell (TesAsyncBackendJobExecutionActor, Cromwell 87 to 92) calls exactly its configured
`endpoint` (the task collection, e.g. http://host:8000/v1/tasks):

    POST {endpoint}                          create; the answer must hold "id"
    GET  {endpoint}/{id}?view=FULL           every poll until the first TaskLog has both
                                             `start_time` and `metadata.vm_price_per_hour_usd`
    GET  {endpoint}/{id}?view=MINIMAL        every poll after that
    GET  {endpoint}/{id}?view=FULL           at the end (end_time; system_logs on errors)
    POST {endpoint}/{id}:cancel              abort

An answer that is not 2xx, not `application/json`, or does not parse into Cromwell's case classes
(a missing required field, a field of the wrong JSON type) fails the job, non-retryably. Unknown
fields are ignored, as spray-json's jsonFormatN does. `bearer-token` goes into Authorization.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import requests


class CromwellTesError(RuntimeError):
    """Cromwell's "Failed TES request" or a deserialization failure."""


# -- strict parsing (the spray-json case classes) -------------------------------------------------


def _opt(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = obj.get(key)
    if value is None:
        return None
    if kind is float:
        kind = (int, float)
    if isinstance(value, bool) and kind is not bool and bool not in _as_tuple(kind):
        raise CromwellTesError(f"{where}.{key}: expected {kind}, got a boolean")
    if not isinstance(value, kind):
        raise CromwellTesError(f"{where}.{key}: expected {kind}, got {type(value).__name__}")
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _req(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if obj.get(key) is None:
        raise CromwellTesError(f"{where}: Object is missing required member '{key}'")
    return _opt(obj, key, kind, where)


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CromwellTesError(f"{where}: expected a JSON object")
    return value


def _str_list(obj: dict[str, Any], key: str, where: str, required: bool = False) -> list[str]:
    values = (_req if required else _opt)(obj, key, list, where) or []
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise CromwellTesError(f"{where}.{key}[{i}]: expected a string")
    return list(values)


def _str_map(obj: dict[str, Any], key: str, where: str) -> dict[str, str]:
    values = _opt(obj, key, dict, where) or {}
    for k, v in values.items():
        if not isinstance(v, str):
            raise CromwellTesError(f"{where}.{key}.{k}: expected a string")
    return dict(values)


@dataclass(frozen=True)
class ExecutorLog:
    start_time: str | None
    end_time: str | None
    stdout: str | None
    stderr: str | None
    exit_code: int | None


@dataclass(frozen=True)
class OutputFileLog:
    url: str
    path: str
    size_bytes: str


@dataclass(frozen=True)
class TaskLog:
    start_time: str | None
    end_time: str | None
    metadata: dict[str, str]
    logs: list[ExecutorLog]
    outputs: list[OutputFileLog]
    system_logs: list[str]


@dataclass(frozen=True)
class FullTask:
    id: str | None
    state: str | None
    executors: list[dict[str, Any]]
    logs: list[TaskLog]
    raw: dict[str, Any] = field(repr=False)


def parse_minimal(data: Any) -> tuple[str, str]:
    obj = _obj(data, "MinimalTaskView")
    return _req(obj, "id", str, "MinimalTaskView"), _req(obj, "state", str, "MinimalTaskView")


def parse_full(data: Any) -> FullTask:
    """A FULL task. `executors` is required (Cromwell's Task has it as a plain Seq)."""
    obj = _obj(data, "Task")
    executors = _req(obj, "executors", list, "Task")
    for i, ex in enumerate(executors):
        where = f"Task.executors[{i}]"
        ex = _obj(ex, where)
        _req(ex, "image", str, where)
        _str_list(ex, "command", where, required=True)
        for key in ("workdir", "stdout", "stderr", "stdin"):
            _opt(ex, key, str, where)
        _str_map(ex, "env", where)
    for key in ("name", "description"):
        _opt(obj, key, str, "Task")
    for kind in ("inputs", "outputs"):
        for i, item in enumerate(_opt(obj, kind, list, "Task") or []):
            where = f"Task.{kind}[{i}]"
            item = _obj(item, where)
            _req(item, "path", str, where)
            for key in ("name", "description", "url", "type", "content"):
                _opt(item, key, str, where)
    res = _opt(obj, "resources", dict, "Task")
    if res is not None:
        _opt(res, "cpu_cores", int, "Task.resources")
        _opt(res, "ram_gb", float, "Task.resources")
        _opt(res, "disk_gb", float, "Task.resources")
        _opt(res, "preemptible", bool, "Task.resources")
        _str_list(res, "zones", "Task.resources")
    _str_list(obj, "volumes", "Task")
    _str_map(obj, "tags", "Task")
    logs = []
    for i, raw_log in enumerate(_opt(obj, "logs", list, "Task") or []):
        where = f"Task.logs[{i}]"
        log = _obj(raw_log, where)
        exec_logs = []
        for j, raw_ex in enumerate(_opt(log, "logs", list, where) or []):
            w = f"{where}.logs[{j}]"
            ex = _obj(raw_ex, w)
            exec_logs.append(
                ExecutorLog(
                    _opt(ex, "start_time", str, w),
                    _opt(ex, "end_time", str, w),
                    _opt(ex, "stdout", str, w),
                    _opt(ex, "stderr", str, w),
                    _opt(ex, "exit_code", int, w),
                )
            )
        outputs = []
        for j, raw_out in enumerate(_opt(log, "outputs", list, where) or []):
            w = f"{where}.outputs[{j}]"
            out = _obj(raw_out, w)
            size = _req(out, "size_bytes", str, w)
            if not size.isdigit():
                raise CromwellTesError(f"{w}.size_bytes: {size!r} is not a byte count")
            outputs.append(OutputFileLog(_req(out, "url", str, w), _req(out, "path", str, w), size))
        logs.append(
            TaskLog(
                _opt(log, "start_time", str, where),
                _opt(log, "end_time", str, where),
                _str_map(log, "metadata", where),
                exec_logs,
                outputs,
                _str_list(log, "system_logs", where),
            )
        )
    return FullTask(
        _opt(obj, "id", str, "Task"), _opt(obj, "state", str, "Task"), executors, logs, obj
    )


# -- requests ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    url: str
    view: str | None
    status: int


@dataclass
class CromwellTesClient:
    """`endpoint` is the backend's `endpoint` setting: the URL of the task collection."""

    endpoint: str
    bearer_token: str | None = None
    timeout: float = 60.0
    requests: list[RecordedRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.session = requests.Session()
        self.endpoint = self.endpoint.rstrip("/")

    def _headers(self) -> dict[str, str]:
        if not self.bearer_token:
            return {}
        token = self.bearer_token
        return {"Authorization": token if token.startswith("Bearer ") else f"Bearer {token}"}

    def _request(self, method: str, url: str, view: str | None = None, **kwargs: Any) -> Any:
        params = {"view": view} if view else None
        try:
            resp = self.session.request(
                method, url, params=params, headers=self._headers(), timeout=self.timeout, **kwargs
            )
        except requests.RequestException as exc:
            raise CromwellTesError(f"Failed TES request: {exc}") from exc
        self.requests.append(RecordedRequest(method, url, view, resp.status_code))
        if resp.status_code >= 400:
            raise CromwellTesError(
                f"Failed TES request: Code {resp.status_code}, Body = {resp.text}"
            )
        ctype = resp.headers.get("Content-Type", "")
        if not ctype.startswith("application/json"):
            raise CromwellTesError(f"Unsupported Content-Type {ctype!r}, expected application/json")
        try:
            return resp.json()
        except ValueError as exc:
            raise CromwellTesError(f"response is not JSON: {resp.text[:200]!r}") from exc

    def create_task(self, body: dict[str, Any]) -> str:
        data = _obj(self._request("POST", self.endpoint, json=body), "CreateTaskResponse")
        return str(_req(data, "id", str, "CreateTaskResponse"))

    def minimal(self, task_id: str) -> str:
        _, state = parse_minimal(self._request("GET", f"{self.endpoint}/{task_id}", "MINIMAL"))
        return state

    def full(self, task_id: str) -> FullTask:
        return parse_full(self._request("GET", f"{self.endpoint}/{task_id}", "FULL"))

    def cancel(self, task_id: str) -> None:
        _obj(self._request("POST", f"{self.endpoint}/{task_id}:cancel"), "CancelTaskResponse")
