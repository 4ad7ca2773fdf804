"""Every rule of CLIENTS.md ("Routes", "Requests to accept", "Responses to give") as its own test,
against a real `tescape serve` process, with plain `requests`.

Each test's docstring names the rule and the client that needs it. Tests that only read what they
create share one SQLite server (`sqlite_server`); tests whose outcome could depend on the store
(what it can hold, property tests, restart) run on SQLite and on a real PostgreSQL
(`store_server`, `db_url`).
"""

from __future__ import annotations

import base64
import copy
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import spec
from tests.compat.bodies import CROMWELL_TASK, NEXTFLOW_TASK
from tests.fixtures.server import API_CONFIG, RunningServer, tescape_server

PREFIXES = ["/ga4gh/tes/v1", "/v1", ""]
EX = [{"image": "alpine", "command": ["true"]}]
LEGACY_STATES = {
    "QUEUED",
    "INITIALIZING",
    "RUNNING",
    "COMPLETE",
    "EXECUTOR_ERROR",
    "SYSTEM_ERROR",
    "CANCELED",
}
# A task that sets every field the spec lets a client send, so the spec walk sees all of them.
EVERY_FIELD_TASK: dict[str, Any] = {
    "name": "every-field",
    "description": "a task with every client field set",
    "inputs": [
        {
            "name": "ref",
            "description": "a reference",
            "url": "s3://bucket/ref.fa",
            "path": "/data/ref.fa",
            "type": "FILE",
            "streamable": False,
        },
        {"name": "script", "path": "/data/run.sh", "content": "echo hi\n"},
        {"url": "gs://bucket/dir/", "path": "/data/dir", "type": "DIRECTORY"},
    ],
    "outputs": [
        {
            "name": "csvs",
            "description": "every csv",
            "url": "s3://bucket/out/",
            "path": "/data/out/*.csv",
            "path_prefix": "/data/out",
            "type": "FILE",
        },
        {"url": "file:///tmp/result.txt", "path": "/data/result.txt"},
    ],
    "resources": {
        "cpu_cores": 2,
        "preemptible": True,
        "ram_gb": 1.5,
        "disk_gb": 20.0,
        "zones": ["us-east-1a", "us-east-1b"],
        "backend_parameters": {"market_policy": "spot_first", "instance_type": "m5.large"},
        "backend_parameters_strict": True,
    },
    "executors": [
        {
            "image": "ubuntu:22.04",
            "command": ["bash", "/data/run.sh"],
            "workdir": "/data",
            "stdin": "/data/in.txt",
            "stdout": "/data/stdout",
            "stderr": "/data/stderr",
            "env": {"A": "1", "B": ""},
            "ignore_error": True,
        },
        {"image": "alpine", "command": ["true"]},
    ],
    "volumes": ["/scratch"],
    "tags": {"project": "compat", "empty": ""},
}


