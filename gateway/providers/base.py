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


def offer_of(instance: Instance, fallback: Offer | None = None) -> Offer:
    """What a running instance is, as an Offer: its type, market, zone, price and the capacity
    recorded at launch (missing sizes from `fallback`, else 0)."""
    cap = instance.data.get("capacity") or {}

    def size(key: str) -> float:
        return float(cap.get(key, getattr(fallback, key) if fallback is not None else 0.0))

    return Offer(
        instance.instance_type,
        instance.market,
        instance.zone,
        instance.price_per_hour,
        size("cpu_cores"),
        size("ram_gb"),
        size("disk_gb"),
    )


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
