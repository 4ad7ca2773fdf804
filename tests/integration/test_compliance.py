"""The 23 checks of the GA4GH TES compliance suite (elixir-cloud-aai/openapi-test-runner,
`--version 1.1.0`), reproduced as our own tests: what each one sends and what it asserts.

The suite itself is not on any registry CI can reach; run it by hand as docs/compliance.md says.
Checks that need a task to really run use a server with its runtime on (`runner` fixture in
test_execution.py's style); the others run on an API-only server.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.fixtures.server import RunningServer, tescape_server
from tests.fixtures.tasks import TERMINAL, wait_state

EX = [{"image": "alpine", "command": ["echo", "hello"]}]
BASE = {"name": "CompTest", "description": "CompTest", "executors": EX}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with tescape_server(tmp_path_factory.mktemp("compliance") / "data") as srv:
        yield srv


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, busybox_image: str, debian_bash_image: str
) -> Iterator[RunningServer]:
    config = {
        "images": {"rewrites": {"alpine": busybox_image, "ubuntu": debian_bash_image}},
        "scheduler": {"interval_seconds": 0.2},
    }
    root = tmp_path_factory.mktemp("compliance-live")
    with tescape_server(root / "data", config=config, run_tasks=True) as srv:
        yield srv


def post(srv: RunningServer, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    resp = requests.post(srv.tes + "/tasks", json=body, timeout=10)
    assert resp.status_code == status, resp.text
    return resp.json()


def get(srv: RunningServer, path: str, **params: Any) -> dict[str, Any]:
    resp = requests.get(srv.tes + path, params=params, timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"] == "application/json"
    return resp.json()


# -- schema_validation_only checks -----------------------------------------------------------


def test_service_info(api: RunningServer) -> None:
    info = get(api, "/service-info")
    assert {"id", "name", "type", "organization", "version"} <= set(info)
    assert info["type"]["artifact"] == "tes"


def test_create_task(api: RunningServer) -> None:
    assert set(post(api, BASE)) == {"id"}


def test_create_task_backend_parameters(api: RunningServer) -> None:
    body = {
        **BASE,
        "resources": {
            "backend_parameters": {"VmSize": "Standard_D64_v3", "Caching": "ReadWrite"},
            "backend_parameters_strict": False,
        },
    }
    post(api, body)


def test_create_task_backend_parameters_negative(api: RunningServer) -> None:
    body = {
        **BASE,
        "resources": {
            "backend_parameters": {"INVALID": "PARAMETER"},
            "backend_parameters_strict": True,
        },
    }
    post(api, body, status=400)


@pytest.mark.parametrize(
    "extra",
    [
        {"inputs": [{"url": "s3://my-object-store/file-1", "path": "/data/file1", "type": "FILE"}]},
        {
            "outputs": [
                {"url": "s3://my-object-store/outfile-1", "path": "/data/outfile", "type": "FILE"}
            ]
        },
        {
            "inputs": [{"url": "s3://my-object-store/file-1", "path": "/data/file1"}],
            "outputs": [{"url": "s3://my-object-store/outfile-1", "path": "/data/outfile"}],
        },
        {
            "inputs": [
                {
                    "name": "access-file",
                    "description": "Access file resource via streaming",
                    "url": "s3://my-object-store/file1",
                    "path": "/data/file1",
                    "streamable": True,
                }
            ]
        },
    ],
    ids=["inputs", "outputs", "optional_filetype", "streamable"],
)
def test_create_task_with_files(api: RunningServer, extra: dict[str, Any]) -> None:
    post(api, {**BASE, **extra})


@pytest.mark.parametrize("view", ["MINIMAL", "BASIC", "FULL"])
def test_get_task_views(api: RunningServer, view: str) -> None:
    task_id = post(api, BASE)["id"]
    task = get(api, f"/tasks/{task_id}", view=view)
    if view == "MINIMAL":
        assert set(task) == {"id", "state"}
    else:
        assert task["executors"] == EX and task["name"] == "CompTest"


@pytest.mark.parametrize("view", ["MINIMAL", "BASIC", "FULL"])
def test_list_tasks_views(api: RunningServer, view: str) -> None:
    post(api, BASE)
    tasks = get(api, "/tasks", view=view)["tasks"]
    assert tasks
    if view == "MINIMAL":
        assert all(set(t) == {"id", "state"} for t in tasks)


def test_cancel_task(api: RunningServer) -> None:
    task_id = post(api, BASE)["id"]
    resp = requests.post(f"{api.tes}/tasks/{task_id}:cancel", timeout=10)
    assert resp.status_code == 200


# -- checks without tags (the suite runs them too) -------------------------------------------


def test_filter_task_by_name(api: RunningServer) -> None:
    post(api, {**BASE, "name": "e70dda48-ComplianceTest"})
    found = get(api, "/tasks", view="BASIC", name_prefix="e70dda48-ComplianceTest")["tasks"]
    assert found[0]["name"] == "e70dda48-ComplianceTest"
    post(api, {**BASE, "name": "b51f4c41-ComplianceTest"})
    assert get(api, "/tasks", view="BASIC", name_prefix="b51f4c41")["tasks"][0]["name"].startswith(
        "b51f4c41"
    )
    post(api, {**BASE, "name": "ComplianceTest-f9327c19"})
    assert get(api, "/tasks", view="BASIC", name_prefix="f9327c19")["tasks"] == []


def test_filter_task_by_tag(api: RunningServer) -> None:
    tags = {"foo": "bar", "baz": "bat", "lorem": "ipsum", "task": "create"}
    post(api, {**BASE, "name": "ComplianceTest_FilterTaskByTag1", "tags": tags})

    def listed(keys: list[str], values: list[str]) -> list[dict[str, Any]]:
        return get(api, "/tasks", view="BASIC", tag_key=keys, tag_value=values)["tasks"]

    assert (
        listed(["foo", "lorem", "task", "baz"], ["bar", "ipsum", "create", "bat"])[0]["tags"]
        == tags
    )
    assert listed(["foo", "lorem", "baz"], ["bar", "ipsum"])[0]["tags"] == tags
    assert listed(["foo", "lorem", "extra"], ["bar", "ipsum"]) == []
    assert listed(["foo"], ["wrong_value"]) == []
    post(api, {**BASE, "name": "ComplianceTest_FilterTaskByTag2", "tags": {"abcxyz": ""}})
    assert listed(["abcxyz"], [])[0]["tags"] == {"abcxyz": ""}
    post(api, {**BASE, "name": "ComplianceTest_FilterTaskByTag4"})
    assert listed(["tag_key_not_defined"], ["tag_value_not_defined"]) == []


def test_list_tasks_page_size(api: RunningServer) -> None:
    post(api, BASE)
    post(api, BASE)
    assert len(get(api, "/tasks", view="MINIMAL", page_size=1)["tasks"]) == 1
    assert len(get(api, "/tasks", view="MINIMAL", page_size=2)["tasks"]) == 2


def test_list_tasks_page_token(api: RunningServer) -> None:
    post(api, BASE)
    post(api, BASE)
    first = get(api, "/tasks", view="MINIMAL", page_size=1)
    assert len(first["tasks"]) == 1
    second = get(api, "/tasks", view="MINIMAL", page_size=1, page_token=first["next_page_token"])
    assert len(second["tasks"]) == 1 and second["tasks"] != first["tasks"]


# -- functional checks: the task really runs -------------------------------------------------


def test_create_task_functional(live: RunningServer) -> None:
    task_id = post(live, BASE)["id"]
    assert wait_state(live, task_id, TERMINAL, view="MINIMAL")["state"] == "COMPLETE"


def test_cancel_task_functional(live: RunningServer) -> None:
    body = {**BASE, "executors": [{"image": "alpine", "command": ["sleep", "60"]}]}
    task_id = post(live, body)["id"]
    requests.post(f"{live.tes}/tasks/{task_id}:cancel", timeout=10)
    canceling = {"CANCELED", "CANCELING"}
    assert wait_state(live, task_id, canceling, view="MINIMAL")["state"] in canceling
    assert wait_state(live, task_id, TERMINAL, view="MINIMAL")["state"] == "CANCELED"


def test_filter_task_by_state(live: RunningServer) -> None:
    task_id = post(live, BASE)["id"]
    wait_state(live, task_id, TERMINAL, view="MINIMAL")
    assert get(live, "/tasks", view="MINIMAL", state="COMPLETE")["tasks"][0]["state"] == "COMPLETE"


@pytest.mark.parametrize(("ignore", "size"), [(False, 1), (True, 2)])
def test_create_task_ignore_error(live: RunningServer, ignore: bool, size: int) -> None:
    body = {
        **BASE,
        "executors": [
            {"image": "alpine", "command": ["ERROR"], "ignore_error": ignore},
            {"image": "alpine", "command": ["echo", "hello"]},
        ],
    }
    task_id = post(live, body)["id"]
    task = get(live, f"/tasks/{task_id}", view="FULL")
    # The suite reads this right after create, without polling (see docs/compliance.md).
    assert isinstance(task["logs"][0]["logs"], list)
    wait_state(live, task_id, TERMINAL, view="MINIMAL")
    task = get(live, f"/tasks/{task_id}", view="FULL")
    assert len(task["logs"][0]["logs"]) == size
