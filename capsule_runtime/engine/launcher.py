"""The in-container launcher that connects a task's stdin, stdout and stderr to host files.

OCI runtimes give a container's process the stdio of conmon (pipes into one merged log), so
separate stdout/stderr files and a stdin file need a redirection inside the container — and task
images need not have a shell. Like podman's own `--init` (which bind-mounts catatonit), tescape
bind-mounts one static binary, Debian's `busybox-static`, at /.tescape/busybox, and the files at
/.tescape/{stdin,stdout,stderr}. Its `sh` opens them and then `exec`s the task's argv, so the task
is PID 1 with the files as fds 0-2: regular files on bind mounts, which CRIU can checkpoint.

Debian's static busybox prefers its own applets, even for `exec ls`; the launcher therefore
resolves argv[0] through the container's PATH itself and execs the absolute path, keeping argv[0]
as given (`exec -a`). A command not found exits 127, as with podman.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from capsule_runtime.engine.spec import ContainerSpec, Mount

DEFAULT_BUSYBOX = Path("/bin/busybox")
DIR = "/.tescape"
BUSYBOX = f"{DIR}/busybox"
STDIN = f"{DIR}/stdin"
STDOUT = f"{DIR}/stdout"
STDERR = f"{DIR}/stderr"

_RESOLVE_AND_EXEC = """\
set -f
p=$0
case $p in
*/*) ;;
*)
  found=
  IFS=:
  for d in ${PATH:-/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}; do
    d=${d:-.}
    if [ -f "$d/$p" ] && [ -x "$d/$p" ]; then found=$d/$p; break; fi
  done
  unset IFS
  if [ -z "$found" ]; then echo "tescape: $p: command not found" >&2; exit 127; fi
  p=$found
  ;;
esac
exec -a "$0" "$p" "$@"
"""


@dataclass(frozen=True)
class Launch:
    """How to start `spec.argv` with its stdio redirected: the full argv and the extra mounts."""

    argv: tuple[str, ...]
    mounts: tuple[Mount, ...]


def needs_launcher(spec: ContainerSpec) -> bool:
    return any(p is not None for p in (spec.stdin, spec.stdout, spec.stderr))


def script(spec: ContainerSpec) -> str:
    redirects = []
    if spec.stdin is not None:
        redirects.append(f"<{STDIN}")
    if spec.stdout is not None:
        redirects.append(f">{STDOUT}")
    if spec.stderr is not None:
        same = spec.stdout is not None and Path(spec.stderr) == Path(spec.stdout)
        redirects.append("2>&1" if same else f"2>{STDERR}")
    return f"exec {' '.join(redirects)}\n{_RESOLVE_AND_EXEC}"


def plan(spec: ContainerSpec, busybox: Path = DEFAULT_BUSYBOX) -> Launch:
    mounts = [Mount(busybox, BUSYBOX, read_only=True)]
    if spec.stdin is not None:
        mounts.append(Mount(Path(spec.stdin), STDIN, read_only=True))
    if spec.stdout is not None:
        mounts.append(Mount(Path(spec.stdout), STDOUT))
    if spec.stderr is not None and spec.stderr != spec.stdout:
        mounts.append(Mount(Path(spec.stderr), STDERR))
    argv = (BUSYBOX, "sh", "-c", script(spec), *spec.argv)
    return Launch(argv=argv, mounts=tuple(mounts))


def is_static_executable(path: Path) -> bool:
    """An ELF file without a program interpreter (PT_INTERP): it runs in any image."""
    try:
        with open(path, "rb") as f:
            ident = f.read(16)
            if len(ident) < 16 or ident[:4] != b"\x7fELF":
                return False
            is64, order = ident[4] == 2, "<" if ident[5] == 1 else ">"
            head = f.read(48 if is64 else 36)
            if is64:
                phoff = struct.unpack_from(order + "Q", head, 16)[0]
                phentsize, phnum = struct.unpack_from(order + "HH", head, 38)
            else:
                phoff = struct.unpack_from(order + "I", head, 12)[0]
                phentsize, phnum = struct.unpack_from(order + "HH", head, 26)
            for i in range(phnum):
                f.seek(phoff + i * phentsize)
                (p_type,) = struct.unpack(order + "I", f.read(4))
                if p_type == 3:  # PT_INTERP
                    return False
            return True
    except (OSError, struct.error):
        return False
