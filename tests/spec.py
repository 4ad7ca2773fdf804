"""The TES 1.1 wire schemas (tests/tes_schemas.py, the project's own copy of the spec's facts),
with the look-ups the tests use. Nothing outside the repository is read."""

from __future__ import annotations

from typing import Any

from tests.tes_schemas import SCHEMAS


def schemas() -> dict[str, Any]:
    return SCHEMAS


def properties(schema: str) -> set[str]:
    return set(SCHEMAS[schema].get("properties", {}))


def required(schema: str) -> set[str]:
    return set(SCHEMAS[schema].get("required", []))
