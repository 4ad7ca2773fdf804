"""Providers by name: `providers.default` (or `tescape serve --provider NAME`) picks one, and
`providers.<name>` holds its settings. Built-in providers are imported only when chosen; another
package adds one with `register` (before the configuration is loaded)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.providers.base import Provider, ProviderError

if TYPE_CHECKING:
    from gateway.agent_wheel import AgentWheel
    from gateway.config import Config
    from gateway.market.model import Market


@dataclass(frozen=True)
class ProviderContext:
    """What a provider may be built from."""

    config: Config
    gateway_url: str  # where its agents reach this gateway
    market: Market | None = None  # the simulated Spot market (the local provider's)
    agent_wheel: AgentWheel | None = None  # the agent wheel this gateway serves (agent.wheel)


Factory = Callable[[ProviderContext], Provider]

# name → "module:function" building it from a ProviderContext
BUILTIN: dict[str, str] = {
    "local": "gateway.providers.local:from_context",
    "fake": "gateway.providers.fake:from_context",
    "aws": "gateway.providers.aws:from_context",
}
_registered: dict[str, Factory] = {}


def register(name: str, factory: Factory) -> None:
    """Add (or replace) a provider under `name`."""
    _registered[name] = factory


def names() -> list[str]:
    return sorted({*BUILTIN, *_registered})


def factory(name: str) -> Factory:
    if name in _registered:
        return _registered[name]
    if name not in BUILTIN:
        raise ProviderError(f"no provider {name!r} (known: {', '.join(names())})")
    module, _, attr = BUILTIN[name].partition(":")
    built: Factory = getattr(importlib.import_module(module), attr)
    return built


def create(name: str, context: ProviderContext) -> Provider:
    """The provider `name`, built from its configuration section."""
    return factory(name)(context)
