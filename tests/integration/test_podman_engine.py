"""PodmanEngine against the real podman (runc, tescape's containers.conf) with locally built images;
the lifecycle contract runs over FakeEngine too, so the fake keeps podman's semantics."""

from __future__ import annotations

import resource
import struct
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from capsule_runtime.engine import (
    TASK_LABEL,
    ContainerEngine,
    ContainerNotFound,
    ContainerSpec,
    ContainerState,
    EngineError,
    FakeEngine,
    ImageNotFound,
    Mount,
    Network,
    PodmanEngine,
    WaitTimeout,
    images,
    launcher,
)
from capsule_runtime.engine.podman import PIDS_LIMIT
from capsule_runtime.host import podman as host_podman
from tests.fixtures.containers import _container_leak_check, _podman_engine  # noqa: F401
from tests.fixtures.images import (  # noqa: F401
    BUSYBOX,
    _busybox_image,
    _debian_bash_image,
)

MiB = 1024 * 1024


def spec(image: str, *argv: str, tmp: Path | None = None, **kw: object) -> ContainerSpec:
    """A spec with a fresh task id, no network, and (with `tmp`) stdout/stderr files there."""
    if tmp is not None:
        kw.setdefault("stdout", tmp / "stdout")
        kw.setdefault("stderr", tmp / "stderr")
    kw.setdefault("network", Network.NONE)
    return ContainerSpec(image=image, argv=argv, task_id=f"t-{uuid.uuid4().hex[:12]}", **kw)  # type: ignore[arg-type]


@pytest.fixture
def engine(podman_engine: PodmanEngine) -> Iterator[PodmanEngine]:
    """The session engine; containers a test leaves are removed after it."""
    before = {c.id for c in podman_engine.list_containers()}
    yield podman_engine
    for info in podman_engine.list_containers():
        if info.id not in before:
            podman_engine.remove(info.id)


def run_to_end(engine: ContainerEngine, s: ContainerSpec, timeout: float = 60) -> int:
    cid = engine.run(s)
    try:
        return engine.wait(cid, timeout=timeout)
    finally:
        engine.remove(cid)


# --- basics -------------------------------------------------------------------------------------


def test_echo(engine: PodmanEngine, busybox_image: str, tmp_path: Path) -> None:
    assert run_to_end(engine, spec(busybox_image, "echo", "hello", "world", tmp=tmp_path)) == 0
    assert (tmp_path / "stdout").read_text() == "hello world\n"
    assert (tmp_path / "stderr").read_text() == ""


def test_nonzero_exit_code(engine: PodmanEngine, busybox_image: str) -> None:
    assert run_to_end(engine, spec(busybox_image, "sh", "-c", "exit 3")) == 3


def test_env_and_workdir(engine: PodmanEngine, busybox_image: str, tmp_path: Path) -> None:
    env = {"GREETING": "hello world", "TRICKY": "a=b;c 'd' $HOME"}
    s = spec(
        busybox_image,
        "sh",
        "-c",
        'echo "$GREETING"; echo "$TRICKY"; pwd',
        tmp=tmp_path,
        env=env,
        workdir="/tmp",
    )
    assert run_to_end(engine, s) == 0
    assert (tmp_path / "stdout").read_text() == "hello world\na=b;c 'd' $HOME\n/tmp\n"


def test_stdin_stdout_stderr_files(
    engine: PodmanEngine, busybox_image: str, tmp_path: Path
) -> None:
    data = "line one\nline two\n" + "x" * 100_000 + "\n"
    (tmp_path / "in.txt").write_text(data)
    s = spec(
        busybox_image,
        "sh",
        "-c",
        "cat; echo to-stderr >&2; exit 5",
        tmp=tmp_path,
        stdin=tmp_path / "in.txt",
    )
    assert run_to_end(engine, s) == 5
    assert (tmp_path / "stdout").read_text() == data
    assert (tmp_path / "stderr").read_text() == "to-stderr\n"


def test_stdout_and_stderr_to_one_file(
    engine: PodmanEngine, busybox_image: str, tmp_path: Path
) -> None:
    both = tmp_path / "both.log"
    s = spec(
        busybox_image, "sh", "-c", "echo one; echo two >&2; echo three", stdout=both, stderr=both
    )
    assert run_to_end(engine, s) == 0
    assert both.read_text() == "one\ntwo\nthree\n"


