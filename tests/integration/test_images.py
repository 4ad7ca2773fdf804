"""Where task images come from, for real: podman pulls from Debian's docker-registry on loopback
(open, and with htpasswd auth), Application Library apps with credentials or with an imported
`podman save` archive, and rewrite rules — first through `prepare_image` alone, then through tasks
run by a real `tescape serve` and its worker agent.

Every image these tests put into podman's store has a name of its own (the registry's port or a
random tag), and is removed at the end; the shared test images are only tagged, never removed.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import requests

from capsule_runtime.client import GatewayClient
from capsule_runtime.engine import (
    EngineError,
    ImageNotFound,
    PodmanEngine,
    RegistryAuthFailed,
)
from capsule_runtime.image_source import prepare_image
from capsule_runtime.protocol.messages import TaskSettings
from tests.fixtures.containers import _container_leak_check, _podman_engine  # noqa: F401
from tests.fixtures.images import _busybox_image  # noqa: F401
from tests.fixtures.registry import Registry, _auth_registry, _open_registry  # noqa: F401
from tests.fixtures.server import RunningServer, tescape_server
from tests.fixtures.tasks import ended, submit


@pytest.fixture(scope="module")
def made() -> Iterator[list[str]]:
    """Image references a test adds to podman's store; all removed (untagged) at the end."""
    refs: list[str] = []
    yield refs
    engine = PodmanEngine()
    for ref in refs:
        engine.cli.run("rmi", "--ignore", ref, timeout=120)


def untag(engine: PodmanEngine, ref: str) -> None:
    engine.cli.run("rmi", "--ignore", ref, timeout=120)
    assert not engine.has_image(ref)


def pushed(
    engine: PodmanEngine, registry: Registry, local: str, repository: str, made: list[str]
) -> str:
    """`local` pushed to `registry` as `repository`, and absent from the local store."""
    ref = registry.push(engine.cli, local, repository)
    made.append(ref)
    untag(engine, ref)
    return ref


def settings(*registries: Registry, **kw: Any) -> TaskSettings:
    return TaskSettings(insecure_registries=[r.host for r in registries], **kw)


def no_gateway() -> GatewayClient:
    return cast(GatewayClient, object())  # prepare_image needs it only for app archives


# -- prepare_image against real podman and real registries -----------------------------------


def test_pull_from_a_plain_http_registry_once(
    podman_engine: PodmanEngine,
    busybox_image: str,
    open_registry: Registry,
    made: list[str],
    tmp_path: Path,
) -> None:
    ref = pushed(podman_engine, open_registry, busybox_image, "tescape/busybox:once", made)
    for _ in range(2):
        got = prepare_image(
            podman_engine, ref, settings(open_registry), no_gateway(), tmp_path / "images"
        )
        assert got == ref and podman_engine.has_image(ref)
    assert open_registry.manifest_gets("tescape/busybox", "once") == 1


def test_registry_errors_are_named(
    podman_engine: PodmanEngine,
    busybox_image: str,
    open_registry: Registry,
    auth_registry: Registry,
    made: list[str],
    tmp_path: Path,
) -> None:
    cache = tmp_path / "images"
    private = pushed(podman_engine, auth_registry, busybox_image, "tescape/busybox:errors", made)
    with pytest.raises(RegistryAuthFailed, match=r"requires credentials .* none are configured"):
        prepare_image(podman_engine, private, settings(auth_registry), no_gateway(), cache)
    wrong = {auth_registry.host: {"username": "tescape", "password": "not-the-password"}}
    with pytest.raises(RegistryAuthFailed, match=r"refused the credentials of user 'tescape'"):
        prepare_image(
            podman_engine,
            private,
            settings(auth_registry, registry_credentials=wrong),
            no_gateway(),
            cache,
        )
    missing = open_registry.ref("tescape/absent:1")
    with pytest.raises(ImageNotFound, match=r"tescape/absent:1 not found"):
        prepare_image(podman_engine, missing, settings(open_registry), no_gateway(), cache)
    with pytest.raises(EngineError, match=r"speaks plain HTTP: list it in .*insecure_registries"):
        prepare_image(podman_engine, missing, TaskSettings(), no_gateway(), cache)
    assert not list(cache.glob("*.json"))  # no auth file left behind


def test_pull_with_credentials(
    podman_engine: PodmanEngine,
    busybox_image: str,
    auth_registry: Registry,
    made: list[str],
    tmp_path: Path,
) -> None:
    private = pushed(podman_engine, auth_registry, busybox_image, "tescape/busybox:creds", made)
    creds = {auth_registry.host: {"username": "tescape", "password": str(auth_registry.password)}}
    apps = {"private": {"image": private, "archive_sha256": None}}
    got = prepare_image(
        podman_engine,
        "private",
        settings(auth_registry, registry_credentials=creds, apps=apps),
        no_gateway(),
        tmp_path / "images",
    )
    assert got == private and podman_engine.has_image(private)
    assert not list((tmp_path / "images").glob("*.json"))


def test_load_archive_returns_what_it_tagged(
    podman_engine: PodmanEngine, busybox_image: str, made: list[str], tmp_path: Path
) -> None:
    ref = f"localhost/tescape-archive/busybox:{secrets.token_hex(4)}"
    podman_engine.cli.run("tag", busybox_image, ref)
    made.append(ref)
    archive = tmp_path / "a.tar"
    podman_engine.cli.run("save", "--format", "docker-archive", "-o", str(archive), ref)
    untag(podman_engine, ref)
    assert podman_engine.load_archive(archive) == [ref] and podman_engine.has_image(ref)


