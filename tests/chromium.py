"""Debian's Chromium for the browser tests: where it is and how it is launched.

Playwright for Python drives it (the dev extra); never a Playwright browser download.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("SLYKER_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--no-proxy-server",  # loopback only, whatever the environment's proxy settings
]


def require_chromium() -> None:
    """Fail (not skip: the browser tests are part of the suite) when Chromium is missing."""
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"no Chromium at {CHROMIUM}: install Debian's package (apt-get install chromium) "
            "or set SLYKER_TEST_CHROMIUM",
            pytrace=False,
        )


@asynccontextmanager
async def launched_chromium(playwright: Any) -> AsyncIterator[Any]:
    """A headless Chromium from a started ``async_playwright()``, closed afterwards."""
    chromium = await playwright.chromium.launch(
        executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, timeout=30_000
    )
    try:
        yield chromium
    finally:
        await chromium.close()
