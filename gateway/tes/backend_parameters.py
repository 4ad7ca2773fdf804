"""The `resources.backend_parameters` keys tescape understands, with their value checks.

Keys are case-insensitive (TES 1.1). An unknown key is dropped with a warning — the spec says a
backend shall not store or return it — unless `backend_parameters_strict` is true, when the task is
refused with HTTP 400. A known key with a bad value is always refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from gateway.tes.errors import FieldError


def _choice(*allowed: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        return None if value in allowed else f"must be one of {', '.join(allowed)}"

    return check


def _duration(value: str) -> str | None:
    if re.fullmatch(r"\d+(\.\d+)?\s*(s|m|h)?", value.strip()):
        return None
    return "must be a duration such as 900, 900s, 15m or 1h"


def duration_seconds(value: str) -> float:
    """'900', '900s', '15m', '1h' → seconds (the value passed `_duration`'s check)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|m|h)?", value.strip())
    if match is None:
        raise ValueError(f"not a duration: {value!r}")
    return float(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2) or "s"]


def _boolean(value: str) -> str | None:
    return None if value.lower() in ("true", "false") else "must be true or false"


def _recovery(value: str) -> str | None:
    if value in ("same_type", "next_zone", "restart") or re.fullmatch(
        r"on_demand_after:\d+", value
    ):
        return None
    return "must be same_type, next_zone, restart or on_demand_after:N"


def _count(value: str) -> str | None:
    return None if value.strip().isdigit() else "must be a whole number (0, 1, 2, …)"


def _anything(value: str) -> str | None:
    return None


@dataclass(frozen=True)
class BackendParameter:
    name: str
    doc: str
    check: Callable[[str], str | None] = _anything


KNOWN: tuple[BackendParameter, ...] = (
    BackendParameter("instance_type", "pin the task to one instance type, e.g. m5.large"),
    BackendParameter(
        "market_policy",
        "spot_only | spot_first | on_demand_only (overrides the server default)",
        _choice("spot_only", "spot_first", "on_demand_only"),
    ),
    BackendParameter(
        "recovery",
        "what to do on a reclaim: same_type | next_zone | on_demand_after:N | restart",
        _recovery,
    ),
    BackendParameter(
        "interruption_budget",
        "Spot reclaims the task takes before it goes on on-demand (overrides the server's)",
        _count,
    ),
    BackendParameter("checkpoint_interval", "periodic checkpoint interval (15m, 900s)", _duration),
    BackendParameter(
        "tcp_established", "checkpoint established TCP connections (true|false)", _boolean
    ),
    BackendParameter("file_locks", "checkpoint file locks (true|false)", _boolean),
    BackendParameter(
        "internal_path_prefix", "sent by Cromwell's TES backend; accepted and ignored"
    ),
)


class BackendParameters:
    """The registry of known keys. `extra` names further keys an operator accepts as-is."""

    def __init__(self, extra: tuple[str, ...] = ()):
        self.by_key = {p.name.lower(): p for p in KNOWN}
        for name in extra:
            self.by_key.setdefault(name.lower(), BackendParameter(name, "accepted by config"))

    @property
    def names(self) -> list[str]:
        return sorted(p.name for p in self.by_key.values())

    def normalise(
        self, params: dict[str, str], strict: bool
    ) -> tuple[dict[str, str], list[str], list[FieldError]]:
        kept: dict[str, str] = {}
        warnings: list[str] = []
        errors: list[FieldError] = []
        for key, value in params.items():
            known = self.by_key.get(key.lower())
            where = f"resources.backend_parameters.{key}"
            if known is None:
                if strict:
                    errors.append(
                        FieldError(
                            where,
                            "is not supported by this server and backend_parameters_strict is "
                            f"true (supported: {', '.join(self.names)})",
                        )
                    )
                else:
                    warnings.append(f"backend parameter {key!r} is not supported; ignored")
                continue
            problem = known.check(value)
            if problem:
                errors.append(FieldError(where, problem))
            else:
                kept[known.name] = value
        return kept, warnings, errors
