"""Capsules: the checkpoint of a task's container, as content-addressed chunks plus a manifest.

Layout in a capsule store (keys relative to the store's root; `keys.py`):

    <task_id>/chunks/<sha[:2]>/<sha256>.zst             one chunk: a zstd frame (content size and
                                                        checksum in the frame) of a piece of a
                                                        part; the name is the sha256 of the
                                                        UNcompressed bytes, so equal pieces are
                                                        stored once per task
    <task_id>/<attempt_id>/<sequence:06d>/manifest.json one capsule, written after all its chunks

A capsule has named parts (e.g. the CRIU checkpoint tar, the rootfs diff tar, the workspace tar,
the container config); each part is the ordered list of its chunks, and concatenating the
decompressed chunks gives the part's bytes back exactly. The manifest (`manifest.Manifest`)
carries per chunk its sha256, size and stored size; per capsule the totals, how much this
capsule uploaded versus reused, its parent capsule, free `meta` (CRIU/kernel/podman versions,
runner state) and timings. The gateway records a manifest's key and sha256; a restore reads the
manifest, checks that digest, then every chunk against its sha256. Because chunks are named by
content and tar parts are cut at member boundaries (`chunker`), the next checkpoint of the same
task uploads only the chunks that changed (incremental without CRIU pre-dumps). Deleting a task's
capsules is deleting `<task_id>/`.

With a KeyWrapper (`keys=`, crypto.py) a capsule is encrypted at rest: chunk ids become HMACs
under the task chain's data key, chunks are sealed with AES-256-GCM, and the manifest (format 2)
carries the data key wrapped; unencrypted (format 1) capsules stay readable.

Modules: errors, keys, crypto (KeyWrapper, LocalKeyWrapper, CapsuleKeyError), store
(CapsuleStore, FileStore, MemoryStore, open_store), s3store
(S3Store), manifest, chunker (tar_chunks, fixed_chunks), frames (zero chunks, raw zstd
frames for chunks that do not compress), parallel (ordered_map), writer
(write_capsule), reader (read_manifest, restore_part, verify_capsule), pipeline (both, in one
import), workspace_tar (tar_directory, extract_directory).

    store = open_store({"url": "s3://bucket/capsules", "s3": {...}})
    m = write_capsule(store, task_id=t, attempt_id=a, sequence=1, parent=previous,
                      parts=[PartSource("checkpoint", lambda: open(fifo, "rb"))])
    record(m.key, m.sha256)                      # then, on another instance:
    m = read_manifest(store, key, sha256=digest)
    with open(path, "wb") as sink:
        restore_part(store, m, "checkpoint", sink)
"""

from capsule_runtime.capsules.errors import (
    CapsuleCorrupt,
    CapsuleMissing,
    CapsuleStoreError,
    CapsuleWriteError,
    ChunkMissing,
)
from capsule_runtime.capsules.keys import chunk_key, manifest_key, task_prefix
from capsule_runtime.capsules.manifest import (
    ChunkRef,
    Manifest,
    Part,
    known_chunks,
    manifest_sha256,
)
from capsule_runtime.capsules.pipeline import (
    PartSource,
    delete_task_capsules,
    list_manifests,
    read_manifest,
    restore_part,
    verify_capsule,
    write_capsule,
)
from capsule_runtime.capsules.store import (
    CapsuleStore,
    FileStore,
    MemoryStore,
    S3Store,
    open_store,
)
from capsule_runtime.capsules.workspace_tar import (
    UnsafeArchive,
    extract_directory,
    tar_directory,
)

__all__ = [
    "CapsuleCorrupt",
    "CapsuleMissing",
    "CapsuleStore",
    "CapsuleStoreError",
    "CapsuleWriteError",
    "ChunkMissing",
    "ChunkRef",
    "FileStore",
    "Manifest",
    "MemoryStore",
    "Part",
    "PartSource",
    "S3Store",
    "UnsafeArchive",
    "chunk_key",
    "delete_task_capsules",
    "extract_directory",
    "known_chunks",
    "list_manifests",
    "manifest_key",
    "manifest_sha256",
    "open_store",
    "read_manifest",
    "restore_part",
    "tar_directory",
    "task_prefix",
    "verify_capsule",
    "write_capsule",
]
