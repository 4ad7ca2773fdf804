"""Hostile input against a real `tescape serve`: nothing a client or an agent sends gets a 500.
Every case is a regression test of a finding (issue 10, "Bad input never 500s")."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from werkzeug.security import generate_password_hash

from tests.fixtures.agents import FakeInstance, add_attempt, add_instances
from tests.fixtures.server import RunningServer, tescape_server

EX = {"image": "alpine", "command": ["true"]}


def post_task(srv: RunningServer, body: str | bytes) -> requests.Response:
    return requests.post(
        srv.tes + "/tasks", data=body, headers={"Content-Type": "application/json"}, timeout=30
    )


def assert_refused(resp: requests.Response, status: int = 400) -> dict[str, Any]:
    assert resp.status_code == status, resp.text[:500]
    assert resp.headers["Content-Type"] == "application/json"
    body = resp.json()
    assert body["code"] == status and body["message"]
    return body


def fields(resp: requests.Response) -> list[str]:
    return [e["field"] for e in assert_refused(resp)["errors"]]


# -- deeply nested JSON -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "[" * 100_000,
        '{"a":' * 100_000,
        "[" * 100_000 + "]" * 100_000,
        json.dumps({"executors": [EX], "tags": {}})[:-2] + '"k": ' + "[" * 5000 + "]" * 5000 + "}}",
        '{"executors": [' + json.dumps(EX) + '], "x": ' + "[" * 40 + "]" * 40 + "}",
    ],
    ids=["open-lists", "open-objects", "closed-lists", "deep-in-a-task", "past-the-limit"],
)
def test_deeply_nested_json_is_a_400(sqlite_server: RunningServer, body: str) -> None:
    assert "nests deeper" in assert_refused(post_task(sqlite_server, body))["message"]


def test_deep_json_on_admin_and_agent_routes(sqlite_server: RunningServer) -> None:
    deep = "[" * 100_000
    for method, path in [
        ("POST", "/api/v1/tasks/x:checkpoint"),
        ("PUT", "/api/v1/apps/x"),
        ("POST", "/api/v1/instances/i-x:interrupt"),
    ]:
        resp = requests.request(method, sqlite_server.url + path, data=deep, timeout=30)
        assert resp.status_code in (400, 404), (path, resp.text[:300])
    # a real TES task (six levels) is still fine
    assert post_task(sqlite_server, json.dumps({"executors": [EX]})).status_code == 200


# -- executors: env, command, image ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("executor", "field"),
    [
        ({"env": {"A=B": "c"}}, "executors[0].env.A=B"),
        ({"env": {"": "c"}}, "executors[0].env"),
        ({"env": {"A\x00": "c"}}, "executors[0].env.A\x00"),
        ({"env": {"A": "c\x00d"}}, "executors[0].env.A"),
        ({"command": ["echo", "a\x00b"]}, "executors[0].command[1]"),
        ({"image": "--privileged"}, "executors[0].image"),
        ({"image": "-v/:/host"}, "executors[0].image"),
        ({"image": "alpine --privileged"}, "executors[0].image"),
        ({"image": "alpine\x00"}, "executors[0].image"),
        ({"image": "alpine\n"}, "executors[0].image"),
    ],
)
def test_executor_fields_that_would_reach_argv_badly_are_refused(
    sqlite_server: RunningServer, executor: dict[str, Any], field: str
) -> None:
    body = {"executors": [{**EX, **executor}]}
    assert fields(post_task(sqlite_server, json.dumps(body))) == [field]


def test_a_url_with_nul_is_refused(sqlite_server: RunningServer) -> None:
    body = {"executors": [EX], "inputs": [{"url": "/data/a\x00", "path": "/in/a"}]}
    assert fields(post_task(sqlite_server, json.dumps(body))) == ["inputs[0].url"]


def test_ordinary_images_and_env_still_pass(sqlite_server: RunningServer) -> None:
    for image in [
        "ubuntu:22.04",
        "quay.io/biocontainers/samtools:1.9--h91753b0_8",
        "127.0.0.1:5000/lib/x@sha256:" + "a" * 64,
        "my-app",
    ]:
        body = {"executors": [{**EX, "image": image, "env": {"A": "=x=", "_b1": ""}}]}
        assert post_task(sqlite_server, json.dumps(body)).status_code == 200, image


# -- absurd resources -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resources", "field"),
    [
        ('{"ram_gb": 1e400}', "resources.ram_gb"),
        ('{"ram_gb": 1e308}', "resources.ram_gb"),
        ('{"ram_gb": -1}', "resources.ram_gb"),
        ('{"ram_gb": 0}', "resources.ram_gb"),
        ('{"ram_gb": "64"}', "resources.ram_gb"),
        ('{"cpu_cores": 1e400}', "resources.cpu_cores"),
        ('{"cpu_cores": ' + "9" * 400 + "}", "resources.cpu_cores"),
        ('{"cpu_cores": 100000}', "resources.cpu_cores"),
        ('{"cpu_cores": 0}', "resources.cpu_cores"),
        ('{"cpu_cores": true}', "resources.cpu_cores"),
        ('{"disk_gb": -1e308}', "resources.disk_gb"),
        ('{"disk_gb": 1e400}', "resources.disk_gb"),
        ('{"disk_gb": 1e30}', "resources.disk_gb"),
    ],
)
def test_absurd_resources_are_a_400_naming_the_field(
    sqlite_server: RunningServer, resources: str, field: str
) -> None:
    body = '{"executors": [' + json.dumps(EX) + '], "resources": ' + resources + "}"
    assert fields(post_task(sqlite_server, body)) == [field]


def test_an_int_too_long_for_python_is_a_400(sqlite_server: RunningServer) -> None:
    body = '{"executors": [' + json.dumps(EX) + '], "resources": {"cpu_cores": ' + "9" * 5000
    assert_refused(post_task(sqlite_server, body + "}}"))


# -- agent messages: duplicate capsule ids ------------------------------------------------------


def capsule(capsule_id: str, manifest: str = "m1", **kw: Any) -> dict[str, Any]:
    return {
        "state": "complete",
        "capsule_id": capsule_id,
        "sequence": 1,
        "manifest_key": f"capsules/t/{manifest}.json",
        "manifest_sha256": "a" * 64,
        "size_bytes": 10,
        **kw,
    }


@pytest.fixture
def placed(server: RunningServer, db_url: str) -> tuple[RunningServer, FakeInstance, str, str]:
    """(server, an instance, a task, its attempt on that instance), on each store."""
    task_id = post_task(server, json.dumps({"executors": [EX]})).json()["id"]
    (inst,) = add_instances(server.url, db_url)
    return server, inst, task_id, add_attempt(db_url, task_id, inst)


def test_duplicate_capsule_ids(placed: tuple[RunningServer, FakeInstance, str, str]) -> None:
    srv, inst, task_id, attempt = placed
    report = capsule(f"{attempt}-1")
    first = inst.call("POST", f"/attempts/{attempt}/capsules", json=report)
    assert first.status_code == 200, first.text
    # the same report again (its answer was lost): accepted, recorded once
    assert inst.call("POST", f"/attempts/{attempt}/capsules", json=report).status_code == 200
    # another capsule under the same id: refused, the first one kept
    other = capsule(f"{attempt}-1", manifest="m2")
    assert_refused(inst.call("POST", f"/attempts/{attempt}/capsules", json=other), 409)
    listed = requests.get(f"{srv.url}/api/v1/tasks/{task_id}/capsules", timeout=10).json()
    assert [c["manifest_key"] for c in listed["capsules"]] == ["capsules/t/m1.json"]
    events = requests.get(f"{srv.url}/api/v1/tasks/{task_id}/events", timeout=10).json()
    assert [e["kind"] for e in events["events"]].count("capsule") == 1


@pytest.mark.parametrize(
    "change",
    [
        {"capsule_id": "c" * 65},
        {"capsule_id": ""},
        {"capsule_id": "a\x00b"},
        {"capsule_id": "../x"},
        {"parent": "p\x00"},
        {"sequence": 2**40},
        {"sequence": -1},
        {"size_bytes": 2**70},
        {"manifest_sha256": "f" * 65},
        {"manifest_key": "k\x00"},
    ],
)
def test_capsule_reports_that_do_not_fit_the_store_are_a_400(
    placed: tuple[RunningServer, FakeInstance, str, str], change: dict[str, Any]
) -> None:
    _, inst, _, attempt = placed
    resp = inst.call("POST", f"/attempts/{attempt}/capsules", json={**capsule("c1"), **change})
    assert_refused(resp)


def test_deep_json_from_an_agent_is_a_400(
    placed: tuple[RunningServer, FakeInstance, str, str],
) -> None:
    _, inst, _, attempt = placed
    for path in (f"/attempts/{attempt}/capsules", f"/instances/{inst.instance_id}/poll"):
        assert_refused(inst.call("POST", path, data="[" * 100_000))


# -- logins ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def basic_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    users = [{"name": "alice", "password_hash": generate_password_hash("a")}]
    auth = {"mode": "basic", "users": users, "max_failed_logins": 3}
    with tescape_server(tmp_path_factory.mktemp("throttle") / "d", config={"auth": auth}) as srv:
        yield srv


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_failed_logins_are_rate_limited(basic_server: RunningServer) -> None:
    tasks = basic_server.tes + "/tasks"
    for _ in range(3):
        assert requests.get(tasks, headers=basic("alice", "x"), timeout=10).status_code == 401
    for password in ("x", "a"):  # even the right password waits now
        resp = requests.get(tasks, headers=basic("alice", password), timeout=10)
        assert_refused(resp, 429)
        assert 1 <= int(resp.headers["Retry-After"]) <= 60
    # unknown names are counted the same way, per name
    for _ in range(3):
        assert requests.get(tasks, headers=basic("mallory", "x"), timeout=10).status_code == 401
    assert requests.get(tasks, headers=basic("mallory", "x"), timeout=10).status_code == 429


# -- bodies past max_request_bytes ----------------------------------------------------------------


@pytest.fixture
def small_server(tmp_path: Path) -> Iterator[RunningServer]:
    with tescape_server(tmp_path / "d", config={"server": {"max_request_bytes": 4096}}) as srv:
        yield srv


def test_a_log_larger_than_max_request_bytes_is_stored(small_server: RunningServer) -> None:
    task_id = post_task(small_server, json.dumps({"executors": [EX]})).json()["id"]
    db_url = f"sqlite:///{small_server.data_dir / 'tescape.db'}"
    (inst,) = add_instances(small_server.url, db_url)
    attempt = add_attempt(db_url, task_id, inst)
    log = b"".join(b"line %07d\n" % i for i in range(200_000))  # 2.4 MB, 600x the limit
    resp = inst.call("PUT", f"/attempts/{attempt}/streams/0/stdout", data=io.BytesIO(log))
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"size_bytes": str(len(log))}
    full = requests.get(f"{small_server.url}/api/v1/tasks/{task_id}/logs", timeout=30)
    assert full.status_code == 200 and full.content == log
    # a JSON body is still bound by the limit
    big = json.dumps({"executors": [EX], "description": "x" * 10_000})
    assert_refused(post_task(small_server, big), 413)


def image_archive(path: Path, size: int) -> Path:
    """A docker-archive naming one image, padded with a `size`-byte layer."""
    manifest = [{"Config": "c.json", "RepoTags": ["localhost/big:1"], "Layers": ["l.tar"]}]
    with tarfile.open(path, "w") as tar:
        for name, data in (("manifest.json", json.dumps(manifest).encode()), ("c.json", b"{}")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("l.tar")
        info.size = size
        with open("/dev/zero", "rb") as zero:
            tar.addfile(info, zero)
    return path


def test_apps_import_streams_past_max_request_bytes(
    small_server: RunningServer, tmp_path: Path
) -> None:
    archive = image_archive(tmp_path / "big.tar", 32 * 2**20)
    cli = [sys.executable, "-m", "gateway.cli", "apps", "import", "--server", small_server.url]
    out = subprocess.run([*cli, "big", str(archive)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    apps = requests.get(small_server.url + "/api/v1/apps", timeout=10).json()["apps"]
    (app,) = apps
    assert app["image"] == "localhost/big:1"
    assert app["archive"]["size_bytes"] == str(archive.stat().st_size)


def test_cross_site_writes_are_refused(sqlite_server: RunningServer) -> None:
    """A browser resends Basic credentials to a form on any site: a POST whose Origin is not this
    server (or a configured CORS origin) is refused with a JSON 403; clients that send no Origin,
    and this server's own pages, are not affected."""
    body = {"executors": [{"image": "alpine", "command": ["true"]}]}
    url = sqlite_server.tes + "/tasks"
    evil = requests.post(url, json=body, headers={"Origin": "https://evil.example"}, timeout=10)
    assert evil.status_code == 403 and "cross-site" in evil.json()["message"]
    assert requests.post(url, json=body, timeout=10).status_code == 200
    same = requests.post(url, json=body, headers={"Origin": sqlite_server.url}, timeout=10)
    assert same.status_code == 200
    listed = requests.get(url, headers={"Origin": "https://evil.example"}, timeout=10)
    assert listed.status_code == 200  # reads are not writes
