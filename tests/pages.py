"""What the browser tests share: a real headless Chromium (the system's), a page, screenshots."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import IN_CI

CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
SCREENSHOTS = os.environ.get("TRACESITE_SCREENSHOT_DIR")
XSS = '<img src=x onerror="window.__xss=1;alert(1)"><script>window.__xss=2</script> 显示用户表的10条用户数据'


@pytest.fixture
async def browser():
    if not Path(CHROMIUM).exists():
        message = f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        await browser.close()


@pytest.fixture
async def page(browser):
    page = await browser.new_page(viewport={"width": 1300, "height": 900})
    page.dialogs = []
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    yield page
    await page.close()


async def shot(page, name: str) -> None:
    if SCREENSHOTS:
        await page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=False)


async def ask(page, host: str, question: str) -> None:
    await page.goto(f"http://{host}/")
    await page.wait_for_selector("[data-connection][data-state=connected]")
    await page.fill("textarea", question)
    await page.keyboard.press("Enter")
