"""Staging against real servers: a threaded http.server on 127.0.0.1 (GET with query strings,
redirects, PUT) and SeaweedFS S3 (real access-key auth), plus local paths; the refusals of the
staging policy; 2,000 inputs in one mount; a 256 MiB multipart transfer with bounded memory; and
a staged Cromwell-style tree used by a real podman container (hard links, FIFOs, writes into an
input)."""

from __future__ import annotations

import hashlib
import os
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from capsule_runtime.staging import (
    AccessRefused,
    HttpStorage,
    S3Config,
    S3Storage,
    SourceMissing,
    StagingCancelled,
    StagingError,
    StagingPolicy,
    UnsupportedScheme,
    Workspace,
    stage_inputs,
    upload_outputs,
)
from tests.fixtures.documents import tes_inputs, tes_outputs, tes_task
from tests.fixtures.seaweedfs import SeaweedS3, _seaweedfs  # noqa: F401
from tests.fixtures.serving import serving

MiB = 1 << 20
EX: dict[str, Any] = {"image": "busybox", "command": ["true"]}
pytestmark = pytest.mark.timeout(180)


# -- a real HTTP server -------------------------------------------------------------------------


@dataclass
class HttpFiles:
    root: Path  # GET /files/<name> serves root/<name>; PUT /upload/<path> writes root/up/<path>
    port: int = 0
    seen: list[tuple[str, str]] = field(default_factory=list)  # (method, raw request target)
    flaky: dict[str, int] = field(default_factory=dict)  # name → 503s still to answer

    def url(self, target: str) -> str:
        return f"http://127.0.0.1:{self.port}{target}"


