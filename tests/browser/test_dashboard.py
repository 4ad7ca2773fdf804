"""The dashboard in a real browser against a real `tescape serve` with real tasks (podman, CRIU):
one completed, one failed, one cancelled, one migrated to another instance, one watched live.
Each test checks the page's content, uses its filters and links, and saves a screenshot.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Browser, Page, expect

from tests.fixtures.pages import click_and_load
from tests.fixtures.server import RunningServer, tescape_server
from tests.fixtures.tasks import cancel, ended, submit, wait_for, wait_state

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="CRIU needs root")

WAIT_MS = 90_000


def task(name: str, script: str, tags: dict[str, str], *more: str) -> dict[str, Any]:
    executors = [{"image": "alpine", "command": ["sh", "-c", s]} for s in (script, *more)]
    return {"name": name, "tags": tags, "executors": executors}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dashboard")


@pytest.fixture(scope="module")
def server(root: Path, busybox_image: str) -> Iterator[RunningServer]:
    config = {
        "images": {"rewrites": {"alpine": busybox_image}},
        "scheduler": {
            "interval_seconds": 0.2,
            "cost_migration": {"enabled": False},
            "rightsizing": {"enabled": False},
        },
        "providers": {
            "local": {
                "max_instances": 2,
                # an hour of Spot time every 10 s, so that costs show in cents
                "market": {
                    "instance_types": ["m5.large"],
                    "interruptions": False,
                    "time_scale": 360,
                },
            }
        },
        "capsules": {"store": str(root / "capsules"), "interval_seconds": 0},
    }
    with tescape_server(root / "data", config=config, run_tasks=True) as srv:
        yield srv


@pytest.fixture(scope="module")
def tasks(server: RunningServer) -> dict[str, str]:
    """The module's tasks, each in the end state its name says (the live one is started by its
    own test)."""
    ids = {
        "done": submit(
            server, task("align-done", "echo aligned 42 reads; echo ok", {"project": "alpha"})
        ),
        "failed": submit(server, task("align-fails", "echo oops >&2; exit 3", {"project": "beta"})),
        "cancelled": submit(server, task("sort-cancel", "sleep 300", {"project": "beta"})),
        "migrated": submit(
            server,
            task(
                "count-migrate",
                "i=0; while [ $i -lt 40 ]; do i=$((i+1)); echo $i; sleep 0.25; done; echo end",
                {"project": "alpha", "kind": "moved"},
            ),
        ),
    }
    wait_state(server, ids["cancelled"], {"RUNNING"}, view="MINIMAL")
    cancel(server, ids["cancelled"])
    wait_state(server, ids["migrated"], {"RUNNING"}, view="MINIMAL")

    def migrated() -> bool:
        resp = requests.post(f"{server.url}/api/v1/tasks/{ids['migrated']}:migrate", timeout=10)
        return resp.status_code == 202

    wait_for("a migration to be accepted", migrated, timeout=120, srv=server, every=0.2)
    for task_id in ids.values():
        ended(server, task_id)
    return ids


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    try:
        yield context.new_page()
    finally:
        context.close()


def shot(page: Page, screenshots: Path, name: str) -> None:
    page.screenshot(path=str(screenshots / f"{name}.png"), full_page=True)


def rows(page: Page) -> list[str]:
    return [r.get_attribute("data-id") or "" for r in page.locator("#task-rows tr[data-id]").all()]


def test_tasks_page_lists_filters_and_searches(
    server: RunningServer, tasks: dict[str, str], page: Page, screenshots: Path
) -> None:
    page.goto(server.url + "/ui/")
    expect(page.locator("h1")).to_contain_text("Tasks")
    assert set(tasks.values()) <= set(rows(page))
    done_row = page.locator(f"#task-rows tr[data-id='{tasks['done']}']")
    expect(done_row).to_contain_text("COMPLETE")
    expect(done_row).to_contain_text("align-done")
    expect(done_row).to_contain_text("project=alpha")
    expect(page.locator(f"#task-rows tr[data-id='{tasks['failed']}']")).to_contain_text(
        "EXECUTOR_ERROR"
    )
    expect(page.locator(f"#task-rows tr[data-id='{tasks['cancelled']}']")).to_contain_text(
        "CANCELED"
    )
    expect(page.locator("footer #version")).to_have_text(re.compile(r"^\d+\.\d+"))
    shot(page, screenshots, "tasks")

    page.select_option("#f-state", "EXECUTOR_ERROR")  # a state
    click_and_load(page, "form.filters button")
    assert rows(page) == [tasks["failed"]]
    page.goto(server.url + "/ui/")
    page.fill("#f-tag", "project=alpha")  # a tag
    click_and_load(page, "form.filters button")
    assert set(rows(page)) == {tasks["done"], tasks["migrated"]}
    page.fill("#f-tag", "")
    page.fill("#f-name", "align-")  # a name prefix
    click_and_load(page, "form.filters button")
    assert set(rows(page)) == {tasks["done"], tasks["failed"]}
    page.goto(server.url + "/ui/")
    page.fill("#f-id", tasks["cancelled"])  # a task id
    click_and_load(page, "form.filters button")
    assert rows(page) == [tasks["cancelled"]]
    page.click(f"a:text('{tasks['cancelled']}')")
    expect(page.locator("h1")).to_contain_text(tasks["cancelled"])
    expect(page.locator("#task-state")).to_contain_text("CANCELED")
    page.goto(server.url + "/ui/?state=NOPE")
    expect(page.locator(".error")).to_contain_text("unknown state")


def test_a_migrated_task_shows_its_timeline_attempts_and_cost(
    server: RunningServer, tasks: dict[str, str], page: Page, screenshots: Path
) -> None:
    page.goto(f"{server.url}/ui/tasks/{tasks['migrated']}")
    expect(page.locator("#task-state")).to_contain_text("COMPLETE")
    attempts = page.locator("#attempts tbody tr")
    expect(attempts).to_have_count(2)
    expect(attempts.nth(1)).to_contain_text("manual")  # the move
    expect(attempts.nth(0)).to_contain_text("m5.large")
    expect(attempts.nth(0)).to_contain_text("spot")
    assert page.locator("svg.timeline rect.span").count() == 2
    assert page.locator("svg.timeline circle.m-checkpoint").count() >= 1
    assert page.locator("svg.timeline circle.m-restore").count() == 1
    expect(page.locator("#capsules tbody tr")).not_to_have_count(0)
    expect(page.locator("#events")).to_contain_text("restored")
    cost = page.locator("#task-cost").inner_text()
    assert re.fullmatch(r"\$\d+\.\d{4}", cost) and float(cost[1:]) > 0, cost
    expect(page.locator("pre.log[data-stream=stdout]")).to_contain_text("40\nend")
    shot(page, screenshots, "task-migrated")


def test_failed_and_cancelled_tasks_show_why(
    server: RunningServer, tasks: dict[str, str], page: Page, screenshots: Path
) -> None:
    page.goto(f"{server.url}/ui/tasks/{tasks['failed']}")
    expect(page.locator("#task-state")).to_contain_text("EXECUTOR_ERROR")
    expect(page.locator("#part-logs")).to_contain_text("exit code 3")
    expect(page.locator("pre.log.err")).to_contain_text("oops")
    shot(page, screenshots, "task-failed")
    page.goto(f"{server.url}/ui/tasks/{tasks['cancelled']}")
    expect(page.locator("#task-state")).to_contain_text("CANCELED")
    expect(page.locator("#events")).to_contain_text("CANCELED")
    page.goto(f"{server.url}/ui/tasks/no-such-task")
    expect(page.locator(".error")).to_contain_text("no task no-such-task")


def test_a_running_task_page_follows_it_live(
    server: RunningServer, tasks: dict[str, str], page: Page, screenshots: Path
) -> None:
    """Opened while the task runs, never reloaded: the first executor's output appears when it
    ends, the usage chart fills, then the final state and the last executor's output."""
    task_id = submit(
        server,
        task(
            "live-follow",
            "echo stage one finished",
            {"project": "gamma"},
            "i=0; while [ $i -lt 60 ]; do i=$((i+1)); echo tick $i; sleep 0.25; done",
        ),
    )
    wait_state(server, task_id, {"RUNNING"}, view="MINIMAL")
    page.goto(f"{server.url}/ui/tasks/{task_id}")
    expect(page.locator("#task-state")).to_contain_text("RUNNING")
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads
    expect(page.locator("#part-logs")).to_contain_text("stage one finished", timeout=WAIT_MS)
    expect(page.locator("#cpu-chart polyline")).to_have_count(1, timeout=WAIT_MS)
    shot(page, screenshots, "task-live-running")
    expect(page.locator("#task-state")).to_contain_text("COMPLETE", timeout=WAIT_MS)
    expect(page.locator("#part-logs")).to_contain_text("tick 60", timeout=WAIT_MS)
    assert page.evaluate("window.__sameDocument") is True
    shot(page, screenshots, "task-live-done")


