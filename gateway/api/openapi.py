"""The OpenAPI 3.1 document tescape serves at `<prefix>/openapi.json`: the TES 1.1 routes as this
server implements them, for client generators, API browsers and fuzzers (the tests run
schemathesis against it).

The schemas come from the wire models in `gateway.tes.models` (so the document cannot drift from
what the server parses), renamed to the spec's component names (`TesTask` → `tesTask`); what the
models do not hold — the server's own task fields, the state enum, service-info and the list and
error bodies — is written here once. OpenAPI 3.1 because pydantic emits JSON Schema 2020-12:
optional fields accept `null` (the server treats it as absent).
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from capsule_runtime.protocol.tes import TesTask, Wire
from gateway import __version__
from gateway.tes import models
from gateway.tes.states import State

REF = "#/components/schemas/"
_MODELS: dict[str, type[Wire]] = {"tesTask": TesTask, **models.SPEC_SCHEMAS}
# Only ever sent by the server, with every list field present.
_RESPONSE_ONLY = {"tesExecutorLog", "tesOutputFileLog", "tesTaskLog"}

_STRING = {"type": "string"}
_STRING_MAP = {"type": "object", "additionalProperties": _STRING}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF + name}


def _model_schemas() -> dict[str, Any]:
    """Component schemas of the wire models under their TES names."""
    pairs: list[tuple[type[BaseModel], Literal["validation"]]] = [
        (model, "validation") for model in _MODELS.values()
    ]
    _, top = models_json_schema(pairs, ref_template=REF + "{model}")
    text = json.dumps(top.get("$defs", {}))
    for tes_name, model in _MODELS.items():  # "#/components/schemas/TesInput" → ".../tesInput"
        text = text.replace(f'"{REF}{model.__name__}"', f'"{REF}{tes_name}"')
    defs: dict[str, Any] = json.loads(text)
    out = {tes_name: defs[model.__name__] for tes_name, model in _MODELS.items()}
    for name in _RESPONSE_ONLY:  # a list field the server fills with [] is always present
        fields = _MODELS[name].model_fields.items()
        out[name]["required"] = [
            key for key, field in fields if field.is_required() or field.default_factory
        ]
    return out


def _task_schema(model_schema: dict[str, Any]) -> dict[str, Any]:
    """tesTask: what a client sends plus the fields the server sets (read-only: ignored in a
    request, present in a response)."""
    schema = dict(model_schema)
    schema["properties"] = {
        "id": {**_STRING, "readOnly": True},
        "state": {**_ref("tesState"), "readOnly": True},
        **model_schema["properties"],
        "logs": {"type": "array", "items": _ref("tesTaskLog"), "readOnly": True},
        "creation_time": {**_STRING, "readOnly": True},
    }
    return schema


def _fixed_schemas() -> dict[str, Any]:
    service = {
        "type": "object",
        "required": ["id", "name", "type", "organization", "version"],
        "properties": {
            "id": _STRING,
            "name": _STRING,
            "type": {
                "type": "object",
                "required": ["group", "artifact", "version"],
                "properties": {"group": _STRING, "artifact": _STRING, "version": _STRING},
            },
            "description": _STRING,
            "organization": {
                "type": "object",
                "required": ["name", "url"],
                "properties": {"name": _STRING, "url": _STRING},
            },
            "contactUrl": _STRING,
            "documentationUrl": _STRING,
            "createdAt": _STRING,
            "updatedAt": _STRING,
            "environment": _STRING,
            "version": _STRING,
            "storage": {"type": "array", "items": _STRING},
            "tesResources_backend_parameters": {"type": "array", "items": _STRING},
        },
    }
    return {
        "tesState": {"type": "string", "enum": [s.value for s in State]},
        "tesServiceInfo": service,
        "tesCreateTaskResponse": {
            "type": "object",
            "required": ["id"],
            "properties": {"id": _STRING},
        },
        "tesListTasksResponse": {
            "type": "object",
            "required": ["tasks"],
            "properties": {
                "tasks": {"type": "array", "items": _ref("tesTask")},
                "next_page_token": _STRING,
            },
        },
        "tesCancelTaskResponse": {"type": "object"},
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "integer"},
                "message": _STRING,
                "errors": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["field", "message"],
                        "properties": {"field": _STRING, "message": _STRING},
                    },
                },
            },
        },
    }


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _responses(ok: dict[str, Any], *errors: int) -> dict[str, Any]:
    why = {
        400: "The request is malformed or the task is invalid (the body names each field).",
        401: "Authentication is required or failed.",
        404: "No such task, or not yours.",
        413: "The request body is larger than `server.max_request_bytes`.",
        429: "Too many failed logins from this address; retry after Retry-After seconds.",
    }
    out = {"200": {"description": "OK", **_json(ok)}}
    for code in (*errors, 401, 429):
        out[str(code)] = {"description": why[code], **_json(_ref("error"))}
    return out


# Clients send empty query parameters for "not set" (and the server accepts any letter case).
_EMPTY = {"type": "string", "const": ""}


def _view_parameter() -> dict[str, Any]:
    return {
        "name": "view",
        "in": "query",
        "schema": {"anyOf": [{"type": "string", "enum": ["MINIMAL", "BASIC", "FULL"]}, _EMPTY]},
        "description": "How much of each task to return (default MINIMAL).",
    }


def _paths() -> dict[str, Any]:
    task_id = {"name": "id", "in": "path", "required": True, "schema": _STRING}
    list_params = [
        {"name": "name_prefix", "in": "query", "schema": _STRING},
        {"name": "state", "in": "query", "schema": {"anyOf": [_ref("tesState"), _EMPTY]}},
        {"name": "tag_key", "in": "query", "schema": {"type": "array", "items": _STRING}},
        {"name": "tag_value", "in": "query", "schema": {"type": "array", "items": _STRING}},
        {"name": "page_size", "in": "query", "schema": {"type": "integer", "minimum": 1}},
        {"name": "page_token", "in": "query", "schema": _STRING},
        _view_parameter(),
    ]
    return {
        "/service-info": {
            "get": {
                "operationId": "GetServiceInfo",
                "responses": _responses(_ref("tesServiceInfo")),
            }
        },
        "/tasks": {
            "get": {
                "operationId": "ListTasks",
                "parameters": list_params,
                "responses": _responses(_ref("tesListTasksResponse"), 400),
            },
            "post": {
                "operationId": "CreateTask",
                "requestBody": {"required": True, **_json(_ref("tesTask"))},
                "responses": _responses(_ref("tesCreateTaskResponse"), 400, 413),
            },
        },
        "/tasks/{id}": {
            "get": {
                "operationId": "GetTask",
                "parameters": [task_id, _view_parameter()],
                "responses": _responses(_ref("tesTask"), 400, 404),
            }
        },
        "/tasks/{id}:cancel": {
            "post": {
                "operationId": "CancelTask",
                "parameters": [task_id],
                "responses": _responses(_ref("tesCancelTaskResponse"), 404),
            }
        },
    }


@cache
def _document() -> str:
    schemas = _model_schemas()
    schemas["tesTask"] = _task_schema(schemas["tesTask"])
    schemas.update(_fixed_schemas())
    doc = {
        "openapi": "3.1.0",
        "info": {
            "title": "tescape: GA4GH Task Execution Service",
            "version": __version__,
            "description": "TES 1.1 as tescape implements it. Unknown request fields are ignored.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
        "paths": _paths(),
    }
    return json.dumps(doc, separators=(",", ":"))


def openapi_document(server_url: str) -> dict[str, Any]:
    """The document, with `servers` set to the prefix it was asked under."""
    doc: dict[str, Any] = json.loads(_document())
    doc["servers"] = [{"url": server_url}]
    return doc
