"""Small helpers the scheduler's parts share: ages of timestamps, whether the provider says a
machine is gone."""

from __future__ import annotations

import logging
from datetime import datetime

from gateway.providers.base import LIVE_STATES, CloudState
from gateway.store.fleet import Instance

log = logging.getLogger(__name__)


def age_s(then: datetime, now: datetime) -> float:
    return (now - then).total_seconds()


def gone(states: dict[str, CloudState | None] | None, inst: Instance) -> bool:
    """Whether the provider says the instance's machine is gone (not when it could not say)."""
    return states is not None and states.get(inst.id) not in LIVE_STATES


def first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def age(timestamp: str | None, now: datetime) -> float:
    if timestamp is None:
        return float("inf")
    return (now - datetime.fromisoformat(timestamp)).total_seconds()
