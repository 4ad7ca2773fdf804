"""The dashboard through the Flask app (no server process): every page renders, a user sees only
their own tasks, keyset paging walks every task once, filters apply, the live twins answer
JSON; and the chart geometry the templates draw."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from gateway import status as gateway_status
from gateway.app import create_app
from gateway.auth import token_sha256
from gateway.config import load_config
from gateway.dashboard import charts
from gateway.status import OutcomeTally
from gateway.store.fleet import InstanceState
from gateway.store.fleet_data import InstanceData, Interruption
from gateway.tes.states import State

ADMIN = {"Authorization": "Bearer admin-token"}
ALICE = {"Authorization": "Bearer alice-token"}
BOB = {"Authorization": "Bearer bob-token"}
ROW_ID = re.compile(r'<tr data-id="([0-9a-z]+)"')


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    tokens = [
        {"token_sha256": token_sha256("admin-token"), "user": "root", "admin": True},
        {"token_sha256": token_sha256("alice-token"), "user": "alice"},
        {"token_sha256": token_sha256("bob-token"), "user": "bob"},
    ]
    cfg = load_config(
        overrides={
            "data_dir": str(tmp_path),
            "scheduler": {"enabled": False},
            "auth": {"mode": "bearer", "tokens": tokens},
        },
    )
    application = create_app(cfg)
    yield application
    application.extensions["tescape"].close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def submit(client: FlaskClient, who: dict[str, str], name: str, **tags: str) -> str:
    doc = {"name": name, "tags": tags, "executors": [{"image": "busybox", "command": ["true"]}]}
    resp = client.post("/ga4gh/tes/v1/tasks", json=doc, headers=who)
    assert resp.status_code == 200, resp.text
    return str(resp.json["id"])  # type: ignore[index]


def listed(client: FlaskClient, who: dict[str, str], query: str = "") -> list[str]:
    resp = client.get("/ui/" + query, headers=who)
    assert resp.status_code == 200, resp.text
    return ROW_ID.findall(resp.text)


def test_every_page_needs_the_apis_credentials(client: FlaskClient) -> None:
    for path in ("/ui/", "/ui/system", "/ui/costs", "/ui/instances", "/ui/live/tasks"):
        resp = client.get(path)
        assert resp.status_code == 401 and "Bearer" in resp.headers["WWW-Authenticate"]
    assert client.get("/ui/static/dashboard.css").status_code == 401
    assert client.get("/ui/static/dashboard.css", headers=ALICE).status_code == 200


def test_a_user_sees_only_their_own_tasks(client: FlaskClient) -> None:
    mine = submit(client, ALICE, "a-1", project="x")
    theirs = submit(client, BOB, "b-1", project="x")
    assert listed(client, ALICE) == [mine]
    assert set(listed(client, ADMIN)) == {mine, theirs}
    assert listed(client, ALICE, f"?id={theirs}") == []
    assert client.get(f"/ui/tasks/{theirs}", headers=ALICE).status_code == 404
    assert client.get(f"/ui/live/tasks/{theirs}", headers=ALICE).status_code == 404
    page = client.get(f"/ui/tasks/{mine}", headers=ALICE)
    assert page.status_code == 200 and mine in page.text and "QUEUED" in page.text
    assert client.get("/ui/instances", headers=ALICE).status_code == 403
    assert client.get("/ui/instances.csv", headers=ALICE).status_code == 403
    assert 'href="/ui/instances"' not in client.get("/ui/", headers=ALICE).text
    assert client.get("/ui/instances", headers=ADMIN).status_code == 200
    # the counts on the tasks page are the user's own
    assert ">1</b>" in client.get("/ui/", headers=ALICE).text


def test_keyset_pages_walk_every_task_once_newest_first(client: FlaskClient) -> None:
    ids = [
        submit(client, ADMIN, f"job-{i:03d}", batch="even" if i % 2 else "odd") for i in range(120)
    ]
    seen: list[str] = []
    query = "?page_size=50"
    pages = 0
    while True:
        resp = client.get("/ui/" + query, headers=ADMIN)
        seen += ROW_ID.findall(resp.text)
        pages += 1
        more = re.search(r'id="next-page" href="/ui/(\?[^"]+)"', resp.text)
        if not more:
            break
        query = more.group(1).replace("&amp;", "&")
    assert pages == 3 and seen == list(reversed(ids))
    # filters and paging together: a tag, then a name prefix
    evens = listed(client, ADMIN, "?tag=batch%3Deven&page_size=500")
    assert len(evens) == 60 and set(evens) == set(ids[1::2])
    assert len(listed(client, ADMIN, "?name=job-01")) == 10
    assert listed(client, ADMIN, "?state=COMPLETE") == []
    assert len(listed(client, ADMIN, "?state=queued&page_size=7")) == 7
    bad = client.get("/ui/?page_size=0", headers=ADMIN)
    assert bad.status_code == 400 and "page_size" in bad.text


def test_live_twins_answer_json(client: FlaskClient) -> None:
    task_id = submit(client, ALICE, "live")
    rows = client.get("/ui/live/tasks?state=QUEUED", headers=ALICE)
    assert rows.status_code == 200 and rows.json["count"] == 1  # type: ignore[index]
    assert task_id in rows.json["rows"]  # type: ignore[index]
    one = client.get(f"/ui/live/tasks/{task_id}", headers=ALICE).json
    assert one is not None and one["state"] == "QUEUED" and one["terminal"] is False
    assert set(one["parts"]) == {"summary", "timeline", "usage", "attempts", "events", "logs"}
    assert "created" in one["parts"]["events"]
    assert client.get("/ui/live/tasks?state=bogus", headers=ALICE).status_code == 400


def test_system_costs_and_csv_render(client: FlaskClient) -> None:
    submit(client, ALICE, "c")
    system = client.get("/ui/system", headers=ADMIN)
    assert system.status_code == 200 and 'id="overall">ok<' in system.text
    costs = client.get("/ui/costs?days=7", headers=ALICE)
    assert costs.status_code == 200 and "last 7 days" in costs.text
    assert costs.text.count('class="bar"') == 8
    assert client.get("/ui/costs?days=bogus", headers=ALICE).status_code == 200
    out = client.get("/ui/instances.csv", headers=ADMIN)
    assert out.mimetype == "text/csv" and "attachment" in out.headers["Content-Disposition"]
    header = next(csv.reader(io.StringIO(out.text)))
    assert header[:3] == ["id", "instance_type", "market"]


def test_version_in_the_footer_matches_service_info(client: FlaskClient) -> None:
    version = client.get("/ga4gh/tes/v1/service-info").json["version"]  # type: ignore[index]
    assert f'<span id="version">{version}</span>' in client.get("/ui/", headers=ALICE).text


# -- chart geometry ----------------------------------------------------------------------------


def test_axis_maxima_are_round_numbers() -> None:
    assert charts._nice_max(0) == 1.0
    assert charts._nice_max(0.55) == pytest.approx(0.6)
    assert charts._nice_max(7.2) == 8.0
    assert charts._nice_max(1.0) == 1.0
    assert charts._nice_max(1234) == 1500


def test_line_chart_spans_the_plot_area() -> None:
    empty = charts.line_chart([], "cores")
    assert empty.empty and empty.points == ""
    chart = charts.line_chart(
        [("2026-12-01T10:00:00+00:00", 0.0), ("2026-12-01T10:00:10+00:00", 2.0)], "cores"
    )
    first, last = (tuple(map(float, p.split(","))) for p in chart.points.split())
    assert first[0] == charts.PAD_LEFT and last[0] == charts.WIDTH - 4
    assert first[1] == charts.HEIGHT - charts.PAD_BOTTOM and last[1] == charts.PAD_TOP
    assert chart.y_max == 2.0 and chart.x_labels == ("10:00:00", "10:00:10")


def test_memory_is_charted_in_mib_below_a_gib() -> None:
    usage: list[dict[str, Any]] = [
        {"time": "2026-12-01T10:00:00+00:00", "cpu_cores": None, "memory_bytes": 300 * 2**20},
        {"time": "2026-12-01T10:00:05+00:00", "cpu_cores": 0.5, "memory_bytes": 310 * 2**20},
    ]
    made = charts.usage_charts(usage)
    assert made["memory"].y_label == "MiB" and made["memory"].y_max == 400
    assert made["cpu"].points.count(",") == 1  # the first sample has no CPU rate yet


def test_timeline_places_attempts_and_marks() -> None:
    attempts = [
        {"id": "a1", "number": 1, "start": "2026-12-01T10:00:00+00:00",
         "end": "2026-12-01T10:00:10+00:00", "market": "spot", "instance_type": "m5.large"},
        {"id": "a2", "number": 2, "start": "2026-12-01T10:00:10+00:00", "end": None,
         "market": "on-demand", "instance_type": "m5.large", "reason": "reclaim"},
    ]  # fmt: skip
    events = [
        {"time": "2026-12-01T10:00:09+00:00", "kind": "capsule", "attempt_id": "a1"},
        {"time": "2026-12-01T10:00:12+00:00", "kind": "restored", "attempt_id": "a2"},
        {"time": "2026-12-01T10:00:12+00:00", "kind": "state", "attempt_id": "a2"},
    ]
    tl = charts.timeline("2026-12-01T10:00:00+00:00", attempts, events, "2026-12-01T10:00:20+00:00")
    assert [s.row for s in tl.spans] == [0, 1] and tl.spans[1].css == "ondemand"
    assert tl.spans[0].x == charts.PAD_LEFT
    middle = charts.PAD_LEFT + (charts.WIDE - charts.PAD_LEFT - 4) / 2
    assert tl.spans[0].x + tl.spans[0].width == pytest.approx(middle)  # 10 of 20 s
    assert [(m.kind, m.row) for m in tl.marks] == [("checkpoint", 0), ("restore", 1)]
    assert tl.end == "2026-12-01T10:00:20+00:00"  # still running: up to now


def test_bar_chart_draws_the_ghost_behind() -> None:
    chart = charts.bar_chart([("12-01", 1.0, 4.0), ("12-02", 0.0, 0.0)], every_label=1)
    assert chart.y_max == 4.0
    assert chart.ghosts[0].height > chart.bars[0].height > 0 and chart.bars[1].height == 0
    assert [b.label for b in chart.bars] == ["12-01", "12-02"]


def test_a_reclaimed_instance_shows_its_notice_and_deadline(
    app: Flask, client: FlaskClient
) -> None:
    fleet = app.extensions["tescape"].fleet
    inst = fleet.add_instance(
        provider="local",
        instance_type="m5.large",
        market="spot",
        zone="us-east-1a",
        price_per_hour=0.031,
        token_sha256="x",
        data=InstanceData.model_validate({"capacity": {"cpu_cores": 2, "ram_gb": 8}}),
    )
    deadline = "2026-12-01T10:02:00+00:00"
    fleet.set_instance_state(
        inst.id,
        InstanceState.READY,
        data=inst.data.model_copy(
            update={"interruption": Interruption(action="terminate", deadline=deadline)}
        ),
    )
    page = client.get("/ui/instances", headers=ADMIN).text
    assert inst.id in page and "terminate notice, gone at 10:02:00" in page
    assert "0.0310" in page and "of 2.0" in page
    [row] = csv.DictReader(io.StringIO(client.get("/ui/instances.csv", headers=ADMIN).text))
    assert row["notice"] == "terminate" and row["deadline"] == deadline
    assert row["market"] == "spot" and row["cpu_cores"] == "2.0"


# -- the status document's checkpoint and restore tally -------------------------------------------


def test_outcome_tally_counts_incrementally_and_matches_a_full_count(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = app.extensions["tescape"]
    monkeypatch.setattr(OutcomeTally, "SETTLE", 3)  # most events fall below the watermark
    kinds = ["capsule", "state", "checkpoint_failed", "restored", "capsule", "capsule_corrupt"]
    expected: dict[str, int] = {}
    tally = OutcomeTally()
    for round_ in range(4):
        for kind in kinds[round_:]:
            services.store.record(None, kind, message="x")
            expected[kind] = expected.get(kind, 0) + 1
        with services.database.engine.connect() as conn:
            got = tally.counts(conn)
        assert got == {k: v for k, v in expected.items() if k != "state"}
    assert tally.watermark > 0  # it kept what had settled
    doc = gateway_status.status(services)
    assert doc["checkpoints"]["succeeded"] == expected["capsule"]
    assert doc["checkpoints"]["failed"] == expected["checkpoint_failed"]
    assert doc["restores"] == {
        "succeeded": expected["restored"],
        "failed": expected["capsule_corrupt"],
        "success_rate": round(
            expected["restored"] / (expected["restored"] + expected["capsule_corrupt"]), 4
        ),
    }


def test_what_users_typed_is_escaped_everywhere(client: FlaskClient) -> None:
    evil = '<script>alert("x")</script>'
    doc = {
        "name": evil,
        "tags": {evil: evil},
        "executors": [{"image": "busybox", "command": ["true"]}],
    }
    task_id = client.post("/ga4gh/tes/v1/tasks", json=doc, headers=ALICE).json["id"]  # type: ignore[index]
    for path in ("/ui/", f"/ui/tasks/{task_id}", "/ui/live/tasks", f"/ui/live/tasks/{task_id}"):
        body = client.get(path, headers=ALICE).text
        assert "<script>alert" not in body and "&lt;script&gt;" in body
    assert client.get("/ui", headers=ALICE).status_code in (301, 308)  # to /ui/


def test_queue_latency_is_creation_to_placement(app: Flask, client: FlaskClient) -> None:
    services = app.extensions["tescape"]
    empty = gateway_status.status(services)["queue"]["latency"]
    assert empty == {"p50_seconds": None, "p95_seconds": None, "placements": 0}
    ids = [submit(client, ADMIN, f"q{i}") for i in range(4)]
    for task_id in ids[:3]:
        assert services.store.transition(task_id, State.INITIALIZING).applied
    latency = gateway_status.status(services)["queue"]["latency"]
    assert latency["placements"] == 3
    assert 0 <= latency["p50_seconds"] <= latency["p95_seconds"] < 60
    page = client.get("/ui/system", headers=ADMIN).text
    assert "last 3 placements" in page
