"""Preflight findings (capsule_runtime.doctor) and the parsing behind the CRIU host step
(capsule_runtime.host.criu), with fake inputs: no CRIU, podman or root needed."""

from __future__ import annotations

import json
import resource
from collections.abc import Sequence
from pathlib import Path

import pytest

from capsule_runtime import doctor
from capsule_runtime.doctor import CgroupMode, CommandResult, Finding, Status
from capsule_runtime.host import criu as host_criu

# --- versions ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Version: 4.2.1\n", (4, 2, 1)),
        ("Version: 4.2\nGitID: v4.2-12-gdeadbeef\n", (4, 2)),
        ("Version: 3.17.1\n", (3, 17, 1)),
        ("4.2.1", (4, 2, 1)),
        ("3.17.1-2+deb12u2", (3, 17, 1)),
        ("1:4.2.1-1+b1", (4, 2, 1)),
        ("4.2~rc1-1", (4, 2)),
        ("6.18.44-fc-v769", (6, 18, 44)),
        ("1.1.5+ds1", (1, 1, 5)),
        ("", None),
        ("garbage", None),
    ],
)
def test_parse_version(text: str, expected: tuple[int, ...] | None) -> None:
    assert host_criu.parse_version(text) == expected


@pytest.mark.parametrize(
    ("version", "ok"),
    [
        ((4, 2), True),
        ((4, 2, 0), True),
        ((4, 2, 1), True),
        ((4, 10), True),
        ((5,), True),
        ((4, 1, 9), False),
        ((4,), False),
        ((3, 17, 1), False),
        (None, False),
    ],
)
def test_at_least_4_2(version: tuple[int, ...] | None, ok: bool) -> None:
    assert host_criu.at_least(version, (4, 2)) is ok


POLICY_BOOKWORM = """criu:
  Installed: (none)
  Candidate: 3.17.1-2+deb12u2
  Version table:
     3.17.1-2+deb12u2 500
        500 http://archive.example/debian bookworm/main amd64 Packages
"""


def test_policy_candidate() -> None:
    assert host_criu.policy_candidate(POLICY_BOOKWORM) == "3.17.1-2+deb12u2"
    assert host_criu.policy_candidate("criu:\n  Installed: (none)\n  Candidate: (none)\n") is None
    assert host_criu.policy_candidate("") is None


# --- apt sources and the .dsc ------------------------------------------------------------------

DEBIAN_SOURCES = """Types: deb
# a comment
URIs: http://archive.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://archive.example/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://disabled.example/debian
Suites: bookworm
Components: main
Enabled: no
"""


