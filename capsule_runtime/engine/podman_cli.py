"""Runs the podman CLI with tescape's private containers.conf: argv lists, a time limit on every
call, failures raised as EngineError subclasses carrying podman's stderr."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from capsule_runtime.engine.errors import (
    ContainerNotFound,
    EngineError,
    EngineTimeout,
    EngineUnavailable,
    ImageNotFound,
    RegistryAuthFailed,
)
from capsule_runtime.host.podman import CONTAINERS_CONF

DEFAULT_TIMEOUT = 60.0

_NO_CONTAINER = re.compile(r"no such container|no container with (name or )?id", re.IGNORECASE)
_NO_IMAGE = re.compile(
    r"image not known|no such image|repository .* not found|manifest unknown|"
    r"initializing source .*(connection refused|no such host|not found)",
    re.IGNORECASE,
)
_AUTH = re.compile(
    r"unauthorized|authentication required|incorrect username or password|"
    r"access to the resource is denied",
    re.IGNORECASE,
)


class PodmanCli:
    """One podman executable and configuration. `run("ps", "-a")` → CompletedProcess."""

    def __init__(
        self,
        executable: str = "podman",
        containers_conf: Path = CONTAINERS_CONF,
        timeout: float = DEFAULT_TIMEOUT,
        extra_env: Mapping[str, str] | None = None,
        prefix: Sequence[str] = (),
    ) -> None:
        """`prefix`: what podman runs under, e.g. nsenter into an instance's mount namespace."""
        found = shutil.which(executable)
        if found is None:
            raise EngineUnavailable(
                f"{executable} not found: run `python3 -m capsule_runtime.host.setup` as root"
            )
        if not Path(containers_conf).is_file():
            raise EngineUnavailable(
                f"{containers_conf} missing: run `python3 -m capsule_runtime.host.setup` as root"
            )
        self.executable = found
        self.containers_conf = Path(containers_conf)
        self.prefix = list(prefix)
        self.timeout = timeout
        self.env = {**os.environ, **(extra_env or {}), "CONTAINERS_CONF": str(containers_conf)}

    def run(
        self,
        *args: str,
        timeout: float | None = None,
        input: str | None = None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """`timeout`: seconds (default: the CLI's), or math.inf for none. `cwd` is where conmon
        lands: conmon 2.1.6 on cgroup v1 writes its `oom` marker file into its working directory,
        so it is "/" unless a caller needs otherwise (see PodmanEngine.start)."""
        argv = [*self.prefix, self.executable, *args]
        limit = self.timeout if timeout is None else timeout
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                env=self.env,
                timeout=None if math.isinf(limit) else limit,
                input=input,
                stdin=None if input is not None else subprocess.DEVNULL,
                cwd=cwd or "/",
            )
        except subprocess.TimeoutExpired as exc:
            stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
            raise EngineTimeout(
                f"podman {args[0] if args else ''} took longer than {limit:g} s",
                argv=argv,
                stderr=stderr,
            ) from None
        if done.returncode != 0:
            raise classify(argv, done.returncode, done.stderr)
        return done

    def popen(self, *args: str) -> subprocess.Popen[str]:
        """Start a podman command (stdout and stderr piped, text); the caller waits for it."""
        return subprocess.Popen(
            [*self.prefix, self.executable, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=self.env,
            cwd="/",
        )


def classify(argv: Sequence[str], returncode: int, stderr: str) -> EngineError:
    """The most specific EngineError for a failed podman command."""
    verb = argv[1] if len(argv) > 1 else "podman"
    message = f"podman {verb} failed"
    kind: type[EngineError] = EngineError
    if _NO_CONTAINER.search(stderr):
        kind = ContainerNotFound
    elif verb in ("pull", "push") and _AUTH.search(stderr):
        kind = RegistryAuthFailed
    elif _NO_IMAGE.search(stderr):
        kind = ImageNotFound
    return kind(message, argv=argv, returncode=returncode, stderr=stderr)
