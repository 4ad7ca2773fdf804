"""A validation error that names the offending field as the client wrote it (`executors[0].image`).

Here rather than in gateway.tes because the task path rules (local_paths.py, s3_paths.py), which
both sides run, report with it; gateway.tes.errors builds TaskValidationError from it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message
