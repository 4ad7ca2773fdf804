"""An amount of CPU, memory and disk: what a machine has (an agent's registration, an instance's
capacity), what a provider offers (gateway.providers.base.Offer extends it with type, market,
zone and price), what a task asks for or an attempt holds, and what is left on an instance.

One type for all of them, in the shared protocol because the agent sends it (`Registration`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pydantic import ConfigDict

EPS = 1e-9  # sums of float sizes are compared with this slack


@dataclass(frozen=True)
class Resources:
    cpu_cores: float
    ram_gb: float
    disk_gb: float

    # validated like a protocol message where one holds it: unknown keys refused
    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(extra="forbid")

    def minus(self, other: Resources) -> Resources:
        """What is left of this amount once `other` is taken."""
        return Resources(
            self.cpu_cores - other.cpu_cores,
            self.ram_gb - other.ram_gb,
            self.disk_gb - other.disk_gb,
        )

    def fits(self, room: Resources) -> bool:
        """Whether this amount fits in `room` (an instance's free room, an offer)."""
        return (
            self.cpu_cores <= room.cpu_cores + EPS
            and self.ram_gb <= room.ram_gb + EPS
            and self.disk_gb <= room.disk_gb + EPS
        )

    def sizes(self) -> dict[str, float]:
        """The three amounts by name (a JSON object)."""
        return {"cpu_cores": self.cpu_cores, "ram_gb": self.ram_gb, "disk_gb": self.disk_gb}
