"""The Flask application factory. Everything the routes need is built here and passed in;
nothing is read at import time."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from flask import Flask, Response, g, request
from werkzeug.exceptions import Forbidden

from gateway.agent_wheel import AgentWheel
from gateway.agent_wheel import load as load_agent_wheel
from gateway.api import admin, agent
from gateway.api import market as market_api
from gateway.api import status as status_api
from gateway.api.metrics import install_metrics
from gateway.api.responses import json_response, register_error_handlers
from gateway.api.tes import PREFIXES, tes_blueprint
from gateway.auth import Authenticator
from gateway.config import Config
from gateway.dashboard import dashboard_blueprint
from gateway.dispatch import Dispatcher
from gateway.library import Library
from gateway.market.model import Market
from gateway.scheduler.leadership import SchedulerLease, gateway_id
from gateway.scheduler.loop import SCHEDULER, Scheduler
from gateway.scheduler.wakeups import Wakeups
from gateway.secrets import SecretBox
from gateway.service import TaskService
from gateway.store.apps import AppStore
from gateway.store.database import Database, open_database
from gateway.store.fleet import FleetStore
from gateway.store.tasks import TaskStore
from gateway.telemetry import on_task_end

PUBLIC_ENDPOINTS = {
    "service_info",
    "legacy_service_info",
    "openapi",
    "healthz",
    "metrics",
    "readyz",
}


@dataclass
class Services:
    config: Config
    database: Database
    store: TaskStore
    fleet: FleetStore
    wakeups: Wakeups
    tasks: TaskService
    dispatcher: Dispatcher
    auth: Authenticator
    library: Library
    scheduler: Scheduler | None = None
    market: Market | None = None  # the local provider's simulated Spot market
    agent_wheel: AgentWheel | None = None  # `agent.wheel`: served to instances that install it

    def close(self) -> None:
        """Stop the scheduler and its instances, then the database (idempotent)."""
        scheduler, self.scheduler = self.scheduler, None
        if scheduler is not None:
            scheduler.stop()
        self.database.close()


def build_services(config: Config, database: Database | None = None) -> Services:
    # every server thread may hold a connection, and the scheduler's threads too
    db = database or open_database(
        config.database_url, echo=config.database.echo, pool_size=config.server.threads + 4
    )
    store = TaskStore(db, on_end=on_task_end(config))  # telemetry of tasks the gateway ends
    fleet = FleetStore(db)
    wakeups = Wakeups()
    library = Library(
        AppStore(db), SecretBox(config.data_path / "secret.key"), config.data_path / "apps"
    )
    return Services(
        config=config,
        database=db,
        store=store,
        fleet=fleet,
        wakeups=wakeups,
        tasks=TaskService(config, store, on_change=lambda: wakeups.notify(SCHEDULER)),
        dispatcher=Dispatcher(config, store, fleet, wakeups, library),
        auth=Authenticator(config.auth),
        library=library,
        market=Market(config.providers.local.market)
        if config.providers.default == "local" and config.providers.local.market.enabled
        else None,
        agent_wheel=load_agent_wheel(config.agent.wheel) if config.agent.wheel else None,
    )


def start_scheduler(services: Services, gateway_url: str) -> None:
    """Start placing tasks, with the configured provider (`providers.default`, from the
    registry) reaching this gateway at `gateway_url`."""
    from gateway.providers.registry import ProviderContext, create

    cfg = services.config
    context = ProviderContext(cfg, gateway_url, services.market, services.agent_wheel)
    provider = create(cfg.providers.default, context)
    provider.check()
    lease = SchedulerLease(
        services.database, gateway_id(cfg.data_path), cfg.scheduler.lease_seconds
    )
    services.scheduler = Scheduler(
        cfg,
        services.store,
        services.fleet,
        provider,
        services.wakeups,
        market=services.market,
        lease=lease,
    )
    services.scheduler.start()


def create_app(config: Config, services: Services | None = None) -> Flask:
    app = Flask("tescape")
    app.config["MAX_CONTENT_LENGTH"] = config.server.max_request_bytes
    services = services or build_services(config)
    app.extensions["tescape"] = services
    app.extensions[agent.LONG_POLLS] = threading.BoundedSemaphore(config.server.long_polls_held)

    for name, prefix in PREFIXES.items():
        app.register_blueprint(tes_blueprint(name), url_prefix=prefix or None)
    app.register_blueprint(admin.bp)
    app.register_blueprint(agent.bp)
    app.register_blueprint(market_api.bp)
    app.register_blueprint(status_api.bp)
    app.register_blueprint(dashboard_blueprint(), url_prefix="/ui")
    if services.market is not None:
        app.extensions[market_api.MARKET_KEY] = services.market
    register_error_handlers(app)
    install_metrics(app, services)

    @app.get("/healthz")
    def healthz() -> Response:
        return json_response({"status": "ok"})

    origins = set(config.server.cors_origins)

    @app.before_request
    def _same_origin_writes() -> None:
        """A browser resends Basic credentials to any page's form: a cross-site POST (say, to
        :cancel) carries an Origin header that is not ours, and is refused. TES clients send no
        Origin; pages of this server and configured CORS origins pass."""
        origin = request.headers.get("Origin")
        if request.method in ("GET", "HEAD", "OPTIONS") or not origin:
            return
        if origin == request.host_url.rstrip("/") or "*" in origins or origin in origins:
            return
        raise Forbidden(f"cross-site request from {origin} refused")

    @app.before_request
    def _authenticate() -> None:
        endpoint = request.endpoint or ""
        if (
            endpoint.rpartition(".")[2] in PUBLIC_ENDPOINTS
            or endpoint.startswith("agent.")  # agents authenticate with their instance token
            or request.method == "OPTIONS"
        ):
            return
        g.principal = services.auth.authenticate(
            request.headers.get("Authorization"), client=request.remote_addr or ""
        )

    if origins:

        @app.after_request
        def _cors(response: Response) -> Response:
            origin = request.headers.get("Origin")
            if origin and ("*" in origins or origin in origins):
                response.headers["Access-Control-Allow-Origin"] = origin
                response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
                response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
                response.headers["Vary"] = "Origin"
            return response

    return app
