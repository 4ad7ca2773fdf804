"""Task inputs and outputs by URL: bare paths, file://, http(s)://, s3://, and inline content.

The agent's whole use, per attempt:

    policy = StagingPolicy.create(settings.allowed_dirs, settings.block_private_networks)
    with Workspace.create(attempt_dir / "work", task, policy, S3Config.from_mapping(settings.s3),
                          on_progress=report) as ws:
        mounts = stage_inputs(task.get("inputs", []), ws)        # StagingError → SYSTEM_ERROR
        ... run the executors with `mounts`; stdio files at ws.create_file(...) (stdout,
            stderr) and ws.existing_file(...) (stdin), never through a link out of the tree ...
        outputs, notes = upload_outputs(task.get("outputs", []), ws)   # never raises

Modules: errors, policy (allowed_dirs, metadata and private addresses), urls, progress, storage
(the interface), local, web (http/https), s3, memory (tests), content, router (scheme →
storage), layout (container paths ↔ host tree, mounts), confined (files opened beneath the tree
without following a link), wildcard (POSIX patterns, path_prefix), workspace, pool, inputs,
outputs.
"""

from capsule_runtime.staging.errors import (
    AccessRefused,
    PathEscapes,
    SourceMissing,
    StagingCancelled,
    StagingError,
    UnsupportedScheme,
)
from capsule_runtime.staging.inputs import stage_inputs
from capsule_runtime.staging.layout import Layout, MountPoint
from capsule_runtime.staging.local import LocalStorage
from capsule_runtime.staging.memory import MemoryStorage
from capsule_runtime.staging.outputs import OutputReport, upload_outputs, upload_outputs_report
from capsule_runtime.staging.policy import StagingPolicy
from capsule_runtime.staging.progress import ProgressCallback, TransferProgress
from capsule_runtime.staging.router import StorageRouter
from capsule_runtime.staging.s3 import S3Config, S3Storage
from capsule_runtime.staging.storage import Stat, Storage
from capsule_runtime.staging.web import HttpStorage
from capsule_runtime.staging.workspace import Mounts, Workspace, check_shared_mounts

__all__ = [
    "AccessRefused",
    "HttpStorage",
    "Layout",
    "LocalStorage",
    "MemoryStorage",
    "MountPoint",
    "Mounts",
    "OutputReport",
    "PathEscapes",
    "ProgressCallback",
    "S3Config",
    "S3Storage",
    "SourceMissing",
    "StagingCancelled",
    "StagingError",
    "StagingPolicy",
    "Stat",
    "Storage",
    "StorageRouter",
    "TransferProgress",
    "UnsupportedScheme",
    "Workspace",
    "check_shared_mounts",
    "stage_inputs",
    "upload_outputs",
    "upload_outputs_report",
]