def test_output_files_are_truncated(
    engine: PodmanEngine, busybox_image: str, tmp_path: Path
) -> None:
    (tmp_path / "stdout").write_text("old content that must go\n")
    assert run_to_end(engine, spec(busybox_image, "echo", "new", tmp=tmp_path)) == 0
    assert (tmp_path / "stdout").read_text() == "new\n"


def test_command_not_found_is_exit_127(
    engine: PodmanEngine, busybox_image: str, tmp_path: Path
) -> None:
    assert run_to_end(engine, spec(busybox_image, "no-such-command", tmp=tmp_path)) == 127
    assert "no-such-command: command not found" in (tmp_path / "stderr").read_text()


def test_start_failure_raises_and_leaves_no_container(
    engine: PodmanEngine, busybox_image: str
) -> None:
    """Without stdio files there is no launcher: runc itself fails, and `run` cleans up."""
    s = spec(busybox_image, "no-such-command")
    with pytest.raises(EngineError) as err:
        engine.run(s)
    assert "executable file not found" in err.value.stderr
    assert all(c.task_id != s.task_id for c in engine.list_containers())


# --- mounts, limits, network --------------------------------------------------------------------


def test_bind_mounts_rw_and_ro(engine: PodmanEngine, busybox_image: str, tmp_path: Path) -> None:
    work, ref, logs = tmp_path / "work", tmp_path / "ref", tmp_path / "logs"
    for d in (work, ref, logs):
        d.mkdir()
    (ref / "genome.fa").write_text(">chr1\nACGT\n")
    mounts = (Mount(work, "/work"), Mount(ref, "/ref", read_only=True))
    script = "cat /ref/genome.fa > /work/copy.fa && mkdir -p /work/sub && echo ok > /work/sub/f"
    s = spec(busybox_image, "sh", "-c", script, tmp=logs, mounts=mounts)
    assert run_to_end(engine, s) == 0
    assert (work / "copy.fa").read_text() == ">chr1\nACGT\n"
    assert (work / "sub" / "f").read_text() == "ok\n"
    denied = spec(busybox_image, "sh", "-c", "echo x > /ref/new", tmp=logs, mounts=mounts)
    assert run_to_end(engine, denied) != 0
    assert "Read-only file system" in (logs / "stderr").read_text()
    assert not (ref / "new").exists()


def test_memory_and_cpu_limits_visible_in_cgroup(
    engine: PodmanEngine, busybox_image: str, tmp_path: Path
) -> None:
    script = (  # cgroup v1 (this VM: hybrid) or v2
        "cd /sys/fs/cgroup; "
        "cat memory/memory.limit_in_bytes 2>/dev/null || cat memory.max; "
        "if [ -f cpu/cpu.cfs_quota_us ]; then "
        "echo $(cat cpu/cpu.cfs_quota_us) $(cat cpu/cpu.cfs_period_us); "
        "else cat cpu.max; fi"
    )
    s = spec(busybox_image, "sh", "-c", script, tmp=tmp_path, memory_bytes=96 * MiB, cpu_cores=0.5)
    assert run_to_end(engine, s) == 0, (tmp_path / "stderr").read_text()
    memory, cpu = (tmp_path / "stdout").read_text().splitlines()
    assert int(memory) == 96 * MiB
    quota, period = (int(x) for x in cpu.split())
    assert quota / period == pytest.approx(0.5)


def test_update_changes_the_limits_of_a_running_container(
    engine: PodmanEngine, busybox_image: str, tmp_path: Path
) -> None:
    """In place: a container limited to 96 MiB is let to 192 MiB and 2 cores while it runs
    (read inside the container, a fresh read after the update)."""
    script = (
        "cd /sys/fs/cgroup; while [ ! -e /tmp/go ]; do sleep 0.05; done; "
        "cat memory/memory.limit_in_bytes 2>/dev/null || cat memory.max; "
        "if [ -f cpu/cpu.cfs_quota_us ]; then "
        "echo $(cat cpu/cpu.cfs_quota_us) $(cat cpu/cpu.cfs_period_us); "
        "else cat cpu.max; fi"
    )
    s = spec(busybox_image, "sh", "-c", script, tmp=tmp_path, memory_bytes=96 * MiB, cpu_cores=0.5)
    cid = engine.run(s)
    try:
        engine.update(cid, cpu_cores=2, memory_bytes=192 * MiB)
        engine.cli.run("exec", cid, "touch", "/tmp/go")
        assert engine.wait(cid, timeout=60) == 0, (tmp_path / "stderr").read_text()
    finally:
        engine.remove(cid)
    memory, cpu = (tmp_path / "stdout").read_text().splitlines()
    assert int(memory) == 192 * MiB
    quota, period = (int(x) for x in cpu.split())
    assert quota / period == pytest.approx(2)
    with pytest.raises(ContainerNotFound):
        engine.update(cid, cpu_cores=1)


