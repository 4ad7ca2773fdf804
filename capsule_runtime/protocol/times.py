"""RFC 3339 timestamps as TES puts them on the wire: UTC, microseconds, explicit offset."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


class ManualClock:
    """A `Clock` that moves only when told: tests and the cost simulator (bench/spot_sim.py)
    pass one to the stores, the dispatcher and the scheduler to run them in their own time."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start if start is not None else utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        """Move on by `seconds` (never back); returns the new time."""
        self.now += timedelta(seconds=max(0.0, seconds))
        return self.now

    def set(self, moment: datetime) -> datetime:
        """Move to `moment`, if it is later."""
        self.now = max(self.now, moment)
        return self.now
