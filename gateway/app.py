"""The Flask application factory. Everything the routes need is built here and passed in;
nothing is read at import time."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, Response, g, request

from gateway.api.responses import json_response, register_error_handlers
from gateway.api.tes import PREFIXES, tes_blueprint
from gateway.auth import Authenticator
from gateway.config import Config
from gateway.service import TaskService
from gateway.store.database import Database, open_database
from gateway.store.tasks import TaskStore

PUBLIC_ENDPOINTS = {"service_info", "legacy_service_info", "healthz"}


@dataclass
class Services:
    config: Config
    database: Database
    store: TaskStore
    tasks: TaskService
    auth: Authenticator


def build_services(config: Config, database: Database | None = None) -> Services:
    db = database or open_database(config.database_url, echo=config.database.echo)
    store = TaskStore(db)
    return Services(config, db, store, TaskService(config, store), Authenticator(config.auth))


def create_app(config: Config, services: Services | None = None) -> Flask:
    app = Flask("tescape")
    app.config["MAX_CONTENT_LENGTH"] = config.server.max_request_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    services = services or build_services(config)
    app.extensions["tescape"] = services

    for name, prefix in PREFIXES.items():
        app.register_blueprint(tes_blueprint(name), url_prefix=prefix or None)
    register_error_handlers(app)

    @app.get("/healthz")
    def healthz() -> Response:
        return json_response({"status": "ok"})

    @app.before_request
    def _authenticate() -> None:
        endpoint = (request.endpoint or "").rpartition(".")[2]
        if endpoint in PUBLIC_ENDPOINTS or request.method == "OPTIONS":
            return
        g.principal = services.auth.authenticate(request.headers.get("Authorization"))

    origins = set(config.server.cors_origins)
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
