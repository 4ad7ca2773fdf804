"""The agent's HTTP client for the gateway (gateway.tes.protocol), with bounded retries."""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from gateway.tes.protocol import (
    AGENT_API,
    AttemptReport,
    CapsuleReport,
    Notice,
    Orders,
    Poll,
    Registration,
)

log = logging.getLogger(__name__)


class GatewayUnreachable(RuntimeError):
    pass


class Fenced(GatewayUnreachable):
    """HTTP 409: the gateway refuses this message for good — the attempt was superseded or is
    another instance's, or the instance was given up on. Never retried; the work it is about
    stops."""


class DownloadCorrupt(RuntimeError):
    """A download arrived whole but with another sha256 than expected, on every try."""


class GatewayClient:
    def __init__(self, gateway_url: str, instance_id: str, token: str, retries: int = 5):
        self.base = gateway_url.rstrip("/") + AGENT_API
        self.instance_id = instance_id
        self.retries = retries
        self.hurry = False  # set while the instance shuts down: one try each, no back-off
        # reports about attempts are retried while the gateway answered less than `patience`
        # seconds ago, or until `deliver_until` (time.monotonic()), so that a gateway that
        # restarts, or comes back after a partition, still gets them; 0: `retries` tries only
        self.patience = 0.0
        self.deliver_until = 0.0
        self.last_answer = time.monotonic()  # when the gateway last answered anything
        # called with the attempt id when the gateway refuses a message about it (409)
        self.on_fenced: Callable[[str], None] | None = None
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
        patient: bool = False,
        **kwargs: Any,
    ) -> Any:
        """One request, tried again on a connection error or a 5xx: `retries` times, or — when
        `patient` (a report the gateway must not miss) — for as long as `_patient` allows."""
        delay = 0.2
        retries = 0 if self.hurry else self.retries
        tried = 0
        while True:
            tried += 1
            try:
                if body_file is not None:  # reopened on every try: a retry resends from the start
                    with open(body_file, "rb") as body:
                        resp = self.session.request(
                            method, self.base + path, timeout=timeout, data=body, **kwargs
                        )
                else:
                    resp = self.session.request(method, self.base + path, timeout=timeout, **kwargs)
            except requests.RequestException as exc:
                if tried > retries and not (patient and self._patient()):
                    raise GatewayUnreachable(f"{method} {path}: {exc}") from exc
                log.warning("gateway unreachable (%s); retrying in %.1fs", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self.last_answer = time.monotonic()
            if resp.status_code >= 500 and (tried <= retries or (patient and self._patient())):
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if resp.status_code == 409:
                raise Fenced(f"{method} {path}: HTTP 409 {resp.text}")
            if resp.status_code >= 400:
                raise GatewayUnreachable(f"{method} {path}: HTTP {resp.status_code} {resp.text}")
            return resp.json()

    def follow(self, url_file: Path) -> None:
        """Take the gateway's URL from `url_file` when it names another one (the gateway was
        restarted elsewhere, on another port); an unreadable file changes nothing."""
        try:
            url = url_file.read_text().strip()
        except OSError:
            return
        base = url.rstrip("/") + AGENT_API
        if url and base != self.base:
            log.warning("the gateway is now at %s", url)
            self.base = base

    def _patient(self) -> bool:
        """Whether a report is still worth retrying: the gateway answered within `patience`
        seconds, or the agent gave it until `deliver_until` (its tasks' last reports)."""
        if self.hurry:
            return False
        now = time.monotonic()
        return now < self.last_answer + self.patience or now < self.deliver_until

    def register(self, registration: Registration) -> None:
        self._call(
            "POST",
            f"/instances/{self.instance_id}/register",
            data=registration.model_dump_json(),
        )

    def _attempt_call(self, attempt_id: str, method: str, path: str, **kwargs: Any) -> Any:
        """A call about one attempt: a 409 tells `on_fenced`, then raises `Fenced`."""
        try:
            return self._call(method, path, patient=True, **kwargs)
        except Fenced:
            log.warning("the gateway refused a message about attempt %s: stopping it", attempt_id)
            if self.on_fenced is not None:
                self.on_fenced(attempt_id)
            raise

    def poll(
        self,
        running: list[str],
        wait_seconds: float,
        usage: dict[str, dict[str, float | int | None]] | None = None,
        received: list[str] | None = None,
    ) -> Orders:
        body = Poll(
            running=running, received=received or [], wait_seconds=wait_seconds, usage=usage or {}
        ).model_dump_json()
        data = self._call(
            "POST", f"/instances/{self.instance_id}/poll", timeout=wait_seconds + 10, data=body
        )
        return Orders.model_validate(data)

    def report(self, attempt_id: str, report: AttemptReport) -> None:
        if report.report_id is None:  # one id for every resend of this report
            report = report.model_copy(update={"report_id": uuid.uuid4().hex})
        self._attempt_call(
            attempt_id, "POST", f"/attempts/{attempt_id}/report", data=report.model_dump_json()
        )

    def notice(self, kind: str, when: str) -> None:
        self._call(
            "POST",
            f"/instances/{self.instance_id}/notice",
            data=Notice(kind=kind, time=when).model_dump_json(),
        )

    def report_capsule(self, attempt_id: str, report: CapsuleReport) -> None:
        if report.report_id is None:
            report = report.model_copy(update={"report_id": uuid.uuid4().hex})
        self._attempt_call(
            attempt_id, "POST", f"/attempts/{attempt_id}/capsules", data=report.model_dump_json()
        )

    def upload_stream(self, attempt_id: str, executor: int, stream: str, path: Path) -> None:
        if path.exists():
            self._attempt_call(
                attempt_id,
                "PUT",
                f"/attempts/{attempt_id}/streams/{executor}/{stream}",
                body_file=path,
            )

    def download_app_archive(self, name: str, dest: Path, sha256: str | None = None) -> str:
        """Stream Application Library app `name`'s image archive to `dest` (through a `.partial`
        file); with `sha256`, a download with another digest is retried, then DownloadCorrupt.
        Retried from the start like every call; returns the hex sha256 of what `dest` holds."""
        path = f"/apps/{quote(name, safe='')}/archive"
        partial = dest.with_name(dest.name + ".partial")
        delay = 0.2
        retries = 0 if self.hurry else self.retries
        problem, corrupt = "no answer", False
        for attempt in range(retries + 1):
            if attempt:
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
            corrupt = False
            try:
                with self.session.get(self.base + path, stream=True, timeout=(10, 300)) as resp:
                    if resp.status_code >= 400:
                        problem = f"HTTP {resp.status_code} {resp.text[:500]}"
                        if resp.status_code >= 500:
                            continue
                        raise GatewayUnreachable(f"GET {path}: {problem}")
                    digest = hashlib.sha256()
                    with open(partial, "wb") as out:
                        for chunk in resp.iter_content(1 << 20):
                            digest.update(chunk)
                            out.write(chunk)
            except requests.RequestException as exc:
                problem = str(exc)
                log.warning("downloading app %s: %s; retrying", name, exc)
                continue
            corrupt = sha256 is not None and digest.hexdigest() != sha256.lower()
            if corrupt:
                problem = f"sha256 {digest.hexdigest()}, expected {sha256}"
                log.warning("downloading app %s: %s; retrying", name, problem)
                continue
            partial.replace(dest)
            return digest.hexdigest()
        partial.unlink(missing_ok=True)
        if corrupt:
            raise DownloadCorrupt(f"GET {path}: {problem}")
        raise GatewayUnreachable(f"GET {path}: {problem}")
