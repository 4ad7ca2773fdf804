"""The HTTP side of the nf-ga4gh replay harness: the requests nf-ga4gh's generated TES client makes,
and the checks its Java client applies to the answers.

nf-ga4gh (TesExecutor/TesTaskHandler, 1.3 to 1.4.2) talks to `{tes.endpoint}/v1/tasks`:

    POST /v1/tasks                     create (Gson: null fields left out)
    GET  /v1/tasks/{id}                every poll, with no `view` (MINIMAL)
    GET  /v1/tasks/{id}?view=FULL      once, when the task is terminal, for the exit code
    POST /v1/tasks/{id}:cancel         kill (errorStrategy terminate, Ctrl-C)

Its client gives up on a request after 10 s; a non-2xx answer, a non-JSON body or an empty body
throws, and for a poll that fails the task (Nextflow does not retry polls). Every request is
recorded in `requests` so tests can assert how the harness polled.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Literal

import requests

READ_TIMEOUT = 10.0  # nf-ga4gh's ApiClient default (OkHttp read timeout)


class TesApiError(RuntimeError):
    """What nf-ga4gh's ApiException carries: the HTTP status and the response body."""

    def __init__(self, message: str, status: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    view: str | None
    status: int


@dataclass
class NfTesClient:
    """`endpoint` is `tes.endpoint` (the server root, without /v1). Authentication as nf-ga4gh:
    `basic` (user, password), `bearer` (tes.oauthToken), or an API key in a query parameter or
    header (tes.apiKeyParamMode/apiKeyParamName/apiKey)."""

    endpoint: str
    auth: Literal["none", "basic", "bearer", "apikey"] = "none"
    user: str | None = None
    password: str | None = None
    token: str | None = None
    api_key_mode: Literal["query", "header"] = "query"
    api_key_name: str | None = None
    timeout: float = READ_TIMEOUT
    requests: list[RecordedRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.session = requests.Session()
        self.base = self.endpoint.rstrip("/") + "/v1/tasks"

    def _auth(self) -> tuple[dict[str, str], dict[str, str]]:
        headers = {"Accept": "application/json"}
        params: dict[str, str] = {}
        if self.auth == "basic":
            raw = f"{self.user}:{self.password}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
        elif self.auth == "bearer":
            headers["Authorization"] = f"Bearer {self.token}"
        elif self.auth == "apikey" and self.api_key_name and self.token:
            if self.api_key_mode == "header":
                headers[self.api_key_name] = self.token
            else:
                params[self.api_key_name] = self.token
        return headers, params

    def _call(
        self, method: str, suffix: str = "", body: Any = None, view: str | None = None
    ) -> dict[str, Any]:
        headers, params = self._auth()
        if view is not None:
            params["view"] = view
        kwargs: dict[str, Any] = {"headers": headers, "params": params, "timeout": self.timeout}
        if body is not None:
            kwargs["json"] = body
        elif method == "POST":
            headers["Content-Type"] = "application/json"
            kwargs["data"] = b""
        try:
            resp = self.session.request(method, self.base + suffix, **kwargs)
        except requests.RequestException as exc:
            raise TesApiError(f"{method} {self.base + suffix}: {exc}") from exc
        self.requests.append(RecordedRequest(method, "/v1/tasks" + suffix, view, resp.status_code))
        if not 200 <= resp.status_code < 300:
            raise TesApiError(
                f"{method} /v1/tasks{suffix} answered {resp.status_code}",
                resp.status_code,
                resp.text,
            )
        if not resp.content:
            raise TesApiError(f"{method} /v1/tasks{suffix}: empty body", resp.status_code)
        if not resp.headers.get("Content-Type", "").startswith("application/json"):
            raise TesApiError(
                f"{method} /v1/tasks{suffix}: Content-Type {resp.headers.get('Content-Type')!r}",
                resp.status_code,
                resp.text,
            )
        try:
            data = resp.json()
        except ValueError as exc:
            raise TesApiError(f"{method} /v1/tasks{suffix}: not JSON", resp.status_code) from exc
        if not isinstance(data, dict):
            raise TesApiError(f"{method} /v1/tasks{suffix}: not a JSON object", resp.status_code)
        return data

    def create_task(self, body: dict[str, Any]) -> str:
        task_id = self._call("POST", body=body).get("id")
        if not isinstance(task_id, str) or not task_id:
            raise TesApiError("create answered without an id")
        return task_id

    def get_task(self, task_id: str, view: str | None = None) -> dict[str, Any]:
        task = self._call("GET", f"/{task_id}", view=view)
        if not isinstance(task.get("state"), str):
            raise TesApiError(f"task {task_id} without a state: {task}")
        return task

    def cancel_task(self, task_id: str) -> None:
        self._call("POST", f"/{task_id}:cancel")
