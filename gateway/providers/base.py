"""The provider interface: where instances come from. Small on purpose; the scheduler owns the
decisions, a provider only starts and stops machines and says what it can offer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from gateway.store.fleet import Instance


@dataclass(frozen=True)
class Offer:
    """One kind of instance a provider can start now."""

    instance_type: str
    market: str  # spot | on-demand
    zone: str
    price_per_hour: float | None
    cpu_cores: float
    ram_gb: float
    disk_gb: float


class Provider(Protocol):
    name: str

    def offers(self) -> list[Offer]: ...

    def launch(self, instance: Instance, token: str) -> None:
        """Start the machine for an instance row the scheduler created; its agent registers with
        the token. Raises ProviderError when it cannot."""

    def terminate(self, instance_id: str) -> None:
        """Stop the machine (idempotent)."""

    def alive(self, instance_id: str) -> bool:
        """False once the machine is known to be gone."""

    def close(self) -> None:
        """Stop every machine this provider started (gateway shutdown)."""

    def log_hint(self, instance_id: str) -> str:
        """Where to look when an instance fails to come up."""

    def interrupt(self, instance_id: str, notice_seconds: float) -> str:
        """Simulate a Spot reclaim: a notice now, the machine gone `notice_seconds` later;
        return the deadline. Providers of real clouds raise ProviderError."""


class ProviderError(RuntimeError):
    pass
