"""Pools the scheduler avoids for a while: an instance type in a zone and market whose launch
failed for lack of capacity (as ParallelCluster's insufficient-capacity timeout), or a Spot pool
a task was reclaimed from (next_zone) when the provider has no market of its own to keep it.
Any provider's offers pass through `usable`; the simulated market keeps its own quarantines in
simulated time (gateway/market/model.py) and the policy functions take those as `quarantined`."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from capsule_runtime.protocol.times import Clock, utcnow
from gateway.providers.base import Offer

Pool = tuple[str, str, str]  # (instance type, zone, market)


class Quarantines:
    def __init__(self, clock: Clock = utcnow) -> None:
        self.clock = clock
        self._until: dict[Pool, datetime] = {}
        self._lock = threading.Lock()

    def add(self, instance_type: str, zone: str, market: str, seconds: float) -> datetime:
        """Avoid the pool for `seconds` from now; a later end extends, an earlier one does
        not shorten. Returns the end."""
        until = self.clock() + timedelta(seconds=seconds)
        with self._lock:
            key = (instance_type, zone, market)
            if key not in self._until or until > self._until[key]:
                self._until[key] = until
            return self._until[key]

    def active(self) -> dict[Pool, datetime]:
        """The pools still avoided: pool → until."""
        now = self.clock()
        with self._lock:
            for key in [k for k, until in self._until.items() if until <= now]:
                del self._until[key]
            return dict(self._until)

    def blocks(self, offer: Offer) -> bool:
        return (offer.instance_type, offer.zone, offer.market) in self.active()

    def usable(self, offers: list[Offer]) -> list[Offer]:
        """The offers outside every quarantined pool."""
        active = self.active()
        if not active:
            return offers
        return [o for o in offers if (o.instance_type, o.zone, o.market) not in active]
