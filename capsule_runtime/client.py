"""The agent's HTTP client for the gateway (capsule_runtime.protocol.messages), with bounded
retries (tenacity: exponential back-off, 409 never retried)."""

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
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    retry_if_result,
    wait_exponential,
)

from capsule_runtime.protocol.messages import (
    AGENT_API,
    AttemptReport,
    CapsuleReport,
    Notice,
    Orders,
    Poll,
    Registered,
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


class _TryAgain(Exception):
    """One try of a download failed in a way another try may not (5xx, a broken connection, a
    digest that does not match)."""

    def __init__(self, problem: str, quiet: bool = False, corrupt: bool = False):
        super().__init__(problem)
        self.quiet, self.corrupt = quiet, corrupt


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

    def _retrying(
        self, retries: int | None = None, patient: bool = False, **policy: Any
    ) -> Retrying:
        """Bounded retries with exponential back-off (0.2 s, doubling up to 5 s) for one call
        (`retries` after the first, default the client's; past them a `patient` call goes on
        while `_patient` says so); a single try while the instance hurries to shut down."""
        tries = 1 if self.hurry else (self.retries if retries is None else retries) + 1

        def stop(state: RetryCallState) -> bool:
            return state.attempt_number >= tries and not (patient and self._patient())

        return Retrying(stop=stop, wait=wait_exponential(0.2, max=5.0), **policy)

    def _call(
        self,
        method: str,
        path: str,
        timeout: float = 30,
        body_file: Path | None = None,
        retries: int | None = None,
        accept: tuple[int, ...] = (),
        patient: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Connection errors and 5xx answers are tried again; a 409 never (Fenced).
        `retries`: tries after the first (default: the client's), or — when `patient` (a report
        the gateway must not miss) — for as long as `_patient` allows; `accept`: error statuses
        whose JSON body is returned rather than raised."""

        def once() -> requests.Response:
            if body_file is not None:  # reopened on every try: a retry resends from the start
                with open(body_file, "rb") as body:
                    resp = self.session.request(
                        method, self.base + path, timeout=timeout, data=body, **kwargs
                    )
            else:
                resp = self.session.request(method, self.base + path, timeout=timeout, **kwargs)
            self.last_answer = time.monotonic()
            return resp

        def warn(state: RetryCallState) -> None:
            assert state.outcome is not None and state.next_action is not None
            if exc := state.outcome.exception():
                log.warning(
                    "gateway unreachable (%s); retrying in %.1fs", exc, state.next_action.sleep
                )

        def last(state: RetryCallState) -> requests.Response:
            assert state.outcome is not None
            if exc := state.outcome.exception():
                raise GatewayUnreachable(f"{method} {path}: {exc}") from exc
            return state.outcome.result()  # a 5xx, said below

        resp = self._retrying(
            retries,
            patient,
            retry=retry_if_exception_type(requests.RequestException)
            | retry_if_result(lambda r: r.status_code >= 500),
            before_sleep=warn,
            retry_error_callback=last,
        )(once)
        if resp.status_code == 409:
            raise Fenced(f"{method} {path}: HTTP 409 {resp.text}")
        if resp.status_code >= 400 and resp.status_code not in accept:
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

    def register(self, registration: Registration) -> Registered:
        """Register; when the gateway answers with a credential (the token this client had was
        a one-time registration token), every later call carries that instead."""
        answer = Registered.model_validate(
            self._call(
                "POST",
                f"/instances/{self.instance_id}/register",
                data=registration.model_dump_json(),
            )
            or {}
        )
        if answer.token:
            self.use_token(answer.token)
        return answer

    def use_token(self, token: str) -> None:
        self.session.headers["Authorization"] = f"Bearer {token}"

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

    def push_stream(
        self, attempt_id: str, executor: int, stream: str, offset: int, data: bytes
    ) -> int:
        """One live push of a running executor's stream: `data` stored from `offset` on. One
        try (the next push carries the same bytes). Returns the size the gateway now has: where
        the next push starts (after a gap, where the gateway's copy ends)."""
        answer = self._attempt_call(
            attempt_id,
            "PUT",
            f"/attempts/{attempt_id}/streams/{executor}/{stream}",
            params={"offset": offset},
            data=data,
            retries=0,
            accept=(416,),
        )
        return int(answer["size_bytes"])

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

        def once() -> str:
            try:
                with self.session.get(self.base + path, stream=True, timeout=(10, 300)) as resp:
                    if resp.status_code >= 400:
                        problem = f"HTTP {resp.status_code} {resp.text[:500]}"
                        if resp.status_code >= 500:
                            raise _TryAgain(problem, quiet=True)
                        raise GatewayUnreachable(f"GET {path}: {problem}")
                    digest = hashlib.sha256()
                    with open(partial, "wb") as out:
                        for chunk in resp.iter_content(1 << 20):
                            digest.update(chunk)
                            out.write(chunk)
            except requests.RequestException as exc:
                raise _TryAgain(str(exc)) from exc
            if sha256 is not None and digest.hexdigest() != sha256.lower():
                raise _TryAgain(f"sha256 {digest.hexdigest()}, expected {sha256}", corrupt=True)
            partial.replace(dest)
            return digest.hexdigest()

        def warn(state: RetryCallState) -> None:
            assert state.outcome is not None
            exc = state.outcome.exception()
            if isinstance(exc, _TryAgain) and not exc.quiet:
                log.warning("downloading app %s: %s; retrying", name, exc)

        def last(state: RetryCallState) -> str:
            assert state.outcome is not None
            exc = state.outcome.exception()
            assert isinstance(exc, _TryAgain)
            partial.unlink(missing_ok=True)
            if exc.corrupt:
                raise DownloadCorrupt(f"GET {path}: {exc}")
            raise GatewayUnreachable(f"GET {path}: {exc}")

        retrying = self._retrying(
            retry=retry_if_exception_type(_TryAgain), before_sleep=warn, retry_error_callback=last
        )
        return retrying(once)
