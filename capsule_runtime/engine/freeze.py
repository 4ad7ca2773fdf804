"""The freeze gate: holds a container frozen after CRIU has dumped its memory, until tescape has
captured the task's files, so that a capsule's files and memory are from the same instant.

`podman container checkpoint --leave-running` resumes the processes as soon as CRIU is done; the
bind-mounted task files would then be captured while the task is already changing them again
(a counter appending to a file would restore with duplicate lines). CRIU runs an *action script*
at each step of a dump, and runc passes it a CRIU configuration file named by the container's
`org.criu.config` annotation. Every task container gets that annotation (PodmanEngine.create);
the configuration names `HOOK`, which, at `post-dump` (memory written, processes still frozen),
looks for `/run/tescape/freeze/<init pid>/`. If the directory exists, it creates `frozen` in it
and waits for `thaw` (at most `HOOK_TIMEOUT` seconds); otherwise it returns at once, so restores
and checkpoints nobody gates are unaffected.

    with FreezeGate(pid) as gate:
        start podman checkpoint ...
        gate.wait_frozen(alive=lambda: proc.poll() is None)   # memory dumped, task frozen
        ... capture the files ...
        gate.thaw()

The files are written by the agent (`ensure_installed`, idempotent) where they must be on every
instance: a restored container carries the annotation in its configuration.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

CRIU_DIR = Path("/etc/tescape/criu")
CONFIG = CRIU_DIR / "runc.conf"
HOOK = CRIU_DIR / "freeze-hook.sh"
GATES = Path("/run/tescape/freeze")
ANNOTATION = "org.criu.config"
HOOK_TIMEOUT = 600  # seconds a container stays frozen at most, whatever happens to the agent

HOOK_SCRIPT = f"""#!/bin/sh
# Written by tescape (capsule_runtime/engine/freeze.py); rewritten when it changes.
# CRIU action script: at post-dump, hold the frozen task until tescape has captured its files.
[ "$CRTOOLS_SCRIPT_ACTION" = "post-dump" ] || exit 0
gate="{GATES}/$CRTOOLS_INIT_PID"
[ -d "$gate" ] || exit 0
: > "$gate/frozen"
owner=$(cat "$gate/owner" 2>/dev/null)
end=$(( $(date +%s) + {HOOK_TIMEOUT} ))
# until thawed, the agent that opened the gate is gone, or HOOK_TIMEOUT wall-clock seconds
while [ ! -e "$gate/thaw" ] && [ "$(date +%s)" -lt "$end" ]; do
    if [ -n "$owner" ] && ! kill -0 "$owner" 2>/dev/null; then
        exit 0
    fi
    sleep 0.01
done
exit 0
"""
CONFIG_TEXT = f"# Written by tescape: runc passes this file to CRIU.\naction-script {HOOK}\n"


class FreezeTimeout(RuntimeError):
    pass


def ensure_installed(directory: Path = CRIU_DIR) -> Path:
    """Write the hook and the CRIU configuration (when missing or different); return the
    configuration's path, the value of the `org.criu.config` annotation."""
    directory.mkdir(parents=True, exist_ok=True)
    hook, config = directory / HOOK.name, directory / CONFIG.name
    script = HOOK_SCRIPT
    text = CONFIG_TEXT.replace(str(HOOK), str(hook))
    for path, content, mode in ((hook, script, 0o755), (config, text, 0o644)):
        if not path.exists() or path.read_text() != content:
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_text(content)
            tmp.chmod(mode)
            tmp.replace(path)
    return config


class FreezeGate:
    """The gate for one checkpoint of the container whose init process is `pid` (host PID)."""

    def __init__(self, pid: int, root: Path = GATES):
        self.dir = root / str(pid)
        self.frozen_at: float | None = None
        self.thawed_at: float | None = None

    def __enter__(self) -> FreezeGate:
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        (self.dir / "owner").write_text(str(os.getpid()))  # the hook stops waiting if we die
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.thaw()  # never leave a task frozen
        shutil.rmtree(self.dir, ignore_errors=True)

    def wait_frozen(self, alive: Callable[[], bool], timeout: float = 600.0) -> float:
        """Block until the hook says the task is frozen with its memory dumped; return the
        monotonic time of that. `alive()` false (the checkpoint command ended first) or the
        timeout raise FreezeTimeout."""
        deadline = time.monotonic() + timeout
        marker = self.dir / "frozen"
        while not marker.exists():
            if not alive():
                if marker.exists():
                    break
                raise FreezeTimeout("the checkpoint ended before the task was frozen")
            if time.monotonic() > deadline:
                raise FreezeTimeout(f"the task was not frozen within {timeout:g} s")
            time.sleep(0.005)
        self.frozen_at = time.monotonic()
        return self.frozen_at

    def thaw(self) -> None:
        if self.thawed_at is None and self.dir.is_dir():
            (self.dir / "thaw").touch()
            self.thawed_at = time.monotonic()
