"""The interruption watcher: polls the instance metadata service (IMDSv2) for a Spot reclaim notice
and a rebalance recommendation, the same way on AWS (http://169.254.169.254) and on the local
simulated market (each simulated instance serves its own, see gateway/providers/imds.py).

    watcher = InterruptionWatcher(url, on_notice=lambda kind, when: ..., interval=1.0)
    watcher.start() ... watcher.stop()

`on_notice("terminate" | "stop" | "hibernate", "2026-...Z")` is called once per notice;
`on_notice("rebalance", time)` once when a rebalance recommendation appears. A metadata service
that does not answer is retried on the next poll (logged once), never fatal.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

import requests

log = logging.getLogger(__name__)
TOKEN_TTL = 21600  # seconds, the most IMDSv2 allows
ACTION = "/latest/meta-data/spot/instance-action"
REBALANCE = "/latest/meta-data/events/recommendations/rebalance"


class InterruptionWatcher(threading.Thread):
    def __init__(
        self,
        url: str,
        on_notice: Callable[[str, str], None],
        interval: float = 1.0,
    ):
        super().__init__(name="interruption-watcher", daemon=True)
        self.url = url.rstrip("/")
        self.on_notice = on_notice
        self.interval = interval
        self._stop = threading.Event()
        self._token: str | None = None
        self._token_time = 0.0
        self._seen: set[str] = set()
        self._complained = False
        self.session = requests.Session()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
                self._complained = False
            except (requests.RequestException, ValueError) as exc:
                if not self._complained:
                    log.warning("instance metadata at %s: %s", self.url, exc)
                    self._complained = True
                self._token = None
            self._stop.wait(self.interval)

    def _get(self, path: str) -> str | None:
        if self._token is None or time.monotonic() - self._token_time > TOKEN_TTL / 2:
            resp = self.session.put(
                self.url + "/latest/api/token",
                headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL)},
                timeout=2,
            )
            resp.raise_for_status()
            self._token, self._token_time = resp.text.strip(), time.monotonic()
        resp = self.session.get(
            self.url + path, headers={"X-aws-ec2-metadata-token": self._token}, timeout=2
        )
        if resp.status_code == 404:
            return None
        if resp.status_code == 401:
            self._token = None
        resp.raise_for_status()
        return resp.text

    def poll_once(self) -> None:
        action = self._get(ACTION)
        if action is not None:
            doc = json.loads(action)
            key = f"{doc.get('action')}@{doc.get('time')}"
            if key not in self._seen:
                self._seen.add(key)
                log.warning("interruption notice: %s at %s", doc.get("action"), doc.get("time"))
                self.on_notice(str(doc.get("action", "terminate")), str(doc.get("time", "")))
        rebalance = self._get(REBALANCE)
        if rebalance is not None and "rebalance" not in self._seen:
            self._seen.add("rebalance")
            when = json.loads(rebalance).get("noticeTime", "")
            log.info("rebalance recommendation at %s", when)
            self.on_notice("rebalance", str(when))
