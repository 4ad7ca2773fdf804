"""An EC2-compatible instance metadata service (IMDSv2) for one simulated instance, on loopback.

The agent's interruption watcher (capsule_runtime/interruption.py) polls it exactly as it polls
169.254.169.254 on AWS:

    PUT /latest/api/token                        (X-aws-ec2-metadata-token-ttl-seconds) → token
    GET /latest/meta-data/instance-id            (X-aws-ec2-metadata-token: token)
    GET /latest/meta-data/instance-type
    GET /latest/meta-data/placement/availability-zone
    GET /latest/meta-data/spot/instance-action   404 until a notice, then
                                                 {"action": "terminate", "time": "...Z"}
    GET /latest/meta-data/events/recommendations/rebalance   404, or {"noticeTime": "...Z"}

The standard library's threading HTTP server is enough for a handful of small requests a second.
"""

from __future__ import annotations

import json
import secrets
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN_HEADER = "X-aws-ec2-metadata-token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"


def aws_time(when: datetime) -> str:
    """The form AWS writes its notice times in: 2026-11-29T12:00:00Z."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class InstanceMetadata:
    """The metadata of one instance, served on 127.0.0.1:<port> until `close()`."""

    def __init__(self, instance_id: str, instance_type: str, zone: str, port: int = 0):
        self.instance_id = instance_id
        self.instance_type = instance_type
        self.zone = zone
        self.action: dict[str, str] | None = None
        self.rebalance: str | None = None
        self._tokens: set[str] = set()
        self._lock = threading.Lock()
        # `port`: the one an adopted agent already watches (gateway restart); 0 picks a free one
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"imds-{instance_id}", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def notice(self, deadline: datetime, action: str = "terminate") -> None:
        with self._lock:
            self.action = {"action": action, "time": aws_time(deadline)}

    def recommend_rebalance(self, when: datetime) -> None:
        with self._lock:
            self.rebalance = aws_time(when)

    def new_token(self) -> str:
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens.add(token)
        return token

    def valid(self, token: str | None) -> bool:
        with self._lock:
            return token is not None and token in self._tokens

    def document(self, path: str) -> tuple[int, str]:
        with self._lock:
            action, rebalance = self.action, self.rebalance
        plain: dict[str, Any] = {
            "/latest/meta-data/instance-id": self.instance_id,
            "/latest/meta-data/instance-type": self.instance_type,
            "/latest/meta-data/placement/availability-zone": self.zone,
            "/latest/meta-data/spot/instance-action": json.dumps(action) if action else None,
            "/latest/meta-data/events/recommendations/rebalance": (
                json.dumps({"noticeTime": rebalance}) if rebalance else None
            ),
        }
        body = plain.get(path.rstrip("/"))
        return (200, body) if body is not None else (404, "Not Found")

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _handler(meta: InstanceMetadata) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass  # the agent polls every second: no access log

        def _send(self, status: int, body: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_PUT(self) -> None:
            if self.path != "/latest/api/token" or not self.headers.get(TTL_HEADER):
                self._send(400, "Bad Request")
                return
            self._send(200, meta.new_token())

        def do_GET(self) -> None:
            if not meta.valid(self.headers.get(TOKEN_HEADER)):
                self._send(401, "Unauthorized")
                return
            self._send(*meta.document(self.path))

    return Handler
