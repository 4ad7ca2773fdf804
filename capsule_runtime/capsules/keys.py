"""Object keys of the capsule layout, relative to a store's root (see the package docstring).

<task_id>/chunks/<sha[:2]>/<sha>.zst                 a chunk: one zstd frame, shared by every
                                                    capsule of the task
<task_id>/<attempt_id>/<sequence:06d>/manifest.json one capsule's manifest, written last
"""

from __future__ import annotations

import re

CHUNKS_DIR = "chunks"
MANIFEST_NAME = "manifest.json"
_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,199}$")
_SHA = re.compile(r"^[0-9a-f]{64}$")
TMP_MARK = ".~tmp."  # a FileStore's partial files start so: never a key component, never listed


def check_id(value: str, what: str = "id") -> str:
    """`value` if it is a safe single key component: letters, digits, '_', '.', '-', ≤ 200."""
    if not _ID.match(value) or value in (".", ".."):
        raise ValueError(f"invalid {what} for a capsule key: {value!r}")
    return value


def check_sha(sha: str) -> str:
    if not _SHA.match(sha):
        raise ValueError(f"invalid sha256 (64 lowercase hex digits expected): {sha!r}")
    return sha


def task_prefix(task_id: str) -> str:
    return f"{check_id(task_id, 'task id')}/"


def chunk_key(task_id: str, sha: str) -> str:
    check_sha(sha)
    return f"{task_prefix(task_id)}{CHUNKS_DIR}/{sha[:2]}/{sha}.zst"


def attempt_prefix(task_id: str, attempt_id: str) -> str:
    if attempt_id == CHUNKS_DIR:
        raise ValueError(f"attempt id {attempt_id!r} is reserved")
    return f"{task_prefix(task_id)}{check_id(attempt_id, 'attempt id')}/"


def capsule_prefix(task_id: str, attempt_id: str, sequence: int) -> str:
    if not 0 <= sequence <= 999_999:
        raise ValueError(f"capsule sequence out of range 0..999999: {sequence}")
    return f"{attempt_prefix(task_id, attempt_id)}{sequence:06d}/"


def manifest_key(task_id: str, attempt_id: str, sequence: int) -> str:
    return f"{capsule_prefix(task_id, attempt_id, sequence)}{MANIFEST_NAME}"


def is_manifest_key(key: str) -> bool:
    return key.endswith(f"/{MANIFEST_NAME}") and f"/{CHUNKS_DIR}/" not in key


def check_key(key: str) -> str:
    """`key` if it is a relative, normalised, '/'-separated path; ValueError otherwise."""
    parts = key.split("/")
    if (
        not key
        or "\\" in key
        or "\0" in key
        or any(p in ("", ".", "..") or p.startswith(TMP_MARK) for p in parts)
    ):
        raise ValueError(f"invalid capsule store key: {key!r}")
    return key
