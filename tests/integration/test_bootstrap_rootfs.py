"""An EC2 instance's user-data, run for real in a Debian 12 root file system (debootstrap).

In a chroot: the script the aws provider rendered for a launched instance installs the agent from
the wheel the gateway serves (fetched with the one-time token, checked against its sha256) into a
fresh virtualenv, writes the systemd unit and the root-only token file, and the agent started
exactly as that unit says registers with the gateway, trading the token for its own credential.
podman, runc and CRIU are stand-ins there that only say their versions, and the script stops
before `systemctl` (TESCAPE_BOOTSTRAP_NO_SYSTEMD).

Booted under its own systemd (PID 1 in a podman container on this machine's network), with no
stand-ins: the script's host setup installs Debian's podman and runc and a CRIU ≥ 4.2 (this
machine's cached build, as `tescape aws bake` would have it; without one it builds it), systemd
starts the agent from the unit the script wrote, the agent registers with the real versions, and
when the gateway retires the idle instance the agent exits cleanly and the unit's ExecStopPost
powers the machine off.

What is not the real thing: pip reads a wheelhouse made on this machine instead of an index
(tests/fixtures/rootfs.py), and the machine is a container, not an EC2 instance."""

from __future__ import annotations

import contextlib
import re
import shlex
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from capsule_runtime.host import criu as criu_host
from capsule_runtime.protocol.messages import version_key
from gateway.store.fleet import Instance, InstanceState
from tests.fixtures.aws_world import AwsWorld
from tests.fixtures.moto_server import MotoServer
from tests.fixtures.rootfs import Root, booted, debian_root, usable, wheelhouse
from tests.fixtures.serving import wsgi_app
from tests.fixtures.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

STANDINS = {
    "podman": "podman version 4.3.1",
    "runc": "runc version 1.1.5",
    "criu": "Version: 4.2",
}


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Root]:
    with debian_root(tmp_path / "rootfs") as r:
        yield r


@pytest.fixture
def world(tmp_path: Path, moto: MotoServer) -> Iterator[AwsWorld]:
    if usable() is not None:
        pytest.skip(str(usable()))
    (wheel,) = wheelhouse().glob("tescape-*.whl")
    w = AwsWorld(tmp_path / "gateway", moto, agent_wheel=wheel)
    yield w
    w.close()


def stand_ins(root: Root) -> None:
    for name, version in STANDINS.items():
        path = root.file(f"/usr/local/bin/{name}")
        path.write_text(f'#!/bin/sh\n[ "$1" = --version ] && echo {shlex.quote(version)}\nexit 0\n')
        path.chmod(0o755)


def exec_start(unit: str) -> list[str]:
    """The agent's command line as the systemd unit has it."""
    found = re.search(r"^ExecStart=(.*?)\n(?=\S)", unit.replace("\\\n", " "), re.M | re.S)
    assert found is not None, unit
    return shlex.split(found.group(1))


def registered(world: AwsWorld, inst: Instance, agent_log: Callable[[], str]) -> None:
    """Wait for the instance's agent to register; a timeout shows the end of its log."""

    def ready() -> bool:
        now = world.fleet.instance(inst.id)
        return now is not None and now.state is InstanceState.READY

    try:
        wait_for("the agent from the user-data to register", ready, timeout=120)
    except AssertionError:
        raise AssertionError(agent_log()[-4000:]) from None


def test_the_user_data_installs_and_starts_an_agent_that_registers(
    world: AwsWorld, root: Root, tmp_path: Path
) -> None:
    agent = None
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(wsgi_app(world.app))
        stack.callback(lambda: agent is not None and Root.stop(agent))
        world.provider = world.new_provider(url)
        world.scheduler = world.new_scheduler(world.provider)
        world.submit()
        inst = world.launching()
        script = world.user_data(inst)
        stand_ins(root)
        root.file("/root/user-data").write_text(script)

        boot = root.run(
            ["bash", "/root/user-data"], root.env(TESCAPE_BOOTSTRAP_NO_SYSTEMD="1"), timeout=900
        )
        log = root.file("/var/log/tescape-bootstrap.log").read_text()
        assert boot.returncode == 0, log[-4000:] + boot.stderr[-2000:]
        assert "tescape bootstrap done" in log

        served = world.services.agent_wheel
        assert served is not None
        venv = root.file("/opt/tescape/venv")
        assert (venv / ".tescape-wheel-sha256").read_text().strip() == served.sha256
        env_file = root.file("/etc/tescape/agent.env")
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        token = world.token_of(inst)
        assert env_file.read_text() == f"TESCAPE_AGENT_TOKEN={token}\n"
        argv = exec_start(root.file("/etc/systemd/system/tescape-agent.service").read_text())
        assert argv[:3] == ["/opt/tescape/venv/bin/python", "-m", "capsule_runtime.agent"]
        assert argv[argv.index("--gateway") + 1] == url

        agent = root.start(argv, root.env(TESCAPE_AGENT_TOKEN=token), tmp_path / "agent.log")

        registered(world, inst, lambda: (tmp_path / "agent.log").read_text())
        assert world.fleet.token_sha256(inst.id) is not None
        assert world.register(inst, token).status_code == 401  # the user-data's token: spent


