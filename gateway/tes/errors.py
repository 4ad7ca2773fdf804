"""Validation errors that name the offending field as the client wrote it (`executors[0].image`).

FieldError lives in capsule_runtime.protocol (the path rules both sides run report with it).
"""

from __future__ import annotations

from capsule_runtime.protocol.errors import FieldError

__all__ = ["FieldError", "TaskValidationError"]


class TaskValidationError(ValueError):
    """The task document cannot be accepted. `errors` names every offending field."""

    def __init__(self, errors: list[FieldError]):
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))
