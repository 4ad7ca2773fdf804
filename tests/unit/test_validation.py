"""parse_task: what is accepted, how it is normalised, and the field every refusal names."""

from typing import Any

import pytest

from gateway.tes.backend_parameters import BackendParameters
from gateway.tes.errors import TaskValidationError
from gateway.tes.validation import TaskLimits, drop_nulls, parse_task

EX = {"image": "alpine", "command": ["true"]}


def parse(body: Any, **limits: Any) -> dict[str, Any]:
    return parse_task(body, TaskLimits(**limits), BackendParameters()).task


def refused(body: Any, **limits: Any) -> list[str]:
    with pytest.raises(TaskValidationError) as info:
        parse_task(body, TaskLimits(**limits), BackendParameters())
    return [e.field for e in info.value.errors]


def test_minimal_task_round_trips() -> None:
    assert parse({"executors": [EX]}) == {"executors": [EX]}


def test_nulls_are_dropped_everywhere_in_objects() -> None:
    body = {
        "name": None,
        "executors": [{**EX, "env": {"A": None, "B": "b"}, "workdir": None}],
        "tags": {"parent_workflow_id": None, "workflow_id": "w"},
        "resources": {"backend_parameters": {"internal_path_prefix": None}, "zones": None},
    }
    task = parse(body)
    assert task == {
        "executors": [{**EX, "env": {"B": "b"}}],
        "tags": {"workflow_id": "w"},
        "resources": {"backend_parameters": {}},
    }


def test_drop_nulls_keeps_list_items() -> None:
    assert drop_nulls({"a": [None, {"b": None}]}) == {"a": [None, {}]}


def test_unknown_and_read_only_fields_are_ignored() -> None:
    task = parse({"executors": [EX], "id": "x", "state": "COMPLETE", "logs": [], "foo": 1})
    assert task == {"executors": [EX]}


def test_types_are_filled_in() -> None:
    task = parse(
        {
            "executors": [EX],
            "inputs": [
                {"url": "/data/a", "path": "/in/a"},
                {"url": "s3://b/dir/", "path": "/in/dir"},
                {"content": "hi", "path": "/in/c"},
            ],
            "outputs": [{"url": "/out/x", "path": "/work/x"}, {"url": "/o/", "path": "/work/d/"}],
        }
    )
    assert [i["type"] for i in task["inputs"]] == ["FILE", "DIRECTORY", "FILE"]
    assert [o["type"] for o in task["outputs"]] == ["FILE", "DIRECTORY"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], ""),
        ("x", ""),
        ({}, "executors"),
        ({"executors": []}, "executors"),
        ({"executors": [{"command": ["x"]}]}, "executors[0].image"),
        ({"executors": [{"image": "a"}]}, "executors[0].command"),
        ({"executors": [{"image": " ", "command": ["x"]}]}, "executors[0].image"),
        ({"executors": [{"image": "a", "command": []}]}, "executors[0].command"),
        ({"executors": [{"image": "a", "command": "ls"}]}, "executors[0].command"),
        ({"executors": [{"image": 3, "command": ["x"]}]}, "executors[0].image"),
        ({"executors": [{**EX, "workdir": "rel"}]}, "executors[0].workdir"),
        ({"executors": [{**EX, "stdout": "/a/../b"}]}, "executors[0].stdout"),
        ({"executors": [{**EX, "env": {"A": 1}}]}, "executors[0].env.A"),
        ({"executors": [EX], "inputs": [{"url": "/a", "path": "rel"}]}, "inputs[0].path"),
        ({"executors": [EX], "inputs": [{"url": "/a", "path": "/x/../y"}]}, "inputs[0].path"),
        ({"executors": [EX], "inputs": [{"path": "/x"}]}, "inputs[0].url"),
        ({"executors": [EX], "inputs": [{"url": "rel/x", "path": "/x"}]}, "inputs[0].url"),
        ({"executors": [EX], "inputs": [{"url": "xyz://a", "path": "/x"}]}, "inputs[0].url"),
        (
            {"executors": [EX], "outputs": [{"url": "/o", "path": "/w/*.csv"}]},
            "outputs[0].path_prefix",
        ),
        (
            {
                "executors": [EX],
                "outputs": [{"url": "/o", "path": "/w/*.csv", "path_prefix": "/v"}],
            },
            "outputs[0].path_prefix",
        ),
        ({"executors": [EX], "outputs": [{"path": "/w/x"}]}, "outputs[0].url"),
        ({"executors": [EX], "volumes": ["vol"]}, "volumes[0]"),
        ({"executors": [EX], "resources": {"cpu_cores": "2"}}, "resources.cpu_cores"),
        ({"executors": [EX], "resources": {"cpu_cores": 2.5}}, "resources.cpu_cores"),
        ({"executors": [EX], "resources": {"cpu_cores": 0}}, "resources.cpu_cores"),
        ({"executors": [EX], "resources": {"cpu_cores": 10_000}}, "resources.cpu_cores"),
        ({"executors": [EX], "resources": {"ram_gb": "4"}}, "resources.ram_gb"),
        ({"executors": [EX], "resources": {"ram_gb": 0}}, "resources.ram_gb"),
        ({"executors": [EX], "resources": {"disk_gb": 1e9}}, "resources.disk_gb"),
        ({"executors": [EX], "resources": {"preemptible": "yes"}}, "resources.preemptible"),
        ({"executors": [EX], "tags": {"a": 1}}, "tags.a"),
        ({"executors": [EX], "tags": ["a"]}, "tags"),
        (
            {"executors": [EX], "resources": {"backend_parameters": {"market_policy": "cheap"}}},
            "resources.backend_parameters.market_policy",
        ),
        (
            {
                "executors": [EX],
                "resources": {
                    "backend_parameters": {"VmSize": "x"},
                    "backend_parameters_strict": True,
                },
            },
            "resources.backend_parameters.VmSize",
        ),
    ],
)
def test_refusals_name_the_field(body: Any, field: str) -> None:
    assert field in refused(body)


