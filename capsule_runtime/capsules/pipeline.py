"""The capsule pipelines, in one import: write_capsule (parts → chunks → store → manifest) and
read_manifest / restore_part / verify_capsule (store → checked chunks → a part's bytes).

See `writer` and `reader` for how each works; `ordered_map` (in `parallel`) is their common
shape: a bounded window of chunks in a thread pool, results taken in order.
"""

from capsule_runtime.capsules.errors import CapsuleCorrupt, CapsuleWriteError, ChunkMissing
from capsule_runtime.capsules.manifest import known_chunks, manifest_sha256
from capsule_runtime.capsules.reader import (
    delete_task_capsules,
    list_manifests,
    read_manifest,
    restore_part,
    verify_capsule,
)
from capsule_runtime.capsules.writer import PartSource, write_capsule

__all__ = [
    "CapsuleCorrupt",
    "CapsuleWriteError",
    "ChunkMissing",
    "PartSource",
    "delete_task_capsules",
    "known_chunks",
    "list_manifests",
    "manifest_sha256",
    "read_manifest",
    "restore_part",
    "verify_capsule",
    "write_capsule",
]
