"""TaskStore on SQLite and PostgreSQL: creates that arrive together are committed together (group
commit), each exactly once, with its tags and events, before `create` returns."""

from __future__ import annotations

import threading

from sqlalchemy import func, select

from gateway.store import TaskStore, open_database
from gateway.store.schema import events, task_tags, tasks

SPEC = {"executors": [{"image": "alpine", "command": ["true"]}]}


def test_concurrent_creates_each_commit_once_with_tags_and_events(db_url: str) -> None:
    db = open_database(db_url)
    store = TaskStore(db)
    made: list[str] = []
    lock = threading.Lock()

    def create(i: int) -> None:
        for j in range(10):
            spec = {**SPEC, "name": f"t{i}-{j}", "tags": {"worker": str(i), "n": str(j)}}
            task = store.create(spec, owner=f"u{i}", warnings=[f"w{i}-{j}"])
            other = open_database(db_url, run_migrations=False)  # committed: visible elsewhere
            try:
                assert TaskStore(other).get(task.id) is not None
            finally:
                other.close()
            with lock:
                made.append(task.id)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(made) == len(set(made)) == 80
    for task_id in made:
        record = store.get(task_id)
        assert record is not None and record.spec is not None
        worker, n = record.spec["tags"]["worker"], record.spec["tags"]["n"]
        assert record.name == f"t{worker}-{n}" and record.owner == f"u{worker}"
        evs = store.events(task_id)
        assert [(e["kind"], e.get("to_state"), e.get("message")) for e in evs] == [
            ("created", "QUEUED", None),
            ("warning", None, f"w{worker}-{n}"),
        ]
        page = store.page(tags={"worker": worker, "n": n})
        assert [r.id for r in page.records] == [task_id]
        assert store.get(task_id, owner=f"u{worker}") is not None
        assert store.get(task_id, owner="someone else") is None
    with db.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(tasks)).scalar_one() == 80
        assert conn.execute(select(func.count()).select_from(task_tags)).scalar_one() == 160
        assert conn.execute(select(func.count()).select_from(events)).scalar_one() == 160
    db.close()


def test_create_without_tags_or_warnings(db_url: str) -> None:
    db = open_database(db_url)
    store = TaskStore(db)
    task = store.create(SPEC, logs=[{"logs": [{"exit_code": -1}], "outputs": []}])
    record = store.get(task.id)
    assert record is not None and record.seq == task.seq
    assert record.spec == SPEC and record.logs == [{"logs": [{"exit_code": -1}], "outputs": []}]
    assert [e["kind"] for e in store.events(task.id)] == ["created"]
    assert store.get(task.id, full=False) == type(record)(task.seq, task.id, record.state)
    db.close()
