"""Issue 10, SSRF: an http(s) host is resolved once, every address checked, and the request
connects to that address (a DNS rebind between check and connect is never used); every redirect
hop is resolved and checked again. A real HTTP server on 127.0.0.1 stands for a public host: the
socket layer maps the public address the fake resolver gave to it, and fails any other name
lookup, so a second resolution would show."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from capsule_runtime.staging import AccessRefused, HttpStorage, StagingError, StagingPolicy
from capsule_runtime.staging.web import PinnedAdapter, pinned
from tests.fixtures.serving import serving

PUBLIC = "93.184.215.14"  # a global address (never reached: mapped to the loopback server)
NAME = "files.example"


@dataclass
class Server:
    port: int = 0
    hosts: list[str] = field(default_factory=list)  # Host headers seen


@pytest.fixture
def server() -> Iterator[Server]:
    seen = Server()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            seen.hosts.append(self.headers.get("Host", ""))
            if self.path == "/hop":
                self.send_response(302)
                self.send_header("Location", f"http://{NAME}:{seen.port}/data")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = b"public bytes"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    seen.port = httpd.server_address[1]
    with serving(httpd):
        yield seen


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every host the socket layer is asked to resolve; PUBLIC connects to 127.0.0.1, a name
    fails (a pinned request never resolves one)."""
    real = socket.getaddrinfo
    asked: list[str] = []

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        asked.append(str(host))
        if host == PUBLIC:
            return real("127.0.0.1", port, *args, **kwargs)
        if host == NAME:
            raise socket.gaierror(socket.EAI_NONAME, "a pinned request resolved a name again")
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


def rebinding(*answers: list[str]) -> tuple[StagingPolicy, list[str]]:
    """A blocking policy whose resolver gives `answers` in turn (the last one from then on)."""
    calls: list[str] = []

    def resolve(host: str) -> list[str]:
        if host != NAME:
            return [host]
        calls.append(host)
        return answers[min(len(calls), len(answers)) - 1]

    return StagingPolicy(block_private_networks=True, resolver=resolve), calls


def test_the_checked_address_is_the_one_connected_to(
    server: Server, lookups: list[str], tmp_path: Path
) -> None:
    # public on the check, private on any later lookup: a second lookup would reach 127.0.0.1
    policy, calls = rebinding([PUBLIC], ["127.0.0.1"])
    storage = HttpStorage(policy, attempts=1)
    assert storage.get(f"http://{NAME}:{server.port}/data", tmp_path / "f", "FILE") == 12
    assert (tmp_path / "f").read_bytes() == b"public bytes"
    assert calls == [NAME]  # resolved once, by the policy
    assert lookups == [PUBLIC]  # the socket connected to the pinned address, no name lookup
    assert server.hosts == [f"{NAME}:{server.port}"]  # the original Host header

    # the next request resolves again, and now the answer is private: refused, never sent
    with pytest.raises(AccessRefused, match="loopback or private"):
        storage.get(f"http://{NAME}:{server.port}/data", tmp_path / "g", "FILE")
    assert lookups == [PUBLIC] and len(server.hosts) == 1


def test_a_redirect_hop_is_resolved_and_checked_again(
    server: Server, lookups: list[str], tmp_path: Path
) -> None:
    policy, calls = rebinding([PUBLIC], ["127.0.0.1"])
    storage = HttpStorage(policy, attempts=1)
    with pytest.raises(AccessRefused, match="loopback or private"):
        storage.get(f"http://{NAME}:{server.port}/hop", tmp_path / "f", "FILE")
    assert calls == [NAME, NAME]
    assert server.hosts == [f"{NAME}:{server.port}"]  # only the first hop reached a server
    assert not (tmp_path / "f").exists()


def test_every_address_of_an_answer_is_checked(server: Server, tmp_path: Path) -> None:
    policy, _ = rebinding([PUBLIC, "10.0.0.7"])
    with pytest.raises(AccessRefused, match=r"10\.0\.0\.7"):
        HttpStorage(policy, attempts=1).get(f"http://{NAME}/data", tmp_path / "f", "FILE")
    assert server.hosts == []


def test_metadata_behind_a_name_is_refused_without_blocking(tmp_path: Path) -> None:
    policy = StagingPolicy(resolver=lambda host: ["169.254.169.254"])
    with pytest.raises(AccessRefused, match="instance-metadata"):
        HttpStorage(policy, attempts=1).get("http://meta.example/latest", tmp_path / "f", "FILE")


def test_pinned_urls_keep_everything_but_the_host() -> None:
    url = "http://user:pw@Files.Example:8080/a%7Eb/c?X-Amz-Signature=ab%2Fcd#frag"
    assert pinned(url, PUBLIC) == (
        f"http://{PUBLIC}:8080/a%7Eb/c?X-Amz-Signature=ab%2Fcd#frag",
        "Files.Example:8080",
    )
    assert pinned("https://h.example/x", "2001:db8::1") == ("https://[2001:db8::1]/x", "h.example")


def test_tls_names_the_original_host() -> None:
    """The pool for a pinned https request sends SNI for, and verifies the certificate of, the
    host the task named, not the address."""
    request = requests.Request("GET", f"https://{PUBLIC}/x", headers={"Host": "h.example"})
    params, kwargs = PinnedAdapter().build_connection_pool_key_attributes(request.prepare(), True)
    assert params["host"] == PUBLIC
    assert kwargs["server_hostname"] == kwargs["assert_hostname"] == "h.example"


def self_signed(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """(certificate, key) of a self-signed certificate for `name` only."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[Server, Path, list[str]]]:
    """An https server on 127.0.0.1 whose certificate names only NAME; yields the server, the
    certificate (the CA to trust) and the SNI names clients sent."""
    import ssl

    cert, key = self_signed(tmp_path, NAME)
    sni: list[str] = []
    seen = Server()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            seen.hosts.append(self.headers.get("Host", ""))
            body = b"over tls"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    def remember_name(sock: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        sni.append(str(name))

    context.sni_callback = remember_name

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    seen.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield seen, cert, sni
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_https_is_pinned_with_the_original_sni_and_certificate_name(
    tls_server: tuple[Server, Path, list[str]], lookups: list[str], tmp_path: Path
) -> None:
    server, ca, sni = tls_server
    policy, calls = rebinding([PUBLIC], ["127.0.0.1"])
    storage = HttpStorage(policy, attempts=1)
    storage._session().verify = str(ca)  # trust the test's certificate
    assert storage.get(f"https://{NAME}:{server.port}/x", tmp_path / "f", "FILE") == 8
    assert calls == [NAME] and lookups == [PUBLIC]
    assert sni == [NAME]  # SNI named the host, not the pinned address
    assert server.hosts == [f"{NAME}:{server.port}"]

    # a certificate for another name is still refused: verification uses the original host
    other = HttpStorage(StagingPolicy(resolver=lambda host: [PUBLIC]), attempts=1)
    other._session().verify = str(ca)
    with pytest.raises(StagingError, match=r"certificate|hostname"):
        other.get(f"https://other.example:{server.port}/x", tmp_path / "g", "FILE")