def test_archive_source_from_deb822() -> None:
    sources = host_criu.sources_from_deb822(DEBIAN_SOURCES)
    assert len(sources) == 2  # the disabled one is left out
    chosen = host_criu.archive_source(sources, "bookworm")
    assert chosen.uris == ("http://archive.example/debian",)
    entry = host_criu.render_source_entry(chosen, "sid")
    assert entry == (
        "Types: deb-src\n"
        "URIs: http://archive.example/debian\n"
        "Suites: sid\n"
        "Components: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )


def test_archive_source_keeps_an_inline_key() -> None:
    text = (
        "Types: deb\nURIs: http://archive.example/debian\nSuites: bookworm\nComponents: main\n"
        "Signed-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n abc\n"
        " -----END PGP PUBLIC KEY BLOCK-----\n"
    )
    source = host_criu.archive_source(host_criu.sources_from_deb822(text), "bookworm")
    entry = host_criu.render_source_entry(source, "sid")
    assert "Signed-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n abc\n" in entry
    assert host_criu.parse_deb822(entry)[0]["signed-by"].endswith("END PGP PUBLIC KEY BLOCK-----")


def test_archive_source_from_one_line_sources_list() -> None:
    text = (
        "# comment\n"
        "deb http://security.example/debian-security bookworm-security main\n"
        "deb [arch=amd64 signed-by=/etc/apt/keyrings/k.gpg] http://archive.example/debian "
        "bookworm main contrib\n"
        "deb-src http://archive.example/debian bookworm main\n"
    )
    source = host_criu.archive_source(host_criu.sources_from_one_line(text), "bookworm")
    assert source.uris == ("http://archive.example/debian",)
    assert source.signed_by == "/etc/apt/keyrings/k.gpg"
    assert "Signed-By: /etc/apt/keyrings/k.gpg" in host_criu.render_source_entry(source, "sid")


def test_archive_source_missing_is_an_error() -> None:
    only_security = host_criu.sources_from_deb822(DEBIAN_SOURCES.split("\n\n")[1])
    with pytest.raises(host_criu.CriuSetupError, match="bookworm"):
        host_criu.archive_source(only_security, "bookworm")


def test_system_sources_reads_both_formats(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text("deb http://a.example/debian bookworm main\n")
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEBIAN_SOURCES)
    (tmp_path / "sources.list.d" / "x.list.disabled").write_text("deb http://no.example x main\n")
    uris = [s.uris[0] for s in host_criu.system_sources(tmp_path)]
    assert uris == [
        "http://a.example/debian",
        "http://archive.example/debian",
        "http://archive.example/debian-security",
    ]


DSC = """-----BEGIN PGP SIGNED MESSAGE-----
Hash: SHA512

Format: 3.0 (quilt)
Source: criu
Version: 4.2.1-1
Checksums-Sha256:
 29ec0ee09e296479aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa 1038700 criu_4.2.1.orig.tar.xz
 bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb 20000 criu_4.2.1-1.debian.tar.xz
Files:
 0123 1038700 criu_4.2.1.orig.tar.xz

-----BEGIN PGP SIGNATURE-----

iQIzBAEBCgAdFiEE
-----END PGP SIGNATURE-----
"""


def test_parse_dsc() -> None:
    package = host_criu.parse_dsc(DSC)
    assert package.version == "4.2.1-1"
    assert package.orig_tarball() == "criu_4.2.1.orig.tar.xz"
    assert package.sha256["criu_4.2.1.orig.tar.xz"].startswith("29ec0ee09e296479")
    assert host_criu.parse_version(package.version) == (4, 2, 1)


def test_cached_binaries_checks_the_digest(tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.write_bytes(b"\x7fELF pretend")
    host_criu.store_in_cache(good, "4.2.1", tmp_path / "cache")
    host_criu.store_in_cache(good, "4.1", tmp_path / "cache")  # too old: ignored
    tampered = host_criu.store_in_cache(good, "4.3", tmp_path / "cache")
    tampered.write_bytes(b"something else")
    found = host_criu.cached_binaries(tmp_path / "cache")
    assert found == [((4, 2, 1), tmp_path / "cache" / "4.2.1" / "criu")]


# --- doctor: pure checks -----------------------------------------------------------------------

MOUNTS_HYBRID = """tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
"""
MOUNTS_V2 = "proc /proc proc rw 0 0\ncgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n"
MOUNTS_V1 = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\ncgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n"


@pytest.mark.parametrize(
    ("mounts", "mode"),
    [
        (MOUNTS_HYBRID, CgroupMode.HYBRID),
        (MOUNTS_V2, CgroupMode.V2),
        (MOUNTS_V1, CgroupMode.V1),
        ("cgroup2 /run/cg cgroup2 rw 0 0\n", CgroupMode.V2),
        ("proc /proc proc rw 0 0\n", CgroupMode.NONE),
        ("", CgroupMode.NONE),
    ],
)
def test_cgroup_mode(mounts: str, mode: CgroupMode) -> None:
    assert doctor.cgroup_mode(mounts) is mode


def test_cgroup_finding() -> None:
    assert doctor.cgroup_finding(MOUNTS_HYBRID).status is Status.OK
    assert doctor.cgroup_finding(MOUNTS_HYBRID).detail.startswith("hybrid")
    assert doctor.cgroup_finding("").status is Status.FAIL


def test_kernel_finding() -> None:
    assert doctor.kernel_finding("6.18.44-fc-v769").status is Status.OK
    assert "CRIU ≥ 4.2" in doctor.kernel_finding("6.16.0").detail
    assert "CRIU" not in doctor.kernel_finding("6.1.0-13-amd64").detail
    assert doctor.kernel_finding("weird").status is Status.WARN


def test_nofile_and_root_findings() -> None:
    assert doctor.nofile_finding((20000, 20000)) == Finding(
        "RLIMIT_NOFILE", Status.OK, "soft 20000, hard 20000"
    )
    assert doctor.nofile_finding((1024, 4096)).status is Status.WARN
    unlimited = doctor.nofile_finding((1024, resource.RLIM_INFINITY))
    assert unlimited.status is Status.OK and "hard unlimited" in unlimited.detail
    assert doctor.root_finding(0).status is Status.OK
    assert doctor.root_finding(1000).status is Status.WARN


# --- doctor: checks over a fake command runner -------------------------------------------------


class FakeRunner:
    """Answers by argv; unknown programs are "not installed" (127)."""

    def __init__(self, answers: dict[tuple[str, ...], CommandResult]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, argv: Sequence[str]) -> CommandResult:
        self.calls.append(tuple(argv))
        return self.answers.get(tuple(argv), CommandResult(127, f"{argv[0]}: not found"))


def healthy_host() -> FakeRunner:
    answers = {
        ("criu", "--version"): CommandResult(0, "Version: 4.2.1\n"),
        ("criu", "check"): CommandResult(
            0, "Warn (criu/kerndat.c:1290): kdat cache\nLooks good.\n"
        ),
        ("criu", "check", "--feature", "mem_dirty_track"): CommandResult(
            1, "Warn (criu/cr-check.c:824): Dirty tracking is OFF.\n"
        ),
        ("criu", "check", "--feature", "uffd"): CommandResult(0, "uffd is supported\n"),
        ("criu", "check", "--feature", "uffd-noncoop"): CommandResult(0, "supported\n"),
        ("podman", "--version"): CommandResult(0, "podman version 4.3.1\n"),
        ("runc", "--version"): CommandResult(0, "runc version 1.1.5+ds1\ncommit: x\n"),
    }
    return FakeRunner(answers)


def test_criu_findings_on_a_healthy_host() -> None:
    run = healthy_host()
    assert doctor.criu_version_finding(run) == Finding("criu", Status.OK, "4.2.1")
    assert doctor.criu_check_finding(run, is_root=True) == Finding(
        "criu check", Status.OK, "Looks good."
    )
    features = {f.name: f for f in doctor.criu_feature_findings(run, is_root=True)}
    soft_dirty = features["criu feature soft-dirty"]
    assert soft_dirty.status is Status.WARN
    assert "pre-dump" in soft_dirty.detail and "capsule store" in soft_dirty.detail
    assert features["criu feature uffd"].status is Status.OK
    assert features["criu feature uffd-noncoop"].status is Status.OK


def test_old_or_missing_criu_fails() -> None:
    old = healthy_host()
    old.answers[("criu", "--version")] = CommandResult(0, "Version: 4.1.1\n")
    finding = doctor.criu_version_finding(old)
    assert finding.status is Status.FAIL and "4.1.1 < 4.2" in finding.detail
    missing = FakeRunner({})
    assert doctor.criu_version_finding(missing).status is Status.FAIL
    assert doctor.criu_check_finding(missing, is_root=True).status is Status.FAIL
    assert {f.status for f in doctor.criu_feature_findings(missing, is_root=True)} == {Status.WARN}


def test_criu_check_failure_and_non_root() -> None:
    run = healthy_host()
    run.answers[("criu", "check")] = CommandResult(1, "Error: something\nbad kernel\n")
    assert doctor.criu_check_finding(run, is_root=True) == Finding(
        "criu check", Status.FAIL, "exit 1: bad kernel"
    )
    calls_before = len(run.calls)
    assert doctor.criu_check_finding(run, is_root=False).status is Status.WARN
    assert all(f.status is Status.WARN for f in doctor.criu_feature_findings(run, is_root=False))
    assert len(run.calls) == calls_before, "nothing that needs root is run without it"


def test_podman_and_runc_versions_and_absence() -> None:
    run = healthy_host()
    assert doctor.tool_version_finding("podman", run) == Finding("podman", Status.OK, "4.3.1")
    assert doctor.tool_version_finding("runc", run) == Finding("runc", Status.OK, "1.1.5")
    absent = doctor.tool_version_finding("podman", FakeRunner({}))
    assert absent.status is Status.WARN and "not installed" in absent.detail


def test_run_checks_and_rendering() -> None:
    findings = doctor.run_checks(healthy_host())
    names = [f.name for f in findings]
    assert names[:2] == ["kernel", "criu"]
    assert {"criu check", "podman", "runc", "cgroups", "RLIMIT_NOFILE", "root"} <= set(names)
    data = doctor.findings_as_dict(findings)
    assert json.loads(json.dumps(data)) == data
    assert data["status"] in {"ok", "warn", "fail"}
    assert {"name", "status", "detail"} == set(data["findings"][0])
    text = doctor.render_findings(findings)
    assert text.splitlines()[0].startswith("kernel")
    assert text.splitlines()[-1].split() == ["overall", data["status"].upper()]


def test_overall_status() -> None:
    ok, warn, fail = (Finding("x", s, "") for s in (Status.OK, Status.WARN, Status.FAIL))
    assert doctor.overall_status([ok]) is Status.OK
    assert doctor.overall_status([ok, warn]) is Status.WARN
    assert doctor.overall_status([warn, fail, ok]) is Status.FAIL
    assert doctor.overall_status([]) is Status.OK
