"""Moving a checkpointed container under another cgroup parent as it is restored.

A container of a local instance lives under that instance's cgroup (`/tescape/<instance id>`,
gateway/providers/cgroups.py), and `podman container restore --import` puts it back under the
cgroup recorded in the archive — the old instance's — with no option to change it (podman 4.3).
So the restoring agent rewrites the parent in the archive before the import: in podman's
config.dump and spec.dump and in CRIU's images (cgroup.img, the mount points of the container's
cgroup file system), never in memory pages or the container's own files. Instance ids all have
one length, so every rewrite keeps the archive's sizes and offsets.
"""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

ENV = "TESCAPE_CGROUP_PARENT"  # the agent's cgroup parent, set by the local provider
# with and without the leading slash (CRIU's cgroup.img keeps paths relative)
PARENT = re.compile(rb"tescape/i-[0-9a-z]{26}")
MAX_MEMBER = 64 << 20  # metadata and CRIU images are small; pages are skipped by name anyway


def rewritable(name: str) -> bool:
    """The archive members that name cgroup paths: podman's metadata and CRIU's images other
    than memory pages."""
    base = name.rsplit("/", 1)[-1]
    if name in ("config.dump", "spec.dump"):
        return True
    return name.startswith("checkpoint/") and base.endswith(".img") and not base.startswith("pages")


def parent_bytes(parent: str) -> bytes:
    """`parent` as it is written into the archive; ValueError for a parent of another shape (its
    length would move the archive's members)."""
    new = parent.lstrip("/").encode()
    if PARENT.fullmatch(new) is None:
        raise ValueError(f"not a local instance's cgroup parent: {parent!r}")
    return new


def rewrite(data: bytes, new: bytes) -> tuple[bytes, int]:
    """One member's bytes with every local-instance cgroup parent replaced by `new` (from
    parent_bytes: same length), and how many were replaced."""
    return PARENT.subn(new, data)


def retarget(archive: Path, parent: str) -> int:
    """Rewrite, in place, every local-instance cgroup parent in `archive` (an uncompressed
    checkpoint tar) to `parent`; returns how many were rewritten. ValueError for a parent of
    another shape (its length would move the archive's members). A restore served through a
    FIFO rewrites the members as they stream instead (capsule_runtime/restore_fifo.py)."""
    new = parent_bytes(parent)
    count = 0
    with tarfile.open(archive, "r:") as tar, open(archive, "r+b") as f:
        for member in tar:
            if not member.isfile() or member.size > MAX_MEMBER or not rewritable(member.name):
                continue
            f.seek(member.offset_data)
            data = f.read(member.size)
            patched, n = rewrite(data, new)
            if n and patched != data:
                f.seek(member.offset_data)
                f.write(patched)
                count += n
    return count