def test_no_limits_means_unlimited(
    engine: PodmanEngine, busybox_image: str, tmp_path: Path
) -> None:
    script = "cd /sys/fs/cgroup; cat cpu/cpu.cfs_quota_us 2>/dev/null || cut -d' ' -f1 cpu.max"
    assert run_to_end(engine, spec(busybox_image, "sh", "-c", script, tmp=tmp_path)) == 0
    assert (tmp_path / "stdout").read_text().strip() in ("-1", "max")


def test_out_of_memory_is_reported(
    engine: PodmanEngine, busybox_image: str, tmp_path: Path
) -> None:
    hog = "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived"
    s = spec(busybox_image, "sh", "-c", hog, tmp=tmp_path, memory_bytes=32 * MiB)
    cid = engine.run(s)
    try:
        assert engine.wait(cid, timeout=60) == 137
        assert engine.inspect(cid).oom_killed
    finally:
        engine.remove(cid)


def test_network_modes(engine: PodmanEngine, busybox_image: str, tmp_path: Path) -> None:
    none = spec(busybox_image, "ip", "-o", "link", tmp=tmp_path, network=Network.NONE)
    assert run_to_end(engine, none) == 0
    links = [line.split(":")[1].strip() for line in (tmp_path / "stdout").read_text().splitlines()]
    assert links == ["lo"]
    bridge = spec(busybox_image, "ip", "-o", "-4", "addr", tmp=tmp_path, network=Network.BRIDGE)
    assert run_to_end(engine, bridge) == 0
    assert "eth0" in (tmp_path / "stdout").read_text()


# --- lifecycle: wait, stop, inspect, remove, list -------------------------------------------------


def test_stop_a_long_sleep(engine: PodmanEngine, busybox_image: str) -> None:
    """PID 1 without a SIGTERM handler ignores it: stop kills after the grace period."""
    cid = engine.run(spec(busybox_image, "sleep", "600"))
    try:
        with pytest.raises(WaitTimeout):
            engine.wait(cid, timeout=0.5)
        assert engine.inspect(cid).state is ContainerState.RUNNING
        started = time.monotonic()
        engine.stop(cid, grace=1)
        assert time.monotonic() - started < 15
        assert engine.wait(cid, timeout=10) == 137
        assert engine.inspect(cid).state is ContainerState.EXITED
    finally:
        engine.remove(cid)


def test_stop_is_graceful_when_the_task_handles_sigterm(
    engine: PodmanEngine, busybox_image: str, tmp_path: Path
) -> None:
    script = "trap 'echo got TERM; exit 143' TERM; echo ready; while :; do sleep 0.1; done"
    cid = engine.run(spec(busybox_image, "sh", "-c", script, tmp=tmp_path))
    try:
        deadline = time.monotonic() + 20
        while "ready" not in (tmp_path / "stdout").read_text():
            assert time.monotonic() < deadline, "container did not start"
            time.sleep(0.05)
        started = time.monotonic()
        engine.stop(cid, grace=30)
        assert time.monotonic() - started < 10, "SIGTERM was not delivered"
        assert engine.wait(cid, timeout=10) == 143
        assert (tmp_path / "stdout").read_text() == "ready\ngot TERM\n"
    finally:
        engine.remove(cid)


