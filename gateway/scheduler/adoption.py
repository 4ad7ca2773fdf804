"""A gateway that starts again on the same data dir takes over the instances the previous process
left running (re-adoption) instead of giving them up.

The previous process may have died without stopping anything (SIGKILL, a crash, the machine's OOM
killer): its agents ran on, their tasks too, and they poll the same URL with the same instance
token (its hash is in the instances table) until a gateway answers again. At start, each
LAUNCHING or READY instance is

    adopted   its agent still runs (the provider finds it and drives it from now on): the
              instance stays as it is, with a heartbeat as of now, so the time the gateway was
              down is not counted against `heartbeat_timeout_seconds`; its tasks go on where
              they run, their attempts unchanged (the same attempt ids: fencing holds)
    lost      its agent is gone: its tasks go on elsewhere from their newest capsule, or from
              the beginning (gateway.scheduler.losses.lose)

A provider that cannot adopt (no `adopt` method) loses every instance it cannot see alive.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from gateway.providers.base import Provider
from gateway.store.fleet import FleetStore, Instance, InstanceState

log = logging.getLogger(__name__)


@runtime_checkable
class Adopting(Protocol):
    """A provider that can take over machines an earlier gateway process started."""

    def adopt(self, instance: Instance) -> bool:
        """Take over the instance's machine when it still runs; False when it is gone."""


def adopt_instances(
    fleet: FleetStore,
    provider: Provider,
    gone: Callable[[Instance], bool],
    lose: Callable[[Instance, str], None],
) -> list[str]:
    """Adopt what still runs, lose the rest; return the ids adopted. `gone`: whether the
    provider's batched query says the instance's machine is gone."""
    adopted: list[str] = []
    for inst in fleet.instances({InstanceState.LAUNCHING, InstanceState.READY}):
        if isinstance(provider, Adopting):
            if provider.adopt(inst):  # (this process's own instances: still running)
                fleet.heartbeat(inst.id)  # the gateway was away, not the agent: a fresh grace
                adopted.append(inst.id)
            else:
                lose(inst, "the gateway restarted and its agent is gone")
            continue
        # a provider that cannot adopt: its machines outlive the gateway unless they end with it
        if provider.ephemeral or gone(inst):
            lose(inst, "the gateway restarted and its agent is gone")
    if adopted:
        log.warning("took over %d instances with running agents", len(adopted))
    return adopted
