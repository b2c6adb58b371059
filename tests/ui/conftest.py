"""Fixtures of the web view's tests: ``promissory ui`` (and other commands) in subprocesses on
the test's schema, and a headless Chromium from the distribution, driven by Playwright."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.cli.kit import Proc, Procs, promissory_args

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str | None:
    """The distribution's Chromium (``$PROMISSORY_CHROMIUM`` to name another), if installed."""
    named = os.environ.get("PROMISSORY_CHROMIUM")
    if named:
        return named if Path(named).exists() else None
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class View:
    """A running ``promissory ui``."""

    proc: Proc
    base: str
    token: str

    @property
    def url(self) -> str:
        return f"{self.base}/?token={self.token}"

    def at(self, path: str) -> str:
        return self.base + path


TOKEN = "browser-test-token"


@pytest.fixture
def view(procs: Procs, dsn: str) -> View:
    """``promissory ui`` on the test's schema, on a free port."""
    proc = procs.start(
        promissory_args(
            dsn,
            "ui",
            "--port",
            "0",
            "--token",
            TOKEN,
            "--json",
            "--module",
            "tests.ui.approval_app",
        )
    )
    line = proc.wait_for_line(r'^\{"event":"serving"', timeout=30)
    serving: dict[str, Any] = json.loads(line.string)
    base = serving["url"].split("/?", 1)[0]
    return View(proc, base, TOKEN)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """A headless Chromium (the system's), for the tests of one module; skips without one.

    Module-scoped, not session-scoped: Playwright's sync API keeps an event loop running in
    the main thread while it is open, and ``asyncio.run`` in a later module's test would fail.
    """
    path = chromium_path()
    if path is None:
        pytest.skip(
            "no Chromium is installed: the browser tests need the distribution's package "
            "(apt-get install chromium) or $PROMISSORY_CHROMIUM"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies) and page, with dialogs recorded and dismissed."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.dialogs = []  # type: ignore[attr-defined]

    def on_dialog(dialog: Any) -> None:
        page.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.set_default_timeout(20_000)
    try:
        yield page
    finally:
        context.close()


SHOTS_ENV = "PROMISSORY_UI_SCREENSHOTS"
"""A directory to save the pages' screenshots in (the README's are made so: docs/)."""


def screenshot(page: Any, name: str, tmp_path: Path) -> Path:
    """Save a full-page screenshot as ``name``.png (in ``$PROMISSORY_UI_SCREENSHOTS`` if set)."""
    folder = Path(os.environ.get(SHOTS_ENV) or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


PYTHON = sys.executable