def test_a_reclaim_shows_its_notice_on_the_timeline_and_the_instance(
    server: RunningServer, tasks: dict[str, str], page: Page, screenshots: Path
) -> None:
    task_id = submit(
        server,
        task(
            "count-reclaim",
            "i=0; while [ $i -lt 40 ]; do i=$((i+1)); echo $i; sleep 0.25; done",
            {"project": "gamma"},
        ),
    )
    wait_state(server, task_id, {"RUNNING"}, view="MINIMAL")
    attempts = requests.get(f"{server.url}/api/v1/tasks/{task_id}/attempts", timeout=10)
    victim = attempts.json()["attempts"][-1]["instance_id"]
    resp = requests.post(
        f"{server.url}/api/v1/instances/{victim}:interrupt", json={"notice_seconds": 30}, timeout=10
    )
    assert resp.status_code == 202, resp.text
    page.goto(server.url + "/ui/instances")
    expect(page.locator(f"tr[data-id='{victim}'] .notice")).to_contain_text("terminate notice")
    shot(page, screenshots, "instances-reclaim")
    ended(server, task_id)
    page.goto(f"{server.url}/ui/tasks/{task_id}")
    expect(page.locator("#task-state")).to_contain_text("COMPLETE")
    expect(page.locator("#attempts tbody tr").nth(1)).to_contain_text("reclaim")
    assert page.locator("svg.timeline circle.m-interruption").count() == 1
    expect(page.locator("#events")).to_contain_text("terminate notice")
    shot(page, screenshots, "task-reclaimed")


