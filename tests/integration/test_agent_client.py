"""The agent's HTTP client against a loopback server that answers as told: a report keeps its
report id on every retry (the gateway applies it once), and a 409 is never retried — it raises
`Fenced` and tells the agent which attempt to stop."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from capsule_runtime.client import Fenced, GatewayClient
from capsule_runtime.protocol.messages import AttemptReport, CapsuleReport
from tests.fixtures.serving import serving


class Gateway(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.answers: list[int] = []  # status codes to answer with, in order; then 200
        self.bodies: list[dict[str, object]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: Gateway

    def do_POST(self) -> None:
        size = int(self.headers.get("Content-Length", 0))
        self.server.bodies.append(json.loads(self.rfile.read(size) or b"{}"))
        status = self.server.answers.pop(0) if self.server.answers else 200
        body = json.dumps({"code": status, "message": "told so"}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    server = Gateway()
    with serving(server):
        yield server


def test_a_report_keeps_its_id_across_retries(gateway: Gateway) -> None:
    client = GatewayClient(gateway.url, "i-1", "token", retries=3)
    gateway.answers = [503, 503]
    client.report("a-1", AttemptReport(status="running", task_log={}))
    ids = {body["report_id"] for body in gateway.bodies}
    assert len(gateway.bodies) == 3 and len(ids) == 1 and None not in ids
    client.report("a-1", AttemptReport(status="running", task_log={}))
    assert gateway.bodies[-1]["report_id"] not in ids  # the next report is another


def test_a_409_is_not_retried_and_stops_the_attempt(gateway: Gateway) -> None:
    client = GatewayClient(gateway.url, "i-1", "token", retries=3)
    fenced: list[str] = []
    client.on_fenced = fenced.append
    gateway.answers = [409]
    with pytest.raises(Fenced, match="409"):
        client.report_capsule("a-2", CapsuleReport(state="failed", capsule_id="c"))
    assert len(gateway.bodies) == 1 and fenced == ["a-2"]
