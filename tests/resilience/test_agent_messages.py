"""Duplicated and reordered agent messages, sent straight to the agent API of a real `tescape
serve` (scheduler off: the test places attempts itself, in the server's own database), on SQLite
and PostgreSQL:

    interrupted 6 at once   → exactly one restore attempt (same report id: all answered 200;
                               different ids: one 200, the rest 409)
    stale complete          → 409 from the attempt the restore superseded; the task runs on
    another instance        → 409 for a report, a capsule and a stream about an attempt it
                               does not hold
    register after LOST     → 409; the instance stays LOST
    the lot                 → the task ends COMPLETE once, through legal transitions, never with
                               two live attempts
"""

from __future__ import annotations

import secrets
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from sqlalchemy import Connection

from capsule_runtime.protocol.messages import AGENT_API
from gateway.auth import token_sha256
from gateway.migration import Migrations
from gateway.providers.base import (
    CloudState,
    LaunchRecord,
    LaunchSpec,
    Offer,
    Provider,
    ProviderError,
)
from gateway.scheduler.wakeups import Wakeups
from gateway.store import TaskStore, open_database
from gateway.store.database import Database
from gateway.store.fleet import FleetStore, Instance, InstanceState
from gateway.tes.states import State
from tests.fixtures.server import RunningServer
from tests.resilience.invariants import check_attempts, check_finished, check_legal

TASK = {"executors": [{"image": "alpine", "command": ["sleep", "60"]}]}
CAPACITY = {"cpu_cores": 2, "ram_gb": 2, "disk_gb": 10}


@dataclass
class FakeAgent:
    """Speaks the agent protocol with an instance's own token, nothing more."""

    url: str
    instance: Instance
    token: str

    def call(self, method: str, path: str, body: Any = None) -> requests.Response:
        raw = isinstance(body, bytes)
        return requests.request(
            method,
            self.url + AGENT_API + path,
            json=None if raw else body,
            data=body if raw else None,
            headers={
                "Authorization": f"Bearer {self.token}",
                "X-Tescape-Instance": self.instance.id,
            },
            timeout=30,
        )

    def register(self) -> requests.Response:
        reg = {"agent_version": "t", "hostname": "h", "capacity": CAPACITY}
        return self.call("POST", f"/instances/{self.instance.id}/register", reg)

    def poll(self, running: list[str], received: list[str] = ()) -> dict[str, Any]:  # type: ignore[assignment]
        body = {"running": running, "received": list(received), "wait_seconds": 0}
        resp = self.call("POST", f"/instances/{self.instance.id}/poll", body)
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    def report(self, attempt_id: str, status: str, report_id: str | None = None) -> int:
        body = {
            "status": status,
            "task_log": {"logs": [], "outputs": []},
            "report_id": report_id or uuid.uuid4().hex,
        }
        resp = self.call("POST", f"/attempts/{attempt_id}/report", body)
        if resp.status_code == 409:
            assert "message" in resp.json()  # a JSON error the agent can log
        return resp.status_code

    def capsule(self, attempt_id: str, body: dict[str, Any]) -> int:
        body = {"report_id": uuid.uuid4().hex, **body}
        return self.call("POST", f"/attempts/{attempt_id}/capsules", body).status_code


@dataclass
class Stage:
    server: RunningServer
    db: Database
    tasks: TaskStore
    fleet: FleetStore

    def agent(self) -> FakeAgent:
        token = secrets.token_urlsafe(16)
        inst = self.fleet.add_instance(
            provider="local",
            instance_type="local",
            market="spot",
            zone="z1",
            price_per_hour=None,
            token_sha256=token_sha256(token),
        )
        agent = FakeAgent(self.server.url, inst, token)
        assert agent.register().status_code == 200
        return agent

    def submit(self) -> str:
        resp = requests.post(self.server.tes + "/tasks", json=TASK, timeout=10)
        assert resp.status_code == 200, resp.text
        return str(resp.json()["id"])

    def place(self, task_id: str, agent: FakeAgent) -> None:
        """What the scheduler does: QUEUED → INITIALIZING with an attempt on the instance."""

        def add_attempt(c: Connection) -> None:
            self.fleet.add_attempt(c, task_id, agent.instance)

        with self.tasks.batch() as conn:
            done = self.tasks.transition(
                task_id,
                State.INITIALIZING,
                expect={State.QUEUED},
                on_apply=add_attempt,
                conn=conn,
            )
        assert done.applied

    def events(self, task_id: str) -> list[dict[str, Any]]:
        return self.tasks.events(task_id)


@pytest.fixture
def stage(server: RunningServer, db_url: str) -> Iterator[Stage]:
    db = open_database(db_url, run_migrations=False)
    try:
        yield Stage(server, db, TaskStore(db), FleetStore(db))
    finally:
        db.close()


