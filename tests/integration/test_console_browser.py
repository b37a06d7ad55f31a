"""The web console in a real browser (Debian's headless Chromium through Selenium): sign
in through a one-time link, filter the list, open an incident, see the chart, and a
`<script>` in a label shown as text, never run.

One browser and one seeded bot for the module (SQLite: the database paths are the
HTTP tests' business); the tests share them in order.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from bot.usecases.console import create_link
from tests.browser import chromium
from tests.conftest import WEBHOOK_TOKEN
from tests.console_site import CONSOLE_SECRET, Clock, Site, seed_week, served
from tests.harness import free_port

MEMBER = "U0MEMBER1"
HOSTILE = '<script>window.pwned = true; document.title = "pwned"</script>'


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[Site]:
    directory = tmp_path_factory.mktemp("console")
    port = free_port()
    env = {"DATABASE_URL": f"sqlite:///{directory}/oncall.db", "ALERT_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
           "CONSOLE_SECRET": CONSOLE_SECRET, "PUBLIC_URL": f"http://127.0.0.1:{port}",
           "ONCALL_RUNBOOKS": str(directory / "none")}
    with served(env, clock=Clock(), port=port) as site:
        seed_week(site, WEBHOOK_TOKEN, count=30, hostile_label=HOSTILE)
        yield site


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield driver
    driver.quit()


def link(site: Site) -> str:
    return create_link(site.app.state.console, MEMBER, created_by="test", base_url=site.url)


def follow(browser, element) -> None:
    """Click what leaves the page, and wait until the next page replaced it: a click
    returns before the navigation it starts is over, so reading at once races the load."""
    page = browser.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(browser, 30).until(expected_conditions.staleness_of(page))


def rows(browser) -> list:
    return browser.find_elements(By.CSS_SELECTOR, "table.incidents tbody tr")


def test_without_a_session_the_browser_is_told_how_to_sign_in(site, browser):
    browser.get(site.url + "/console/incidents")
    assert "/oncall console" in browser.find_element(By.TAG_NAME, "main").text
    assert rows(browser) == []


def test_sign_in_filter_the_list_and_open_an_incident(site, browser):
    browser.get(link(site))
    assert browser.get_cookies() == [] or all(c["name"] != "oncall_console" for c in browser.get_cookies())
    follow(browser, browser.find_element(By.ID, "sign-in"))
    assert browser.current_url == site.url + "/console/incidents", browser.page_source
    session = next(c for c in browser.get_cookies() if c["name"] == "oncall_console")
    assert session["httpOnly"] and session["sameSite"] == "Strict" and not session["secure"]
    assert len(rows(browser)) == 30

    browser.find_element(By.CSS_SELECTOR, 'input[name="state"][value="triggered"]').click()
    follow(browser, browser.find_element(By.ID, "filter"))
    states = {row.find_element(By.CSS_SELECTOR, ".badge").text for row in rows(browser)}
    assert states == {"triggered"} and len(rows(browser)) == 3

    browser.get(site.url + "/console/incidents")
    browser.find_element(By.NAME, "model").send_keys("churn")
    browser.find_element(By.NAME, "since").send_keys("3d")
    follow(browser, browser.find_element(By.ID, "filter"))
    models = {row.find_elements(By.TAG_NAME, "td")[4].text for row in rows(browser)}
    assert models == {"churn"} and 0 < len(rows(browser)) < 6

    first = rows(browser)[0].find_element(By.CSS_SELECTOR, "td.title a")
    title = first.text
    follow(browser, first)
    assert browser.find_element(By.ID, "incident-title").text.endswith(title)
    timeline = browser.find_element(By.CSS_SELECTOR, "ol.timeline").text
    assert "opened" in timeline or "triggered" in timeline, timeline


def test_the_scorecard_chart_renders(site, browser):
    browser.get(site.url + "/console/scorecard")
    chart = browser.find_element(By.ID, "chart")
    loaded = browser.execute_script(
        "return arguments[0].complete && arguments[0].naturalWidth", chart)
    assert loaded == 800  # the PNG loaded: 8 in × 100 dpi
    assert "30" in browser.find_element(By.CSS_SELECTOR, ".cards").text


def test_a_script_in_a_label_stays_text(site, browser):
    browser.get(site.url + "/console/incidents")
    newest = rows(browser)[0].find_element(By.CSS_SELECTOR, "td a")
    follow(browser, newest)
    labels = browser.find_element(By.CSS_SELECTOR, "table.labels").text
    assert HOSTILE in labels  # shown as the characters it is
    assert browser.execute_script("return window.pwned === undefined")
    assert browser.title != "pwned" and browser.title.startswith("#")
    assert browser.find_elements(By.CSS_SELECTOR, "table.labels script") == []
