"""schemathesis against the OpenAPI document the server serves (`/ga4gh/tes/v1/openapi.json`):
generated requests — valid ones and, for each operation, ones that break the document — never get
a 5xx, and every response matches the document (status code, content type, body schema).

Runs against a real `tescape serve` process (API only: its scheduler is off, so created tasks stay
QUEUED). The example count is bounded per operation; raise it by hand with
TESCAPE_FUZZ_EXAMPLES=1500 for a long hunt."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.schemas import OpenApiSchema

from tests.fixtures.server import API_CONFIG, RunningServer, tescape_server
from tests.tes_schemas import SCHEMAS

EXAMPLES = int(os.environ.get("TESCAPE_FUZZ_EXAMPLES", "40"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with tescape_server(tmp_path_factory.mktemp("fuzz"), API_CONFIG) as server:
        yield server


@pytest.fixture(scope="module")
def served_openapi(api_server: RunningServer) -> OpenApiSchema:
    return schemathesis.openapi.from_url(api_server.tes + "/openapi.json")


# schemathesis's own pytest plugin (`from_fixture`) does not run under pytest 9, so each
# operation is driven through its hypothesis strategy here.
OPERATIONS = ["GetServiceInfo", "ListTasks", "CreateTask", "GetTask", "CancelTask"]


@pytest.mark.parametrize(
    ("operation_id", "mode"),
    [
        (op, mode)
        for op in OPERATIONS
        for mode in GenerationMode
        # nothing to break: service-info takes no input, a cancel only a string in its path
        if not (op in ("GetServiceInfo", "CancelTask") and mode is GenerationMode.NEGATIVE)
    ],
)
def test_generated_requests_get_no_5xx_and_documented_answers(
    served_openapi: OpenApiSchema, operation_id: str, mode: GenerationMode
) -> None:
    """Positive cases follow the document; negative ones break it (wrong types, missing
    required fields, bad enums) and must get a documented answer, never a 5xx. (Some of those the
    server accepts on purpose, as clients send them: an empty or repeated query parameter is
    "not set" or its first value, so schemathesis's negative_data_rejection check is not used.)"""
    operation = served_openapi.find_operation_by_id(operation_id)

    @given(case=operation.as_strategy(mode))
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    def exchange(case: schemathesis.Case) -> None:
        case.call_and_validate(checks=CHECKS)

    exchange()


def test_the_served_document_agrees_with_the_spec(api_server: RunningServer) -> None:
    """Every TES schema the document holds has the spec's properties and required keys (the
    document may add fields: none today)."""
    doc = requests.get(api_server.tes + "/openapi.json", timeout=10).json()
    assert doc["openapi"].startswith("3.1")
    assert doc["servers"] == [{"url": api_server.tes}]
    served = doc["components"]["schemas"]
    for name, spec in SCHEMAS.items():
        if name not in served or "properties" not in spec:
            continue
        assert set(served[name]["properties"]) == set(spec["properties"]), name
        assert set(served[name].get("required", [])) == set(spec.get("required", [])), name
    assert served["tesState"]["enum"] == SCHEMAS["tesState"]["enum"]


def test_the_document_is_public_and_follows_the_prefix(api_server: RunningServer) -> None:
    for prefix in ("/ga4gh/tes/v1", "/v1", ""):
        got = requests.get(api_server.url + prefix + "/openapi.json", timeout=10)
        assert got.status_code == 200
        assert got.json()["servers"] == [{"url": api_server.url + prefix}]


def test_fuzzing_leaves_the_server_healthy(api_server: RunningServer) -> None:
    assert requests.get(api_server.url + "/healthz", timeout=10).ok
    assert "Traceback" not in api_server.log()
