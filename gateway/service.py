"""The TES operations, independent of HTTP: what the API blueprints call.

Each method takes parsed arguments and the calling `Principal`, and returns wire documents or
raises a named error (`NotFound`, `BadRequest`) that the API layer maps to a status code.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from capsule_runtime.protocol.local_paths import LocalPathRules, task_path_errors
from capsule_runtime.protocol.s3_paths import S3Rules, task_s3_errors
from capsule_runtime.protocol.shared_dirs import shared_errors
from capsule_runtime.protocol.tasklog import initial_task_log
from gateway import __version__
from gateway.auth import Principal
from gateway.config import Config
from gateway.store.tasks import TaskRecord, TaskStore
from gateway.telemetry import live_logs
from gateway.tes.backend_parameters import BackendParameters
from gateway.tes.errors import FieldError, TaskValidationError
from gateway.tes.states import State
from gateway.tes.validation import parse_task
from gateway.tes.views import View, render_task

log = logging.getLogger(__name__)


class NotFound(LookupError):
    pass


class BadRequest(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}" if field else message)
        self.errors = [FieldError(field, message)]


@dataclass(frozen=True)
class ListQuery:
    view: View = View.MINIMAL
    name_prefix: str | None = None
    state: State | None = None
    tags: dict[str, str] | None = None
    page_size: int = 256
    page_token: str | None = None


def encode_page_token(seq: int) -> str:
    return base64.urlsafe_b64encode(f"tes1:{seq}".encode()).decode().rstrip("=")


def decode_page_token(token: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        tag, _, seq = raw.partition(":")
        value = int(seq)
        if tag != "tes1" or not 0 < value < 2**63:  # seq is a BIGINT: keep the query in range
            raise ValueError(token)
        return value
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadRequest("page_token", "is not a token this server issued") from None


def _render(record: TaskRecord, view: View) -> dict[str, Any]:
    return render_task(
        record.id, record.state.value, view, record.spec, record.creation_time, record.logs
    )


class TaskService:
    def __init__(
        self, config: Config, store: TaskStore, on_change: Callable[[], None] | None = None
    ):
        self.config = config
        self.store = store
        self.on_change = on_change or (lambda: None)  # wakes the scheduler
        self.backend_parameters = BackendParameters(tuple(config.tasks.extra_backend_parameters))
        # the agents check again while staging; refusing here tells the client at once (400)
        self.local_paths = LocalPathRules.create(
            config.allowed_dirs, config.denied_dirs, config.shared_dirs
        )
        # Toil's TES plugin mounts a file job store only under a `file://` prefix listed here
        self.storage = [*config.service_info.storage, *(f"file://{d}" for d in config.shared_dirs)]

    def s3_rules(self, user: str) -> S3Rules:
        """The s3:// rules for tasks of `user`: the agents get the same lists (dispatch)."""
        return S3Rules.create(self.config.s3_allowed(user), self.config.s3_denied)

    # -- service-info -------------------------------------------------------------------------

    def service_info(self) -> dict[str, Any]:
        si = self.config.service_info
        info: dict[str, Any] = {
            "id": si.id,
            "name": si.name,
            "type": {"group": "org.ga4gh", "artifact": "tes", "version": "1.1.0"},
            "description": si.description,
            "organization": {"name": si.organization_name, "url": si.organization_url},
            "version": __version__,
            "storage": self.storage,
            "tesResources_backend_parameters": self.backend_parameters.names,
        }
        for key, value in (
            ("contactUrl", si.contact_url),
            ("documentationUrl", si.documentation_url),
            ("environment", si.environment),
        ):
            if value:
                info[key] = value
        return info

    def legacy_service_info(self) -> dict[str, Any]:
        """The pre-1.0 shape py-tes 0.4.2 and Toil's plugin parse: these three keys only."""
        si = self.config.service_info
        return {"name": si.name, "doc": si.description, "storage": self.storage}

    # -- tasks --------------------------------------------------------------------------------

    def create(self, body: Any, who: Principal) -> dict[str, str]:
        parsed = parse_task(body, self.config.limits, self.backend_parameters)
        errors = task_path_errors(parsed.model, self.local_paths)
        errors += shared_errors(parsed.model, self.local_paths)
        errors += task_s3_errors(parsed.model, self.s3_rules(who.user))
        if errors:
            raise TaskValidationError(errors)
        record = self.store.create(
            parsed.task,
            owner=who.user,
            warnings=parsed.warnings,
            logs=[initial_task_log(parsed.model)],
        )
        for warning in parsed.warnings:
            log.warning("task %s: %s", record.id, warning)
        self.on_change()
        return {"id": record.id}

    def get(self, task_id: str, view: View, who: Principal) -> dict[str, Any]:
        record = self.store.get(task_id, owner=who.owner_filter, full=view is not View.MINIMAL)
        if record is None:
            raise NotFound(task_id)
        if view is View.FULL and not record.state.terminal and record.state is not State.QUEUED:
            logs = live_logs(self.store.db.engine, self.config, task_id, record.logs)
            record = replace(record, logs=logs)
        return _render(record, view)

    def list(self, query: ListQuery, who: Principal) -> dict[str, Any]:
        before = decode_page_token(query.page_token) if query.page_token else None
        page = self.store.page(
            owner=who.owner_filter,
            name_prefix=query.name_prefix,
            state=query.state,
            tags=query.tags,
            limit=query.page_size,
            before_seq=before,
            full=query.view is not View.MINIMAL,
        )
        out: dict[str, Any] = {"tasks": [_render(r, query.view) for r in page.records]}
        if page.next_seq is not None:
            out["next_page_token"] = encode_page_token(page.next_seq)
        return out

    def cancel(self, task_id: str, who: Principal) -> dict[str, Any]:
        """QUEUED → CANCELED at once; INITIALIZING/RUNNING → CANCELING (the runtime finishes
        it); a task already finished stays as it is. Always `{}` for an existing task."""
        record = self.store.get(task_id, owner=who.owner_filter, full=False)
        if record is None:
            raise NotFound(task_id)
        by = f"cancelled by {who.user or 'anonymous'}"
        state = record.state
        while not state.terminal and state is not State.CANCELING:
            target = State.CANCELED if state is State.QUEUED else State.CANCELING
            result = self.store.transition(task_id, target, expect={state}, message=by)
            if result.applied:
                self.on_change()
                break
            state = result.from_state  # lost a race; look again
        return {}


__all__ = ["BadRequest", "ListQuery", "NotFound", "TaskService", "TaskValidationError"]