def running_then_checkpointed(stage: Stage, a: FakeAgent) -> tuple[str, str]:
    """A task RUNNING on `a` whose attempt has written a capsule to move (a migration)."""
    task_id = stage.submit()
    stage.place(task_id, a)
    [assignment] = a.poll([])["assign"]
    aid = assignment["attempt_id"]
    assert a.poll([])["assign"][0]["attempt_id"] == aid  # lost answer: sent again
    assert a.report(aid, "running") == 200
    Migrations(stage.tasks, stage.fleet, Wakeups()).request(task_id, stop=True)
    [order] = a.poll([aid])["checkpoint"]
    assert a.poll([aid])["checkpoint"] == [order]  # until acknowledged
    assert a.poll([aid], [order["request_id"]])["checkpoint"] == []
    capsule = {
        "state": "complete",
        "capsule_id": f"{aid}-1",
        "sequence": 1,
        "request_id": order["request_id"],
        "stop": True,
        "reason": "manual",
        "manifest_key": "k",
        "manifest_sha256": "0" * 64,
    }
    assert a.capsule(aid, capsule) == 200
    return task_id, aid


def send_at_once(calls: list[Any]) -> list[int]:
    start = threading.Barrier(len(calls))
    codes: list[int] = []
    lock = threading.Lock()

    def run(call: Any) -> None:
        start.wait()
        code = call()
        with lock:
            codes.append(code)

    threads = [threading.Thread(target=run, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return sorted(codes)


@pytest.mark.parametrize("same_report", [True, False], ids=["resent", "distinct"])
def test_duplicated_and_reordered_agent_messages(stage: Stage, same_report: bool) -> None:
    a, b = stage.agent(), stage.agent()
    task_id, old = running_then_checkpointed(stage, a)

    # `interrupted` six times at once
    rid = uuid.uuid4().hex
    codes = send_at_once(
        [(lambda: a.report(old, "interrupted", rid if same_report else None)) for _ in range(6)]
    )
    assert codes == ([200] * 6 if same_report else [200] + [409] * 5)
    attempts = stage.fleet.attempts_of(task_id)
    assert len(attempts) == 2, [(x.reason, x.phase) for x in attempts]
    restore = attempts[1]
    assert restore.data.restore is True and restore.instance_id is None

    # a stale `complete` from the superseded attempt, then its capsule and stream
    assert a.report(old, "complete") == 409
    assert a.capsule(old, {"state": "complete", "capsule_id": "late"}) == 409
    stream = a.call("PUT", f"/attempts/{old}/streams/0/stdout", b"x")
    assert stream.status_code == 409
    assert stage.tasks.get(task_id, full=False).state is State.RUNNING  # type: ignore[union-attr]

    # the restore goes to b; a cannot speak for it
    assert stage.fleet.place_attempt(restore.id, b.instance)
    [assignment] = b.poll([])["assign"]
    assert assignment["attempt_id"] == restore.id and assignment["restore"]
    assert a.report(restore.id, "complete") == 409
    assert b.report(restore.id, "running") == 200

    # a given up on: it never becomes READY again
    stage.fleet.set_instance_state(a.instance.id, InstanceState.LOST)
    assert a.register().status_code == 409
    assert stage.fleet.instance(a.instance.id).state is InstanceState.LOST  # type: ignore[union-attr]
    assert a.poll([])["shutdown"] is True

    # b finishes; a resend of its `complete` is answered the same, a different one refused
    done = uuid.uuid4().hex
    assert b.report(restore.id, "complete", done) == 200
    assert b.report(restore.id, "complete", done) == 200
    assert b.report(restore.id, "system_error") == 409

    events = stage.events(task_id)
    assert check_finished(events) is State.COMPLETE
    check_attempts(events, stage.fleet.attempts_of(task_id))


def test_reports_racing_a_lost_instance_settle_once(stage: Stage) -> None:
    """The instance is declared LOST (and its task recovered) while its agent's `complete`
    arrives: either the report lands first and the task is COMPLETE with no recovery attempt,
    or the loss lands first and the report is refused — never both."""
    from gateway.config import load_config
    from gateway.scheduler import losses
    from gateway.scheduler.loop import Scheduler

    a = stage.agent()
    task_id = stage.submit()
    stage.place(task_id, a)
    [assignment] = a.poll([])["assign"]
    aid = assignment["attempt_id"]
    assert a.report(aid, "running") == 200
    cfg = load_config(overrides={"data_dir": str(stage.server.data_dir)}, environ={})
    scheduler = Scheduler(cfg, stage.tasks, stage.fleet, _NoProvider(), Wakeups())
    inst = stage.fleet.instance(a.instance.id)
    assert inst is not None

    def lose() -> int:
        losses.lose(scheduler, inst, "test")
        return 0

    codes = send_at_once([lambda: a.report(aid, "complete"), lose])
    attempts = stage.fleet.attempts_of(task_id)
    events = stage.events(task_id)
    path = check_legal(events)
    check_attempts(events, attempts)
    if 200 in codes:
        assert path[-1] is State.COMPLETE and len(attempts) == 1
    else:
        assert 409 in codes and path[-1] is State.RUNNING and len(attempts) == 2


class _NoProvider(Provider):
    """Launches nothing and knows of nothing; terminating is a no-op (the agent is the test's)."""

    name = "none"

    def offers(self) -> list[Offer]:
        return []

    def launch(self, spec: LaunchSpec) -> LaunchRecord:
        raise ProviderError("this test launches nothing")

    def query(self, records: Sequence[LaunchRecord]) -> dict[str, CloudState | None]:
        return {}

    def terminate(self, record: LaunchRecord) -> None:
        pass
