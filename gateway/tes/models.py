"""What only the API needs beside the TES task document: the spec's schema names for each model
(the conformance test and the OpenAPI document read them) and the fields the server sets. The
models themselves live in capsule_runtime/protocol/tes.py, which the agent reads too."""

from __future__ import annotations

from capsule_runtime.protocol import tes

# Field lists per spec schema, used by the spec conformance test and by the views.
SPEC_SCHEMAS: dict[str, type[tes.Wire]] = {
    "tesInput": tes.TesInput,
    "tesOutput": tes.TesOutput,
    "tesResources": tes.TesResources,
    "tesExecutor": tes.TesExecutor,
    "tesExecutorLog": tes.TesExecutorLog,
    "tesOutputFileLog": tes.TesOutputFileLog,
    "tesTaskLog": tes.TesTaskLog,
}

# Fields of tesTask that the server sets.
SERVER_TASK_FIELDS = ("id", "state", "logs", "creation_time")
