"""Helpers for the dashboard tests: the daemon under test, tokens, logging in, screenshots.

Test modules import these by name (``from ui_harness import ...``); the fixtures
live in conftest.py.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "daemon"))

from daemon_harness import Daemon, wait_for  # after the path above

ADMIN_TOKEN = "ui-admin-token-0123456789abcdef"
USER_TOKEN = "ui-user-token-0123456789abcdef"
OTHER_TOKEN = "ui-other-token-0123456789abcdef"
CHROMIUM_NAMES = ("chromium", "chromium-browser")


def chromium_path() -> str:
    """The system Chromium (fails in CI when it is missing, else skips)."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    message = "chromium is not installed (./bin/test installs it with apt-get as root)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class UiDaemon:
    """The daemon the dashboard tests look at, and who may log in."""

    daemon: Daemon
    screenshots: Path

    @property
    def url(self) -> str:
        """The daemon's base URL."""
        return self.daemon.url

    def api(self, token: str) -> httpx.Client:
        """An API client acting as the user of ``token``."""
        return self.daemon.client(token)

    def shot(self, page: Page, name: str) -> Path:
        """Save a screenshot of ``page`` as ``dashboard-<name>.png``; its path."""
        path = self.screenshots / f"dashboard-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path


def log_in(context: BrowserContext, daemon: UiDaemon, token: str, path: str = "/ui") -> Page:
    """A page of ``context`` logged in with ``token`` through the login form, at ``path``."""
    page = context.new_page()
    page.goto(daemon.url + path)
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"**{path}")
    return page


__all__ = [
    "ADMIN_TOKEN",
    "OTHER_TOKEN",
    "USER_TOKEN",
    "Daemon",
    "UiDaemon",
    "chromium_path",
    "log_in",
    "wait_for",
]
