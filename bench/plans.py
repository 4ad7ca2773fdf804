"""Query plans of the exact statements the server runs for GET and list: `TaskStore` is called on
its own engine, each statement it sends is captured with its parameters, and explained —
EXPLAIN (ANALYZE, BUFFERS) on PostgreSQL, EXPLAIN QUERY PLAN on SQLite."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, event

from gateway.store.database import Database
from gateway.store.tasks import TaskStore
from gateway.tes.states import State


def _captured(engine: Engine, call: Callable[[], Any]) -> tuple[str, Any]:
    seen: list[tuple[str, Any]] = []

    def listener(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        seen.append((statement, params))

    event.listen(engine, "before_cursor_execute", listener)
    try:
        call()
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    return seen[-1]


def explain(engine: Engine, task_id: str, workflow_id: str, deep_seq: int) -> dict[str, str]:
    """Plans for: GET by id (MINIMAL and FULL), the first list page (MINIMAL), the first page of
    RUNNING tasks, of one workflow's tasks (tag filter), and a page deep in the list."""
    store = TaskStore(Database(engine))
    calls: dict[str, Callable[[], Any]] = {
        "get_minimal": lambda: store.get(task_id, full=False),
        "get_full": lambda: store.get(task_id, full=True),
        "list_minimal": lambda: store.page(limit=256),
        "list_state": lambda: store.page(state=State.RUNNING, limit=256),
        "list_tag": lambda: store.page(tags={"workflow_id": workflow_id}, limit=256),
        "list_deep": lambda: store.page(limit=256, before_seq=deep_seq),
    }
    plans: dict[str, str] = {}
    for name, call in calls.items():
        statement, params = _captured(engine, call)
        if engine.dialect.name == "postgresql":
            prefix = "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING ON, SUMMARY ON) "
        else:
            prefix = "EXPLAIN QUERY PLAN "
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(prefix + statement, params).all()
        if engine.dialect.name == "postgresql":
            plan = "\n".join(r[0] for r in rows)
        else:
            plan = "\n".join(str(r[-1]) for r in rows)
        plans[name] = " ".join(statement.split()) + "\n" + plan
    return plans
