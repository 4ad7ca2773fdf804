"""The gateway's capsule master key: made 0600 in the data dir on first use and handed to agents
in CapsuleSettings; `mode: none` hands none; a bad key file is refused; tasks cannot reach it."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from capsule_runtime.capsules.crypto import LocalKeyWrapper, wrapper_from_settings
from gateway.app import build_services
from gateway.config import Config
from tests.fixtures.documents import tes_task

TASK = {"executors": [{"image": "alpine", "command": ["true"]}]}


def settings_of(config: Config) -> dict[str, object]:
    services = build_services(config)
    try:
        return services.dispatcher.capsule_settings(tes_task(TASK)).encryption
    finally:
        services.close()


def test_the_key_is_made_once_and_handed_to_agents(tmp_path: Path) -> None:
    config = Config.model_validate({"data_dir": str(tmp_path)})
    first = settings_of(config)
    key_file = tmp_path / "capsule.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert first["mode"] == "key"
    assert base64.b64decode(str(first["key"])) == base64.b64decode(key_file.read_bytes().strip())
    assert settings_of(config) == first  # kept across restarts
    wrapper = wrapper_from_settings(first)
    assert isinstance(wrapper, LocalKeyWrapper)
    assert str(key_file) in config.denied_dirs or str(tmp_path) in config.denied_dirs


def test_mode_none_and_a_configured_key_file(tmp_path: Path) -> None:
    off = Config.model_validate(
        {"data_dir": str(tmp_path / "a"), "capsules": {"encryption": {"mode": "none"}}}
    )
    assert settings_of(off) == {}
    assert not (tmp_path / "a" / "capsule.key").exists()
    elsewhere = tmp_path / "keys" / "capsules.key"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(base64.b64encode(b"\x01" * 32))
    config = Config.model_validate(
        {"data_dir": str(tmp_path / "b"), "capsules": {"encryption": {"key_file": str(elsewhere)}}}
    )
    assert base64.b64decode(str(settings_of(config)["key"])) == b"\x01" * 32
    assert str(elsewhere.resolve()) in config.denied_dirs  # no task may stage it in
    elsewhere.write_text("not a key")
    with pytest.raises(ValueError, match="32 bytes"):
        settings_of(config)
