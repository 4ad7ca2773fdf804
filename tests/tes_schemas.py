"""The TES 1.1 wire schemas as facts the tests check responses against: for every schema of the
spec's `components.schemas`, its JSON types, properties, required keys and enums (descriptions and
examples left out). The project's own data, so a clone needs nothing beside it; when the spec moves,
update this file by hand from its field tables."""

from __future__ import annotations

from typing import Any

SCHEMAS: dict[str, Any] = {
    "tesCancelTaskResponse": {"type": "object"},
    "tesCreateTaskResponse": {
        "required": ["id"],
        "type": "object",
        "properties": {"id": {"type": "string"}},
    },
    "tesExecutor": {
        "required": ["command", "image"],
        "type": "object",
        "properties": {
            "image": {"type": "string"},
            "command": {"type": "array", "items": {"type": "string"}},
            "workdir": {"type": "string"},
            "stdin": {"type": "string"},
            "stdout": {"type": "string"},
            "stderr": {"type": "string"},
            "env": {"type": "object", "additionalProperties": {"type": "string"}},
            "ignore_error": {"type": "boolean"},
        },
    },
    "tesExecutorLog": {
        "required": ["exit_code"],
        "type": "object",
        "properties": {
            "start_time": {"type": "string"},
            "end_time": {"type": "string"},
            "stdout": {"type": "string"},
            "stderr": {"type": "string"},
            "exit_code": {"type": "integer", "format": "int32"},
        },
    },
    "tesFileType": {"type": "string", "enum": ["FILE", "DIRECTORY"]},
    "tesInput": {
        "required": ["path"],
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "description": {"type": "string"},
            "url": {"type": "string"},
            "path": {"type": "string"},
            "type": {"$ref": "#/components/schemas/tesFileType"},
            "content": {"type": "string"},
            "streamable": {"type": "boolean"},
        },
    },
    "tesListTasksResponse": {
        "required": ["tasks"],
        "type": "object",
        "properties": {
            "tasks": {"type": "array", "items": {"$ref": "#/components/schemas/tesTask"}},
            "next_page_token": {"type": "string"},
        },
    },
    "tesOutput": {
        "required": ["path", "url"],
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "description": {"type": "string"},
            "url": {"type": "string"},
            "path": {"type": "string"},
            "path_prefix": {"type": "string"},
            "type": {"$ref": "#/components/schemas/tesFileType"},
        },
    },
    "tesOutputFileLog": {
        "required": ["path", "size_bytes", "url"],
        "type": "object",
        "properties": {
            "url": {"type": "string"},
            "path": {"type": "string"},
            "size_bytes": {"type": "string", "format": "int64"},
        },
    },
    "tesResources": {
        "type": "object",
        "properties": {
            "cpu_cores": {"type": "integer", "format": "int32"},
            "preemptible": {"type": "boolean", "format": "boolean"},
            "ram_gb": {"type": "number", "format": "double"},
            "disk_gb": {"type": "number", "format": "double"},
            "zones": {"type": "array", "items": {"type": "string"}},
            "backend_parameters": {"type": "object", "additionalProperties": {"type": "string"}},
            "backend_parameters_strict": {"type": "boolean", "format": "boolean"},
        },
    },
    "tesServiceType": {
        "allOf": [
            {
                "$ref": "https://raw.githubusercontent.com/ga4gh-discovery/ga4gh-service-info/v1.0.0/service-info.yaml#/components/schemas/ServiceType"
            },
            {
                "type": "object",
                "required": ["artifact"],
                "properties": {"artifact": {"type": "string", "enum": ["tes"]}},
            },
        ]
    },
    "tesServiceInfo": {
        "allOf": [
            {
                "$ref": "https://raw.githubusercontent.com/ga4gh-discovery/ga4gh-service-info/v1.0.0/service-info.yaml#/components/schemas/Service"
            },
            {
                "type": "object",
                "properties": {
                    "storage": {"type": "array", "items": {"type": "string"}},
                    "tesResources_backend_parameters": {
                        "type": "array",
                        "items": {"type": "string"},
                    },
                    "type": {"$ref": "#/components/schemas/tesServiceType"},
                },
            },
        ]
    },
    "tesState": {
        "type": "string",
        "enum": [
            "UNKNOWN",
            "QUEUED",
            "INITIALIZING",
            "RUNNING",
            "PAUSED",
            "COMPLETE",
            "EXECUTOR_ERROR",
            "SYSTEM_ERROR",
            "CANCELED",
            "PREEMPTED",
            "CANCELING",
        ],
    },
    "tesTask": {
        "required": ["executors"],
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "state": {"$ref": "#/components/schemas/tesState"},
            "name": {"type": "string"},
            "description": {"type": "string"},
            "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/tesInput"}},
            "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/tesOutput"}},
            "resources": {"$ref": "#/components/schemas/tesResources"},
            "executors": {"type": "array", "items": {"$ref": "#/components/schemas/tesExecutor"}},
            "volumes": {"type": "array", "items": {"type": "string"}},
            "tags": {"type": "object", "additionalProperties": {"type": "string"}},
            "logs": {"type": "array", "items": {"$ref": "#/components/schemas/tesTaskLog"}},
            "creation_time": {"type": "string"},
        },
    },
    "tesTaskLog": {
        "required": ["logs", "outputs"],
        "type": "object",
        "properties": {
            "logs": {"type": "array", "items": {"$ref": "#/components/schemas/tesExecutorLog"}},
            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
            "start_time": {"type": "string"},
            "end_time": {"type": "string"},
            "outputs": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/tesOutputFileLog"},
            },
            "system_logs": {"type": "array", "items": {"type": "string"}},
        },
    },
}
