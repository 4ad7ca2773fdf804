"""Preflight checks of a host that runs and migrates tasks: findings, never exceptions. Stdlib only.

Each check returns `Finding`s (ok | warn | fail, with a detail a person can act on). The agent on a
worker sends `findings_as_dict(run_checks())` to the gateway when it registers; `tescape doctor`
prints them. What is checked: the kernel, CRIU (≥ 4.2, `criu check`, the optional kernel features
incremental and lazy checkpoints rely on), podman and runc, the cgroup mode, RLIMIT_NOFILE, root.

Checks take their inputs as arguments (a command runner, /proc/self/mounts text, limits, euid), so
they can be tested without the host they describe.
"""

from __future__ import annotations

import os
import platform
import re
import resource
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from capsule_runtime.host.criu import MIN_VERSION, at_least, format_version, parse_version

# Below this hard RLIMIT_NOFILE a worker is too tight: containers get a limit below the host's
# (see capsule_runtime/host/podman.py) and CRIU needs spare descriptors above a restored task's.
NOFILE_HARD_WANTED = 8192
# CRIU 4.1 cannot dump INET sockets from this kernel on; 4.2 can.
KERNEL_NEEDS_CRIU_42 = (6, 16)
SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Finding:
    """One check's result. `name` is stable (the gateway keys on it); `detail` is for people."""

    name: str
    status: Status
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": str(self.status), "detail": self.detail}


@dataclass(frozen=True)
class CommandResult:
    returncode: int  # 127: the program is not installed
    output: str  # stdout and stderr together


CommandRunner = Callable[[Sequence[str]], CommandResult]


