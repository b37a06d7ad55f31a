"""Headless Chromium from Debian's packages (`chromium`, `chromium-driver`), driven by
Selenium through Debian's chromedriver: nothing is downloaded. One browser per test
module; a fresh profile directory each time (we run as root, hence --no-sandbox)."""

from __future__ import annotations

import shutil
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage")


def chromium(profile: Path, *, width: int = 1280, height: int = 900):  # type: ignore[no-untyped-def]
    """A Selenium driver of Debian's headless Chromium. Nothing is skipped: without the
    packages the test fails saying what to install."""
    assert Path(CHROMIUM).exists() and shutil.which(CHROMEDRIVER), (
        "the browser tests need Debian's chromium and chromium-driver: "
        "apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    return driver
