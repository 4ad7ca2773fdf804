"""Capsules an agent wrote but never reported: taken into the record when their attempt is lost.

An agent that lost its gateway (agent.gateway_lost_seconds) takes each running task into a
capsule before it stops, and a reclaimed or crashed agent may have finished an upload whose
report never arrived. The capsule store holds them durably either way: a manifest is written
last, after every chunk (capsule_runtime.capsules.keys). So when an attempt is lost, the
manifests under its own prefix in the store (<task>/<attempt>/<sequence>/manifest.json) that
the gateway has not recorded are read and recorded as complete capsules — the manifest's sha256
as read here is what a restore checks it against, and each chunk is checked by its own sha256
on restore — before the task's recovery picks its newest capsule.
"""

from __future__ import annotations

import logging
from typing import Any

from capsule_runtime.capsules.keys import attempt_prefix, is_manifest_key
from capsule_runtime.capsules.manifest import Manifest
from gateway.store.fleet import Attempt, CapsuleConflict, FleetStore
from gateway.store.tasks import TaskStore

log = logging.getLogger(__name__)


def record_unreported(store: Any, fleet: FleetStore, tasks: TaskStore, attempt: Attempt) -> int:
    """Record the attempt's capsules that are in `store` but not in the fleet store; return how
    many. A manifest that cannot be read or is another attempt's is skipped (with a warning)."""
    known = {c.id for c in fleet.capsules_of(attempt.task_id)}
    found = 0
    for key in store.list(attempt_prefix(attempt.task_id, attempt.id)):
        if not is_manifest_key(key):
            continue
        try:
            manifest = Manifest.from_bytes(store.get(key))
        except Exception as exc:  # a half-written or foreign object: not a capsule to use
            log.warning("capsule manifest %s is unreadable: %s", key, exc)
            continue
        if manifest.capsule_id in known:
            continue
        if (manifest.task_id, manifest.attempt_id) != (attempt.task_id, attempt.id):
            log.warning("capsule manifest %s names another attempt; not used", key)
            continue
        sha = manifest.sha256
        assert sha is not None
        try:
            added = fleet.add_capsule(
                capsule_id=manifest.capsule_id,
                task_id=attempt.task_id,
                attempt_id=attempt.id,
                sequence=manifest.sequence,
                store_key=key,
                manifest_sha256=sha,
                size_bytes=manifest.size_bytes,
                parent_id=manifest.parent,
                data={"reason": str(manifest.meta.get("reason") or "unreported")},
            )
        except CapsuleConflict:
            continue
        if added:
            found += 1
            tasks.record(
                attempt.task_id,
                "capsule",
                attempt_id=attempt.id,
                instance_id=attempt.instance_id,
                message=(
                    f"capsule {manifest.capsule_id} ({manifest.meta.get('reason', 'unreported')})"
                    f": found in the capsule store, its report never arrived"
                ),
            )
    return found
