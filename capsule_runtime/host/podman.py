"""Host step: podman + runc from Debian and tescape's private containers.conf. Stdlib only.

tescape never edits the system's container configuration. It writes its own file
(`CONTAINERS_CONF`) and points podman at it with the `CONTAINERS_CONF` environment variable, which
makes podman read that file instead of /usr/share/containers and /etc/containers. What it sets,
and why (each learnt on a Firecracker VM with Debian bookworm, kernel 6.18, hybrid cgroups v1):

  runtime = "runc"          crun fails on hybrid cgroups; runc 1.1 works (and CRIU drives it)
  default_ulimits nofile    rootful podman asks for nofile=1048576, and root here lacks
                            CAP_SYS_RESOURCE, so runc fails with "error setting rlimit type 7:
                            operation not permitted". We use the host's hard limit minus a headroom
                            (CRIU's service descriptors sit above a restored task's own ones).
  default_ulimits nproc     podman lowers its own RLIMIT_NPROC to 32768 at start and then asks for
                            more than that for the container ("rlimit type 6"): min(hard, 32768).
                            PodmanEngine passes both per container as well, recomputed for its
                            own process (a worker may run with lower limits than this setup).
  cgroup_manager            "systemd" only when systemd is PID 1, else "cgroupfs".
  events_logger = "file"    no journald on a worker without systemd.
  pids_limit = 0            a task owns its instance; podman's default (2048) counts threads too.

Not installed, because rootful podman on a kernel with native overlayfs does not use them:
uidmap, fuse-overlayfs, slirp4netns (rootless only), catatonit (`--init` is not used).
`busybox-static` is installed: its static /bin/busybox is bind-mounted into task containers to
connect stdin/stdout/stderr to files (see capsule_runtime/engine/launcher.py).
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

PACKAGES = ["podman", "runc", "busybox-static"]
# Only needed to build images locally (tests; sites without a registry).
IMAGE_TOOLS = ["debootstrap"]

CONTAINERS_CONF = Path("/etc/tescape/containers.conf")
PODMAN_NPROC_CEILING = 32768


def nofile_limit(hard: int) -> int:
    """Open-file limit for containers: below the host's hard limit, leaving headroom for CRIU."""
    if hard == resource.RLIM_INFINITY or hard <= 0:
        hard = 1048576
    headroom = max(1024, hard // 8)
    return max(hard // 2, hard - headroom)


def nproc_limit(hard: int) -> int:
    if hard == resource.RLIM_INFINITY or hard <= 0:
        return PODMAN_NPROC_CEILING
    return min(hard, PODMAN_NPROC_CEILING)


def systemd_is_init() -> bool:
    return os.path.isdir("/run/systemd/system")


def render_conf(nofile_hard: int, nproc_hard: int, systemd: bool) -> str:
    nofile = nofile_limit(nofile_hard)
    nproc = nproc_limit(nproc_hard)
    manager = "systemd" if systemd else "cgroupfs"
    return (
        "# Written by `python3 -m capsule_runtime.host.setup` (capsule_runtime/host/podman.py).\n"
        "# tescape's private podman configuration, used through CONTAINERS_CONF. Do not edit:\n"
        "# the next setup run rewrites it.\n"
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        "pids_limit = 0\n"
        "\n"
        "[engine]\n"
        'runtime = "runc"\n'
        f'cgroup_manager = "{manager}"\n'
        'events_logger = "file"\n'
    )


def desired_conf() -> str:
    nofile_hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc_hard = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    return render_conf(nofile_hard, nproc_hard, systemd_is_init())


def write_conf(path: Path = CONTAINERS_CONF) -> bool:
    """Write the configuration if it differs; True when the file changed."""
    text = desired_conf()
    if path.exists() and path.read_text() == text:
        return False
    if os.geteuid() != 0:
        sys.exit(f"[tescape setup] {path} must be (re)written: run this as root")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return True


def check_podman(path: Path = CONTAINERS_CONF) -> None:
    """Podman reads the file and chose runc: fails loudly otherwise."""
    env = dict(os.environ, CONTAINERS_CONF=str(path))
    out = subprocess.run(
        ["podman", "info", "--format", "{{.Host.OCIRuntime.Name}}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    if out.returncode != 0 or out.stdout.strip() != "runc":
        sys.exit(f"[tescape setup] podman with {path} is not usable: {out.stderr or out.stdout}")


def prepare(install: Callable[[list[str]], None]) -> None:
    """The setup step: packages (through `install`), then the configuration."""
    install(PACKAGES)
    if shutil.which("podman") is None:
        sys.exit("[tescape setup] podman is not installed")
    if write_conf():
        print(f"[tescape setup] wrote {CONTAINERS_CONF}", flush=True)
        check_podman()
