"""The agent's HTTP client for the gateway (gateway.tes.protocol), with bounded retries."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import requests

from gateway.tes.protocol import (
    AGENT_API,
    AttemptReport,
    Orders,
    Poll,
    Registration,
)

log = logging.getLogger(__name__)


class GatewayUnreachable(RuntimeError):
    pass


class GatewayClient:
    def __init__(self, gateway_url: str, instance_id: str, token: str, retries: int = 5):
        self.base = gateway_url.rstrip("/") + AGENT_API
        self.instance_id = instance_id
        self.retries = retries
        self.session = requests.Session()
        self.session.headers.update(
            {"Authorization": f"Bearer {token}", "X-Tescape-Instance": instance_id}
        )

    def _call(
        self,
        method: str,
        path: str,
        timeout: float = 30,
        body_file: Path | None = None,
        **kwargs: Any,
    ) -> Any:
        delay = 0.2
        for attempt in range(self.retries + 1):
            try:
                if body_file is not None:  # reopened on every try: a retry resends from the start
                    with open(body_file, "rb") as body:
                        resp = self.session.request(
                            method, self.base + path, timeout=timeout, data=body, **kwargs
                        )
                else:
                    resp = self.session.request(method, self.base + path, timeout=timeout, **kwargs)
            except requests.RequestException as exc:
                if attempt == self.retries:
                    raise GatewayUnreachable(f"{method} {path}: {exc}") from exc
                log.warning("gateway unreachable (%s); retrying in %.1fs", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if resp.status_code >= 500 and attempt < self.retries:
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if resp.status_code >= 400:
                raise GatewayUnreachable(f"{method} {path}: HTTP {resp.status_code} {resp.text}")
            return resp.json()
        raise GatewayUnreachable(f"{method} {path}: no answer")

    def register(self, registration: Registration) -> None:
        self._call(
            "POST",
            f"/instances/{self.instance_id}/register",
            data=registration.model_dump_json(),
        )

    def poll(self, running: list[str], wait_seconds: float) -> Orders:
        body = Poll(running=running, wait_seconds=wait_seconds).model_dump_json()
        data = self._call(
            "POST", f"/instances/{self.instance_id}/poll", timeout=wait_seconds + 30, data=body
        )
        return Orders.model_validate(data)

    def report(self, attempt_id: str, report: AttemptReport) -> None:
        self._call("POST", f"/attempts/{attempt_id}/report", data=report.model_dump_json())

    def upload_stream(self, attempt_id: str, executor: int, stream: str, path: Path) -> None:
        if path.exists():
            self._call("PUT", f"/attempts/{attempt_id}/streams/{executor}/{stream}", body_file=path)