# -- tasks through a real `tescape serve` ------------------------------------------------------


def serve(root: Path, *registries: Registry, **images: Any) -> Any:
    config = {
        "images": {"insecure_registries": [r.host for r in registries], **images},
        "storage": {"allowed_dirs": [str(root)]},
        "scheduler": {"interval_seconds": 0.2},
    }
    return tescape_server(root / "data", config=config, run_tasks=True)


@pytest.fixture(scope="module")
def rewrite_target(
    podman_engine: PodmanEngine, busybox_image: str, open_registry: Registry, made: list[str]
) -> str:
    return pushed(podman_engine, open_registry, busybox_image, "tescape/busybox:1", made)


@pytest.fixture(scope="module")
def runner(
    tmp_path_factory: pytest.TempPathFactory,
    open_registry: Registry,
    auth_registry: Registry,
    rewrite_target: str,
) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("images")
    rules = {"alpine": rewrite_target}
    with serve(root, open_registry, auth_registry, rewrites=rules) as srv:
        yield srv


def tescape(srv: RunningServer, *args: str, stdin: str = "") -> str:
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args, "--server", srv.url],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def add_app(srv: RunningServer, name: str, ref: str, username: str, password: str) -> None:
    args = ["apps", "add", name, ref, "--username", username, "--password-stdin"]
    tescape(srv, *args, stdin=password + "\n")


def run_task(srv: RunningServer, image: str, timeout: float = 120) -> dict[str, Any]:
    task = {"executors": [{"image": image, "command": ["echo", "hello from", image]}]}
    return ended(srv, submit(srv, task), timeout)


def assert_ran(task: dict[str, Any], image: str) -> None:
    assert task["state"] == "COMPLETE", task
    assert task["logs"][-1]["logs"][0]["stdout"] == f"hello from {image}\n"


def test_a_task_pulls_its_image_from_a_registry_once(
    runner: RunningServer,
    podman_engine: PodmanEngine,
    busybox_image: str,
    open_registry: Registry,
    made: list[str],
) -> None:
    ref = pushed(podman_engine, open_registry, busybox_image, "tescape/busybox:task", made)
    assert_ran(run_task(runner, ref), ref)
    assert_ran(run_task(runner, ref), ref)  # podman's store has it now: no pull
    assert open_registry.manifest_gets("tescape/busybox", "task") == 1


def test_a_rewrite_rule_maps_alpine_to_the_local_registry(
    runner: RunningServer, rewrite_target: str, podman_engine: PodmanEngine
) -> None:
    untag(podman_engine, rewrite_target)
    assert_ran(run_task(runner, "alpine:3.19"), "alpine:3.19")
    assert podman_engine.has_image(rewrite_target)


def test_an_app_with_credentials(
    runner: RunningServer,
    podman_engine: PodmanEngine,
    busybox_image: str,
    auth_registry: Registry,
    made: list[str],
) -> None:
    ref = pushed(podman_engine, auth_registry, busybox_image, "tescape/busybox:app", made)
    add_app(runner, "private", ref, "tescape", str(auth_registry.password))
    assert_ran(run_task(runner, "private"), "private")


def test_an_imported_archive_needs_no_registry(
    runner: RunningServer,
    podman_engine: PodmanEngine,
    busybox_image: str,
    made: list[str],
    tmp_path: Path,
) -> None:
    ref = f"localhost/tescape-archive/busybox:{secrets.token_hex(4)}"
    podman_engine.cli.run("tag", busybox_image, ref)
    made.append(ref)
    archive = tmp_path / "tool.tar"
    podman_engine.cli.run("save", "--format", "docker-archive", "-o", str(archive), ref)
    untag(podman_engine, ref)
    assert ref in tescape(runner, "apps", "import", "archived-tool", str(archive))
    assert_ran(run_task(runner, "archived-tool"), "archived-tool")
    assert podman_engine.has_image(ref)
    caches = list((runner.data_dir / "instances").glob("*/images"))
    assert caches and not [p for c in caches for p in c.iterdir() if p.suffix != ".lock"]


def test_wrong_credentials_end_in_system_error_without_the_password(
    runner: RunningServer,
    podman_engine: PodmanEngine,
    busybox_image: str,
    auth_registry: Registry,
    made: list[str],
) -> None:
    """Credentials belong to a registry host: this replaces the ones test_an_app_with_credentials
    sets (each of the two sets its own before its task, and pulls an image of its own)."""
    ref = pushed(podman_engine, auth_registry, busybox_image, "tescape/busybox:wrong", made)
    wrong = f"wrong-{secrets.token_hex(8)}"
    add_app(runner, "wrong", ref, "tescape", wrong)
    task = run_task(runner, "wrong")
    assert task["state"] == "SYSTEM_ERROR", task
    [line] = [x for x in task["logs"][-1]["system_logs"] if "image" in x]
    assert f"registry {auth_registry.host} refused the credentials of user 'tescape'" in line
    events = requests.get(f"{runner.url}/api/v1/tasks/{task['id']}/events", timeout=10).text
    seen = [str(task), events, runner.log()]
    seen += [p.read_text() for p in (runner.data_dir / "instances").glob("*/agent.log")]
    seen += [p.read_bytes().decode("latin-1") for p in runner.data_dir.glob("tescape.db*")]
    assert len(seen) >= 5 and all(wrong not in text for text in seen)
