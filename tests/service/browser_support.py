"""Debian's headless Chromium, driven by Selenium, for the dashboard's tests.

Selenium is given both paths (the browser and chromedriver) and runs offline, so Selenium
Manager never downloads anything. A missing browser skips locally with the reason and fails
under ``CI=true``, like every real component of the test suite.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: How long a test waits for the page to show what it expects (live updates included).
WAIT_S = 15.0
#: Set to a path, the screenshot test writes the docs' picture of the dashboard there.
SCREENSHOT_ENV = "POWERDRIVERS_SCREENSHOT"


def require_browser() -> None:
    """Skip (fail under ``CI=true``) unless Debian's chromium and chromedriver are installed."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if not missing:
        return
    why = f"{', '.join(missing)} missing (Debian packages chromium and chromium-driver)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"headless Chromium is required under CI=true: {why}")
    pytest.skip(f"headless Chromium unavailable: {why}")


@contextmanager
def chromium(width: int = 1280, height: int = 860) -> Iterator[WebDriver]:
    """Start headless Chromium in a throwaway profile; it is always quit, whatever happens."""
    require_browser()
    profile = tempfile.mkdtemp(prefix="powerdrivers-chromium-")
    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        f"--window-size={width},{height}",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(argument)
    previous = os.environ.get("SE_OFFLINE")
    os.environ["SE_OFFLINE"] = "true"
    try:
        driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    except BaseException:
        shutil.rmtree(profile, ignore_errors=True)
        raise
    finally:
        if previous is None:
            del os.environ["SE_OFFLINE"]
        else:
            os.environ["SE_OFFLINE"] = previous
    try:
        driver.set_page_load_timeout(WAIT_S)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def sign_in(driver: WebDriver, base_url: str, token: str) -> None:
    """Sign in through the login form, as a person would, and wait for the fleet page."""
    driver.get(f"{base_url}/login")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "sign-in").click()
    wait(driver).until(expected_conditions.presence_of_element_located((By.ID, "fleet")))


def wait(driver: WebDriver, timeout: float = WAIT_S) -> WebDriverWait[WebDriver]:
    """A wait on the page (polling, never a sleep) for up to ``timeout`` seconds.

    An element replaced by a live update while the condition read it is read again next time.
    """
    ignored = (NoSuchElementException, StaleElementReferenceException)
    return WebDriverWait(driver, timeout, poll_frequency=0.05, ignored_exceptions=ignored)


def texts(driver: WebDriver, css: str) -> list[str]:
    """Return the text a person sees of every element matching ``css``, read in one go.

    One script reads them all, so a live update replacing part of the page cannot interleave.
    """
    found = driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]), e => e.innerText ?? e.textContent);",
        css,
    )
    return [str(text).strip() for text in found]


def attributes(driver: WebDriver, css: str, name: str) -> list[str | None]:
    """Return the attribute ``name`` of every element matching ``css``, read in one go."""
    found = driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]), e => e.getAttribute(arguments[1]));",
        css,
        name,
    )
    return [None if value is None else str(value) for value in found]


def text(driver: WebDriver, css: str) -> str:
    """Return the text of the one element matching ``css`` (an ``AssertionError`` if not one)."""
    found = texts(driver, css)
    assert len(found) == 1, f"{len(found)} elements match {css!r}"
    return found[0]


def wait_live(driver: WebDriver) -> None:
    """Wait until the page's event stream is open, so that what happens next is seen live."""
    wait(driver).until(lambda d: d.find_element(By.ID, "live").text == "live")


def console_errors(driver: WebDriver) -> list[str]:
    """Return the page's console errors since the last call (a failed script, a refused fetch)."""
    entries: list[dict[str, Any]] = driver.get_log("browser")  # type: ignore[no-untyped-call]  # unannotated
    return [str(entry["message"]) for entry in entries if entry["level"] == "SEVERE"]


def screenshot_if_asked(
    driver: WebDriver, width: int = 1280, height: int = 680, variable: str = SCREENSHOT_ENV
) -> Path | None:
    """Save a ``width`` x ``height`` screenshot where the environment ``variable`` says, if it is set.

    Return its path, or ``None`` when the variable is not set (normal runs write nothing).
    """
    target = os.environ.get(variable)
    if not target:
        return None
    driver.set_window_size(width, height)
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(driver.get_screenshot_as_png())
    return path
