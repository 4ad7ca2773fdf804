"""The wire types match the spec's schemas field for field."""

import pytest

from capsule_runtime.protocol.tes import TesTask
from gateway.tes.models import SERVER_TASK_FIELDS, SPEC_SCHEMAS
from gateway.tes.states import State
from tests import spec


@pytest.mark.parametrize("schema", sorted(SPEC_SCHEMAS))
def test_model_fields_are_the_spec_properties(schema: str) -> None:
    model = SPEC_SCHEMAS[schema]
    assert set(model.model_fields) == spec.properties(schema)


@pytest.mark.parametrize("schema", sorted(SPEC_SCHEMAS))
def test_required_fields_match(schema: str) -> None:
    model = SPEC_SCHEMAS[schema]
    required = {n for n, f in model.model_fields.items() if f.is_required()}
    # TaskLog.logs and .outputs are required on the wire; the model gives them empty defaults.
    assert required <= spec.required(schema)
    for name in spec.required(schema) - required:
        assert model.model_fields[name].default_factory is list


def test_task_request_fields_plus_server_fields_are_the_spec() -> None:
    assert set(TesTask.model_fields) | set(SERVER_TASK_FIELDS) == spec.properties("tesTask")


def test_states_are_the_spec_enum() -> None:
    assert {s.value for s in State} == set(spec.schemas()["tesState"]["enum"])