def host_setup_volumes(tmp: Path) -> dict[Path, str]:
    """What the root's host setup needs from this machine: container storage on a real file
    system (podman's overlay driver refuses an overlayfs under it, which the root is), and this
    machine's CRIU build cache where an installed agent's setup looks for one — without it the
    setup builds CRIU from Debian's source in the root (several minutes; what a fresh EC2
    instance on the plain Debian AMI does)."""
    storage = tmp / "containers"
    storage.mkdir()
    volumes = {storage: "/var/lib/containers"}
    cache = criu_host.cache_root()
    if not criu_host.cached_binaries(cache):
        # this machine's setup found a CRIU >= 4.2 installed and cached none: that one
        found = criu_host.find_criu()
        version = criu_host.binary_version(found) if found else None
        if found is None or not criu_host.at_least(version):
            return volumes
        cache = tmp / "criu-cache"
        criu_host.store_in_cache(found, criu_host.format_version(version), cache)
    volumes[cache] = "/var/cache/tescape/criu:ro"
    return volumes


def test_under_systemd_the_host_setup_installs_podman_and_criu_and_the_unit_runs_the_agent(
    world: AwsWorld, root: Root, tmp_path: Path
) -> None:
    """No stand-ins here: the user-data's host setup installs Debian's podman and runc and a
    CRIU ≥ 4.2 into the fresh root, then systemd runs the agent; an idle retire powers it off."""
    with wsgi_app(world.app) as url:
        world.provider = world.new_provider(url)
        world.scheduler = world.new_scheduler(world.provider)
        task_id = world.submit()
        inst = world.launching()
        root.file("/root/user-data").write_text(world.user_data(inst))
        with booted(root, host_setup_volumes(tmp_path)) as machine:
            boot = machine.exec(["bash", "/root/user-data"], root.env(), timeout=1500)
            log = root.file("/var/log/tescape-bootstrap.log").read_text()
            assert boot.returncode == 0, log[-4000:] + boot.stderr[-2000:]
            assert log.rstrip().endswith("tescape bootstrap done"), log[-2000:]
            assert machine.systemctl("is-enabled", "tescape-agent.service") == "enabled"

            registered(world, inst, lambda: machine.journal("tescape-agent.service"))
            assert machine.systemctl("is-active", "tescape-agent.service") == "active"
            # the host setup's real podman and CRIU, as the agent registered them
            here = world.fleet.instance(inst.id)
            assert here is not None and here.data.host is not None, here
            assert here.data.host.podman.startswith("4."), here.data.host
            assert version_key(here.data.host.criu) >= (4, 2), here.data.host

            # nothing left to run: the scheduler retires the idle instance, the agent's next
            # poll is told to shut down, it exits 0, and the unit powers the machine off
            cancel = world.http.post(f"/ga4gh/tes/v1/tasks/{task_id}:cancel")
            assert cancel.status_code == 200, cancel.get_data(as_text=True)
            world.provider.idle_seconds = 5  # well inside the heartbeat timeout
            world.clock.advance(10)
            world.scheduler.tick()
            now = world.fleet.instance(inst.id)
            assert now is not None and now.state is not InstanceState.READY
            try:
                wait_for(
                    "the idle machine to power off", lambda: not machine.running(), 180, every=1
                )
            except AssertionError:
                raise AssertionError(machine.journal("tescape-agent.service")[-4000:]) from None
            agent_log = machine.journal("tescape-agent.service")
            assert "the gateway asked this instance to shut down" in agent_log, agent_log[-3000:]
            assert "poweroff.target" in machine.journal(), machine.journal()[-3000:]
            assert machine.exit_code() == 0
            assert "world-inaccessible" not in machine.journal()  # the unit is 0644
