"""Shell completion of task ids from the running server (click's completion calls these while
the user presses Tab: they must be quick and silent, so any failure completes nothing)."""

from __future__ import annotations

import os

import click
import requests
from click.shell_completion import CompletionItem

DEFAULT_SERVER = "http://127.0.0.1:8000"
TIMEOUT_SECONDS = 2.0  # a Tab press must not hang on an unreachable server
LISTED = 200  # the newest tasks offered; a longer prefix narrows them


def task_ids(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The ids of the user's newest tasks that start with what was typed, with their state."""
    server = ctx.params.get("server") or os.environ.get("TESCAPE_SERVER") or DEFAULT_SERVER
    token = os.environ.get("TESCAPE_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        resp = requests.get(
            str(server).rstrip("/") + "/ga4gh/tes/v1/tasks",
            params={"view": "MINIMAL", "page_size": str(LISTED)},
            headers=headers,
            timeout=TIMEOUT_SECONDS,
        )
        found = (resp.json().get("tasks") or []) if resp.ok else []
    except (requests.RequestException, ValueError, AttributeError):
        return []
    return [
        CompletionItem(t["id"], help=t.get("state"))
        for t in found
        if isinstance(t, dict) and str(t.get("id", "")).startswith(incomplete)
    ]