# -- fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def store_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """One server per store (SQLite, real PostgreSQL) shared by this module's store-dependent
    tests, which only read what they create; cheaper than the per-test `server` fixture."""
    db_url = None
    if request.param == "postgres":
        db_url = request.getfixturevalue("postgres").create_database("compat_contract")
    data_dir = tmp_path_factory.mktemp(f"compat-{request.param}") / "data"
    with tescape_server(data_dir, config=API_CONFIG, db_url=db_url) as srv:
        yield srv


def assert_json(resp: requests.Response) -> Any:
    """Every response: `Content-Type: application/json` and a non-empty JSON body."""
    assert resp.headers.get("Content-Type", "").split(";")[0] == "application/json", resp.headers
    assert resp.content, f"empty body for HTTP {resp.status_code}"
    return resp.json()


def create(srv: RunningServer, body: Any, prefix: str = "/ga4gh/tes/v1", **kwargs: Any) -> str:
    resp = requests.post(f"{srv.url}{prefix}/tasks", json=body, timeout=10, **kwargs)
    assert resp.status_code == 200, resp.text
    created = assert_json(resp)
    assert set(created) == {"id"} and isinstance(created["id"], str) and created["id"]
    return str(created["id"])


def get(srv: RunningServer, task_id: str, view: str | None = None) -> dict[str, Any]:
    params = {"view": view} if view else None
    resp = requests.get(f"{srv.tes}/tasks/{task_id}", params=params, timeout=10)
    assert resp.status_code == 200, resp.text
    task: dict[str, Any] = assert_json(resp)
    return task


def expected_echo(body: dict[str, Any]) -> dict[str, Any]:
    """What FULL should echo of a task the server accepted: the request with nulls dropped and
    `type` filled in on inputs and outputs that had none (these bodies' paths are files)."""
    out = copy.deepcopy(body)
    if "tags" in out:
        out["tags"] = {k: v for k, v in out["tags"].items() if v is not None}
    for item in out.get("inputs", []) + out.get("outputs", []):
        item.setdefault("type", "FILE")
    return out


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is not None:
        assert ref.startswith("#/components/schemas/"), ref
        return spec.schemas()[ref.rsplit("/", 1)[1]]
    return schema


def spec_violations(value: Any, schema: dict[str, Any], where: str = "$") -> list[str]:
    """Every key of every object in `value` that the spec's schema does not define, every null,
    every missing required key and every JSON type that differs from the schema's, recursively."""
    schema = resolve(schema)
    problems: list[str] = []
    if value is None:
        return [f"{where}: null (nulls must be omitted)"]
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: {value!r} is not one of {schema['enum']}")
    kind = schema.get("type", "object" if "properties" in schema else None)
    if kind == "object":
        if not isinstance(value, dict):
            return [f"{where}: expected an object, got {value!r}"]
        properties = schema.get("properties")
        additional = schema.get("additionalProperties")
        for key, item in value.items():
            if properties is not None and key in properties:
                problems += spec_violations(item, properties[key], f"{where}.{key}")
            elif isinstance(additional, dict):
                problems += spec_violations(item, additional, f"{where}[{key!r}]")
            else:
                problems.append(f"{where}.{key}: not a field of the spec")
        missing = [r for r in schema.get("required", []) if r not in value]
        problems += [f"{where}.{r}: required, missing" for r in missing]
    elif kind == "array":
        if not isinstance(value, list):
            return [f"{where}: expected an array, got {value!r}"]
        for i, item in enumerate(value):
            problems += spec_violations(item, schema.get("items", {}), f"{where}[{i}]")
    elif kind == "string" and not isinstance(value, str):
        problems.append(f"{where}: expected a string, got {value!r}")
    elif kind == "integer" and (not isinstance(value, int) or isinstance(value, bool)):
        problems.append(f"{where}: expected an integer, got {value!r}")
    elif kind == "number" and (not isinstance(value, int | float) or isinstance(value, bool)):
        problems.append(f"{where}: expected a number, got {value!r}")
    elif kind == "boolean" and not isinstance(value, bool):
        problems.append(f"{where}: expected a boolean, got {value!r}")
    return problems


def task_schema() -> dict[str, Any]:
    return spec.schemas()["tesTask"]


def test_spec_walk_finds_what_it_must() -> None:
    """The checker behind "no field outside the spec" is not vacuous: it finds an unknown key at
    any depth, a null, a wrong JSON type, a missing required key and a state outside the enum."""
    task = {
        "id": "t",
        "state": "QUEUED",
        "executors": [{"image": "a", "command": ["x"], "extra": 1}],
        "resources": {"cpu_cores": "2", "ram_gb": None},
        "tags": {"k": 1},
        "logs": [{"logs": [{"exit_code": 0}], "outputs": [{"url": "u", "path": "/p"}]}],
    }
    assert sorted(spec_violations(task, task_schema())) == [
        "$.executors[0].extra: not a field of the spec",
        "$.logs[0].outputs[0].size_bytes: required, missing",
        "$.resources.cpu_cores: expected an integer, got '2'",
        "$.resources.ram_gb: null (nulls must be omitted)",
        "$.tags['k']: expected a string, got 1",
    ]
    assert spec_violations({"state": "PAUSING", "executors": []}, task_schema()) == [
        "$.state: 'PAUSING' is not one of " + str(spec.schemas()["tesState"]["enum"])
    ]


# -- Routes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", PREFIXES)
def test_every_prefix_serves_the_whole_api(sqlite_server: RunningServer, prefix: str) -> None:
    """Routes: the API under /ga4gh/tes/v1, /v1 and / (Nextflow calls {endpoint}/v1/tasks,
    Cromwell its configured endpoint, py-tes 0.4.2 {url}/v1/tasks, py-tes 1.1 probes all three)."""
    base = sqlite_server.url + prefix
    task_id = create(sqlite_server, {"name": f"prefix{prefix}", "executors": EX}, prefix=prefix)
    got = assert_json(requests.get(f"{base}/tasks/{task_id}", timeout=10))
    assert got == {"id": task_id, "state": "QUEUED"}
    listed = assert_json(requests.get(f"{base}/tasks", params={"view": "BASIC"}, timeout=10))
    assert task_id in [t["id"] for t in listed["tasks"]]
    info = assert_json(requests.get(f"{base}/service-info", timeout=10))
    assert info["type"]["artifact"] == "tes"
    cancel = requests.post(f"{base}/tasks/{task_id}:cancel", timeout=10)
    assert cancel.status_code == 200 and assert_json(cancel) == {}
    # a task created under one prefix is the same task under every other prefix
    for other in PREFIXES:
        again = requests.get(f"{sqlite_server.url}{other}/tasks/{task_id}", timeout=10)
        assert assert_json(again) == {"id": task_id, "state": "CANCELED"}


@pytest.mark.parametrize("prefix", PREFIXES)
def test_legacy_service_info_is_exactly_name_doc_storage(
    sqlite_server: RunningServer, prefix: str
) -> None:
    """Routes: GET …/tasks/service-info returns the legacy {name, doc, storage} and nothing else
    (py-tes 0.4.2 rejects unknown keys; Toil's TES plugin crashes on the standard shape)."""
    resp = requests.get(f"{sqlite_server.url}{prefix}/tasks/service-info", timeout=10)
    assert resp.status_code == 200
    info = assert_json(resp)
    assert set(info) == {"name", "doc", "storage"}
    assert isinstance(info["name"], str) and isinstance(info["doc"], str)
    assert isinstance(info["storage"], list) and all(isinstance(s, str) for s in info["storage"])


@pytest.mark.parametrize("view", [None, "MINIMAL", "BASIC", "FULL"])
def test_legacy_service_info_wins_over_task_id(
    sqlite_server: RunningServer, view: str | None
) -> None:
    """Routes: /tasks/service-info must win over /tasks/{id}, with or without a view parameter
    (py-tes 0.4.2 and Toil call it as if it were a task id)."""
    params = {"view": view} if view else None
    resp = requests.get(f"{sqlite_server.tes}/tasks/service-info", params=params, timeout=10)
    assert resp.status_code == 200, resp.text
    assert set(assert_json(resp)) == {"name", "doc", "storage"}


@pytest.mark.parametrize("prefix", PREFIXES)
def test_standard_service_info_shape(sqlite_server: RunningServer, prefix: str) -> None:
    """Routes: GET …/service-info returns the standard GA4GH shape with type tes 1.1.0
    (py-tes 1.1.4 unmarshals it; the compliance suite checks type)."""
    info = assert_json(requests.get(f"{sqlite_server.url}{prefix}/service-info", timeout=10))
    assert {"id", "name", "type", "organization", "version"} <= set(info)
    assert info["type"]["artifact"] == "tes"
    assert info["type"]["version"] == "1.1.0"
    assert info["type"]["group"] == "org.ga4gh"
    assert set(info["organization"]) == {"name", "url"}
    assert all(isinstance(k, str) for k in info.get("tesResources_backend_parameters", []))
    assert "doc" not in info  # the legacy field belongs to /tasks/service-info only


@pytest.mark.parametrize(
    "headers",
    [{}, {"Content-Type": "application/json"}],
    ids=["no-content-type", "json-content-type"],
)
def test_cancel_with_an_empty_body(sqlite_server: RunningServer, headers: dict[str, str]) -> None:
    """Routes: POST …/tasks/{id}:cancel arrives with an empty body, with (py-tes, Cromwell) or
    without (Nextflow) `Content-Type: application/json`."""
    task_id = create(sqlite_server, {"executors": EX})
    resp = requests.post(
        f"{sqlite_server.tes}/tasks/{task_id}:cancel", data=b"", headers=headers, timeout=10
    )
    assert resp.status_code == 200, resp.text
    assert assert_json(resp) == {}
    assert get(sqlite_server, task_id)["state"] == "CANCELED"


# -- Requests to accept -------------------------------------------------------------------------

URLS = [
    "/home/u/proj/data/sample.fastq",  # bare absolute path (Nextflow, Cromwell)
    "file:///home/u/proj/data/sample.fastq",
    "s3://bucket/key/sample.fastq",
    "gs://bucket/key/sample.fastq",
    "http://example.org/data/sample.fastq?token=abc&x=1%202",
    "https://example.org/data/sample.fastq?X-Amz-Signature=ab%2Fcd&X-Amz-Expires=3600",
    "ftp://ftp.example.org/pub/sample.fastq",
]


@pytest.mark.parametrize("url", URLS)
def test_url_schemes_are_accepted_and_kept_verbatim(sqlite_server: RunningServer, url: str) -> None:
    """Requests: bare absolute paths (Nextflow, Cromwell), file://, s3://, gs://, http(s)://
    with the query string kept, ftp:// — as inputs and as outputs."""
    body = {
        "inputs": [{"url": url, "path": "/in/sample.fastq"}],
        "outputs": [{"url": url, "path": "/out/sample.fastq"}],
        "executors": EX,
    }
    full = get(sqlite_server, create(sqlite_server, body), "FULL")
    assert full["inputs"] == [{"url": url, "path": "/in/sample.fastq", "type": "FILE"}]
    assert full["outputs"] == [{"url": url, "path": "/out/sample.fastq", "type": "FILE"}]


def test_content_instead_of_url(sqlite_server: RunningServer) -> None:
    """Requests: an input with `content` and no `url` (Snakemake sends its job script so)."""
    script = "#!/bin/sh\nsnakemake --snakefile Snakefile --target-jobs 'all:'\n"
    body = {"inputs": [{"path": "/tmp/job.sh", "content": script}], "executors": EX}
    task_id = create(sqlite_server, body)
    full = get(sqlite_server, task_id, "FULL")
    assert full["inputs"] == [{"path": "/tmp/job.sh", "content": script, "type": "FILE"}]
    basic = get(sqlite_server, task_id, "BASIC")
    assert basic["inputs"] == [{"path": "/tmp/job.sh", "type": "FILE"}]  # BASIC drops content


def test_null_tags_are_dropped(sqlite_server: RunningServer) -> None:
    """Requests: Cromwell sends `"parent_workflow_id": null` in tags on every root-workflow task;
    accept it and drop the null, never 400."""
    tags = {"workflow_id": "wf", "parent_workflow_id": None}
    full = get(sqlite_server, create(sqlite_server, {"executors": EX, "tags": tags}), "FULL")
    assert full["tags"] == {"workflow_id": "wf"}


def test_null_backend_parameters_are_dropped(sqlite_server: RunningServer) -> None:
    """Requests: Cromwell sends null values in backend_parameters; accept them, drop the nulls."""
    params = {"internal_path_prefix": "/data/x/tes_task", "instance_type": None}
    body = {"executors": EX, "resources": {"backend_parameters": params}}
    full = get(sqlite_server, create(sqlite_server, body), "FULL")
    assert full["resources"]["backend_parameters"] == {"internal_path_prefix": "/data/x/tes_task"}


def test_unknown_backend_parameter_without_strict_is_ignored(sqlite_server: RunningServer) -> None:
    """Requests: Nextflow always sends `backend_parameters_strict: false`; an unknown key is then
    accepted but neither stored nor returned (TES 1.1)."""
    resources = {
        "backend_parameters": {"VmSize": "Standard_D2_v3", "market_policy": "spot_first"},
        "backend_parameters_strict": False,
    }
    body = {"executors": EX, "resources": resources}
    full = get(sqlite_server, create(sqlite_server, body), "FULL")
    assert full["resources"]["backend_parameters"] == {"market_policy": "spot_first"}
    assert full["resources"]["backend_parameters_strict"] is False
    assert "VmSize" not in str(full)


def test_unknown_backend_parameter_with_strict_is_400(sqlite_server: RunningServer) -> None:
    """Requests: with `backend_parameters_strict: true` an unknown key is HTTP 400 at create,
    naming the key (the compliance suite checks it)."""
    resources = {"backend_parameters": {"VmSize": "x"}, "backend_parameters_strict": True}
    resp = requests.post(
        sqlite_server.tes + "/tasks", json={"executors": EX, "resources": resources}, timeout=10
    )
    assert resp.status_code == 400
    error = assert_json(resp)
    assert "VmSize" in error["message"]
    assert any("VmSize" in e["field"] for e in error.get("errors", [])), error


def test_internal_path_prefix_is_accepted(sqlite_server: RunningServer) -> None:
    """Requests: Cromwell always sends backend_parameters.internal_path_prefix, also when the
    client asks for strictness; it is a known key."""
    prefix = "/data/cromwell-executions/wf/abc/call-x/tes_task"
    for strict in (False, True):
        resources = {
            "backend_parameters": {"internal_path_prefix": prefix},
            "backend_parameters_strict": strict,
        }
        body = {"executors": EX, "resources": resources}
        full = get(sqlite_server, create(sqlite_server, body), "FULL")
        assert full["resources"]["backend_parameters"] == {"internal_path_prefix": prefix}


def test_nextflow_wildcard_output_with_path_prefix(sqlite_server: RunningServer) -> None:
    """Requests: Nextflow's wildcard outputs {path: /work/*.csv, path_prefix: /work, type: FILE,
    url: <work dir>} are accepted and echoed as sent."""
    output = {
        "path": "/work/*.csv",
        "path_prefix": "/work",
        "type": "FILE",
        "url": "/home/u/proj/work/3a/7f2c9e",
    }
    body = {"outputs": [output], "executors": EX}
    assert get(sqlite_server, create(sqlite_server, body), "FULL")["outputs"] == [output]


def test_directory_output_typed_file(sqlite_server: RunningServer) -> None:
    """Requests: a directory output may arrive typed FILE (Nextflow); accept it as sent."""
    outputs = [
        {"path": "/work/results", "url": "/home/u/proj/results", "type": "FILE"},
        {"path": "/work/more/", "url": "s3://bucket/more/", "type": "FILE"},
    ]
    body = {"outputs": outputs, "executors": EX}
    assert get(sqlite_server, create(sqlite_server, body), "FULL")["outputs"] == outputs


def test_same_path_as_input_and_output(sqlite_server: RunningServer) -> None:
    """Requests: one path can be both an input and an output (Cromwell's `script`)."""
    path = "/cromwell-executions/wf/abc/call-x/execution/script"
    body = {
        "inputs": [{"url": "/data" + path, "path": path, "type": "FILE"}],
        "outputs": [{"url": "/data" + path, "path": path, "type": "FILE"}],
        "executors": [{"image": "ubuntu:22.04", "command": ["/bin/bash", path]}],
    }
    full = get(sqlite_server, create(sqlite_server, body), "FULL")
    assert full["inputs"] == body["inputs"] and full["outputs"] == body["outputs"]


def test_executor_stdout_stderr_paths(sqlite_server: RunningServer) -> None:
    """Requests: executor stdout/stderr may be the very files the command writes and that are
    declared outputs (Cromwell)."""
    ex_dir = "/cromwell-executions/wf/abc/call-x/execution"
    executor = {
        "image": "ubuntu:22.04",
        "command": ["/bin/bash", "-c", f"echo hi > {ex_dir}/stdout; echo $? > {ex_dir}/rc"],
        "stdout": f"{ex_dir}/stdout",
        "stderr": f"{ex_dir}/stderr",
    }
    outputs = [
        {"url": f"/data{ex_dir}/{n}", "path": f"{ex_dir}/{n}", "type": "FILE"}
        for n in ("stdout", "stderr", "rc")
    ]
    body = {"executors": [executor], "outputs": outputs}
    full = get(sqlite_server, create(sqlite_server, body), "FULL")
    assert full["executors"] == [executor] and full["outputs"] == outputs


def test_inputs_at_any_absolute_container_path(sqlite_server: RunningServer) -> None:
    """Requests: inputs may land at absolute container paths anywhere (Nextflow mounts its bin
    dir at its host path)."""
    inputs = [
        {"url": "/home/u/proj/bin/", "path": "/home/u/proj/bin", "type": "DIRECTORY"},
        {"url": "/data/conf/hosts", "path": "/opt/conf/hosts", "type": "FILE"},
    ]
    full = get(sqlite_server, create(sqlite_server, {"inputs": inputs, "executors": EX}), "FULL")
    assert full["inputs"] == inputs


def test_two_thousand_inputs(sqlite_server: RunningServer) -> None:
    """Requests: many inputs in one task (Cromwell's lots_of_inputs) are accepted and returned
    in order, within Nextflow's 10 s read timeout."""
    inputs = [
        {"url": f"/data/in/{i:04d}.txt", "path": f"/cromwell/inputs/{i:04d}.txt", "type": "FILE"}
        for i in range(2000)
    ]
    task_id = create(sqlite_server, {"name": "lots_of_inputs", "inputs": inputs, "executors": EX})
    assert get(sqlite_server, task_id, "FULL")["inputs"] == inputs
    assert get(sqlite_server, task_id, "BASIC")["inputs"] == inputs


@pytest.mark.parametrize("preemptible", [True, False, None])
def test_preemptible_is_optional(sqlite_server: RunningServer, preemptible: bool | None) -> None:
    """Requests: `preemptible` is rarely sent (Cromwell and Toil only); sent values are echoed,
    and an unsent one is not invented (the server applies its own default policy)."""
    resources: dict[str, Any] = {"cpu_cores": 1}
    if preemptible is not None:
        resources["preemptible"] = preemptible
    body = {"executors": EX, "resources": resources}
    assert get(sqlite_server, create(sqlite_server, body), "FULL")["resources"] == resources


@pytest.mark.parametrize(
    "authorization", ["Basic None:None", "Basic Tm9uZTpOb25l"], ids=["raw", "base64"]
)
def test_basic_none_none_is_ignored_with_auth_off(
    sqlite_server: RunningServer, authorization: str
) -> None:
    """Requests: Snakemake without credentials still sends `Authorization: Basic None:None`
    (literally, or base64-encoded by requests); with auth off it is ignored on every route."""
    headers = {"Authorization": authorization}
    tes = sqlite_server.tes
    task_id = create(sqlite_server, {"executors": EX}, headers=headers)
    for resp in (
        requests.get(f"{tes}/tasks/{task_id}", params={"view": "MINIMAL"}, headers=headers),
        requests.get(f"{tes}/tasks", headers=headers),
        requests.get(f"{tes}/service-info", headers=headers),
        requests.get(f"{tes}/tasks/service-info", headers=headers),
        requests.post(f"{tes}/tasks/{task_id}:cancel", headers=headers),
    ):
        assert resp.status_code == 200, resp.text
        assert_json(resp)


@pytest.mark.parametrize("body", [NEXTFLOW_TASK, CROMWELL_TASK], ids=["nextflow", "cromwell"])
def test_example_bodies_from_clients_md(sqlite_server: RunningServer, body: dict[str, Any]) -> None:
    """Requests: both example bodies of CLIENTS.md, verbatim, are accepted; FULL echoes them with
    nulls dropped and `type` filled in, plus only the server's own fields."""
    task_id = create(sqlite_server, body)
    full = get(sqlite_server, task_id, "FULL")
    server_fields = {k: full.pop(k) for k in ("id", "state", "creation_time", "logs") if k in full}
    assert full == expected_echo(body)
    assert server_fields["id"] == task_id and server_fields["state"] == "QUEUED"
    assert spec_violations(get(sqlite_server, task_id, "BASIC"), task_schema()) == []


# -- Responses to give --------------------------------------------------------------------------

ERRORS = [
    ("POST", "/tasks", b"{not json", 400),
    ("POST", "/tasks", b"", 400),
    ("POST", "/tasks", b'{"name": "no executors"}', 400),
    ("POST", "/tasks", b"[]", 400),
    ("GET", "/tasks?view=EVERYTHING", None, 400),
    ("GET", "/tasks?page_token=not-a-token", None, 400),
    ("GET", "/tasks?page_size=abc", None, 400),
    ("GET", "/tasks/no-such-task", None, 404),
    ("GET", "/tasks/no-such-task?view=FULL", None, 404),
    ("POST", "/tasks/no-such-task:cancel", None, 404),
    ("GET", "/no/such/route", None, 404),
    ("DELETE", "/tasks", None, 405),
    ("PUT", "/tasks/abc", b"{}", 405),
]


@pytest.mark.parametrize(("method", "path", "data", "status"), ERRORS)
def test_errors_are_json_with_a_body(
    sqlite_server: RunningServer, method: str, path: str, data: bytes | None, status: int
) -> None:
    """Responses: always `Content-Type: application/json` and a body, errors included
    (Cromwell's parser insists; an empty body makes Nextflow fail the task)."""
    resp = requests.request(method, sqlite_server.tes + path, data=data, timeout=10)
    assert resp.status_code == status, resp.text
    error = assert_json(resp)
    assert isinstance(error, dict) and error.get("message")


def test_successes_are_json_with_a_body(sqlite_server: RunningServer) -> None:
    """Responses: every successful route answers `application/json` with a body, cancel's `{}`
    included (Cromwell, Nextflow)."""
    tes = sqlite_server.tes
    task_id = create(sqlite_server, {"executors": EX})
    for resp in (
        requests.get(f"{tes}/service-info", timeout=10),
        requests.get(f"{tes}/tasks/service-info", timeout=10),
        requests.get(f"{tes}/tasks", timeout=10),
        requests.get(f"{tes}/tasks/{task_id}", timeout=10),
        requests.post(f"{tes}/tasks/{task_id}:cancel", timeout=10),
    ):
        assert resp.status_code == 200
        assert_json(resp)


def test_no_view_is_minimal(sqlite_server: RunningServer) -> None:
    """Responses: no `view` → MINIMAL, exactly {id, state} (Nextflow polls so every 5 s)."""
    task_id = create(sqlite_server, NEXTFLOW_TASK)
    assert get(sqlite_server, task_id) == {"id": task_id, "state": "QUEUED"}
    listed = assert_json(requests.get(f"{sqlite_server.tes}/tasks", timeout=10))
    assert listed["tasks"], listed
    assert all(set(t) == {"id", "state"} for t in listed["tasks"])


def test_full_includes_executors(sqlite_server: RunningServer) -> None:
    """Responses: FULL includes `executors`, on get and on list (Cromwell requires it)."""
    task_id = create(sqlite_server, CROMWELL_TASK)
    assert get(sqlite_server, task_id, "FULL")["executors"] == CROMWELL_TASK["executors"]
    listed = requests.get(f"{sqlite_server.tes}/tasks", params={"view": "FULL"}, timeout=10)
    assert all("executors" in t for t in assert_json(listed)["tasks"])


@pytest.mark.parametrize("view", ["BASIC", "FULL"])
def test_no_field_outside_the_spec(sqlite_server: RunningServer, view: str) -> None:
    """Responses: add no field outside the spec, omit nulls, use the spec's JSON types — checked
    for every key of every object, recursively (py-tes 0.4.2 and 1.1.4 raise on unknown keys)."""
    ids = [create(sqlite_server, b) for b in (EVERY_FIELD_TASK, NEXTFLOW_TASK, CROMWELL_TASK)]
    for task_id in ids:
        assert spec_violations(get(sqlite_server, task_id, view), task_schema()) == []
    params: dict[str, Any] = {"view": view, "page_size": 3}
    resp = requests.get(f"{sqlite_server.tes}/tasks", params=params, timeout=10)
    listing = assert_json(resp)
    assert spec_violations(listing, spec.schemas()["tesListTasksResponse"]) == []
    assert {t["id"] for t in listing["tasks"]} == set(ids)


def test_basic_view_leaves_out_what_the_spec_says(sqlite_server: RunningServer) -> None:
    """Responses: BASIC omits Input.content, ExecutorLog stdout/stderr and TaskLog.system_logs;
    FULL has the content (Snakemake's job script comes back intact)."""
    task_id = create(sqlite_server, EVERY_FIELD_TASK)
    basic = get(sqlite_server, task_id, "BASIC")
    assert all("content" not in i for i in basic["inputs"])
    for task_log in basic.get("logs", []):
        assert "system_logs" not in task_log
        assert all("stdout" not in e and "stderr" not in e for e in task_log["logs"])
    full = get(sqlite_server, task_id, "FULL")
    assert full["inputs"][1]["content"] == "echo hi\n"


def test_create_and_cancel_responses_match_the_spec(sqlite_server: RunningServer) -> None:
    """Responses: create answers exactly {id}, cancel exactly {} (py-tes unmarshals both)."""
    resp = requests.post(sqlite_server.tes + "/tasks", json={"executors": EX}, timeout=10)
    created = assert_json(resp)
    assert spec_violations(created, spec.schemas()["tesCreateTaskResponse"]) == []
    cancel = requests.post(f"{sqlite_server.tes}/tasks/{created['id']}:cancel", timeout=10)
    assert spec_violations(assert_json(cancel), spec.schemas()["tesCancelTaskResponse"]) == []


def test_missing_type_is_filled_in(sqlite_server: RunningServer) -> None:
    """Responses: inputs and outputs created without `type` come back with it filled in
    (Nextflow sends .command.out etc. untyped; py-tes defaults it, so both must agree)."""
    body = {
        "inputs": [
            {"url": "/data/a.txt", "path": "/in/a.txt"},
            {"path": "/in/script.sh", "content": "true"},
        ],
        "outputs": [{"url": "/data/out.txt", "path": "/out/out.txt"}],
        "executors": EX,
    }
    task_id = create(sqlite_server, body)
    for view in ("BASIC", "FULL"):
        task = get(sqlite_server, task_id, view)
        assert [i["type"] for i in task["inputs"]] == ["FILE", "FILE"]
        assert [o["type"] for o in task["outputs"]] == ["FILE"]


RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def test_creation_time_is_rfc3339_with_a_zone(sqlite_server: RunningServer) -> None:
    """Responses: times are RFC 3339 with a zone (py-tes parses them with dateutil; Cromwell and
    Nextflow with zone-aware parsers)."""
    task_id = create(sqlite_server, {"executors": EX})
    for view in ("BASIC", "FULL"):
        stamp = get(sqlite_server, task_id, view)["creation_time"]
        assert RFC3339.match(stamp), stamp
        assert datetime.fromisoformat(stamp.replace("Z", "+00:00")).tzinfo is not None


def test_states_are_legacy_states(sqlite_server: RunningServer) -> None:
    """Responses: a task is only ever in a state legacy clients know (py-tes 0.4.2 rejects
    PREEMPTED, PAUSED and CANCELING), through create and cancel."""
    task_id = create(sqlite_server, {"executors": EX})
    assert get(sqlite_server, task_id)["state"] in LEGACY_STATES
    requests.post(f"{sqlite_server.tes}/tasks/{task_id}:cancel", timeout=10)
    assert get(sqlite_server, task_id)["state"] in LEGACY_STATES
    listed = assert_json(requests.get(f"{sqlite_server.tes}/tasks", timeout=10))["tasks"]
    assert {t["state"] for t in listed} <= LEGACY_STATES


def test_task_ids_survive_a_restart(db_url: str, tmp_path: Path) -> None:
    """Responses: task ids stay valid across server restarts on the same data dir and database
    (Cromwell reattaches to its running jobs by id)."""
    data_dir = tmp_path / "restarted"
    # SQLite: the default database inside the data dir; PostgreSQL: the same database both times.
    url = None if db_url.startswith("sqlite") else db_url
    with tescape_server(data_dir, config=API_CONFIG, db_url=url) as first:
        kept, cancelled = create(first, CROMWELL_TASK), create(first, NEXTFLOW_TASK)
        requests.post(f"{first.tes}/tasks/{cancelled}:cancel", timeout=10)
        before = {i: get(first, i, "FULL") for i in (kept, cancelled)}
    with tescape_server(data_dir, config=API_CONFIG, db_url=url) as second:
        assert {i: get(second, i, "FULL") for i in (kept, cancelled)} == before
        resp = requests.post(f"{second.tes}/tasks/{kept}:cancel", timeout=10)
        assert resp.status_code == 200 and get(second, kept)["state"] == "CANCELED"
        new = create(second, {"executors": EX})
        assert new not in (kept, cancelled)


UNSTORABLE_BODIES: list[dict[str, Any]] = [
    {"name": "nul\x00name"},
    {"tags": {"nul\x00key": "v"}},
    {"tags": {"key": "nul\x00value"}},
    {"tags": {"k" * 256: "a tag key longer than the store's 255 characters"}},
    # a lone surrogate escape is valid JSON syntax but no UTF-8 string: it can be neither stored
    # in PostgreSQL nor sent back in a response (a listing of all tasks would fail for everyone)
    {"tags": {"key": "\ud800"}},
    {"description": "lone \udc00 surrogate"},
    {"executors": [{"image": "alpine", "command": ["echo", "\ud800"]}]},
]
# a page token in the server's own format whose position lies beyond a 64-bit integer
HUGE_PAGE_TOKEN = base64.urlsafe_b64encode(f"tes1:{2**64}".encode()).decode().rstrip("=")
UNSTORABLE_QUERIES = [
    ("GET", "/tasks", {"name_prefix": "a\x00"}, 400),
    ("GET", "/tasks", {"tag_key": "k\x00"}, 400),
    ("GET", "/tasks", {"tag_key": "k", "tag_value": "v\x00"}, 400),
    ("GET", "/tasks", {"page_token": HUGE_PAGE_TOKEN}, 400),
    ("GET", "/tasks/nul%00id", {"view": "FULL"}, 404),
    ("POST", "/tasks/nul%00id:cancel", None, 404),
]


def test_what_the_store_cannot_hold_is_a_4xx_not_a_5xx(store_server: RunningServer) -> None:
    """Responses: a 5xx kills the task in Nextflow and fails the job in Cromwell (non-retryable),
    so strings the server cannot store or send back (NUL, lone surrogates, over-long tag keys)
    and out-of-range page tokens are refused with a JSON 400 (or 404 for an id that cannot
    exist), on both stores."""
    for extra in UNSTORABLE_BODIES:
        resp = requests.post(
            store_server.tes + "/tasks", json={"executors": EX, **extra}, timeout=10
        )
        assert resp.status_code == 400, (extra, resp.text)
        assert assert_json(resp)["errors"], resp.text
    for method, path, params, status in UNSTORABLE_QUERIES:
        resp = requests.request(method, store_server.tes + path, params=params, timeout=10)
        assert resp.status_code == status, (path, params, resp.text)
        assert_json(resp)


# -- properties ---------------------------------------------------------------------------------

PROPERTY_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Any string map is a valid `tags`, except for NUL and lone surrogates (refused: see above).
storable_text = st.characters(codec="utf-8", exclude_characters="\x00")  # no surrogates
tag_maps = st.dictionaries(
    st.text(storable_text, max_size=40), st.text(storable_text, max_size=200), max_size=12
)


@PROPERTY_SETTINGS
@given(tags=tag_maps)
def test_any_tag_map_round_trips(store_server: RunningServer, tags: dict[str, str]) -> None:
    """Requests/Responses: any string map is a valid `tags` (Cromwell puts workflow ids there,
    Nextflow its own keys); it comes back from FULL exactly, on SQLite and PostgreSQL."""
    task_id = create(store_server, {"executors": EX, "tags": tags})
    full = get(store_server, task_id, "FULL")
    assert full.get("tags", {}) == tags


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(), max_size=20),  # NUL and lone surrogates included
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
TASK_KEYS = [
    "name",
    "description",
    "inputs",
    "outputs",
    "resources",
    "executors",
    "volumes",
    "tags",
]
task_shaped = st.fixed_dictionaries(
    {"executors": st.one_of(st.just(EX), json_values)},
    optional={key: json_values for key in TASK_KEYS if key != "executors"},
)
nested_junk = st.fixed_dictionaries(
    {
        "executors": st.lists(
            st.fixed_dictionaries(
                {"image": st.just("alpine"), "command": st.just(["true"])},
                optional={k: json_values for k in ("workdir", "env", "stdout", "ignore_error")},
            ),
            max_size=2,
        )
    },
    optional={
        "inputs": st.lists(
            st.dictionaries(
                st.sampled_from(["url", "path", "type", "content"]), json_values, max_size=4
            ),
            max_size=2,
        ),
        "resources": st.dictionaries(
            st.sampled_from(["cpu_cores", "ram_gb", "disk_gb", "zones", "backend_parameters"]),
            json_values,
            max_size=3,
        ),
    },
)


