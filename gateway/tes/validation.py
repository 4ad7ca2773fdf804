"""Turn a client's task document into the normalised task tescape stores, or say exactly why not.

`parse_task` is the one entry point. It drops nulls inside objects and string maps (Cromwell sends
`"parent_workflow_id": null`), validates types with the wire models, then checks what the types
cannot: absolute container paths without `..`, wildcard outputs with a `path_prefix`, sizes within
the configured limits, and `backend_parameters` against the registry. Every problem becomes a
`FieldError` naming the field as a client wrote it (`executors[0].image`).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from capsule_runtime.protocol.tes import TesTask
from gateway.tes.backend_parameters import BackendParameters
from gateway.tes.errors import FieldError, TaskValidationError

WILDCARD = re.compile(r"[*?\[]")
URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
URL_SCHEMES = frozenset({"file", "s3", "gs", "http", "https", "ftp"})
# The name and tags are stored in their own columns (filters use them); PostgreSQL text cannot hold
# NUL, and a tag key is at most this long (task_tags.key). Refused with 400 rather than a 500.
TAG_KEY_MAX_LENGTH = 255
# What an executor's image may not hold: whitespace or control characters (no registry reference
# has them). A leading '-' is refused separately: podman would read it as a flag.
IMAGE_FORBIDDEN = re.compile(r"[\s\x00-\x1f\x7f]")


class TaskLimits(BaseModel):
    """Upper bounds on what one task may ask for (config key `limits`)."""

    model_config = ConfigDict(extra="forbid")

    max_cpu_cores: int = 192
    max_ram_gb: float = 1536.0
    max_disk_gb: float = 65536.0
    max_executors: int = 100
    max_inputs: int = 100_000
    max_outputs: int = 100_000
    max_volumes: int = 100
    max_content_bytes: int = 1_048_576
    max_tags: int = 256
    max_string_length: int = 65_536


@dataclass
class ParsedTask:
    task: dict[str, Any]  # the normalised wire document, nulls omitted (what is stored)
    model: TesTask  # the same document, typed
    warnings: list[str] = field(default_factory=list)


def drop_nulls(value: Any) -> Any:
    """Remove keys whose value is null from every object, at any depth. Lists keep their items."""
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


def field_name(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def parse_task(body: Any, limits: TaskLimits, backend_parameters: BackendParameters) -> ParsedTask:
    if not isinstance(body, dict):
        raise TaskValidationError([FieldError("", "the request body must be a JSON object")])
    try:
        model = TesTask.model_validate(drop_nulls(body))
    except ValidationError as exc:
        errors = []
        for err in exc.errors(include_url=False):
            msg = err["msg"]
            if err["type"] == "missing":
                msg = "is required"
            errors.append(FieldError(field_name(tuple(err["loc"])), msg))
        raise TaskValidationError(errors) from None
    checker = _Checker(limits)
    task = model.wire()
    checker.check(task)
    warnings: list[str] = []
    resources = task.get("resources")
    if resources and "backend_parameters" in resources:
        params, warnings, errors = backend_parameters.normalise(
            resources["backend_parameters"], bool(resources.get("backend_parameters_strict"))
        )
        checker.errors.extend(errors)
        resources["backend_parameters"] = params
    if checker.errors:
        raise TaskValidationError(checker.errors)
    return ParsedTask(task, TesTask.model_validate(task), warnings)


class _Checker:
    """The checks that types cannot express; collects every error rather than stopping at one."""

    def __init__(self, limits: TaskLimits):
        self.limits = limits
        self.errors: list[FieldError] = []

    def fail(self, name: str, message: str) -> None:
        self.errors.append(FieldError(name, message))

    def container_path(self, name: str, path: str) -> None:
        if not path.startswith("/"):
            self.fail(name, f"must be an absolute container path, got {path!r}")
        elif ".." in path.split("/"):
            self.fail(name, f"must not contain '..', got {path!r}")
        elif "\x00" in path:
            self.fail(name, "must not contain NUL characters")

    def url(self, name: str, url: str) -> None:
        if "\x00" in url:
            self.fail(name, "must not contain NUL characters")
            return
        match = URL_SCHEME.match(url)
        if match:
            if match.group(1).lower() not in URL_SCHEMES:
                schemes = ", ".join(sorted(URL_SCHEMES))
                self.fail(name, f"unsupported URL scheme {match.group(1)!r} (use {schemes})")
        elif not url.startswith("/"):
            self.fail(name, f"must be an absolute path or a URL with a scheme, got {url!r}")

    def count(self, name: str, items: list[Any] | dict[str, Any] | None, limit: int) -> None:
        if items is not None and len(items) > limit:
            self.fail(name, f"has {len(items)} entries; this server allows at most {limit}")

    def check(self, task: dict[str, Any]) -> None:
        lim = self.limits
        for key in ("name", "description"):
            if len(task.get(key, "")) > lim.max_string_length:
                self.fail(key, f"is longer than {lim.max_string_length} characters")
        if "\x00" in task.get("name", ""):
            self.fail("name", "must not contain NUL characters")
        executors = task["executors"]
        if not executors:
            self.fail("executors", "must list at least one executor")
        self.count("executors", executors, lim.max_executors)
        for i, ex in enumerate(executors):
            at = f"executors[{i}]"
            self.executor(at, ex)
            for key in ("workdir", "stdin", "stdout", "stderr"):
                if key in ex:
                    self.container_path(f"{at}.{key}", ex[key])
        inputs = task.get("inputs", [])
        self.count("inputs", inputs, lim.max_inputs)
        for i, inp in enumerate(inputs):
            self.input(f"inputs[{i}]", inp)
        outputs = task.get("outputs", [])
        self.count("outputs", outputs, lim.max_outputs)
        for i, out in enumerate(outputs):
            self.output(f"outputs[{i}]", out)
        volumes = task.get("volumes", [])
        self.count("volumes", volumes, lim.max_volumes)
        for i, vol in enumerate(volumes):
            self.container_path(f"volumes[{i}]", vol)
        self.count("tags", task.get("tags"), lim.max_tags)
        for key, value in task.get("tags", {}).items():
            if "\x00" in key or "\x00" in value:
                self.fail(f"tags.{key}", "must not contain NUL characters")
            if len(key) > TAG_KEY_MAX_LENGTH:
                self.fail(f"tags.{key}", f"key is longer than {TAG_KEY_MAX_LENGTH} characters")
        if "resources" in task:
            self.resources(task["resources"])

    def executor(self, at: str, ex: dict[str, Any]) -> None:
        """What reaches podman's and the kernel's argv and environment: an image that cannot be
        read as a flag, arguments and environment entries that execve can pass (no NUL; a
        variable name neither empty nor holding '=')."""
        image = ex["image"]
        if not image.strip():
            self.fail(f"{at}.image", "must name a container image")
        elif image.startswith("-"):
            self.fail(f"{at}.image", f"must be an image reference, not an option: {image!r}")
        elif IMAGE_FORBIDDEN.search(image):
            self.fail(f"{at}.image", "must not contain whitespace or control characters")
        if not ex["command"]:
            self.fail(f"{at}.command", "must have at least one argument")
        for j, arg in enumerate(ex["command"]):
            if "\x00" in arg:
                self.fail(f"{at}.command[{j}]", "must not contain NUL characters")
        for key, value in ex.get("env", {}).items():
            name = f"{at}.env.{key}" if key else f"{at}.env"
            if not key:
                self.fail(name, "a variable name must not be empty")
            elif "=" in key:
                self.fail(name, f"a variable name must not contain '=': {key!r}")
            elif "\x00" in key:
                self.fail(name, "a variable name must not contain NUL characters")
            if "\x00" in value:
                self.fail(name, "a value must not contain NUL characters")

    def input(self, at: str, inp: dict[str, Any]) -> None:
        self.container_path(f"{at}.path", inp["path"])
        if "content" in inp:
            size = len(inp["content"].encode())
            if size > self.limits.max_content_bytes:
                self.fail(
                    f"{at}.content",
                    f"is {size} bytes; this server allows at most {self.limits.max_content_bytes}",
                )
            if inp.get("type") == "DIRECTORY":
                self.fail(f"{at}.type", "an input with content is a FILE")
            inp["type"] = "FILE"
        elif "url" in inp:
            self.url(f"{at}.url", inp["url"])
            inp.setdefault("type", "DIRECTORY" if inp["url"].endswith("/") else "FILE")
        else:
            self.fail(f"{at}.url", "is required unless content is set")

    def output(self, at: str, out: dict[str, Any]) -> None:
        path = out["path"]
        self.container_path(f"{at}.path", path)
        self.url(f"{at}.url", out["url"])
        if WILDCARD.search(path):
            prefix = out.get("path_prefix")
            if prefix is None:
                self.fail(f"{at}.path_prefix", "is required when path contains wildcards")
            else:
                self.container_path(f"{at}.path_prefix", prefix)
                norm = posixpath.join(prefix, "")
                if not path.startswith(norm) and path != prefix:
                    self.fail(f"{at}.path_prefix", f"{prefix!r} is not a prefix of {path!r}")
        out.setdefault("type", "DIRECTORY" if path.endswith("/") else "FILE")

    def resources(self, res: dict[str, Any]) -> None:
        lim = self.limits
        cpu = res.get("cpu_cores")
        if cpu is not None and not 1 <= cpu <= lim.max_cpu_cores:
            self.fail("resources.cpu_cores", f"must be between 1 and {lim.max_cpu_cores}")
        ram = res.get("ram_gb")
        if ram is not None and not 0 < ram <= lim.max_ram_gb:
            self.fail("resources.ram_gb", f"must be above 0 and at most {lim.max_ram_gb}")
        disk = res.get("disk_gb")
        if disk is not None and not 0 <= disk <= lim.max_disk_gb:
            self.fail("resources.disk_gb", f"must be between 0 and {lim.max_disk_gb}")