def test_inspect_and_list(engine: PodmanEngine, busybox_image: str) -> None:
    s = spec(busybox_image, "sleep", "600", labels={"io.tescape.attempt": "a1"})
    cid = engine.create(s)
    try:
        info = engine.inspect(cid)
        assert (info.id, info.state, info.exit_code, info.pid) == (
            cid,
            ContainerState.CREATED,
            None,
            None,
        )
        assert info.image == busybox_image
        assert info.labels[TASK_LABEL] == s.task_id and info.task_id == s.task_id
        assert info.labels["io.tescape.attempt"] == "a1"
        assert info.name.startswith(f"tescape-{s.task_id}-")
        engine.start(cid)
        running = engine.inspect(cid)
        assert running.state is ContainerState.RUNNING and running.pid
        assert cid in {c.id for c in engine.list_containers()}
        assert engine.inspect(info.name).id == cid  # a name works as well as an id
    finally:
        engine.remove(cid)
    with pytest.raises(ContainerNotFound):
        engine.inspect(cid)
    engine.remove(cid)  # removing twice is fine
    assert cid not in {c.id for c in engine.list_containers()}


def test_missing_container_errors_are_named(engine: PodmanEngine) -> None:
    for call in (engine.inspect, engine.start, engine.wait, engine.stop):
        with pytest.raises(ContainerNotFound) as err:
            call("tescape-no-such-container")
        assert "no such container" in err.value.stderr


def test_list_containers_sees_only_its_own_labels(engine: PodmanEngine, busybox_image: str) -> None:
    other = PodmanEngine(engine.cli, labels={"io.tescape.test-session": "someone-else"})
    cid = other.create(spec(busybox_image, "true"))
    try:
        assert cid in {c.id for c in other.list_containers()}
        assert cid not in {c.id for c in engine.list_containers()}
    finally:
        other.remove(cid)


def test_ensure_image(engine: PodmanEngine, busybox_image: str) -> None:
    image_id = engine.ensure_image(busybox_image)  # present: no pull
    assert len(image_id) == 64 and engine.ensure_image(busybox_image) == image_id
    with pytest.raises(ImageNotFound) as err:
        engine.ensure_image("127.0.0.1:9/tescape-test/absent:1")  # nothing listens on port 9
    assert "connection refused" in err.value.stderr


def test_create_needs_a_local_image(engine: PodmanEngine) -> None:
    with pytest.raises(ImageNotFound):
        engine.create(spec("localhost/tescape-test/absent:1", "true"))


@pytest.mark.parametrize("image", ["--privileged", "-v/:/host", "--rm"])
def test_an_image_that_looks_like_a_flag_is_never_read_as_one(
    engine: PodmanEngine, image: str
) -> None:
    """The image follows "--": podman refuses it as a reference instead of taking it as an
    option (without "--", `--privileged` would be an option and the next argument the image)."""
    before = {c.id for c in engine.list_containers()}
    for call in (engine.has_image, engine.ensure_image):
        with pytest.raises(EngineError) as err:
            call(image)
        assert "reference" in err.value.stderr
    with pytest.raises(EngineError) as err:
        engine.create(spec(image, "true"))
    assert "reference" in err.value.stderr and "--" in err.value.argv
    assert err.value.argv[err.value.argv.index("--") + 1] == image
    assert {c.id for c in engine.list_containers()} == before


# --- the Debian image ---------------------------------------------------------------------------


def test_debian_image_runs_bash_and_ps(
    engine: PodmanEngine, debian_bash_image: str, tmp_path: Path
) -> None:
    s = spec(debian_bash_image, "bash", "-c", "ps aux; echo bash=$BASH_VERSION", tmp=tmp_path)
    assert run_to_end(engine, s) == 0, (tmp_path / "stderr").read_text()
    out = (tmp_path / "stdout").read_text()
    assert out.splitlines()[0].split()[:2] == ["USER", "PID"]
    assert "ps aux" in out and "bash=5." in out


def test_launcher_runs_the_image_command_not_a_busybox_applet(
    engine: PodmanEngine, debian_bash_image: str, tmp_path: Path
) -> None:
    """Debian's static busybox prefers its applets; the launcher must exec the image's `ls`."""
    s = spec(debian_bash_image, "ls", "--version", tmp=tmp_path)
    assert run_to_end(engine, s) == 0, (tmp_path / "stderr").read_text()
    assert "GNU coreutils" in (tmp_path / "stdout").read_text()
    argv0 = spec(debian_bash_image, "bash", "-c", 'echo "$0"', tmp=tmp_path)
    assert run_to_end(engine, argv0) == 0
    assert (tmp_path / "stdout").read_text() == "bash\n"


