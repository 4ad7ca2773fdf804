"""The TES 1.1 task document as both sides read it (pydantic v2), field for field from the spec's
`components.schemas`: the gateway validates a client's task with `TesTask` and stores its
`wire()` form; the agent gets the same model in its Assignment, and the scheduler, the runner and
staging read tasks through it, never as raw dicts.

Every optional field defaults to None and documents are dumped with `exclude_none`, so a task
comes back with exactly the fields its client sent plus the server's own (id, state,
creation_time, logs, filled-in `type`). Unknown request fields are ignored, never stored or
echoed: py-tes 0.4.2 and 1.1.4 raise on keys they do not know.

`tests/unit/test_models_spec.py` checks these classes against the spec's property lists.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, StrictBool, StrictStr

# A TES input/output `type` (the agent stages by it)
FileType = Literal["FILE", "DIRECTORY"]

StrictFloat = Annotated[float, Strict()]  # accepts JSON integers and floats, never strings


def _integral(value: Any) -> Any:
    """cpu_cores is an int32; accept 2 and 2.0 (some clients send doubles), refuse 2.5 and '2'."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Int32 = Annotated[int, Strict(), BeforeValidator(_integral), Field(ge=-(2**31), le=2**31 - 1)]
StringMap = dict[StrictStr, StrictStr]


class Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    def wire(self) -> dict[str, Any]:
        """The JSON-ready dict with nulls omitted."""
        return self.model_dump(mode="json", exclude_none=True)


class TesInput(Wire):
    name: StrictStr | None = None
    description: StrictStr | None = None
    url: StrictStr | None = None
    path: StrictStr
    type: FileType | None = None
    content: StrictStr | None = None
    streamable: StrictBool | None = None


class TesOutput(Wire):
    name: StrictStr | None = None
    description: StrictStr | None = None
    url: StrictStr
    path: StrictStr
    path_prefix: StrictStr | None = None
    type: FileType | None = None


class TesResources(Wire):
    cpu_cores: Int32 | None = None
    preemptible: StrictBool | None = None
    ram_gb: StrictFloat | None = None
    disk_gb: StrictFloat | None = None
    zones: list[StrictStr] | None = None
    backend_parameters: StringMap | None = None
    backend_parameters_strict: StrictBool | None = None


class TesExecutor(Wire):
    image: StrictStr
    command: list[StrictStr]
    workdir: StrictStr | None = None
    stdin: StrictStr | None = None
    stdout: StrictStr | None = None
    stderr: StrictStr | None = None
    env: StringMap | None = None
    ignore_error: StrictBool | None = None

    def stdio(self, stream: Literal["stdin", "stdout", "stderr"]) -> str | None:
        """The container path the task named for `stream`, or None."""
        return {"stdin": self.stdin, "stdout": self.stdout, "stderr": self.stderr}[stream]


class TesExecutorLog(Wire):
    start_time: StrictStr | None = None
    end_time: StrictStr | None = None
    stdout: StrictStr | None = None
    stderr: StrictStr | None = None
    exit_code: Int32


class TesOutputFileLog(Wire):
    url: StrictStr
    path: StrictStr
    size_bytes: StrictStr  # a JSON string: int64 does not fit JSON numbers


class TesTaskLog(Wire):
    logs: list[TesExecutorLog] = Field(default_factory=list)
    metadata: StringMap | None = None
    start_time: StrictStr | None = None
    end_time: StrictStr | None = None
    outputs: list[TesOutputFileLog] = Field(default_factory=list)
    system_logs: list[StrictStr] | None = None


class TesTask(Wire):
    """A task as a client submits it. Read-only fields (id, state, logs, creation_time) sent by a
    client are ignored: the server sets them."""

    name: StrictStr | None = None
    description: StrictStr | None = None
    inputs: list[TesInput] | None = None
    outputs: list[TesOutput] | None = None
    resources: TesResources | None = None
    executors: list[TesExecutor]
    volumes: list[StrictStr] | None = None
    tags: StringMap | None = None

    def files(self) -> Iterator[tuple[str, TesInput | TesOutput]]:
        """Every input, then every output, with its field name (`inputs[0]`, `outputs[2]`)."""
        for i, inp in enumerate(self.inputs or []):
            yield f"inputs[{i}]", inp
        for j, out in enumerate(self.outputs or []):
            yield f"outputs[{j}]", out
