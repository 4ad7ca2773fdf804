"""How the local provider decides whether its instances get mount namespaces of their own."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import LocalProviderConfig
from gateway.providers import local
from gateway.providers.base import ProviderError


def provider(tmp_path: Path, isolation: str) -> local.LocalProvider:
    cfg = LocalProviderConfig(isolation=isolation, market={"enabled": False})  # type: ignore[arg-type]
    return local.LocalProvider(cfg, "http://127.0.0.1:1", tmp_path)


def test_none_shares_the_machine(tmp_path: Path) -> None:
    p = provider(tmp_path, "none")
    assert not p.isolated and p.cgroups_unsupported


def test_auto_falls_back_and_namespace_insists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local, "namespaces_possible", lambda: "unshare failed: not permitted")
    assert not provider(tmp_path, "auto").isolated
    with pytest.raises(ProviderError, match="unshare failed"):
        provider(tmp_path, "namespace")
