"""Browser fixtures: Debian's Chromium driven by Playwright for Python. No browser is ever
downloaded: `executable_path` names the system one, and its absence fails the tests (CI
installs the `chromium` package; `python3 -m capsule_runtime.host.setup --profile test` too)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium) "
            "to run the dashboard's browser tests; Playwright must not download one",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where each test saves what the page looked like: TESCAPE_SCREENSHOTS (CI keeps it as an
    artifact) or the session's tmp dir. Look at them after a change to a page."""
    chosen = os.environ.get("TESCAPE_SCREENSHOTS")
    if chosen:
        Path(chosen).mkdir(parents=True, exist_ok=True)
        return Path(chosen)
    return tmp_path_factory.mktemp("screenshots")
