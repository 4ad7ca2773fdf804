"""prepare_image over the FakeEngine: apps, archives, rewrites, credentials, pull once; and the
agent's archive download against a flaky loopback HTTP server."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from capsule_runtime.client import DownloadCorrupt, GatewayClient, GatewayUnreachable
from capsule_runtime.engine import FakeEngine, ImageNotFound, RegistryAuthFailed
from capsule_runtime.engine.podman import _loaded
from capsule_runtime.engine.podman_cli import classify
from capsule_runtime.image_source import ArchiveError, prepare_image, registry_of
from capsule_runtime.protocol.messages import TaskSettings
from gateway.store.apps import registry_of as gateway_registry_of

REG = "127.0.0.1:5000"
PRIVATE = f"{REG}/lab/tool:1"


def docker_archive(path: Path, *tags: str) -> Path:
    with tarfile.open(path, "w") as tar:
        data = json.dumps([{"Config": "c.json", "RepoTags": list(tags), "Layers": []}]).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


class FakeClient:
    """Serves app archives from a dict; counts downloads."""

    def __init__(self, archives: dict[str, Path] | None = None) -> None:
        self.archives = archives or {}
        self.downloads: list[str] = []

    def download_app_archive(self, name: str, dest: Path, sha256: str | None = None) -> str:
        self.downloads.append(name)
        if name not in self.archives:
            raise GatewayUnreachable(f"GET /apps/{name}/archive: HTTP 404 no archive")
        dest.write_bytes(self.archives[name].read_bytes())
        return hashlib.sha256(dest.read_bytes()).hexdigest()


def prepare(
    engine: FakeEngine, image: str, tmp_path: Path, client: FakeClient | None = None, **kw: Any
) -> str:
    settings = TaskSettings(**kw)
    gateway = cast(GatewayClient, client or FakeClient())
    return prepare_image(engine, image, settings, gateway, tmp_path / "images")


def test_a_local_image_is_used_as_it_is(tmp_path: Path) -> None:
    engine = FakeEngine(images=["localhost/t/busybox:1"])
    assert prepare(engine, "localhost/t/busybox:1", tmp_path) == "localhost/t/busybox:1"
    assert engine.pulls == []


def test_rewrite_then_pull_once(tmp_path: Path) -> None:
    engine = FakeEngine(pullable=[f"{REG}/mirror/alpine:3.19"])
    rules = {"alpine": f"{REG}/mirror/alpine"}
    for _ in range(2):  # the second task finds the image in the store: no second pull
        ref = prepare(engine, "alpine:3.19", tmp_path, image_rewrites=rules)
        assert ref == f"{REG}/mirror/alpine:3.19"
    assert engine.pulls == [ref]
    assert engine.pull_details == [
        {"ref": ref, "auth": None, "auth_mode": None, "tls_verify": True}
    ]


class SlowPull(FakeEngine):
    """A pull that waits for the test; records who asked whether the image is there."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.asked = threading.Semaphore(0)
        self.pulling = threading.Event()
        self.release = threading.Event()

    def has_image(self, ref: str) -> bool:
        self.asked.release()
        return super().has_image(ref)

    def ensure_image(self, ref: str, auth_file: Path | None = None, tls_verify: bool = True) -> str:
        if ref not in self.images:
            self.pulling.set()
            assert self.release.wait(10)
        return super().ensure_image(ref, auth_file, tls_verify)


def test_a_task_waits_for_the_pull_of_another(tmp_path: Path) -> None:
    ref = f"{REG}/big/image:1"
    engine = SlowPull(pullable=[ref])
    threads = [threading.Thread(target=prepare, args=(engine, ref, tmp_path)) for _ in range(2)]
    threads[0].start()
    assert engine.pulling.wait(10)  # the first task is pulling; it asked twice (before, in lock)
    assert engine.asked.acquire(timeout=10) and engine.asked.acquire(timeout=10)
    threads[1].start()
    assert engine.asked.acquire(timeout=10)  # the second found no image yet: it waits for the lock
    engine.release.set()
    for t in threads:
        t.join(timeout=10)
    assert engine.pulls == [ref]