def test_all_errors_are_reported_at_once() -> None:
    fields = refused(
        {"executors": [{**EX, "workdir": "w"}], "inputs": [{"url": "/a", "path": "p"}]}
    )
    assert fields == ["executors[0].workdir", "inputs[0].path"]


def test_limits_apply() -> None:
    assert "inputs[0].content" in refused(
        {"executors": [EX], "inputs": [{"content": "x" * 11, "path": "/a"}]}, max_content_bytes=10
    )
    assert "executors" in refused({"executors": [EX, EX]}, max_executors=1)
    assert "tags" in refused({"executors": [EX], "tags": {"a": "", "b": ""}}, max_tags=1)
    assert "name" in refused({"executors": [EX], "name": "x" * 11}, max_string_length=10)


def test_backend_parameters_unknown_dropped_known_kept_case_insensitively() -> None:
    parsed = parse_task(
        {
            "executors": [EX],
            "resources": {
                "backend_parameters": {"VmSize": "x", "Market_Policy": "spot_first"},
                "backend_parameters_strict": False,
            },
        },
        TaskLimits(),
        BackendParameters(),
    )
    assert parsed.task["resources"]["backend_parameters"] == {"market_policy": "spot_first"}
    assert parsed.warnings == ["backend parameter 'VmSize' is not supported; ignored"]


def test_extra_backend_parameters_from_config() -> None:
    parsed = parse_task(
        {"executors": [EX], "resources": {"backend_parameters": {"vmsize": "x"}}},
        TaskLimits(),
        BackendParameters(("VmSize",)),
    )
    assert parsed.task["resources"]["backend_parameters"] == {"VmSize": "x"}


def test_integral_float_cpu_cores_accepted() -> None:
    assert parse({"executors": [EX], "resources": {"cpu_cores": 2.0}})["resources"] == {
        "cpu_cores": 2
    }


def test_wildcard_output_with_prefix_accepted() -> None:
    out = {"path": "/work/*.csv", "path_prefix": "/work", "type": "FILE", "url": "/home/u/w"}
    assert parse({"executors": [EX], "outputs": [out]})["outputs"] == [out]