def _handler(files: HttpFiles) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _reply(
            self, code: int, body: bytes = b"", headers: dict[str, str] | None = None
        ) -> None:
            self.send_response(code)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            files.seen.append((self.command, self.path))
            parts = urlsplit(self.path)
            if parts.path == "/redirect":
                to = parse_qs(parts.query)["to"][0]
                return self._reply(302, headers={"Location": to})
            if parts.path.startswith("/flaky/"):
                name = parts.path.removeprefix("/flaky/")
                if files.flaky.get(name, 0) > 0:
                    files.flaky[name] -= 1
                    return self._reply(503)
                parts = urlsplit("/files/" + name)
            if not parts.path.startswith("/files/"):
                return self._reply(404)
            path = files.root / parts.path.removeprefix("/files/")
            if not path.is_file():
                return self._reply(404)
            size = path.stat().st_size
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            if self.command == "HEAD":
                return None
            with open(path, "rb") as f:
                while chunk := f.read(MiB):
                    self.wfile.write(chunk)
            return None

        def do_PUT(self) -> None:
            files.seen.append((self.command, self.path))
            length = self.headers.get("Content-Length")
            if length is None:  # presigned S3 PUTs refuse chunked bodies; so does this server
                return self._reply(411)
            dest = files.root / "up" / urlsplit(self.path).path.removeprefix("/upload/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            remaining = int(length)
            with open(dest, "wb") as out:
                while remaining:
                    chunk = self.rfile.read(min(MiB, remaining))
                    if not chunk:
                        break
                    out.write(chunk)
                    remaining -= len(chunk)
            return self._reply(201)

    return Handler


@pytest.fixture(scope="module")
def http_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpFiles]:
    files = HttpFiles(tmp_path_factory.mktemp("http"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(files))
    server.daemon_threads = True
    files.port = server.server_address[1]
    with serving(server):
        yield files


# -- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def allowed(tmp_path: Path) -> Path:
    d = tmp_path / "allowed"
    d.mkdir()
    return d


@pytest.fixture(scope="module")
def bucket(seaweedfs: SeaweedS3) -> str:
    return seaweedfs.create_bucket(f"staging-{uuid.uuid4().hex[:8]}")


def s3_config(seaweedfs: SeaweedS3, **overrides: Any) -> S3Config:
    return S3Config.from_mapping({**seaweedfs.s3_settings(), **overrides})


def make_workspace(
    tmp_path: Path,
    task: dict[str, Any],
    allowed: Path,
    seaweedfs: SeaweedS3 | None = None,
    **policy: Any,
) -> Workspace:
    return Workspace.create(
        tmp_path / f"ws-{uuid.uuid4().hex[:6]}",
        tes_task(task),
        StagingPolicy.create([allowed], **policy),
        s3=s3_config(seaweedfs) if seaweedfs is not None else None,
    )


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def read_tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


TREE = {"a.txt": b"alpha", "sub/b.txt": b"beta", "sub/deeper/c.bin": bytes(range(256))}


# -- inputs ------------------------------------------------------------------------------------


def test_inputs_from_every_scheme(
    tmp_path: Path, allowed: Path, http_files: HttpFiles, seaweedfs: SeaweedS3, bucket: str
) -> None:
    write_tree(allowed / "src", TREE)
    (allowed / "hello.txt").write_text("hello")
    (http_files.root / "data.bin").write_bytes(b"from http")
    client = seaweedfs.client()
    client.put_object(Bucket=bucket, Key="in/one.txt", Body=b"from s3")
    for rel, data in TREE.items():
        client.put_object(Bucket=bucket, Key=f"in/tree/{rel}", Body=data)
    client.put_object(Bucket=bucket, Key="in/tree/empty/", Body=b"")  # a folder marker
    # a presigned-URL-like query; escapes in upper case (urllib3 upper-cases %7e: RFC 3986 6.2.2.1)
    query = "?X-Amz-Signature=ab%2Fcd%2B%3D&X-Amz-Expires=60&empty=&&a=b=c&tilde=%7E~"
    task = {
        "inputs": [
            {"url": str(allowed / "hello.txt"), "path": "/work/bare.txt", "type": "FILE"},
            {"url": str(allowed / "src"), "path": "/work/bare-dir", "type": "DIRECTORY"},
            {"url": f"file://{allowed}/hello.txt", "path": "/work/file.txt", "type": "FILE"},
            {"url": f"file://{allowed}/src/", "path": "/work/file-dir", "type": "DIRECTORY"},
            {
                "url": http_files.url("/files/data.bin" + query),
                "path": "/work/http.bin",
                "type": "FILE",
            },
            {"url": f"s3://{bucket}/in/one.txt", "path": "/data/one.txt", "type": "FILE"},
            {"url": f"s3://{bucket}/in/tree/", "path": "/data/tree", "type": "DIRECTORY"},
            {"url": f"s3://{bucket}/in/tree", "path": "/data/tree-as-file", "type": "FILE"},
            {"content": "#!/bin/sh\necho hi\n", "path": "/work/.command.sh", "type": "FILE"},
        ],
        "executors": [{**EX, "workdir": "/work"}],
    }
    with make_workspace(tmp_path, task, allowed, seaweedfs) as ws:
        mounts = stage_inputs(tes_inputs(task["inputs"]), ws)
        assert [m.container for m in mounts] == ["/data", "/work"]
        t = ws.tree_path
        assert t("/work/bare.txt").read_text() == "hello"
        assert t("/work/file.txt").read_text() == "hello"
        assert read_tree(t("/work/bare-dir")) == TREE
        assert read_tree(t("/work/file-dir")) == TREE
        assert t("/work/http.bin").read_bytes() == b"from http"
        assert t("/data/one.txt").read_bytes() == b"from s3"
        assert read_tree(t("/data/tree")) == TREE
        assert t("/data/tree/empty").is_dir()
        assert read_tree(t("/data/tree-as-file")) == TREE
        assert t("/work/.command.sh").read_text() == "#!/bin/sh\necho hi\n"
    # the query string reached the server exactly as written
    assert ("GET", "/files/data.bin" + query) in http_files.seen


def test_http_redirects_and_retries(tmp_path: Path, allowed: Path, http_files: HttpFiles) -> None:
    (http_files.root / "r.txt").write_text("redirected")
    http_files.flaky["r.txt"] = 2
    storage = HttpStorage(StagingPolicy.create(), backoff=0)
    target = http_files.url("/files/r.txt")
    assert storage.get(http_files.url(f"/redirect?to={target}"), tmp_path / "a", "FILE") == 10
    assert storage.get(http_files.url("/flaky/r.txt"), tmp_path / "b", "FILE") == 10
    assert (tmp_path / "b").read_text() == "redirected"
    assert storage.stat(target) is not None and storage.stat(http_files.url("/files/no")) is None
    with pytest.raises(SourceMissing):
        storage.get(http_files.url("/files/missing"), tmp_path / "c", "FILE")
    with pytest.raises(StagingError, match="DIRECTORY inputs over http"):
        storage.get(target, tmp_path / "d", "DIRECTORY")


def test_missing_inputs_fail_with_the_path(
    tmp_path: Path, allowed: Path, seaweedfs: SeaweedS3, bucket: str
) -> None:
    for url in (f"s3://{bucket}/nope/x", str(allowed / "nope"), f"s3://{bucket}/nope-prefix/"):
        task = {"inputs": [{"url": url, "path": "/work/x", "type": "FILE"}], "executors": [EX]}
        with (
            make_workspace(tmp_path, task, allowed, seaweedfs) as ws,
            pytest.raises(SourceMissing, match="input /work/x: "),
        ):
            stage_inputs(tes_inputs(task["inputs"]), ws)


def test_unknown_schemes_are_a_clear_error(tmp_path: Path, allowed: Path) -> None:
    for url in ("gs://bucket/x", "ftp://host/x"):
        task = {"inputs": [{"url": url, "path": "/work/x", "type": "FILE"}], "executors": [EX]}
        with (
            make_workspace(tmp_path, task, allowed) as ws,
            pytest.raises(UnsupportedScheme, match="scheme is not supported by this worker"),
        ):
            stage_inputs(tes_inputs(task["inputs"]), ws)


def test_s3_auth_is_real(tmp_path: Path, seaweedfs: SeaweedS3, bucket: str) -> None:
    seaweedfs.client().put_object(Bucket=bucket, Key="auth.txt", Body=b"x")
    wrong = S3Storage(StagingPolicy.create(), s3_config(seaweedfs, secret_access_key="wrong"))
    try:
        with pytest.raises(StagingError, match=r"SignatureDoesNotMatch|AccessDenied|403"):
            wrong.get(f"s3://{bucket}/auth.txt", tmp_path / "x", "FILE")
    finally:
        wrong.close()


# -- outputs -----------------------------------------------------------------------------------


def test_outputs_to_every_scheme(
    tmp_path: Path, allowed: Path, http_files: HttpFiles, seaweedfs: SeaweedS3, bucket: str
) -> None:
    out = allowed / "out"
    s3 = f"s3://{bucket}/run1"
    outputs = [
        {"url": f"{out}/bare.txt", "path": "/work/result.txt", "type": "FILE"},
        {"url": f"file://{out}/file.txt", "path": "/work/result.txt", "type": "FILE"},
        {"url": http_files.url("/upload/put.txt"), "path": "/work/result.txt", "type": "FILE"},
        {"url": f"{s3}/result.txt", "path": "/work/result.txt", "type": "FILE"},
        {"url": f"{s3}/results", "path": "/work/results", "type": "DIRECTORY"},
        {"url": f"{s3}/declared-file", "path": "/work/outdir", "type": "FILE"},
        {"url": f"{s3}/csv", "path": "/work/*.csv", "path_prefix": "/work", "type": "FILE"},
        {
            "url": f"{s3}/nested",
            "path": "/work/sample_?/*.vcf",
            "path_prefix": "/work/",
            "type": "FILE",
        },
        {
            "url": f"{out}/wild",
            "path": "/work/sample_[0-9]",
            "path_prefix": "/work",
            "type": "FILE",
        },
        {"url": f"{s3}/missing.txt", "path": "/work/missing.txt", "type": "FILE"},
        {"url": f"{out}/missing-dir", "path": "/work/missing-dir", "type": "DIRECTORY"},
    ]
    task = {"outputs": outputs, "executors": [{**EX, "workdir": "/work"}]}
    with make_workspace(tmp_path, task, allowed, seaweedfs) as ws:
        stage_inputs(tes_inputs([]), ws)
        work = ws.tree_path("/work")
        (work / "result.txt").write_text("result!")
        write_tree(work / "results", TREE)
        write_tree(work / "outdir", {"x.txt": b"x", "y/z.txt": b"zz"})
        write_tree(
            work, {"a.csv": b"1", "b.csv": b"22", "sample_1/s.vcf": b"v1", "sample_2/s.vcf": b"v2"}
        )
        logs, notes = upload_outputs(tes_outputs(outputs), ws)
    by_url = {entry["url"]: entry for entry in logs}
    assert by_url[f"{out}/bare.txt"] == {
        "url": f"{out}/bare.txt",
        "path": "/work/result.txt",
        "size_bytes": "7",
    }
    assert (out / "bare.txt").read_text() == "result!" and (
        out / "file.txt"
    ).read_text() == "result!"
    assert (http_files.root / "up" / "put.txt").read_text() == "result!"
    expected_s3 = {
        "run1/result.txt": b"result!",
        **{f"run1/results/{rel}": data for rel, data in TREE.items()},
        "run1/declared-file/x.txt": b"x",
        "run1/declared-file/y/z.txt": b"zz",
        "run1/csv/a.csv": b"1",
        "run1/csv/b.csv": b"22",
        "run1/nested/sample_1/s.vcf": b"v1",
        "run1/nested/sample_2/s.vcf": b"v2",
    }
    client = seaweedfs.client()
    listed = client.list_objects_v2(Bucket=bucket, Prefix="run1/")["Contents"]
    got = {o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}
    assert got == expected_s3
    for key, data in expected_s3.items():
        entry = by_url[f"s3://{bucket}/{key}"]
        assert entry["size_bytes"] == str(len(data)) and isinstance(entry["size_bytes"], str)
    assert by_url[f"{s3}/results/sub/deeper/c.bin"]["path"] == "/work/results/sub/deeper/c.bin"
    assert read_tree(out / "wild") == {"sample_1/s.vcf": b"v1", "sample_2/s.vcf": b"v2"}
    assert len(logs) == 4 + len(expected_s3) - 1 + 2
    assert notes == [
        "output /work/outdir was declared FILE but is a directory; uploaded it as a directory",
        "output /work/missing.txt does not exist; skipped",
        "output /work/missing-dir does not exist; skipped",
    ]


# -- the staging policy ------------------------------------------------------------------------


def test_allowed_dirs_refusals(tmp_path: Path, allowed: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    (allowed / "dir").mkdir()
    (allowed / "dir" / "link").symlink_to(outside / "secret.txt")
    (allowed / "escape").symlink_to(outside)
    for url in (
        str(outside / "secret.txt"),
        f"file://{outside}/secret.txt",
        f"{allowed}/../outside/secret.txt",
        f"{allowed}/escape/secret.txt",
        str(allowed / "dir"),  # a directory input with a symlink leading outside
    ):
        task = {"inputs": [{"url": url, "path": "/work/in", "type": "FILE"}], "executors": [EX]}
        with make_workspace(tmp_path, task, allowed) as ws:
            with pytest.raises(AccessRefused, match="outside the directories tasks may use"):
                stage_inputs(tes_inputs(task["inputs"]), ws)
            assert not ws.tree_path("/work/in").exists() or not any(
                ws.tree_path("/work/in").iterdir()
            )
    outputs = [{"url": str(outside / "written.txt"), "path": "/work/o", "type": "FILE"}]
    with make_workspace(tmp_path, {"outputs": outputs, "executors": [EX]}, allowed) as ws:
        stage_inputs(tes_inputs([]), ws)
        ws.tree_path("/work/o").write_text("o")
        logs, notes = upload_outputs(tes_outputs(outputs), ws)
    assert logs == [] and not (outside / "written.txt").exists()
    assert "outside the directories tasks may use" in notes[0]


METADATA_URLS = [
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://169.254.170.2/v2/credentials",
    "http://imds.example.test/latest/meta-data/",
]


def resolver(host: str) -> list[str]:
    from capsule_runtime.staging.policy import system_resolver

    return ["169.254.169.254"] if host == "imds.example.test" else system_resolver(host)


@pytest.mark.parametrize("url", METADATA_URLS)
def test_metadata_addresses_are_refused_for_inputs_and_outputs(
    tmp_path: Path, allowed: Path, url: str
) -> None:
    policy = StagingPolicy.create([allowed], block_private_networks=False, resolver=resolver)
    task = {
        "inputs": [{"url": url, "path": "/work/in", "type": "FILE"}],
        "outputs": [{"url": url, "path": "/work/in", "type": "FILE"}],
        "executors": [EX],
    }
    started = time.monotonic()
    with Workspace.create(tmp_path / "ws", tes_task(task), policy) as ws:
        with pytest.raises(AccessRefused, match="instance-metadata"):
            stage_inputs(tes_inputs(task["inputs"]), ws)
        ws.tree_path("/work/in").write_text("x")
        logs, notes = upload_outputs(tes_outputs(task["outputs"]), ws)
    assert logs == [] and "instance-metadata" in notes[0]
    assert time.monotonic() - started < 5  # refused before any connection attempt


def test_a_redirect_to_metadata_is_refused(tmp_path: Path, http_files: HttpFiles) -> None:
    storage = HttpStorage(StagingPolicy.create(block_private_networks=False))
    url = http_files.url("/redirect?to=http://169.254.169.254/latest/meta-data/")
    with pytest.raises(AccessRefused, match="instance-metadata"):
        storage.get(url, tmp_path / "x", "FILE")


def test_an_s3_endpoint_at_a_metadata_address_is_refused(tmp_path: Path) -> None:
    config = S3Config(
        endpoint_url="http://169.254.169.254:80", access_key_id="a", secret_access_key="b"
    )
    storage = S3Storage(StagingPolicy.create(), config)
    with pytest.raises(AccessRefused, match="instance-metadata"):
        storage.get("s3://bucket/key", tmp_path / "x", "FILE")


def test_private_networks_blocked_on_and_off(
    tmp_path: Path, allowed: Path, http_files: HttpFiles, seaweedfs: SeaweedS3, bucket: str
) -> None:
    (http_files.root / "p.txt").write_text("private")
    seaweedfs.client().put_object(Bucket=bucket, Key="p.txt", Body=b"private")
    task = {
        "inputs": [
            {"url": http_files.url("/files/p.txt"), "path": "/work/http", "type": "FILE"},
            {"url": f"s3://{bucket}/p.txt", "path": "/work/s3", "type": "FILE"},
        ],
        "executors": [EX],
    }
    with make_workspace(tmp_path, task, allowed, seaweedfs, block_private_networks=False) as ws:
        stage_inputs(tes_inputs(task["inputs"]), ws)
        assert ws.tree_path("/work/http").read_text() == "private"
        assert ws.tree_path("/work/s3").read_text() == "private"
    for one in task["inputs"]:
        with (
            make_workspace(tmp_path, task, allowed, seaweedfs, block_private_networks=True) as ws,
            pytest.raises(AccessRefused, match="block_private_networks"),
        ):
            stage_inputs(tes_inputs([one]), ws)
    outputs = [{"url": f"s3://{bucket}/blocked.txt", "path": "/work/o", "type": "FILE"}]
    blocked = {"outputs": outputs, "executors": [EX]}
    with make_workspace(tmp_path, blocked, allowed, seaweedfs, block_private_networks=True) as ws:
        stage_inputs(tes_inputs([]), ws)
        ws.tree_path("/work/o").write_text("o")
        logs, notes = upload_outputs(tes_outputs(outputs), ws)
    assert logs == [] and "block_private_networks" in notes[0]


# -- scale -------------------------------------------------------------------------------------

CALL = "/cromwell-executions/lots_of_inputs/0b3f4c2e-9d1a-4e6b-8f00-5a6b7c8d9e0f/call-do_nothing"


def test_two_thousand_inputs_make_one_mount(tmp_path: Path, allowed: Path) -> None:
    n = 2000
    for i in range(n):
        d = allowed / f"shard{i % 50}" / f"d{i}"
        d.mkdir(parents=True)
        (d / f"f{i}.txt").write_text(str(i))
    inputs = [
        {
            "url": str(allowed / f"shard{i % 50}" / f"d{i}" / f"f{i}.txt"),
            "path": f"{CALL}/inputs/{hashlib.md5(str(i).encode()).hexdigest()}/f{i}.txt",
            "type": "FILE",
        }
        for i in range(n)
    ]
    inputs.append(
        {"url": str(allowed / "shard0" / "d0" / "f0.txt"), "path": f"{CALL}/execution/script"}
    )
    outputs = [{"url": str(allowed / "rc"), "path": f"{CALL}/execution/rc", "type": "FILE"}]
    task = {"inputs": inputs, "outputs": outputs, "executors": [EX]}
    started = time.monotonic()
    with make_workspace(tmp_path, task, allowed) as ws:
        mounts = stage_inputs(tes_inputs(inputs), ws)
        elapsed = time.monotonic() - started
        assert [m.container for m in mounts] == [CALL]
        staged = list(ws.tree_path(f"{CALL}/inputs").rglob("*.txt"))
        assert len(staged) == n
        assert ws.tree_path(inputs[1234]["path"]).read_text() == "1234"
    assert elapsed < 60, f"2,000 inputs took {elapsed:.1f} s"


def test_many_s3_objects_as_one_directory(
    tmp_path: Path, allowed: Path, seaweedfs: SeaweedS3, bucket: str
) -> None:
    client = seaweedfs.client()
    for i in range(300):
        client.put_object(Bucket=bucket, Key=f"many/{i % 7}/obj{i}", Body=str(i).encode())
    task = {
        "inputs": [{"url": f"s3://{bucket}/many", "path": "/data/many", "type": "DIRECTORY"}],
        "executors": [EX],
    }
    with make_workspace(tmp_path, task, allowed, seaweedfs) as ws:
        stage_inputs(tes_inputs(task["inputs"]), ws)
        files = read_tree(ws.tree_path("/data/many"))
    assert len(files) == 300 and files["5/obj250"] == b"250"


def _big_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    block = os.urandom(MiB)
    with open(path, "wb") as f:
        for i in range(size // MiB):
            chunk = i.to_bytes(8, "little") + block[8:]
            digest.update(chunk)
            f.write(chunk)
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.mark.slow
def test_256_mib_through_s3_multipart_with_bounded_memory(
    tmp_path: Path, allowed: Path, seaweedfs: SeaweedS3, bucket: str
) -> None:
    size = 256 * MiB
    src = allowed / "big.bin"
    digest = _big_file(src, size)
    outputs = [{"url": f"s3://{bucket}/big/big.bin", "path": "/work/big.bin", "type": "FILE"}]
    task = {
        "inputs": [{"url": str(src), "path": "/work/big.bin", "type": "FILE"}],
        "outputs": outputs,
        "executors": [EX],
    }
    seen: list[Any] = []
    ws = Workspace.create(
        tmp_path / "ws",
        tes_task(task),
        StagingPolicy.create([allowed]),
        s3=s3_config(seaweedfs),
        on_progress=seen.append,
    )
    with ws:
        stage_inputs(tes_inputs(task["inputs"]), ws)
        tracemalloc.start()
        try:
            logs, notes = upload_outputs(tes_outputs(outputs), ws)
            _, upload_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert notes == [] and logs[0]["size_bytes"] == str(size)
    head = seaweedfs.client().head_object(Bucket=bucket, Key="big/big.bin")
    assert head["ContentLength"] == size
    assert head["ETag"].strip('"').endswith(f"-{size // (16 * MiB)}")  # 16 MiB parts
    assert seen[-1].bytes_done == size and seen[-1].finished

    down_task = {
        "inputs": [{"url": f"s3://{bucket}/big/big.bin", "path": "/data/big.bin", "type": "FILE"}],
        "executors": [EX],
    }
    with make_workspace(tmp_path, down_task, allowed, seaweedfs) as ws:
        tracemalloc.start()
        try:
            stage_inputs(tes_inputs(down_task["inputs"]), ws)
            _, download_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert _sha256(ws.tree_path("/data/big.bin")) == digest
    # streamed: the Python heap peak stays far below the file size (about 25-30 MiB measured)
    assert upload_peak < 48 * MiB, f"upload peak {upload_peak / MiB:.0f} MiB"
    assert download_peak < 48 * MiB, f"download peak {download_peak / MiB:.0f} MiB"


def test_cancel_stops_an_s3_download_midway(
    tmp_path: Path, allowed: Path, seaweedfs: SeaweedS3, bucket: str
) -> None:
    size = 96 * MiB
    seaweedfs.client().put_object(Bucket=bucket, Key="cancel/big.bin", Body=os.urandom(size))
    task = {
        "inputs": [{"url": f"s3://{bucket}/cancel/big.bin", "path": "/data/big", "type": "FILE"}],
        "executors": [EX],
    }
    with make_workspace(tmp_path, task, allowed, seaweedfs) as ws:
        ws.progress_interval = 0
        ws.on_progress = lambda p: ws.cancel() if p.bytes_done >= 4 * MiB else None
        with pytest.raises(StagingCancelled):
            stage_inputs(tes_inputs(task["inputs"]), ws)
        staged = ws.tree_path("/data/big")
        assert not staged.exists() or staged.stat().st_size < size


# -- the tree in a real container ---------------------------------------------------------------


def test_cromwell_tree_in_a_real_container(
    tmp_path: Path, allowed: Path, seaweedfs: SeaweedS3, bucket: str, request: pytest.FixtureRequest
) -> None:
    """Hard links and FIFOs in the work dir, writing into an input, and the script as both input
    and output, with the mounts stage_inputs returns, in podman."""
    import shutil

    if shutil.which("podman") is None:
        pytest.skip("podman is not installed")
    from capsule_runtime.engine import ContainerSpec, Network

    engine = request.getfixturevalue("podman_engine")
    image = request.getfixturevalue("busybox_image")
    execution = f"{CALL}/execution"
    (allowed / "name.txt").write_text("world\n")
    script = allowed / "script"
    script.write_text(
        f"cd {execution}\n"
        f"ln {CALL}/inputs/abc/name.txt hardlink.txt\n"
        "mkfifo fifo && (echo through-fifo > fifo &) && cat fifo > from-fifo.txt\n"
        f"echo changed >> {CALL}/inputs/abc/name.txt\n"
        "echo '# ran' >> script\n"
        "mkdir -p glob-1 && ln hardlink.txt glob-1/out.txt\n"
        "echo 0 > rc\n"
    )
    inputs = [
        {"url": str(allowed / "name.txt"), "path": f"{CALL}/inputs/abc/name.txt", "type": "FILE"},
        {"url": str(script), "path": f"{execution}/script", "type": "FILE"},
    ]
    outputs = [
        {"url": str(script), "path": f"{execution}/script", "type": "FILE"},
        {"url": f"s3://{bucket}/cromwell/rc", "path": f"{execution}/rc", "type": "FILE"},
        {
            "url": f"s3://{bucket}/cromwell/glob-1",
            "path": f"{execution}/glob-1",
            "type": "DIRECTORY",
        },
        {"url": f"s3://{bucket}/cromwell/from-fifo.txt", "path": f"{execution}/from-fifo.txt"},
        {"url": f"s3://{bucket}/cromwell/stdout", "path": f"{execution}/stdout", "type": "FILE"},
    ]
    task = {
        "inputs": inputs,
        "outputs": outputs,
        "executors": [{**EX, "stdout": f"{execution}/stdout", "stderr": f"{execution}/stderr"}],
    }
    with make_workspace(tmp_path, task, allowed, seaweedfs) as ws:
        mounts = stage_inputs(tes_inputs(inputs), ws)
        assert [m.container for m in mounts] == [CALL]
        spec = ContainerSpec(
            image=image,
            argv=("sh", f"{execution}/script"),
            task_id=f"t-{uuid.uuid4().hex[:12]}",
            mounts=mounts,
            stdout=ws.tree_path(f"{execution}/stdout"),
            stderr=ws.tree_path(f"{execution}/stderr"),
            network=Network.NONE,
        )
        cid = engine.run(spec)
        try:
            code = engine.wait(cid, timeout=60)
        finally:
            engine.remove(cid)
        assert code == 0, ws.tree_path(f"{execution}/stderr").read_text()
        linked = ws.tree_path(f"{execution}/hardlink.txt")
        assert linked.stat().st_nlink == 3 and linked.read_text() == "world\nchanged\n"
        logs, notes = upload_outputs(tes_outputs(outputs), ws)
    assert notes == []
    assert (allowed / "name.txt").read_text() == "world\n"  # the source input is untouched
    assert script.read_text().endswith("# ran\n")  # the script went back out as an output
    client = seaweedfs.client()
    body = client.get_object(Bucket=bucket, Key="cromwell/from-fifo.txt")["Body"].read()
    assert body == b"through-fifo\n"
    assert (
        client.get_object(Bucket=bucket, Key="cromwell/glob-1/out.txt")["Body"].read()
        == b"world\nchanged\n"
    )
    assert {e["path"] for e in logs} >= {f"{execution}/rc", f"{execution}/glob-1/out.txt"}
