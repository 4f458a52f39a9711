"""Fixtures for the dashboard tests: a real daemon with a tokens file, and headless Chromium.

Chromium is Debian's ``chromium`` package, driven by Playwright with
``executable_path`` pointing at it (Playwright never downloads a browser here);
``./bin/test`` installs it with apt-get as root. In CI a missing Chromium fails.

Screenshots of every page go to a temporary directory, or to
``$ACTORFLOW_UI_SCREENSHOTS`` when set: ``ACTORFLOW_UI_SCREENSHOTS=docs/images ./bin/test
tests/ui`` remakes the screenshots the docs show.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, sync_playwright
from ui_harness import ADMIN_TOKEN, OTHER_TOKEN, USER_TOKEN, Daemon, UiDaemon, chromium_path


@pytest.fixture(scope="session")
def ui_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiDaemon]:
    """A daemon with an admin (alice), a user (bob) and another user (carol)."""
    workdir = tmp_path_factory.mktemp("ui")
    tokens = workdir / "tokens"
    tokens.write_text(
        f"{ADMIN_TOKEN} alice admin\n{USER_TOKEN} bob\n{OTHER_TOKEN} carol\n", encoding="utf-8"
    )
    tokens.chmod(0o600)
    wanted = os.environ.get("ACTORFLOW_UI_SCREENSHOTS")
    screenshots = Path(wanted) if wanted else workdir / "screenshots"
    screenshots.mkdir(parents=True, exist_ok=True)
    daemon = Daemon(workdir, ["--tokens", str(tokens)], None).start()
    try:
        yield UiDaemon(daemon, screenshots)
    finally:
        daemon.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless system Chromium, shared by a module's tests."""
    executable = chromium_path()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh browser profile (no cookies) for one test."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    ctx.set_default_timeout(10_000)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def browser_contexts(browser: Browser) -> Iterator[tuple[BrowserContext, BrowserContext]]:
    """Two browser profiles at once (two people looking at the same daemon)."""
    first = browser.new_context(viewport={"width": 1280, "height": 800})
    second = browser.new_context(viewport={"width": 1280, "height": 800})
    for ctx in (first, second):
        ctx.set_default_timeout(10_000)
    try:
        yield first, second
    finally:
        first.close()
        second.close()