# --- the lifecycle contract, over the fake and the real engine -----------------------------------


@pytest.fixture(params=["fake", "podman"])
def any_engine(request: pytest.FixtureRequest) -> tuple[ContainerEngine, str]:
    """(engine, busybox image); the fake needs no podman."""
    if request.param == "fake":
        return FakeEngine(images=[BUSYBOX.tag]), BUSYBOX.tag
    return request.getfixturevalue("engine"), request.getfixturevalue("busybox_image")


def test_contract_exit_code_and_removal(any_engine: tuple[ContainerEngine, str]) -> None:
    engine, image = any_engine
    s = spec(image, "sh", "-c", "exit 3")
    cid = engine.run(s)
    assert engine.wait(cid, timeout=30) == 3
    assert engine.wait(cid, timeout=0) == 3  # an exited container answers at once
    info = engine.inspect(cid)
    assert (info.state, info.exit_code, info.task_id) == (ContainerState.EXITED, 3, s.task_id)
    assert cid in {c.id for c in engine.list_containers()}
    engine.remove(cid)
    with pytest.raises(ContainerNotFound):
        engine.inspect(cid)
    engine.remove(cid)


def test_contract_stop_running(any_engine: tuple[ContainerEngine, str]) -> None:
    engine, image = any_engine
    cid = engine.run(spec(image, "sleep", "600"))
    try:
        with pytest.raises(WaitTimeout):
            engine.wait(cid, timeout=0.2)
        engine.stop(cid, grace=0)
        assert engine.wait(cid, timeout=10) == 137
        engine.stop(cid)  # stopping an exited container is fine
    finally:
        engine.remove(cid)


def test_contract_stdout_file(any_engine: tuple[ContainerEngine, str], tmp_path: Path) -> None:
    engine, image = any_engine
    assert run_to_end(engine, spec(image, "echo", "hi", tmp=tmp_path)) == 0
    assert (tmp_path / "stdout").read_text() == "hi\n"


# --- the private containers.conf, and the pure parts (no podman needed) --------------------------


def test_private_config_is_in_effect(
    engine: PodmanEngine, busybox_image: str, tmp_path: Path
) -> None:
    info = engine.cli.run("info", "--format", "{{.Host.OCIRuntime.Name}} {{.Host.EventLogger}}")
    assert info.stdout.split() == ["runc", "file"]
    s = spec(busybox_image, "sh", "-c", "ulimit -n; ulimit -Hn; ulimit -u", tmp=tmp_path)
    assert run_to_end(engine, s) == 0
    nofile_hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nofile = host_podman.nofile_limit(nofile_hard)
    assert nofile < nofile_hard
    nproc = host_podman.nproc_limit(resource.getrlimit(resource.RLIMIT_NPROC)[1])
    assert (tmp_path / "stdout").read_text().split() == [str(nofile), str(nofile), str(nproc)]


def test_rendered_config() -> None:
    text = host_podman.render_conf(nofile_hard=20000, nproc_hard=96365, systemd=False)
    assert 'runtime = "runc"' in text and 'cgroup_manager = "cgroupfs"' in text
    assert 'default_ulimits = ["nofile=17500:17500", "nproc=32768:32768"]' in text
    assert 'events_logger = "file"' in text
    assert 'cgroup_manager = "systemd"' in host_podman.render_conf(1024, 100, systemd=True)
    assert host_podman.nofile_limit(1024) == 512 and host_podman.nproc_limit(100) == 100
    assert host_podman.nofile_limit(resource.RLIM_INFINITY) < 1048576
    assert host_podman.nproc_limit(resource.RLIM_INFINITY) == 32768


def test_launcher_script() -> None:
    s = ContainerSpec(
        image="i", argv=("prog", "a b"), task_id="t", stdout=Path("/o"), stderr=Path("/o")
    )
    plan = launcher.plan(s, Path("/bin/busybox"))
    assert plan.argv[:3] == (launcher.BUSYBOX, "sh", "-c") and plan.argv[4:] == ("prog", "a b")
    assert plan.argv[3].startswith(f"exec >{launcher.STDOUT} 2>&1\n")
    assert [m.container for m in plan.mounts] == [launcher.BUSYBOX, launcher.STDOUT]
    s2 = ContainerSpec(image="i", argv=("p",), task_id="t", stdin=Path("/i"), stderr=Path("/e"))
    assert launcher.script(s2).startswith(f"exec <{launcher.STDIN} 2>{launcher.STDERR}\n")
    assert not launcher.needs_launcher(ContainerSpec(image="i", argv=("p",), task_id="t"))