def test_an_app_pulls_with_its_registrys_credentials_from_a_private_file(tmp_path: Path) -> None:
    engine = FakeEngine(pullable=[PRIVATE])
    ref = prepare(
        engine,
        "tool",
        tmp_path,
        apps={"tool": {"image": PRIVATE, "archive_sha256": None}},
        registry_credentials={REG: {"username": "u", "password": "p:w"}, "other": {}},
        insecure_registries=[REG],
    )
    assert ref == PRIVATE
    [detail] = engine.pull_details
    assert detail["auth"] == {"auths": {REG: {"auth": "dTpwOnc="}}}  # base64("u:p:w")
    assert detail["auth_mode"] == 0o600 and detail["tls_verify"] is False
    assert not list((tmp_path / "images").glob("*.json"))  # the auth file is gone


def test_credentials_of_other_registries_are_not_used(tmp_path: Path) -> None:
    engine = FakeEngine(pullable=["quay.io/x/y:1"])
    prepare(engine, "quay.io/x/y:1", tmp_path, registry_credentials={REG: {"username": "u"}})
    assert engine.pull_details[0]["auth"] is None and engine.pull_details[0]["tls_verify"]


def test_an_app_archive_is_downloaded_loaded_and_deleted_once(tmp_path: Path) -> None:
    archive = docker_archive(tmp_path / "tools.tar", "localhost/tools:1")
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    client = FakeClient({"tools": archive})
    engine = FakeEngine()
    apps = {"tools": {"image": "localhost/tools:1", "archive_sha256": sha}}
    for _ in range(2):
        assert prepare(engine, "tools", tmp_path, client, apps=apps) == "localhost/tools:1"
    assert client.downloads == ["tools"] and engine.pulls == []
    assert not list((tmp_path / "images").glob("*.tar*"))


def test_an_archive_with_another_image_is_refused(tmp_path: Path) -> None:
    client = FakeClient({"tools": docker_archive(tmp_path / "a.tar", "localhost/other:2")})
    apps = {"tools": {"image": "localhost/tools:1", "archive_sha256": "ab" * 32}}
    with pytest.raises(ArchiveError, match=r"holds localhost/other:2, not localhost/tools:1"):
        prepare(FakeEngine(), "tools", tmp_path, client, apps=apps)


def test_a_missing_archive_is_an_archive_error(tmp_path: Path) -> None:
    apps = {"tools": {"image": "localhost/tools:1", "archive_sha256": "ab" * 32}}
    with pytest.raises(ArchiveError, match=r"cannot download the image archive of app 'tools'"):
        prepare(FakeEngine(), "tools", tmp_path, FakeClient(), apps=apps)


class RefusingEngine(FakeEngine):
    """A registry that answers 401, as podman reports it."""

    def ensure_image(self, ref: str, auth_file: Path | None = None, tls_verify: bool = True) -> str:
        raise classify(
            ["podman", "pull", "--quiet", ref],
            125,
            f"Error: initializing source docker://{ref}: reading manifest 1 in {ref}: "
            "unauthorized: authentication required",
        )


def test_wrong_credentials_are_named_without_the_password(tmp_path: Path) -> None:
    creds = {REG: {"username": "alice", "password": "hunter2"}}
    with pytest.raises(RegistryAuthFailed) as info:
        prepare(RefusingEngine(), PRIVATE, tmp_path, registry_credentials=creds)
    text = str(info.value)
    assert f"registry {REG} refused the credentials of user 'alice'" in text
    assert "unauthorized" in text and "hunter2" not in text and "aHVudGVy" not in text


def test_missing_credentials_say_how_to_add_them(tmp_path: Path) -> None:
    with pytest.raises(RegistryAuthFailed, match=r"requires credentials .* `tescape apps add"):
        prepare(RefusingEngine(), PRIVATE, tmp_path)


