"""Screenshots of the web console for docs/console.md: a bot seeded with 30 incidents over
a week (through its real webhook, with the clock moved), signed in through a one-time
link in Debian's headless Chromium, the same browser the tests use.

    apt-get install chromium chromium-driver
    .venv/bin/python docs/console/make_screenshots.py      # from the checkout's root

Slack and PagerDuty are the test suite's stand-ins (tests/standins/), so the incidents
have deliveries and pages. Writes incidents.png, incident.png, model.png and scorecard.png beside this file.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from selenium.webdriver.common.by import By  # noqa: E402

from bot.usecases.console import create_link  # noqa: E402
from tests.browser import chromium  # noqa: E402
from tests.console_site import CONSOLE_SECRET, Clock, seed_week, served  # noqa: E402
from tests.harness import free_port  # noqa: E402
from tests.standins.pagerduty import PagerDutyStandIn  # noqa: E402
from tests.standins.slack import SlackStandIn  # noqa: E402
from tests.standins.tls import TestCA  # noqa: E402

OUT = Path(__file__).resolve().parent
TOKEN = "screenshot-webhook-token"


def shoot(browser, url: str, name: str, width: int = 1280) -> None:
    """The whole page, up to 2,600 pixels high."""
    browser.set_window_size(width, 900)
    browser.get(url)
    for _ in range(3):  # the window's height and the page's settle together
        height = browser.execute_script("return document.documentElement.scrollHeight")
        viewport = browser.execute_script("return window.innerHeight")
        if viewport >= min(height, 2600):
            break
        size = browser.get_window_size()
        browser.set_window_size(width, min(size["height"] + height - viewport, 2600))
    browser.save_screenshot(str(OUT / name))
    print(f"wrote {OUT / name}")


def main() -> int:
    ca = TestCA()
    with tempfile.TemporaryDirectory() as directory, SlackStandIn() as slack, \
            PagerDutyStandIn(ca) as pagerduty:
        port = free_port()
        env = {"DATABASE_URL": f"sqlite:///{directory}/oncall.db", "ALERT_WEBHOOK_TOKEN": TOKEN,
               "CONSOLE_SECRET": CONSOLE_SECRET, "PUBLIC_URL": f"http://127.0.0.1:{port}",
               "ONCALL_RUNBOOKS": str(ROOT / "runbooks"),
               # Slack and PagerDuty: the test suite's stand-ins, so deliveries and pages show.
               "SLACK_BOT_TOKEN": slack.token, "SLACK_API_URL": slack.base_url,
               "PAGERDUTY_ROUTING_KEY": "R0UT1NGKEY0123456789ABCDEFGHIJKL",
               "PAGERDUTY_EVENTS_URL": pagerduty.events_url,
               "ONCALL_CA_BUNDLE": ca.ca_bundle_path(Path(directory))}
        with served(env, clock=Clock(), port=port) as site:
            seed_week(site, TOKEN, count=30)
            browser = chromium(Path(directory) / "profile")
            try:
                browser.get(create_link(site.app.state.console, "U0ADA0001", created_by="docs",
                                        base_url=site.url))
                browser.find_element(By.ID, "sign-in").click()
                shoot(browser, site.url + "/console/incidents", "incidents.png")
                shoot(browser, site.url + "/console/incidents/25", "incident.png")
                shoot(browser, site.url + "/console/models?name=churn", "model.png")
                shoot(browser, site.url + "/console/scorecard", "scorecard.png")
            finally:
                browser.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
