"""py-tes 1.1.4 — the current GA4GH Python client, and the base of cwl-tes and newer tools —
against a real `tescape serve`.

py-tes 1.1 builds its models with attrs and passes every response key to the constructor, so a
key it does not know (or a value of the wrong type) raises `UnmarshalError`: each call below
proves the server's response shape, not only its status code.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import requests
import tes
from tes.utils import UnmarshalError

from tests.compat.bodies import CROMWELL_TASK, NEXTFLOW_TASK
from tests.fixtures.server import RunningServer

SERVER_FIELDS = ("id", "state", "creation_time", "logs")
VIEWS = ("MINIMAL", "BASIC", "FULL")


def rich_task(name: str = "pytes-114") -> tes.Task:
    """A task using every model py-tes 1.1.4 has, with the fields it knows set."""
    return tes.Task(
        name=name,
        description="py-tes 1.1.4 compatibility",
        inputs=[
            tes.Input(url="s3://bucket/ref.fa", path="/data/ref.fa", name="ref"),
            tes.Input(path="/data/run.sh", content="echo hello\n", type="FILE"),
            tes.Input(url="gs://bucket/dir/", path="/data/dir", type="DIRECTORY", streamable=False),
        ],
        outputs=[
            tes.Output(url="s3://bucket/out/", path="/data/out/*.csv", path_prefix="/data/out"),
            tes.Output(url="file:///tmp/result.txt", path="/data/result.txt", name="result"),
        ],
        resources=tes.Resources(
            cpu_cores=2,
            ram_gb=1.5,
            disk_gb=10,
            preemptible=True,
            zones=["us-east-1a"],
            backend_parameters={"market_policy": "spot_first"},
            backend_parameters_strict=True,
        ),
        executors=[
            tes.Executor(
                image="ubuntu:22.04",
                command=["bash", "/data/run.sh"],
                workdir="/data",
                stdout="/data/stdout",
                stderr="/data/stderr",
                env={"GREETING": "hello"},
                ignore_error=True,
            ),
            tes.Executor(image="alpine", command=["true"]),
        ],
        volumes=["/scratch"],
        tags={"client": "py-tes-1.1.4"},
    )


def sent_fields(task: tes.Task) -> dict[str, Any]:
    return task.as_dict()  # nulls dropped, exactly what create_task puts on the wire


def without_content(task: dict[str, Any]) -> dict[str, Any]:
    """The BASIC view of a task document: Input.content left out."""
    inputs = [{k: v for k, v in i.items() if k != "content"} for i in task["inputs"]]
    return {**task, "inputs": inputs}


class Recorder:
    """Wraps the module-level `requests` functions py-tes calls, recording (method, URL, status)
    of every request so the tests can see how the client probes the prefixes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.calls: list[tuple[str, str, int]] = []
        for method in ("get", "post"):
            original = getattr(requests, method)
            monkeypatch.setattr(requests, method, self._wrap(method, original))

    def _wrap(self, method: str, original: Any) -> Any:
        def call(url: str, **kwargs: Any) -> requests.Response:
            resp = original(url, **kwargs)
            self.calls.append((method.upper(), url, resp.status_code))
            return resp

        return call

    def take(self) -> list[tuple[str, str, int]]:
        calls, self.calls = self.calls, []
        return calls


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    yield Recorder(monkeypatch)


def test_client_probes_ga4gh_prefix_first(sqlite_server: RunningServer, recorder: Recorder) -> None:
    """py-tes 1.1 probes {url}/ga4gh/tes/v1, {url}/v1, {url} in that order; given the server's
    root it must succeed at the first, for every call, without a fallback."""
    client = tes.HTTPClient(sqlite_server.url, timeout=10)
    assert client.urls == [
        sqlite_server.url + "/ga4gh/tes/v1",
        sqlite_server.url + "/v1",
        sqlite_server.url,
    ]
    task_id = client.create_task(tes.Task(executors=[tes.Executor("alpine", ["true"])]))
    client.get_task(task_id, "MINIMAL")
    client.list_tasks(page_size=1)
    client.cancel_task(task_id)
    client.get_service_info()
    calls = recorder.take()
    assert len(calls) == 5
    assert all(url.startswith(sqlite_server.url + "/ga4gh/tes/v1/") for _, url, _ in calls)
    assert all(status == 200 for _, _, status in calls)


@pytest.mark.parametrize("base", ["/ga4gh/tes/v1", "/v1"])
def test_client_falls_back_through_404s(
    sqlite_server: RunningServer, recorder: Recorder, base: str
) -> None:
    """py-tes 1.1 falls back to the next prefix only on 404 or 5xx (any other 4xx is final).
    Given a URL that already ends in a prefix (as users configure it), the two doubled prefixes
    it tries first must answer 404 — for GET and POST alike — and the third must work."""
    client = tes.HTTPClient(sqlite_server.url + base, timeout=10)
    task_id = client.create_task(tes.Task(executors=[tes.Executor("alpine", ["true"])]))
    assert client.get_task(task_id, "MINIMAL").state == "QUEUED"
    client.cancel_task(task_id)
    calls = recorder.take()
    assert [status for _, _, status in calls] == [404, 404, 200] * 3
    answered = [url for _, url, status in calls if status == 200]
    assert all(url.startswith(f"{sqlite_server.url}{base}/tasks") for url in answered)


