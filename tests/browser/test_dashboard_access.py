"""The dashboard in a real browser with Basic auth (the browser's own credentials, as a person
would type them at its prompt): a user sees only their tasks, an admin everyone's with owners;
paging through 130 tasks by the page's own links. The server runs no tasks (scheduler off)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser, HttpCredentials, Page, expect
from playwright.sync_api import Error as PlaywrightError
from werkzeug.security import generate_password_hash

from tests.fixtures.pages import click_and_load
from tests.fixtures.server import RunningServer, tescape_server

USERS = {"ann": ("ann-pw", False), "bea": ("bea-pw", False), "root": ("root-pw", True)}


def auth(user: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{USERS[user][0]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    users = [
        {"name": n, "password_hash": generate_password_hash(pw), "admin": admin}
        for n, (pw, admin) in USERS.items()
    ]
    config = {"auth": {"mode": "basic", "users": users}}
    with tescape_server(tmp_path_factory.mktemp("access") / "data", config=config) as srv:
        yield srv


@pytest.fixture(scope="module")
def owned(server: RunningServer) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"ann": [], "bea": []}
    for i in range(130):
        who = "ann" if i % 13 else "bea"  # ann 120, bea 10
        doc = {
            "name": f"{who}-{i:03d}",
            "tags": {"sample": f"s{i % 5}"},
            "executors": [{"image": "busybox", "command": ["true"]}],
        }
        resp = requests.post(server.tes + "/tasks", json=doc, headers=auth(who), timeout=10)
        assert resp.status_code == 200, resp.text
        out[who].append(resp.json()["id"])
    return out


def page_as(browser: Browser, user: str | None) -> Page:
    creds = HttpCredentials(username=user, password=USERS[user][0]) if user else None
    context = browser.new_context(viewport={"width": 1360, "height": 900}, http_credentials=creds)
    return context.new_page()


def ids_on(page: Page) -> list[str]:
    return [r.get_attribute("data-id") or "" for r in page.locator("#task-rows tr[data-id]").all()]


def test_without_credentials_the_browser_is_refused(
    server: RunningServer, browser: Browser
) -> None:
    page = page_as(browser, None)
    try:
        # headless, the browser cannot show its prompt: the navigation fails outright
        with pytest.raises(PlaywrightError, match="ERR_INVALID_AUTH_CREDENTIALS"):
            page.goto(server.url + "/ui/")
        resp = page.request.get(server.url + "/ui/")
        assert resp.status == 401 and resp.headers["www-authenticate"].startswith("Basic")
    finally:
        page.context.close()


def test_a_user_sees_only_theirs_and_pages_through_them(
    server: RunningServer, browser: Browser, owned: dict[str, list[str]], screenshots: Path
) -> None:
    page = page_as(browser, "bea")
    try:
        page.goto(server.url + "/ui/")
        assert ids_on(page) == list(reversed(owned["bea"]))
        expect(page.locator("h1")).to_contain_text("10 in all")
        expect(page.locator("nav")).not_to_contain_text("Instances")
        page.goto(f"{server.url}/ui/tasks/{owned['ann'][0]}")
        expect(page.locator(".error")).to_contain_text("no task")
        page.goto(server.url + "/ui/instances")
        expect(page.locator(".error")).to_contain_text("Only an admin")
    finally:
        page.context.close()

    page = page_as(browser, "ann")
    try:
        page.goto(server.url + "/ui/")
        seen = ids_on(page)
        while page.locator("#next-page").count():
            click_and_load(page, "#next-page")
            seen += ids_on(page)
        assert seen == list(reversed(owned["ann"]))  # 50 + 50 + 20, each once, newest first
        click_and_load(page, "text=« newest")
        assert ids_on(page)[0] == owned["ann"][-1]
        page.fill("#f-tag", "sample=s3")
        click_and_load(page, "form.filters button")
        assert ids_on(page) and all("s3" in t for t in page.locator("#task-rows").all_inner_texts())
        shot_path = screenshots / "tasks-user-filtered.png"
        page.screenshot(path=str(shot_path), full_page=True)
    finally:
        page.context.close()


def test_an_admin_sees_everyone_with_owners(
    server: RunningServer, browser: Browser, owned: dict[str, list[str]], screenshots: Path
) -> None:
    page = page_as(browser, "root")
    try:
        page.goto(server.url + "/ui/?page_size=200")
        assert set(ids_on(page)) == set(owned["ann"]) | set(owned["bea"])
        expect(page.locator("thead")).to_contain_text("owner")
        expect(page.locator(f"tr[data-id='{owned['bea'][0]}']")).to_contain_text("bea")
        expect(page.locator(".who")).to_contain_text("root (admin)")
        page.goto(server.url + "/ui/system")
        expect(page.locator("#queue-depth")).to_have_text("130")
        expect(page.locator("#health-provider")).to_contain_text("disabled")
        page.screenshot(path=str(screenshots / "system-admin.png"), full_page=True)
    finally:
        page.context.close()
