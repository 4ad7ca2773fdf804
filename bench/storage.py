"""What the store takes on disk: every table and index, per task, and the depth of the B-trees that
GET and list walk (which is what keeps them flat as the store grows)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, text

TABLES = ("tasks", "task_tags", "attempts", "instances", "events")
# The indexes a GET by id and the list pages walk.
HOT_INDEXES = ("tasks_pkey", "tasks_id_key", "ix_tasks_state_seq", "ix_task_tags_key_value_seq")


def storage(engine: Engine, tasks: int) -> dict[str, Any]:
    if engine.dialect.name == "postgresql":
        return _postgres(engine, tasks)
    return _sqlite(engine, tasks)


def _per_task(objects: dict[str, int], tasks: int) -> dict[str, Any]:
    total = sum(objects.values())
    return {
        "objects_bytes": objects,
        "total_bytes": total,
        "bytes_per_task": round(total / tasks) if tasks else None,
    }


def _postgres(engine: Engine, tasks: int) -> dict[str, Any]:
    objects: dict[str, int] = {}
    depth: dict[str, int] = {}
    with engine.connect() as conn:
        for table in TABLES:
            heap, toast = conn.execute(
                text(
                    "SELECT pg_relation_size(c.oid), COALESCE(pg_total_relation_size("
                    "NULLIF(c.reltoastrelid, 0)), 0) FROM pg_class c WHERE c.relname = :t"
                ),
                {"t": table},
            ).one()
            objects[f"{table} (heap)"] = int(heap)
            if toast:
                objects[f"{table} (toast)"] = int(toast)
            for name, size in conn.execute(
                text(
                    "SELECT i.relname, pg_relation_size(i.oid) FROM pg_index x"
                    " JOIN pg_class i ON i.oid = x.indexrelid"
                    " JOIN pg_class t ON t.oid = x.indrelid WHERE t.relname = :t"
                    " ORDER BY i.relname"
                ),
                {"t": table},
            ):
                objects[name] = int(size)
        conn.execute(text("CREATE EXTENSION IF NOT EXISTS pageinspect"))
        for index in HOT_INDEXES:
            # bt_metap's level: 0 is a single leaf page; a lookup reads level + 1 pages.
            level = conn.execute(text("SELECT level FROM bt_metap(:i)"), {"i": index})
            depth[index] = int(level.scalar_one()) + 1
        conn.commit()
        database = int(
            conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one()
        )
    out = _per_task(objects, tasks)
    out.update(pages_per_lookup=depth, database_bytes=database)
    return out


def _sqlite(engine: Engine, tasks: int) -> dict[str, Any]:
    depth: dict[str, int] = {}
    with engine.connect() as conn:
        objects = {
            name: int(size)
            for name, size in conn.exec_driver_sql(
                "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY name"
            )
        }
        # A page's path has one '/' per B-tree level down to it (the root is "/").
        for name in ("tasks", "sqlite_autoindex_tasks_1", "ix_task_tags_key_value_seq"):
            depth[name] = int(
                conn.exec_driver_sql(
                    "SELECT MAX(LENGTH(path) - LENGTH(REPLACE(path, '/', ''))) FROM dbstat"
                    " WHERE name = ?",
                    (name,),
                ).scalar_one()
                or 0
            )
    out = _per_task(objects, tasks)
    out["pages_per_lookup"] = depth
    return out
