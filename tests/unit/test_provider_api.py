"""POST /api/v1/instances/{id}:interrupt through the Flask app: the simulation verb reaches only a
provider that declares it, with the launch record kept on the instance row."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from gateway.app import Services, create_app
from gateway.auth import token_sha256
from gateway.config import load_config
from gateway.providers.base import Capability, CloudState, LaunchSpec, record_of
from gateway.providers.fake import DEFAULT_CAPABILITIES, FakeProvider
from gateway.scheduler.loop import Scheduler

ADMIN = {"Authorization": "Bearer admin-token"}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    tokens = [{"token_sha256": token_sha256("admin-token"), "user": "root", "admin": True}]
    cfg = load_config(
        overrides={
            "data_dir": str(tmp_path),
            "scheduler": {"enabled": False},
            "auth": {"mode": "bearer", "tokens": tokens},
            "providers": {"default": "fake"},
        },
        environ={},
    )
    flask_app = create_app(cfg)
    yield flask_app
    flask_app.extensions["tescape"].close()


def launched(app: Flask, provider: FakeProvider) -> str:
    """An instance row launched through `provider` by a (not started) scheduler's services."""
    services: Services = app.extensions["tescape"]
    services.scheduler = Scheduler(
        services.config, services.store, services.fleet, provider, services.wakeups
    )
    offer = provider.offers()[0]
    row = services.fleet.add_instance(
        provider=provider.name,
        instance_type=offer.instance_type,
        market=offer.market,
        zone=offer.zone,
        price_per_hour=offer.price_per_hour,
        token_sha256="x",
    )
    record = provider.launch(LaunchSpec(row.id, "t", offer))
    services.fleet.set_launch_record(row.id, record.provider_id, record.zone, record.provider_data)
    return row.id


def test_interrupt_is_refused_where_the_provider_cannot_simulate_it(app: Flask) -> None:
    provider = FakeProvider(capabilities=DEFAULT_CAPABILITIES - {Capability.INTERRUPT_SIMULATION})
    instance_id = launched(app, provider)
    resp = app.test_client().post(f"/api/v1/instances/{instance_id}:interrupt", headers=ADMIN)
    assert resp.status_code == 409
    assert "cannot simulate interruptions" in resp.get_json()["message"]


def test_interrupt_reaches_the_machine_by_its_launch_record(app: Flask) -> None:
    provider = FakeProvider()
    instance_id = launched(app, provider)
    resp = app.test_client().post(
        f"/api/v1/instances/{instance_id}:interrupt", headers=ADMIN, json={"notice_seconds": 0}
    )
    assert resp.status_code == 202, resp.get_json()
    row = app.extensions["tescape"].fleet.instance(instance_id)
    assert row.data.interruption is not None
    assert row.data.interruption.action == "terminate"
    assert provider.query([record_of(row)])[row.provider_id] is CloudState.TERMINATED
