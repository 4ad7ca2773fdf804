"""Fixtures of the workflow-manager suites: one real `tescape serve` (local provider, real podman)
with S3 (SeaweedFS) configured, a work area inside its `storage.allowed_dirs`, and a loopback HTTP
file server. Images: `ubuntu` runs the locally built Debian image (bash), `alpine` busybox."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest

from tests.fixtures.seaweedfs import SeaweedS3, _seaweedfs  # noqa: F401
from tests.fixtures.server import RunningServer, tescape_server


@pytest.fixture(scope="session")
def e2e_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where pipelines keep their work dirs and inputs (the server may read and write here)."""
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def e2e_bucket(seaweedfs: SeaweedS3) -> str:
    return seaweedfs.create_bucket("e2e-work")


@pytest.fixture(scope="session")
def e2e_server(
    e2e_root: Path,
    busybox_image: str,
    debian_bash_image: str,
    seaweedfs: SeaweedS3,
) -> Iterator[RunningServer]:
    config = {
        "images": {"rewrites": {"alpine": busybox_image, "ubuntu": debian_bash_image}},
        "storage": {"allowed_dirs": [str(e2e_root)], "s3": seaweedfs.s3_settings()},
        "scheduler": {"interval_seconds": 0.2},
    }
    with tescape_server(e2e_root / "server", config=config, run_tasks=True) as srv:
        yield srv


@dataclass
class FileServer:
    url: str
    root: Path


@pytest.fixture(scope="session")
def http_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FileServer]:
    """A loopback `http.server` over a directory of its own (stopped at the end)."""
    root = tmp_path_factory.mktemp("http-files")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=root))
    thread = threading.Thread(target=server.serve_forever, name="http-files", daemon=True)
    thread.start()
    try:
        yield FileServer(f"http://127.0.0.1:{server.server_address[1]}", root)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
