"""The agent wheel a gateway serves to its own instances (`agent.wheel`, gateway/agent_wheel.py):
an EC2 instance's user-data names it with its sha256, the one-time registration token fetches it
(and nothing else but the registration), and the bootstrap's own download step — run here for
real, over HTTP, as the user-data has it — keeps only a file with that digest."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from capsule_runtime.protocol.messages import AGENT_API
from gateway.agent_wheel import AgentWheelError, load
from tests.fixtures.aws_world import GATEWAY, AwsWorld
from tests.fixtures.moto_server import MotoServer
from tests.fixtures.serving import wsgi_app

pytestmark = pytest.mark.timeout(120)
NAME = "tescape-0.9.0-py3-none-any.whl"


def a_wheel(directory: Path, name: str = NAME) -> Path:
    path = directory / name
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("tescape-0.9.0.dist-info/METADATA", "Name: tescape\nVersion: 0.9.0\n")
        z.writestr("capsule_runtime/__init__.py", "# " + "x" * 4096)
    return path


@pytest.fixture
def world(tmp_path: Path, moto: MotoServer) -> Iterator[AwsWorld]:
    w = AwsWorld(tmp_path, moto, agent_wheel=a_wheel(tmp_path), token_ttl_seconds=600)
    yield w
    w.close()


def fetch_step(script: str) -> str:
    """The bootstrap's download step, exactly as the user-data carries it."""
    start = script.index("# fetch-agent-wheel\n")
    return script[start : script.index("\nPY\n", start) + 1]


def test_load_refuses_what_it_cannot_serve(tmp_path: Path) -> None:
    with pytest.raises(AgentWheelError, match="file name"):
        load(a_wheel(tmp_path, "agent.zip"))
    with pytest.raises(AgentWheelError, match="does not exist"):
        load(tmp_path / NAME)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / NAME).write_text("not a zip")
    with pytest.raises(AgentWheelError, match="not a wheel"):
        load(tmp_path / "junk" / NAME)
    wheel = load(a_wheel(tmp_path))
    assert wheel.sha256 == hashlib.sha256((tmp_path / NAME).read_bytes()).hexdigest()
    assert wheel.url("https://gw:8000/") == f"https://gw:8000{AGENT_API}/dist/{NAME}"


def test_user_data_names_the_served_wheel_and_its_digest(world: AwsWorld) -> None:
    world.submit()
    inst = world.launching()
    script = world.user_data(inst)
    served = world.services.agent_wheel
    assert served is not None
    assert f"AGENT_WHEEL_URL={GATEWAY}{AGENT_API}/dist/{NAME}\n" in script
    assert f"AGENT_WHEEL_SHA256={served.sha256}\n" in script


def test_the_registration_token_fetches_the_wheel_until_it_is_used(world: AwsWorld) -> None:
    world.submit()
    inst = world.launching()
    token = world.token_of(inst)
    url = f"{AGENT_API}/dist/{NAME}"

    def get(path: str, bearer: str | None) -> tuple[int, bytes]:
        headers = {"X-Tescape-Instance": inst.id}
        if bearer is not None:
            headers["Authorization"] = f"Bearer {bearer}"
        answer = world.http.get(path, headers=headers)
        return answer.status_code, answer.get_data()

    assert get(url, None)[0] == 401
    assert get(url, "wrong")[0] == 401
    assert get(f"{AGENT_API}/dist/tescape-0.1-py3-none-any.whl", token)[0] == 404
    status, body = get(url, token)
    assert status == 200 and body == (world.tmp / NAME).read_bytes()
    registered = world.register(inst, token)  # still good for its one registration
    assert registered.status_code == 200
    assert get(url, token)[0] == 401  # used: worth nothing now
    assert get(url, registered.get_json()["token"])[0] == 200


def test_the_bootstrap_keeps_only_the_wheel_it_was_launched_with(
    world: AwsWorld, tmp_path: Path
) -> None:
    world.submit()
    inst = world.launching()
    script = world.user_data(inst)
    served = world.services.agent_wheel
    assert served is not None
    with wsgi_app(world.app) as base:
        url = f"{base}{AGENT_API}/dist/{NAME}"
        env = {**os.environ, "TESCAPE_AGENT_TOKEN": world.token_of(inst)}

        def bootstrap_fetch(dest: Path, digest: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-", url, str(dest), digest, inst.id],
                input=fetch_step(script),
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )

        good = bootstrap_fetch(tmp_path / "good.whl", served.sha256)
        assert good.returncode == 0, good.stderr
        assert (tmp_path / "good.whl").read_bytes() == (world.tmp / NAME).read_bytes()

        other = bootstrap_fetch(tmp_path / "bad.whl", "0" * 64)  # not what it was launched with
        assert other.returncode != 0
        assert "not the one this instance was launched with" in other.stderr
        assert not (tmp_path / "bad.whl").exists()

        env["TESCAPE_AGENT_TOKEN"] = "forged"
        forged = bootstrap_fetch(tmp_path / "forged.whl", served.sha256)
        assert forged.returncode != 0 and "401" in forged.stderr  # refused at once, no retries
