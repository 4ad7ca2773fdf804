"""Providers by name (gateway/providers/registry.py): the built-ins, a registered one, and a
configuration naming none of them."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, load_config
from gateway.providers import registry
from gateway.providers.base import Capability, ProviderError
from gateway.providers.fake import FakeProvider


def test_builtins_are_known_and_fake_is_built_from_its_section() -> None:
    assert {"local", "fake"} <= set(registry.names())
    cfg = load_config(
        overrides={
            "providers": {"default": "fake", "fake": {"max_instances": 2, "zones": ["a", "b"]}}
        },
        environ={},
    )
    provider = registry.create(cfg.providers.default, registry.ProviderContext(cfg, "http://x"))
    assert isinstance(provider, FakeProvider) and provider.max_instances == 2
    assert {o.zone for o in provider.offers()} == {"a", "b"}
    assert provider.supports(Capability.SPOT)


def test_an_unknown_provider_is_a_config_error_naming_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"no provider 'nimbus'.*fake, local"):
        load_config(overrides={"providers": {"default": "nimbus"}}, environ={})
    with pytest.raises(ProviderError, match="no provider"):
        registry.factory("nimbus")


def test_a_registered_provider_can_be_chosen() -> None:
    registry.register("mine", lambda ctx: FakeProvider())
    try:
        cfg = load_config(overrides={"providers": {"default": "mine"}}, environ={})
        assert isinstance(registry.create("mine", registry.ProviderContext(cfg, "")), FakeProvider)
    finally:
        registry._registered.pop("mine")