@PROPERTY_SETTINGS
@given(body=st.one_of(json_values, task_shaped, nested_junk, st.binary(max_size=40)))
def test_junk_bodies_never_yield_5xx(store_server: RunningServer, body: Any) -> None:
    """Responses: whatever a client POSTs, the answer is 200 or a JSON 400, never a 5xx (a 5xx
    kills the task in Nextflow and fails the job, non-retryably, in Cromwell)."""
    if isinstance(body, bytes):
        resp = requests.post(store_server.tes + "/tasks", data=body, timeout=10)
    else:
        resp = requests.post(store_server.tes + "/tasks", json=body, timeout=10)
    assert resp.status_code in (200, 400), resp.text
    answer = assert_json(resp)
    if resp.status_code == 200:
        assert spec_violations(get(store_server, answer["id"], "FULL"), task_schema()) == []


list_params = st.dictionaries(
    st.sampled_from(
        ["view", "page_size", "page_token", "name_prefix", "state", "tag_key", "tag_value", "x"]
    ),
    st.text(max_size=30) | st.integers().map(str),
    max_size=4,
)


@PROPERTY_SETTINGS
@given(params=list_params)
def test_junk_list_queries_never_yield_5xx(
    store_server: RunningServer, params: dict[str, str]
) -> None:
    """Responses: whatever a client puts in ListTasks' query string, the answer is 200 or a JSON
    400, never a 5xx (pollers die on a 5xx: Nextflow, Cromwell)."""
    resp = requests.get(store_server.tes + "/tasks", params=params, timeout=10)
    assert resp.status_code in (200, 400), resp.text
    listing = assert_json(resp)
    if resp.status_code != 200:
        return
    if params.get("view", "").upper() in ("BASIC", "FULL"):
        assert spec_violations(listing, spec.schemas()["tesListTasksResponse"]) == []
    else:  # MINIMAL: the spec's required `executors` does not apply
        assert all(set(t) == {"id", "state"} for t in listing["tasks"])
