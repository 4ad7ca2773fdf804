"""The one-time registration token an EC2 instance's user-data carries (moto in server mode; the
agent API through the gateway's Flask app): good once, for registering only, within
`providers.aws.token_ttl_seconds` of the launch; the agent gets its own credential in exchange,
and the user-data holds no other secret."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.auth import token_sha256
from gateway.providers.aws.userdata import TEMPLATE
from gateway.store.fleet import InstanceState
from tests.fixtures.aws_world import AwsWorld
from tests.fixtures.moto_server import CREDENTIALS, MotoServer

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def world(tmp_path: Path, moto: MotoServer) -> Iterator[AwsWorld]:
    w = AwsWorld(tmp_path, moto, token_ttl_seconds=600)
    yield w
    w.close()


def test_the_registration_token_is_exchanged_once(world: AwsWorld) -> None:
    world.submit()
    inst = world.launching()
    token = world.token_of(inst)
    assert world.fleet.token_sha256(inst.id) == token_sha256(token)

    early = world.poll(inst, token)
    assert early.status_code == 401
    assert "good for registering only" in early.get_json()["message"]

    first = world.register(inst, token)
    assert first.status_code == 200, first.get_data(as_text=True)
    credential = first.get_json()["token"]
    assert credential and credential != token
    assert world.fleet.instance(inst.id).state is InstanceState.READY  # type: ignore[union-attr]

    again = world.register(inst, token)  # the user-data's token, used a second time
    assert again.status_code == 401
    assert world.poll(inst, token).status_code == 401  # ... nor good for anything else
    assert world.poll(inst, credential).status_code == 200
    restarted = world.register(inst, credential)  # the agent restarted: its credential
    assert restarted.status_code == 200 and "token" not in restarted.get_json()


def test_an_expired_registration_token_is_refused(world: AwsWorld) -> None:
    world.submit()
    inst = world.launching()
    token = world.token_of(inst)
    world.clock.advance(601)
    late = world.register(inst, token)
    assert late.status_code == 401
    assert "expired" in late.get_json()["message"]
    assert "token_ttl_seconds" in late.get_json()["message"]
    assert world.fleet.instance(inst.id).state is InstanceState.LAUNCHING  # type: ignore[union-attr]


def test_two_agents_racing_with_one_token_register_one(world: AwsWorld) -> None:
    """Whoever registers first with the user-data's token holds the instance; the other is
    refused (a copy of the token is worth nothing once the real agent has registered)."""
    world.submit()
    inst = world.launching()
    token = world.token_of(inst)
    answers = [world.register(inst, token).status_code for _ in range(2)]
    assert answers == [200, 401]


def test_user_data_holds_no_other_secret(world: AwsWorld) -> None:
    world.cfg.capsules.encryption.mode = "key"
    capsule_key = world.dispatch.capsule_encryption()["key"]
    world.submit()
    inst = world.launching()
    script = world.user_data(inst)
    token = world.token_of(inst)
    # nothing long and random but the registration token and the (public) instance id: every
    # other long word is the template's own
    long_word = r"[A-Za-z0-9_\-]{24,}"
    words = set(re.findall(long_word, script)) - set(re.findall(long_word, TEMPLATE))
    assert words - {inst.id} == {token}
    assert capsule_key not in script
    assert CREDENTIALS["aws_secret_access_key"] not in script.replace("testing", "")
    assert "AWS_SECRET" not in script and "aws_secret" not in script
    assert world.register(inst, token).status_code == 200
    # the row now holds the agent's credential's hash only: the script's token is worth nothing
    assert world.fleet.token_sha256(inst.id) != token_sha256(token)
