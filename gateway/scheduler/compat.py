"""Where a capsule can be restored: onto a CPU with the architecture and at least the
instruction-set features of the one it was taken on (CRIU refuses others, and a process that
chose AVX-512 at start would crash without it), a kernel no older, a CRIU no older and a podman
of the same major version (HostVersions.refusal). Each agent registers its CPU profile and
versions (capsule_runtime/host/cpu.py and versions.py, kept as `Instance.data.cpu` and
`.host`); a capsule's are those of the instance its attempt ran on (the capsule records them
too, for the agent's own check). An unknown side (an older agent) is not held against an
instance; the agent checks again before it unpacks anything, and a restore it refuses is tried
elsewhere (`capsules.restore_tries`).

Before a launch: a provider that knows its instance types' processors (aws: architecture,
manufacturer, family) names the types that can restore a capsule taken on the source's type
(`Provider.compatible_types`); a restore's want, a recovery plan and a cost move keep to those,
and a restore none of the offered types can take says so in the task's events instead of
launching a machine that could not restore it."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from gateway.providers.base import Offer, Provider, ProviderError
from gateway.store.fleet import FleetStore, Instance
from gateway.tes.states import CapsuleState

log = logging.getLogger(__name__)


def capsule_source(fleet: FleetStore, task_id: str) -> Instance | None:
    """The instance the task's newest complete capsule was taken on; None when unknown."""
    capsules = fleet.capsules_of(task_id, {CapsuleState.COMPLETE})
    if not capsules or capsules[0].attempt_id is None:
        return None
    attempt = fleet.attempt(capsules[0].attempt_id)
    if attempt is None or attempt.instance_id is None:
        return None
    return fleet.instance(attempt.instance_id)


def refusal(inst: Instance, source: Instance | None) -> str | None:
    """Why a capsule taken on `source` cannot be restored on `inst`, or None if it can."""
    if source is None:
        return None
    here, taken_on = inst.data.cpu, source.data.cpu
    if here is not None and taken_on is not None and not here.runs(taken_on):
        if here.arch != taken_on.arch:
            return f"its CPU is {here.arch}, the capsule's {taken_on.arch}"
        return (
            f"its CPU lacks {', '.join(here.missing(taken_on))} of the CPU the capsule was "
            f"taken on ({taken_on.model or taken_on.arch})"
        )
    if inst.data.host is not None and source.data.host is not None:
        return inst.data.host.refusal(source.data.host)
    return None


def restore_types(provider: Provider, source: Instance | None) -> frozenset[str] | None:
    """The instance types `provider` can start that can restore a capsule taken on `source`;
    None: any (no capsule, a source of another provider, or a provider that cannot tell)."""
    if source is None or source.provider != provider.name:
        return None
    try:
        return provider.compatible_types(source.instance_type)
    except ProviderError as exc:  # not knowing is no reason to hold the restore back
        log.warning("which types can restore a capsule of %s: %s", source.instance_type, exc)
        return None


def keep_types(offers: Sequence[Offer], types: frozenset[str] | None) -> list[Offer]:
    """The offers of `types` (all when None)."""
    return list(offers) if types is None else [o for o in offers if o.instance_type in types]