def run_command(argv: Sequence[str], timeout: float = 60) -> CommandResult:
    """Run a program; a missing program or a timeout is a result, not an exception."""
    program = shutil.which(argv[0]) or shutil.which(argv[0], path=os.pathsep.join(SBIN_DIRS))
    if program is None:
        return CommandResult(127, f"{argv[0]}: not found")
    try:
        out = subprocess.run(
            [program, *argv[1:]],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return CommandResult(124, f"{argv[0]}: no answer in {timeout:.0f} s")
    except OSError as err:
        return CommandResult(126, f"{argv[0]}: {err}")
    return CommandResult(out.returncode, out.stdout or "")


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else "(no output)"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


# --- kernel ------------------------------------------------------------------------------------


def kernel_finding(release: str | None = None) -> Finding:
    release = release or platform.release()
    version = parse_version(release)
    if version is None:
        return Finding("kernel", Status.WARN, f"{release}: cannot read a version from it")
    detail = release
    if at_least(version, KERNEL_NEEDS_CRIU_42):
        detail += f" (≥ {format_version(KERNEL_NEEDS_CRIU_42)}: CRIU ≥ 4.2 needed for INET sockets)"
    return Finding("kernel", Status.OK, detail)


# --- CRIU --------------------------------------------------------------------------------------


def criu_version_finding(run: CommandRunner = run_command) -> Finding:
    out = run(["criu", "--version"])
    wanted = format_version(MIN_VERSION)
    fix = "run `python3 -m capsule_runtime.host.setup --profile serve` as root"
    if out.returncode == 127:
        return Finding("criu", Status.FAIL, f"not installed; need ≥ {wanted}: {fix}")
    version = parse_version(out.output) if out.returncode == 0 else None
    if version is None:
        return Finding("criu", Status.FAIL, f"`criu --version` failed: {_last_line(out.output)}")
    if not at_least(version):
        return Finding(
            "criu",
            Status.FAIL,
            f"{format_version(version)} < {wanted} (4.1 cannot dump INET sockets on kernels "
            f"≥ 6.16; bookworm's 3.17 does not start on 6.18): {fix}",
        )
    return Finding("criu", Status.OK, format_version(version))


def criu_check_finding(run: CommandRunner = run_command, is_root: bool | None = None) -> Finding:
    if not (os.geteuid() == 0 if is_root is None else is_root):
        return Finding("criu check", Status.WARN, "skipped: `criu check` needs root")
    out = run(["criu", "check"])
    if out.returncode == 127:
        return Finding("criu check", Status.FAIL, "skipped: criu is not installed")
    if out.returncode == 0:
        verdict = "Looks good." if "Looks good" in out.output else _last_line(out.output)
        return Finding("criu check", Status.OK, verdict)
    return Finding("criu check", Status.FAIL, f"exit {out.returncode}: {_last_line(out.output)}")


@dataclass(frozen=True)
class CriuFeature:
    """An optional kernel feature `criu check --feature NAME` probes, and what its absence means."""

    name: str  # the finding's name
    criu_name: str  # the name `criu check --feature` takes
    without: str


CRIU_FEATURES = (
    CriuFeature(
        "soft-dirty",
        "mem_dirty_track",
        "no soft-dirty memory tracking: no CRIU pre-dump (podman --pre-checkpoint), so every "
        "checkpoint dumps all memory; incremental checkpoints are done at the capsule store "
        "instead (unchanged chunks are not stored again)",
    ),
    CriuFeature(
        "uffd",
        "uffd",
        "no userfaultfd: no lazy-pages restore; a task resumes only once all its memory is in",
    ),
    CriuFeature(
        "uffd-noncoop",
        "uffd-noncoop",
        "no non-cooperative userfaultfd: lazy-pages restore (post-copy migration) cannot follow "
        "a task that forks or remaps memory; restores copy all memory first",
    ),
)


def criu_feature_findings(
    run: CommandRunner = run_command, is_root: bool | None = None
) -> list[Finding]:
    root = os.geteuid() == 0 if is_root is None else is_root
    findings = []
    for feature in CRIU_FEATURES:
        name = f"criu feature {feature.name}"
        if not root:
            findings.append(Finding(name, Status.WARN, "skipped: `criu check` needs root"))
            continue
        out = run(["criu", "check", "--feature", feature.criu_name])
        if out.returncode == 127:
            findings.append(Finding(name, Status.WARN, "skipped: criu is not installed"))
        elif out.returncode == 0:
            findings.append(Finding(name, Status.OK, f"{feature.criu_name} is supported"))
        else:
            findings.append(Finding(name, Status.WARN, feature.without))
    return findings


# --- container runtime -------------------------------------------------------------------------


def tool_version_finding(name: str, run: CommandRunner = run_command) -> Finding:
    """podman / runc: the first line of `NAME --version`; absent is a warning (installed by the
    host setup's podman step), not a failure."""
    out = run([name, "--version"])
    if out.returncode == 127:
        return Finding(
            name, Status.WARN, "not installed: `python3 -m capsule_runtime.host.setup` adds it"
        )
    if out.returncode != 0:
        return Finding(name, Status.WARN, f"`{name} --version` failed: {_last_line(out.output)}")
    version = parse_version(re.sub(r"^\D*", "", _first_line(out.output)))
    return Finding(name, Status.OK, format_version(version) if version else _first_line(out.output))


# --- cgroups -----------------------------------------------------------------------------------


class CgroupMode(StrEnum):
    V1 = "v1"
    V2 = "v2"
    HYBRID = "hybrid"
    NONE = "none"


def cgroup_mode(mounts: str) -> CgroupMode:
    """The cgroup mode from /proc/self/mounts text: v2 (unified at /sys/fs/cgroup), hybrid (v1
    controllers plus a v2 hierarchy, usually /sys/fs/cgroup/unified), v1, or none."""
    v1 = v2 = v2_at_root = False
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        mountpoint, fstype = fields[1], fields[2]
        if fstype == "cgroup2":
            v2 = True
            v2_at_root = v2_at_root or mountpoint == "/sys/fs/cgroup"
        elif fstype == "cgroup":
            v1 = True
    if v2_at_root and not v1:
        return CgroupMode.V2
    if v1 and v2:
        return CgroupMode.HYBRID
    if v1:
        return CgroupMode.V1
    return CgroupMode.V2 if v2 else CgroupMode.NONE


CGROUP_NOTES = {
    CgroupMode.V2: "unified hierarchy",
    CgroupMode.HYBRID: "v1 controllers + a v2 hierarchy; runc works, crun fails",
    CgroupMode.V1: "v1 controllers only; runc works, crun fails",
}


def cgroup_finding(mounts: str | None = None) -> Finding:
    if mounts is None:
        try:
            with open("/proc/self/mounts") as f:
                mounts = f.read()
        except OSError as err:
            return Finding("cgroups", Status.WARN, f"cannot read /proc/self/mounts: {err}")
    mode = cgroup_mode(mounts)
    if mode is CgroupMode.NONE:
        return Finding("cgroups", Status.FAIL, "no cgroup filesystem mounted: no container can run")
    return Finding("cgroups", Status.OK, f"{mode}: {CGROUP_NOTES[mode]}")


# --- limits and privileges ---------------------------------------------------------------------


def _limit(value: int) -> str:
    return "unlimited" if value == resource.RLIM_INFINITY else str(value)


def nofile_finding(limits: tuple[int, int] | None = None) -> Finding:
    soft, hard = limits or resource.getrlimit(resource.RLIMIT_NOFILE)
    detail = f"soft {_limit(soft)}, hard {_limit(hard)}"
    if hard != resource.RLIM_INFINITY and hard < NOFILE_HARD_WANTED:
        return Finding(
            "RLIMIT_NOFILE",
            Status.WARN,
            f"{detail}: below {NOFILE_HARD_WANTED}; tasks with many open files may not restore "
            "(CRIU needs descriptors above the task's own)",
        )
    return Finding("RLIMIT_NOFILE", Status.OK, detail)


def root_finding(euid: int | None = None) -> Finding:
    euid = os.geteuid() if euid is None else euid
    if euid == 0:
        return Finding("root", Status.OK, "running as root")
    return Finding(
        "root",
        Status.WARN,
        f"running as uid {euid}: checkpoint/restore (CRIU) and rootful podman need root; "
        "this host can run the gateway but not tasks",
    )


# --- all of them -------------------------------------------------------------------------------


def run_checks(run: CommandRunner = run_command) -> list[Finding]:
    """Every check, in a fixed order."""
    is_root = os.geteuid() == 0
    findings = [kernel_finding(), criu_version_finding(run)]
    findings.append(criu_check_finding(run, is_root))
    findings += criu_feature_findings(run, is_root)
    findings += [
        tool_version_finding("podman", run),
        tool_version_finding("runc", run),
        cgroup_finding(),
        nofile_finding(),
        root_finding(),
    ]
    return findings


def overall_status(findings: Iterable[Finding]) -> Status:
    statuses = {f.status for f in findings}
    for status in (Status.FAIL, Status.WARN):
        if status in statuses:
            return status
    return Status.OK


def findings_as_dict(findings: Sequence[Finding] | None = None) -> dict[str, Any]:
    """JSON-ready: {"status": worst, "findings": [{name, status, detail}, ...]}; runs the checks
    when none are given."""
    if findings is None:
        findings = run_checks()
    return {
        "status": str(overall_status(findings)),
        "findings": [f.as_dict() for f in findings],
    }


def render_findings(findings: Sequence[Finding]) -> str:
    """Plain text: one line per finding, then the overall status."""
    width = max((len(f.name) for f in findings), default=0)
    lines = [f"{f.name:<{width}}  {f.status.upper():<4}  {f.detail}" for f in findings]
    lines.append(f"{'overall':<{width}}  {overall_status(findings).upper()}")
    return "\n".join(lines)
