"""The TES 1.1 OpenAPI document in ../shared/spec, loaded once for tests."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

SPEC = (
    Path(__file__).resolve().parents[2] / "shared" / "spec" / "task_execution_service.openapi.yaml"
)


@cache
def schemas() -> dict[str, Any]:
    return yaml.safe_load(SPEC.read_text())["components"]["schemas"]


def properties(schema: str) -> set[str]:
    return set(schemas()[schema].get("properties", {}))


def required(schema: str) -> set[str]:
    return set(schemas()[schema].get("required", []))
