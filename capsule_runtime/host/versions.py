"""This machine's kernel, CRIU and podman versions, as a restore cares about them
(capsule_runtime.protocol.messages.HostVersions): every capsule records those it was taken
with, the agent registers its own, and a restore goes only where they allow it
(gateway.scheduler.compat; the agent checks again before it unpacks anything)."""

from __future__ import annotations

import functools
import platform
import re
import subprocess

from capsule_runtime.protocol.messages import HostVersions


def _version(argv: list[str], pattern: str) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    found = re.search(pattern, done.stdout + done.stderr)
    return found.group(1) if found else ""


@functools.cache
def host_versions() -> HostVersions:
    """Read once per process: they do not change under a running agent."""
    return HostVersions(
        kernel=platform.release(),
        criu=_version(["criu", "--version"], r"Version:\s*(\S+)"),
        podman=_version(["podman", "--version"], r"version\s+(\S+)"),
    )
