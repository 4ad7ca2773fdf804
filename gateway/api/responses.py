"""JSON responses and errors. Every response, errors included, is `application/json` with a body:
Cromwell's parser insists, and an empty body makes Nextflow fail the task."""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Flask, Response
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from gateway.auth import AuthError, TooManyFailures
from gateway.service import BadRequest, NotFound
from gateway.tes.errors import TaskValidationError

log = logging.getLogger(__name__)
DATABASE_RETRY_AFTER_S = 5


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":"), ensure_ascii=False),
        status=status,
        mimetype="application/json",
        headers=headers,
    )


def error_response(
    status: int,
    message: str,
    errors: list[Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {"code": status, "message": message}
    if errors:
        body["errors"] = [{"field": e.field, "message": e.message} for e in errors]
    return json_response(body, status, headers)


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(TaskValidationError)
    def _invalid(exc: TaskValidationError) -> Response:
        return error_response(400, f"invalid task: {exc}", exc.errors)

    @app.errorhandler(BadRequest)
    def _bad(exc: BadRequest) -> Response:
        return error_response(400, str(exc), exc.errors)

    @app.errorhandler(NotFound)
    def _missing(exc: NotFound) -> Response:
        return error_response(404, f"task {exc.args[0]!r} not found")

    @app.errorhandler(AuthError)
    def _unauthorized(exc: AuthError) -> Response:
        return error_response(401, str(exc), headers={"WWW-Authenticate": exc.challenge})

    @app.errorhandler(TooManyFailures)
    def _throttled(exc: TooManyFailures) -> Response:
        return error_response(429, str(exc), headers={"Retry-After": str(exc.retry_after)})

    @app.errorhandler(RecursionError)
    def _too_deep(exc: RecursionError) -> Response:
        # only a request body nested past every parser's limit gets here (admin and agent
        # routes parse with Flask's and pydantic's parsers; the TES routes refuse it earlier)
        return error_response(400, "the request nests too deeply")

    @app.errorhandler(OperationalError)
    def _database_down(exc: OperationalError) -> Response:
        # PostgreSQL restarting or unreachable, SQLite locked past its timeout: nothing is lost
        # (the request did not commit) and a retry a little later succeeds.
        log.warning("database unavailable: %s", str(exc).splitlines()[0])
        return error_response(
            503,
            "the database is unavailable; retry shortly",
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
        )

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        return error_response(status, exc.description or exc.name)

    @app.errorhandler(Exception)
    def _crash(exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "internal server error; see the server log")