def _elf(p_type: int) -> bytes:
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    header = struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, 0, 64, 0, 0, 64, 56, 1, 0, 0, 0)
    return ident + header + struct.pack("<II", p_type, 0) + bytes(48)


def test_static_executable_check(tmp_path: Path) -> None:
    (tmp_path / "static").write_bytes(_elf(1))  # PT_LOAD only
    (tmp_path / "dynamic").write_bytes(_elf(3))  # PT_INTERP
    (tmp_path / "text").write_text("#!/bin/sh\n")
    assert launcher.is_static_executable(tmp_path / "static")
    assert not launcher.is_static_executable(tmp_path / "dynamic")
    assert not launcher.is_static_executable(tmp_path / "text")
    assert not launcher.is_static_executable(tmp_path / "absent")
    assert not launcher.is_static_executable(Path(sys.executable).resolve())


def test_debian_mirror_from_deb822_and_one_line_sources(tmp_path: Path) -> None:
    d822 = tmp_path / "a" / "sources.list.d"
    d822.mkdir(parents=True)
    (d822 / "debian.sources").write_text(
        "Types: deb\n# a comment\nURIs: http://mirror.invalid/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb\nURIs: http://mirror.invalid/debian-security\nSuites: bookworm-security\n"
    )
    src = images.host_debian_mirror(tmp_path / "a")
    assert src.uri == "http://mirror.invalid/debian"
    assert src.keyring == Path("/usr/share/keyrings/debian-archive-keyring.gpg")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "sources.list").write_text(
        "deb http://mirror.invalid/debian-security bookworm-security main\n"
        "deb [signed-by=/k/vendor.gpg] http://vendor.invalid/repo stable main\n"
        "deb http://mirror.invalid/docker bookworm stable\n"
        "deb [arch=amd64 signed-by=/k/debian-archive-keyring.gpg] http://mirror.invalid/debian"
        " bookworm main contrib\n"
    )
    assert images.host_debian_mirror(tmp_path / "b") == images.AptSource(
        "http://mirror.invalid/debian", Path("/k/debian-archive-keyring.gpg")
    )
    with pytest.raises(EngineError):
        images.host_debian_mirror(tmp_path / "empty")


def test_recipe_hash_changes_with_the_recipe() -> None:
    a = images.debian_recipe("localhost/x:1")
    assert a.digest() == images.debian_recipe("localhost/x:1").digest()
    assert a.digest() != images.debian_recipe("localhost/x:1", packages=("procps", "gzip")).digest()
    assert a.slug == "localhost_x_1"


def test_containers_are_hardened(engine: PodmanEngine, busybox_image: str, tmp_path: Path) -> None:
    """no_new_privs set, a pids limit, no CAP_SETFCAP/CAP_SETPCAP in the bounding set (issue 10),
    read from the container's own /proc/self/status."""
    script = "grep -E '^(NoNewPrivs|CapBnd)' /proc/self/status; cat /sys/fs/cgroup/pids/pids.max"
    s = spec(busybox_image, "sh", "-c", f"{script} 2>/dev/null || true", tmp=tmp_path)
    assert run_to_end(engine, s) == 0, (tmp_path / "stderr").read_text()
    fields = dict(
        line.split(":", 1) for line in (tmp_path / "stdout").read_text().splitlines() if ":" in line
    )
    assert fields["NoNewPrivs"].strip() == "1"
    bounding = int(fields["CapBnd"].strip(), 16)
    for bit in (8, 31):  # CAP_SETPCAP, CAP_SETFCAP
        assert not bounding & (1 << bit), hex(bounding)
    assert bounding & (1 << 0)  # CAP_CHOWN stays: tasks chown their own files
    assert (tmp_path / "stdout").read_text().splitlines()[-1] == str(PIDS_LIMIT)
