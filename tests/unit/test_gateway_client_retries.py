"""The agent's gateway client retries through tenacity: 5xx answers and connection errors are tried
again with back-off, a 409 never, and a shutting-down agent (`hurry`) tries once. Against a
loopback HTTP server that answers from a script."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from capsule_runtime.client import DownloadCorrupt, Fenced, GatewayClient, GatewayUnreachable
from capsule_runtime.protocol.messages import Registration, Resources

REGISTRATION = Registration(
    agent_version="t", hostname="h", capacity=Resources(cpu_cores=1, ram_gb=1, disk_gb=1)
)


class Script:
    """The status codes (and bodies) the server answers with, in order; the last one repeats."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, bytes]] = [(200, b"{}")]
        self.requests = 0


@pytest.fixture
def gateway() -> Iterator[tuple[str, Script]]:
    script = Script()

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            status, body = script.answers[min(script.requests, len(script.answers) - 1)]
            script.requests += 1
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET = answer

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", script
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_5xx_answers_are_tried_again(gateway: tuple[str, Script]) -> None:
    url, script = gateway
    script.answers = [(503, b"busy"), (502, b"busy"), (200, b"{}")]
    GatewayClient(url, "i-1", "token", retries=5).register(REGISTRATION)
    assert script.requests == 3


def test_the_last_5xx_is_the_error(gateway: tuple[str, Script]) -> None:
    url, script = gateway
    script.answers = [(503, b"still busy")]
    with pytest.raises(GatewayUnreachable, match="HTTP 503 still busy"):
        GatewayClient(url, "i-1", "token", retries=2).register(REGISTRATION)
    assert script.requests == 3


def test_a_409_is_never_tried_again(gateway: tuple[str, Script]) -> None:
    url, script = gateway
    script.answers = [(409, b'{"error": "superseded"}')]
    with pytest.raises(Fenced):
        GatewayClient(url, "i-1", "token", retries=5).register(REGISTRATION)
    assert script.requests == 1


def test_a_hurrying_agent_tries_once(gateway: tuple[str, Script]) -> None:
    url, script = gateway
    script.answers = [(503, b"busy"), (200, b"{}")]
    client = GatewayClient(url, "i-1", "token", retries=5)
    client.hurry = True
    with pytest.raises(GatewayUnreachable):
        client.register(REGISTRATION)
    assert script.requests == 1


def test_an_unreachable_gateway_is_named() -> None:
    closed = GatewayClient("http://127.0.0.1:9", "i-1", "token", retries=1)  # nothing listens
    with pytest.raises(GatewayUnreachable, match="POST /instances/i-1/register"):
        closed.register(REGISTRATION)


def test_a_corrupt_download_is_tried_again_then_refused(
    gateway: tuple[str, Script], tmp_path: Path
) -> None:
    url, script = gateway
    script.answers = [(500, b"oops"), (200, b"archive bytes")]
    dest = tmp_path / "app.tar"
    with pytest.raises(DownloadCorrupt, match="expected 00"):
        GatewayClient(url, "i-1", "token", retries=2).download_app_archive("app", dest, "00")
    assert script.requests == 3 and not dest.exists()
    assert not (tmp_path / "app.tar.partial").exists()


def test_a_credential_in_the_registration_answer_replaces_the_token(
    gateway: tuple[str, Script], tmp_path: Path
) -> None:
    """A one-time registration token is exchanged at registration: every later call carries
    the credential the gateway answered with, and a restarted agent finds it in its work dir."""
    from capsule_runtime.agent import save_credential, saved_credential

    url, script = gateway
    script.answers = [(200, b'{"token": "cred-1"}')]
    client = GatewayClient(url, "i-1", "one-time", retries=0)
    assert client.register(REGISTRATION).token == "cred-1"
    assert client.session.headers["Authorization"] == "Bearer cred-1"
    save_credential(tmp_path, "i-1", "cred-1")
    assert (tmp_path / "agent-credential").stat().st_mode & 0o777 == 0o600
    assert saved_credential(tmp_path, "i-1") == "cred-1"
    assert saved_credential(tmp_path, "i-2") is None  # another instance's: not used
    plain = GatewayClient(url, "i-2", "token", retries=0)
    script.answers, script.requests = [(200, b"{}")], 0
    assert plain.register(REGISTRATION).token is None
    assert plain.session.headers["Authorization"] == "Bearer token"