def test_the_tasks_page_refreshes_itself(
    server: RunningServer, tasks: dict[str, str], page: Page
) -> None:
    page.goto(server.url + "/ui/?tag=project=delta")
    expect(page.locator("#task-rows")).to_contain_text("no tasks match")
    new = submit(server, task("appears-live", "true", {"project": "delta"}))
    expect(page.locator(f"#task-rows tr[data-id='{new}']")).to_have_count(1, timeout=15_000)
    expect(page.locator(f"#task-rows tr[data-id='{new}']")).to_contain_text(
        "COMPLETE", timeout=WAIT_MS
    )


def test_instances_page_and_csv(
    server: RunningServer, tasks: dict[str, str], page: Page, screenshots: Path
) -> None:
    page.goto(server.url + "/ui/instances?all=1")
    table = page.locator("#instances tbody tr[data-id]")
    expect(table.first).to_contain_text("m5.large")
    n = table.count()
    assert n >= 2  # the migration went to another instance
    expect(page.locator("#instances")).to_contain_text("spot")
    expect(page.locator("#instances")).to_contain_text("us-east-1")
    shot(page, screenshots, "instances")
    with page.expect_download() as info:
        page.click("#csv")
    body = Path(info.value.path()).read_text()
    parsed = list(csv.DictReader(io.StringIO(body)))
    assert len(parsed) == n
    assert {r["instance_type"] for r in parsed} == {"m5.large"}
    assert all(r["market"] == "spot" and float(r["price_per_hour"]) > 0 for r in parsed)
    assert {"id", "zone", "state", "task_ids", "cpu_pct", "mem_pct"} <= set(parsed[0])


def test_system_page(
    server: RunningServer, tasks: dict[str, str], page: Page, screenshots: Path
) -> None:
    page.goto(server.url + "/ui/system")
    expect(page.locator("#overall")).to_have_text("ok")
    expect(page.locator("#health-database")).to_contain_text("ok")
    expect(page.locator("#health-capsule-store")).to_contain_text("ok")
    expect(page.locator("#health-provider")).to_contain_text("scheduler running")
    expect(page.locator("#by-state")).to_contain_text("EXECUTOR_ERROR")
    expect(page.locator("#queue-latency")).to_contain_text(re.compile(r"last \d+ placements"))
    expect(page.locator(".card", has_text="Checkpoints")).to_contain_text("100.0%")
    # the migrated task's restore, and the reclaimed one's when that test ran first
    expect(page.locator(".card", has_text="Restores")).to_contain_text(
        re.compile(r"[12] succeeded, 0 failed")
    )
    expect(page.locator(".card", has_text="Spend, last 7 days")).to_contain_text("$")
    shot(page, screenshots, "system")


def test_costs_page(
    server: RunningServer, tasks: dict[str, str], page: Page, screenshots: Path
) -> None:
    page.goto(server.url + "/ui/costs")
    spent = float(page.locator("#spent").inner_text().lstrip("$"))
    on_demand = float(page.locator("#on-demand").inner_text().lstrip("$"))
    assert 0 < spent < on_demand  # Spot costs less
    expect(page.locator("#by-tag")).to_contain_text("project=alpha")
    expect(page.locator("#by-tag")).to_contain_text("project=beta")
    expect(page.locator("#by-task")).to_contain_text(tasks["migrated"])
    assert page.locator("#by-day rect.bar").count() == 31
    shot(page, screenshots, "costs")
    page.click("a.chip:text('7 days')")
    assert page.locator("#by-day rect.bar").count() == 8
    page.click("#by-tag a:text('project=alpha')")
    expect(page.locator("#f-tag")).to_have_value("project=alpha")