def test_create_and_get_every_view(server: RunningServer) -> None:
    """py-tes 1.1.4: create with Task/Executor/Input/Output/Resources, then get_task in MINIMAL,
    BASIC and FULL; each unmarshals and echoes what was sent (SQLite and PostgreSQL)."""
    client = tes.HTTPClient(server.url, timeout=10)
    task = rich_task()
    task_id = client.create_task(task)
    assert isinstance(task_id, str) and task_id

    minimal = client.get_task(task_id, "MINIMAL")
    assert (minimal.id, minimal.state) == (task_id, "QUEUED")
    assert {k for k, v in minimal.as_dict().items() if v is not None} == {"id", "state"}

    sent = sent_fields(task)
    basic = client.get_task(task_id, "BASIC")
    full = client.get_task(task_id, "FULL")
    for got in (basic, full):
        assert got.id == task_id and got.state == "QUEUED"
        assert isinstance(got.creation_time, datetime) and got.creation_time.tzinfo is not None
        assert got.logs and isinstance(got.logs[0], tes.TaskLog)
        echoed = {k: v for k, v in got.as_dict().items() if k not in SERVER_FIELDS}
        assert echoed == (sent if got is full else without_content(sent))
    assert full.inputs[1].content == "echo hello\n"
    assert [type(e) for e in full.executors] == [tes.Executor, tes.Executor]


def test_list_tasks_pages_until_exhausted(server: RunningServer) -> None:
    """py-tes 1.1.4 list_tasks with page_size, following next_page_token until it is absent, in
    every view: all tasks seen once, newest first, every page unmarshals (SQLite, PostgreSQL)."""
    client = tes.HTTPClient(server.url, timeout=10)
    made = [client.create_task(rich_task(f"page-{i}")) for i in range(7)]
    for view in VIEWS:
        seen: list[str] = []
        token = None
        for _ in range(10):  # 7 tasks at 3 a page: 3 pages
            page = client.list_tasks(view=view, page_size=3, page_token=token)
            assert isinstance(page, tes.ListTasksResponse) and len(page.tasks) <= 3
            seen += [t.id for t in page.tasks]
            if view != "MINIMAL":
                assert all(t.executors and t.creation_time for t in page.tasks)
            token = page.next_page_token
            if not token:
                break
        assert seen == list(reversed(made)), view


def test_cancel_task(sqlite_server: RunningServer) -> None:
    """py-tes 1.1.4 cancel_task (POST with Content-Type json and no body) returns None and the
    task ends CANCELED; cancelling again is harmless."""
    client = tes.HTTPClient(sqlite_server.url, timeout=10)
    task_id = client.create_task(rich_task("to-cancel"))
    assert client.cancel_task(task_id) is None
    assert client.get_task(task_id, "MINIMAL").state == "CANCELED"
    assert client.cancel_task(task_id) is None
    assert client.get_task(task_id, "FULL").state == "CANCELED"


def test_service_info(sqlite_server: RunningServer) -> None:
    """py-tes 1.1.4 get_service_info unmarshals the standard GA4GH service-info."""
    info = tes.HTTPClient(sqlite_server.url, timeout=10).get_service_info()
    assert isinstance(info, tes.ServiceInfo)
    assert info.type == {"group": "org.ga4gh", "artifact": "tes", "version": "1.1.0"}
    assert isinstance(info.tes_resources_backend_parameters, list)
    assert "internal_path_prefix" in info.tes_resources_backend_parameters
    assert info.name and info.id and info.version


def test_unknown_task_raises_http_404(sqlite_server: RunningServer) -> None:
    """py-tes 1.1.4 tries every prefix on 404 and then raises the HTTP error (not an unmarshal
    error from a body of the wrong shape)."""
    client = tes.HTTPClient(sqlite_server.url, timeout=10)
    with pytest.raises(requests.HTTPError) as info:
        client.get_task("no-such-task", "FULL")
    assert info.value.response is not None and info.value.response.status_code == 404


@pytest.mark.parametrize("body", [NEXTFLOW_TASK, CROMWELL_TASK], ids=["nextflow", "cromwell"])
def test_other_clients_tasks_unmarshal(sqlite_server: RunningServer, body: dict[str, Any]) -> None:
    """Tasks created by Nextflow and Cromwell (CLIENTS.md's bodies) unmarshal in py-tes 1.1.4 in
    every view, alone and in a listing: a tool like cwl-tes may list a shared server."""
    created = requests.post(sqlite_server.tes + "/tasks", json=body, timeout=10)
    task_id = created.json()["id"]
    client = tes.HTTPClient(sqlite_server.url, timeout=10)
    for view in VIEWS:
        try:
            got = client.get_task(task_id, view)
            listed = client.list_tasks(view=view, page_size=5)
        except UnmarshalError as exc:  # pragma: no cover - the failure message is the point
            pytest.fail(f"py-tes 1.1.4 cannot unmarshal the {view} view: {exc}")
        assert got.id == task_id
        assert task_id in [t.id for t in listed.tasks]
    tags = {k: v for k, v in body.get("tags", {}).items() if v is not None}
    assert client.get_task(task_id, "FULL").tags == (tags or None)