def test_image_not_found_names_the_reference(tmp_path: Path) -> None:
    with pytest.raises(ImageNotFound, match=rf"image {REG}/nope:1 not found \(registry {REG}\)"):
        prepare(FakeEngine(), f"{REG}/nope:1", tmp_path)


@pytest.mark.parametrize(
    "image",
    [
        "alpine",
        "alpine:3.19",
        "library/alpine",
        "quay.io/a/b:1",
        "127.0.0.1:5000/x",
        "localhost/t/busybox:1",
        "localhost:5000/a",
        "registry/with/path@sha256:" + "a" * 64,
        "bwa",
    ],
)
def test_registry_of_matches_the_gateways(image: str) -> None:
    assert registry_of(image) == gateway_registry_of(image)


def test_podman_load_output_and_auth_classification() -> None:
    assert _loaded("Loaded image: localhost/a:1\n") == ["localhost/a:1"]
    assert _loaded("Loaded image(s): a:1,b:2\n") == ["a:1", "b:2"]
    err = classify(
        ["podman", "pull", "x"], 125, "denied: requested access to the resource is denied"
    )
    assert isinstance(err, RegistryAuthFailed)
    assert not isinstance(
        classify(["podman", "start", "x"], 125, "unauthorized"), RegistryAuthFailed
    )


def test_fake_engine_loads_oci_archives(tmp_path: Path) -> None:
    path = tmp_path / "oci.tar"
    with tarfile.open(path, "w") as tar:
        data = json.dumps(
            {"manifests": [{"annotations": {"org.opencontainers.image.ref.name": "x/y:2"}}]}
        ).encode()
        info = tarfile.TarInfo("index.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    engine = FakeEngine()
    assert engine.load_archive(path) == ["x/y:2"] and engine.has_image("x/y:2")


# -- GatewayClient.download_app_archive ------------------------------------------------------


class FlakyArchive(http.server.BaseHTTPRequestHandler):
    """Answers GET …/apps/<name>/archive with the scripted responses in `server.script`."""

    def do_GET(self) -> None:
        server = cast(Any, self.server)
        server.seen.append((self.path, self.headers.get("X-Tescape-Instance")))
        status, body = server.script.pop(0) if server.script else (404, b"none")
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def archive_server() -> Iterator[Any]:
    server = cast(Any, http.server.ThreadingHTTPServer(("127.0.0.1", 0), FlakyArchive))
    server.script, server.seen = [], []
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def client_for(server: Any, retries: int = 3) -> GatewayClient:
    host, port = server.server_address
    return GatewayClient(f"http://{host}:{port}", "i-1", "token", retries=retries)


def test_download_retries_server_errors_and_bad_checksums(
    archive_server: Any, tmp_path: Path
) -> None:
    good = b"archive bytes" * 1000
    sha = hashlib.sha256(good).hexdigest()
    archive_server.script = [(503, b"busy"), (200, b"truncated"), (200, good)]
    dest = tmp_path / "a.tar"
    assert client_for(archive_server).download_app_archive("my.app", dest, sha) == sha
    assert dest.read_bytes() == good and not list(tmp_path.glob("*.partial"))
    assert archive_server.seen == [("/agent/v1/apps/my.app/archive", "i-1")] * 3


def test_download_gives_up_named(archive_server: Any, tmp_path: Path) -> None:
    archive_server.script = [(200, b"wrong")] * 2
    with pytest.raises(DownloadCorrupt, match="expected"):
        client_for(archive_server, retries=1).download_app_archive("a", tmp_path / "a", "00")
    archive_server.script = [(404, b"no archive for app 'a'")]
    with pytest.raises(GatewayUnreachable, match="HTTP 404"):
        client_for(archive_server).download_app_archive("a", tmp_path / "a")
    assert len(archive_server.seen) == 3 and not list(tmp_path.iterdir())
