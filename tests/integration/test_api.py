"""The TES API against a real server process: views, filters, pagination, cancel, errors, auth.

Store-dependent behaviour (filters, pagination) runs on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from werkzeug.security import generate_password_hash

from tests.fixtures.server import RunningServer, tescape_server

EX = [{"image": "alpine", "command": ["true"]}]


def create(srv: RunningServer, auth: Any = None, **fields: Any) -> str:
    resp = requests.post(
        srv.tes + "/tasks", json={"executors": EX, **fields}, auth=auth, timeout=10
    )
    assert resp.status_code == 200, resp.text
    return resp.json()["id"]


def list_ids(srv: RunningServer, **params: Any) -> list[str]:
    resp = requests.get(srv.tes + "/tasks", params=params, timeout=10)
    assert resp.status_code == 200, resp.text
    return [t["id"] for t in resp.json()["tasks"]]


# -- views ----------------------------------------------------------------------------------


def test_views_on_get_and_list(server: RunningServer) -> None:
    task_id = create(
        server, name="v", inputs=[{"path": "/in/a", "content": "hello"}], tags={"k": "v"}
    )
    minimal = requests.get(f"{server.tes}/tasks/{task_id}", timeout=10).json()
    assert minimal == {"id": task_id, "state": "QUEUED"}
    basic = requests.get(f"{server.tes}/tasks/{task_id}?view=BASIC", timeout=10).json()
    assert basic["inputs"] == [{"path": "/in/a", "type": "FILE"}]
    assert basic["executors"] == EX and basic["tags"] == {"k": "v"} and basic["name"] == "v"
    full = requests.get(f"{server.tes}/tasks/{task_id}?view=FULL", timeout=10).json()
    assert full["inputs"][0]["content"] == "hello"
    assert set(full) == {
        "id",
        "state",
        "name",
        "inputs",
        "executors",
        "tags",
        "creation_time",
        "logs",
    }
    # one TaskLog from creation on, planning the executors that will surely run
    assert full["logs"] == [{"logs": [{"exit_code": -1}], "outputs": []}]
    listed = requests.get(f"{server.tes}/tasks?view=FULL", timeout=10).json()["tasks"]
    assert listed == [full]
    assert requests.get(f"{server.tes}/tasks", timeout=10).json() == {"tasks": [minimal]}


# -- filters --------------------------------------------------------------------------------


def test_name_prefix_is_exact_and_case_sensitive(server: RunningServer) -> None:
    ids = {
        n: create(server, name=n) for n in ["align_1", "align_2", "Align_3", "al%", "a_x", "ü-1"]
    }
    assert set(list_ids(server, name_prefix="align_")) == {ids["align_1"], ids["align_2"]}
    assert list_ids(server, name_prefix="al%") == [ids["al%"]]
    assert list_ids(server, name_prefix="a_") == [ids["a_x"]]
    assert list_ids(server, name_prefix="ü") == [ids["ü-1"]]
    assert list_ids(server, name_prefix="zzz") == []


def test_state_filter(server: RunningServer) -> None:
    a, b = create(server), create(server)
    requests.post(f"{server.tes}/tasks/{a}:cancel", timeout=10)
    assert list_ids(server, state="CANCELED") == [a]
    assert list_ids(server, state="QUEUED") == [b]
    assert requests.get(f"{server.tes}/tasks?state=NOPE", timeout=10).status_code == 400


# The spec's match table for tag_key/tag_value: (filter, task tags, match?).
TAG_TABLE = [
    ({"foo": "bar"}, {"foo": "bar"}, True),
    ({"foo": "bar"}, {"foo": "bat"}, False),
    ({"foo": ""}, {"foo": ""}, True),
    ({"foo": "bar", "baz": "bat"}, {"foo": "bar", "baz": "bat"}, True),
    ({"foo": "bar"}, {"foo": "bar", "baz": "bat"}, True),
    ({"foo": "bar", "baz": "bat"}, {"foo": "bar"}, False),
    ({"foo": ""}, {"foo": "bar"}, True),
    ({"foo": ""}, {}, False),
]


def test_tag_filter_match_table(server: RunningServer) -> None:
    for filt, tags, match in TAG_TABLE:
        task_id = create(server, tags=tags, name="tagged")
        params: dict[str, Any] = {"tag_key": list(filt), "tag_value": list(filt.values())}
        found = task_id in list_ids(server, **params)
        assert found is match, (filt, tags)
        requests.post(f"{server.tes}/tasks/{task_id}:cancel", timeout=10)
        # only keep one candidate visible at a time: filter by state QUEUED
        params["state"] = "QUEUED"
        assert list_ids(server, **params) == []


def test_tag_key_without_value_matches_any_value(server: RunningServer) -> None:
    a = create(server, tags={"foo": "bar"})
    create(server, tags={"other": "x"})
    assert list_ids(server, tag_key="foo") == [a]


# -- pagination -----------------------------------------------------------------------------


def test_pagination_is_keyset_and_stable(server: RunningServer) -> None:
    made = [create(server, name=f"p{i}") for i in range(23)]
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        params: dict[str, Any] = {"page_size": 5}
        if token:
            params["page_token"] = token
        body = requests.get(server.tes + "/tasks", params=params, timeout=10).json()
        seen += [t["id"] for t in body["tasks"]]
        pages += 1
        if pages == 2:
            create(server, name="late")  # a new task does not shift later pages
        token = body.get("next_page_token")
        if not token:
            break
        assert pages < 10
    assert seen == list(reversed(made))  # newest first, nothing skipped or repeated
    assert pages == 5


def test_page_size_defaults_and_bounds(sqlite_server: RunningServer) -> None:
    for _ in range(260):
        create(sqlite_server, name="bulk")
    tes = sqlite_server.tes
    assert len(requests.get(tes + "/tasks", timeout=10).json()["tasks"]) == 256
    body = requests.get(tes + "/tasks?page_size=5000", timeout=10).json()
    assert 260 <= len(body["tasks"]) <= 2047
    for bad in ("0", "-1", "x"):
        resp = requests.get(tes + f"/tasks?page_size={bad}", timeout=10)
        assert resp.status_code == 400 and "page_size" in resp.json()["message"]
    resp = requests.get(tes + "/tasks?page_token=garbage", timeout=10)
    assert resp.status_code == 400 and resp.json()["errors"][0]["field"] == "page_token"


# -- cancel ---------------------------------------------------------------------------------


def test_cancel_semantics(sqlite_server: RunningServer) -> None:
    tes = sqlite_server.tes
    task_id = create(sqlite_server)
    for _ in range(2):  # idempotent
        resp = requests.post(f"{tes}/tasks/{task_id}:cancel", timeout=10)
        assert resp.status_code == 200 and resp.json() == {}
    assert requests.get(f"{tes}/tasks/{task_id}", timeout=10).json()["state"] == "CANCELED"
    missing = requests.post(f"{tes}/tasks/nope:cancel", timeout=10)
    assert missing.status_code == 404 and missing.headers["Content-Type"] == "application/json"


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("POST", "/tasks", {"data": "{bad"}, 400),
        ("POST", "/tasks", {"data": ""}, 400),
        ("POST", "/tasks", {"data": '{"executors": NaN}'}, 400),
        ("POST", "/tasks", {"json": {"executors": [{"image": "a"}]}}, 400),
        ("GET", "/tasks/does-not-exist", {}, 404),
        ("GET", "/tasks?view=EVERYTHING", {}, 400),
        ("PUT", "/tasks", {}, 405),
        ("DELETE", "/tasks/x", {}, 405),
        ("GET", "/nothing-here", {}, 404),
    ],
)
def test_errors_are_json_with_a_message(
    sqlite_server: RunningServer, method: str, path: str, kwargs: dict, status: int
) -> None:
    resp = requests.request(method, sqlite_server.tes + path, timeout=10, **kwargs)
    assert resp.status_code == status
    assert resp.headers["Content-Type"] == "application/json"
    body = resp.json()
    assert body["code"] == status and body["message"]
    assert "Traceback" not in resp.text


def test_bad_task_names_every_field(sqlite_server: RunningServer) -> None:
    body = {
        "executors": [{"image": "a", "command": ["x"], "workdir": "rel"}],
        "inputs": [{"url": "/a", "path": "/x/../y"}],
    }
    resp = requests.post(sqlite_server.tes + "/tasks", json=body, timeout=10)
    assert resp.status_code == 400
    assert [e["field"] for e in resp.json()["errors"]] == ["executors[0].workdir", "inputs[0].path"]


def test_request_size_limit(tmp_path: Path) -> None:
    with tescape_server(tmp_path / "d", config={"server": {"max_request_bytes": 4096}}) as srv:
        big = {"executors": EX, "inputs": [{"path": "/a", "content": "x" * 10_000}]}
        resp = requests.post(srv.tes + "/tasks", json=big, timeout=10)
        assert resp.status_code == 413 and resp.headers["Content-Type"] == "application/json"


# -- auth and per-user isolation ------------------------------------------------------------


@pytest.fixture(scope="module")
def basic_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    users = [
        {"name": "alice", "password_hash": generate_password_hash("a")},
        {"name": "bob", "password_hash": generate_password_hash("b")},
        {"name": "admin", "password_hash": generate_password_hash("r"), "admin": True},
    ]
    with tescape_server(
        tmp_path_factory.mktemp("auth") / "d", config={"auth": {"mode": "basic", "users": users}}
    ) as srv:
        yield srv


def test_owner_or_admin(basic_server: RunningServer) -> None:
    alice, bob, admin = ("alice", "a"), ("bob", "b"), ("admin", "r")
    tes = basic_server.tes
    a = create(basic_server, auth=alice)
    b = create(basic_server, auth=bob)

    def ids(who: tuple[str, str]) -> set[str]:
        return {t["id"] for t in requests.get(tes + "/tasks", auth=who, timeout=10).json()["tasks"]}

    assert ids(alice) == {a} and ids(bob) == {b} and ids(admin) == {a, b}
    assert requests.get(f"{tes}/tasks/{a}", auth=bob, timeout=10).status_code == 404
    assert requests.post(f"{tes}/tasks/{a}:cancel", auth=bob, timeout=10).status_code == 404
    assert requests.get(f"{tes}/tasks/{a}", auth=alice, timeout=10).json()["state"] == "QUEUED"
    assert requests.post(f"{tes}/tasks/{a}:cancel", auth=admin, timeout=10).status_code == 200
    assert requests.get(f"{tes}/tasks/{a}", auth=alice, timeout=10).json()["state"] == "CANCELED"


def test_credentials_required(basic_server: RunningServer) -> None:
    tes = basic_server.tes
    for headers in ({}, {"Authorization": "Basic " + base64.b64encode(b"alice:wrong").decode()}):
        resp = requests.get(tes + "/tasks", headers=headers, timeout=10)
        assert resp.status_code == 401
        assert resp.headers["WWW-Authenticate"] == 'Basic realm="tescape"'
        assert resp.headers["Content-Type"] == "application/json"
    # service-info stays public so clients can probe before authenticating
    assert requests.get(tes + "/service-info", timeout=10).status_code == 200
    assert requests.get(basic_server.url + "/v1/tasks/service-info", timeout=10).status_code == 200


def test_prometheus_metrics(sqlite_server: RunningServer) -> None:
    create(sqlite_server)
    requests.get(sqlite_server.tes + "/tasks", timeout=10)
    body = requests.get(sqlite_server.url + "/metrics", timeout=10).text
    assert 'tescape_tasks{state="QUEUED"}' in body
    assert 'tescape_http_requests_total{endpoint="list_tasks",method="GET",status="200"}' in body
    assert "tescape_http_request_seconds_bucket" in body
