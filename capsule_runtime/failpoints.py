"""Failpoints: named places in the agent where a test holds it, to fault the system at an exact
phase (kill the gateway while a restore or an output upload is under way) instead of hoping a
sleep lands there. The pattern of etcd's gofail and TiKV's fail-rs, reduced to files.

Off unless the agent's environment names a directory in `TESCAPE_FAILPOINTS` (the local provider
passes the gateway's environment to its agents). At `hold(name)`, when `<dir>/<name>` exists the
agent creates `<dir>/<name>.reached` and waits until `<dir>/<name>` is removed (at most
`timeout` seconds), then goes on. Nothing else changes: a failpoint never fails anything by
itself, and with the variable unset `hold` only reads the environment.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

ENV = "TESCAPE_FAILPOINTS"
log = logging.getLogger(__name__)

CAPSULE_STORED = "capsule_stored"  # a checkpoint durable (a move's copy stopped), unreported
RESTORING = "restoring"  # a restore attempt, before its capsule is fetched and restored
UPLOADING_OUTPUTS = "uploading_outputs"  # the executors done, before the outputs are uploaded


def hold(name: str, timeout: float = 600.0) -> None:
    """Wait here while the failpoint `name` is set (see the module's doc)."""
    root = os.environ.get(ENV)
    if not root:
        return
    gate = Path(root) / name
    if not gate.exists():
        return
    log.warning("failpoint %s: held until %s is removed", name, gate)
    (Path(root) / f"{name}.reached").touch()
    deadline = time.monotonic() + timeout
    while gate.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    log.warning("failpoint %s: released", name)
