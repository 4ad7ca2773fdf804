"""The Application Library through the admin API and the CLI: apps, credentials, archives."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import requests

from gateway.library import Library, archive_image_ref
from gateway.secrets import SecretBox
from gateway.store import open_database
from gateway.store.apps import AppStore, registry_of
from tests.fixtures.server import RunningServer


def docker_archive(path: Path, tag: str) -> Path:
    with tarfile.open(path, "w") as tar:
        data = json.dumps([{"Config": "c.json", "RepoTags": [tag], "Layers": []}]).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def cli(srv: RunningServer, *args: str, stdin: str = "") -> str:
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args, "--server", srv.url],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_apps_through_the_cli(sqlite_server: RunningServer, tmp_path: Path) -> None:
    cli(
        sqlite_server,
        "apps",
        "add",
        "bwa",
        "127.0.0.1:5000/bio/bwa:0.7",
        "--username",
        "u",
        "--password-stdin",
        stdin="s3cret\n",
    )
    cli(
        sqlite_server,
        "apps",
        "import",
        "tools",
        str(docker_archive(tmp_path / "a.tar", "localhost/tools:1")),
    )
    listed = requests.get(sqlite_server.url + "/api/v1/apps", timeout=10).json()["apps"]
    assert [a["name"] for a in listed] == ["bwa", "tools"]
    assert listed[1]["image"] == "localhost/tools:1" and listed[1]["archive"]["size_bytes"]
    assert "s3cret" not in json.dumps(listed)
    assert "s3cret" not in (sqlite_server.data_dir / "tescape.db").read_bytes().decode("latin-1")
    table = cli(sqlite_server, "apps", "list")
    assert "bwa" in table and "tools" in table
    cli(sqlite_server, "apps", "remove", "tools")
    assert requests.delete(sqlite_server.url + "/api/v1/apps/tools", timeout=10).status_code == 404


def test_bad_archive_and_names_are_refused(sqlite_server: RunningServer) -> None:
    resp = requests.put(sqlite_server.url + "/api/v1/apps/x/archive", data=b"not a tar", timeout=10)
    assert resp.status_code == 400 and "archive" in resp.json()["message"]
    resp = requests.put(
        sqlite_server.url + "/api/v1/apps/Bad Name", json={"image": "a"}, timeout=10
    )
    assert resp.status_code == 400


def test_resolve_gives_apps_and_decrypted_credentials(tmp_path: Path) -> None:
    db = open_database(f"sqlite:///{tmp_path / 't.db'}")
    lib = Library(AppStore(db), SecretBox(tmp_path / "secret.key"), tmp_path / "apps")
    lib.add("bwa", "reg.example:5000/bio/bwa:1", "u", "pw")
    apps, creds = lib.resolve(["bwa", "alpine"])
    assert apps == {"bwa": {"image": "reg.example:5000/bio/bwa:1", "archive_sha256": None}}
    assert creds == {"reg.example:5000": {"username": "u", "password": "pw"}}
    assert (tmp_path / "secret.key").stat().st_mode & 0o777 == 0o600
    _, via_mirror = lib.resolve(["alpine:3"], {"alpine": "reg.example:5000/mirror/alpine"})
    assert via_mirror == {"reg.example:5000": {"username": "u", "password": "pw"}}
    db.close()


@pytest.mark.parametrize(
    ("image", "registry"),
    [
        ("alpine", "docker.io"),
        ("library/alpine", "docker.io"),
        ("quay.io/a/b:1", "quay.io"),
        ("127.0.0.1:5000/x", "127.0.0.1:5000"),
        ("localhost/t/busybox:1", "localhost"),
    ],
)
def test_registry_of(image: str, registry: str) -> None:
    assert registry_of(image) == registry


def test_archive_ref_from_oci_index(tmp_path: Path) -> None:
    path = tmp_path / "oci.tar"
    with tarfile.open(path, "w") as tar:
        data = json.dumps(
            {"manifests": [{"annotations": {"org.opencontainers.image.ref.name": "x/y:2"}}]}
        ).encode()
        info = tarfile.TarInfo("index.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    assert archive_image_ref(path) == "x/y:2"
