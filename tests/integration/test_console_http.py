"""The web console over plain HTTP: nothing without a session, a link signs in once and
only within its 10 minutes, the session cookie's flags, the security headers, escaping,
and the sign-in from Slack (`/oncall console`) and the CLI (`console-link`).

The app runs in this process (tests/console_site.py) so that its clock can be moved:
expiry is tested by moving the clock, not by waiting.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from mlflow.webhooks.delivery import _generate_hmac_signature

from bot.usecases.console import create_link
from tests.conftest import WEBHOOK_TOKEN
from tests.console_site import CONSOLE_SECRET, Clock, form_fields, link_in, local, served, sign_in
from tests.harness import ROOT, free_port, wait_for
from tests.standins.signing import slack_headers, slash_command_body

SIGNING_SECRET = "slack-signing-secret-for-tests"
MEMBER, GUEST = "U0MEMBER1", "U0GUEST01"
PUBLIC = "https://oncall.example.test"
PAGES = ("/console", "/console/incidents", "/console/incidents/1", "/console/models",
         "/console/models?name=churn", "/console/scorecard", "/console/scorecard.png")


@pytest.fixture
def console_env(bot_env, slack):
    slack.add_user(MEMBER, "ada", "ada@example.com")
    guest = slack.add_user(GUEST, "gus", "gus@example.com")
    slack.users[GUEST] = {**guest, "is_restricted": True}
    return {**bot_env, "SLACK_SIGNING_SECRET": SIGNING_SECRET, "CONSOLE_SECRET": CONSOLE_SECRET,
            "PUBLIC_URL": PUBLIC}


@pytest.fixture
def site(console_env):
    with served(console_env, clock=Clock()) as site:
        yield site


def oncall_bot(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items()
                   if not k.startswith(("SLACK_", "PAGERDUTY_", "ALERT_", "ONCALL_", "CONSOLE_",
                                        "PUBLIC_"))}
    return subprocess.run([sys.executable, "-m", "bot", *args], env={**environment, **env,
                          "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60)


def slash_console(site, slack, user: str) -> str:
    """`/oncall console` from `user`, signed as Slack signs it; the ephemeral answer's text."""
    name = f"console-{time.monotonic_ns()}"
    body = slash_command_body("console", user_id=user, response_url=slack.response_url(name))
    with site.client() as http:
        acked = http.post("/slack/events", content=body, headers=slack_headers(SIGNING_SECRET, body))
    assert acked.status_code == 200, acked.text
    answer = wait_for(lambda: slack.responses(name), timeout=15, what="the answer")[0]
    assert answer["response_type"] == "ephemeral"
    return answer["text"]


def cookie(response, name: str) -> str:
    """The Set-Cookie header (all its attributes) that sets `name`."""
    return next(h for h in response.headers.get_list("set-cookie") if h.startswith(name + "="))


def session_header(response) -> dict[str, str]:
    value = cookie(response, "oncall_console").split(";")[0]
    return {"Cookie": value}


def test_nothing_is_visible_without_a_session(site):
    with site.client() as http:
        for path in PAGES:
            refused = http.get(path)
            assert refused.status_code in (401, 303), (path, refused.status_code)
            if refused.status_code == 303:  # /console: to the list, which refuses
                refused = http.get(refused.headers["location"])
            assert refused.status_code == 401, path
            assert "/oncall console" in refused.text and "incident" not in refused.text.split("<main>")[1].lower().replace("console", ""), path
        forged = http.get("/console/incidents", headers={
            "Cookie": "oncall_console=v1.VTBNRU1CRVIx.9999999999.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"})
        assert forged.status_code == 401


def test_a_slack_link_signs_in_once_with_a_strict_secure_httponly_cookie(site, slack):
    text = slash_console(site, slack, MEMBER)
    link = link_in(text)
    assert link.startswith(PUBLIC + "/console/sign-in?token=") and "valid for 10 minutes" in text
    with site.client() as http:
        opened = http.get(local(link, site))  # a link preview or mail scanner does this much
        assert opened.status_code == 200 and 'id="sign-in"' in opened.text
        assert http.get(local(link, site)).status_code == 200, "a GET spent the link"
        signed = sign_in(http, local(link, site))
        assert signed.status_code == 303 and signed.headers["location"] == "/console/incidents"
        flags = [part.strip().lower() for part in cookie(signed, "oncall_console").split(";")]
        assert {"httponly", "secure", "samesite=strict", "path=/console", "max-age=43200"} <= set(flags)
        page = http.get("/console/incidents", headers=session_header(signed))
        assert page.status_code == 200 and f"signed in as {MEMBER}" in page.text

        # Used: the page says so and offers no button; a replayed POST is refused.
        again = http.get(local(link, site))
        assert again.status_code == 401 and "used already" in again.text and "<form" not in again.text
        replay = http.post("/console/sign-in", data=form_fields(opened.text),
                           headers={"Cookie": f"oncall_console_signin={opened.cookies['oncall_console_signin']}"})
        assert replay.status_code == 401 and "oncall_console=" not in replay.headers.get("set-cookie", "")


def test_security_headers_on_every_console_answer(site):
    with site.client() as http:
        for answer in (http.get("/console/incidents"), http.get("/console/sign-in?token=nope"),
                       http.get("/console/static/console.css")):
            csp = answer.headers["content-security-policy"]
            assert "default-src 'none'" in csp and "script-src" not in csp  # no script at all
            assert "frame-ancestors 'none'" in csp
            assert answer.headers["x-frame-options"] == "DENY"
            assert answer.headers["referrer-policy"] == "no-referrer"
            assert answer.headers["x-content-type-options"] == "nosniff"


def fresh_link(site, user: str = MEMBER) -> str:
    """A link made by the use case `/oncall console` and `console-link` share, at the site's clock."""
    return create_link(site.app.state.console, user, created_by="test", base_url=PUBLIC)


def test_an_expired_link_is_refused_and_a_session_ends_after_12_hours(site):
    made, late = fresh_link(site), fresh_link(site)
    with site.client() as http:
        site.clock.advance(minutes=9, seconds=59)
        signed = sign_in(http, local(made, site))
        assert signed.status_code == 303
        site.clock.advance(seconds=1)  # the second link is 10 minutes old now
        page = http.get(local(late, site))
        assert page.status_code == 401 and "expired" in page.text and "<form" not in page.text
        fields = {"token": late.rsplit("=", 1)[1], "nonce": "n" * 32}
        spent = http.post("/console/sign-in", data=fields,
                          headers={"Cookie": "oncall_console_signin=" + "n" * 32})
        assert spent.status_code == 401 and "used, expired or unknown" in spent.text

        session = session_header(signed)
        site.clock.advance(hours=11, minutes=59, seconds=58)
        assert http.get("/console/incidents", headers=session).status_code == 200
        site.clock.advance(seconds=1)  # 12 hours after signing in
        assert http.get("/console/incidents", headers=session).status_code == 401


def test_a_cross_site_sign_in_post_is_refused_and_leaves_the_link_unspent(site):
    link = fresh_link(site)
    with site.client() as http:
        page = http.get(local(link, site))
        nonce = page.cookies["oncall_console_signin"]
        posted = {"data": form_fields(page.text)}
        for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                        {}):  # no nonce cookie: the form was not this site's page
            cookies = {} if not headers else {"Cookie": f"oncall_console_signin={nonce}"}
            refused = http.post("/console/sign-in", **posted, headers={**headers, **cookies})
            assert refused.status_code == 403, headers
        assert sign_in(http, local(link, site)).status_code == 303


def test_guests_and_unknown_users_get_no_link(site, slack, console_env):
    assert "guests of the workspace do not sign in" in slash_console(site, slack, GUEST)
    assert "/console/sign-in" not in slash_console(site, slack, "U0NOBODY1")
    refused = oncall_bot("console-link", "--user", GUEST, env=console_env)
    assert refused.returncode == 2 and "guests" in refused.stderr and "sign-in" not in refused.stdout
    bad = oncall_bot("console-link", "--user", "eve@example.com", env=console_env)
    assert bad.returncode == 2 and "not a Slack user ID" in bad.stderr


def test_values_are_escaped_in_every_page(site):
    hostile = '<script>document.title="pwned"</script><img src=x onerror=alert(1)>'
    with site.client() as http:
        sent = http.post("/webhooks/generic", headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"},
                         json={"alertname": "Evil", "model": hostile, "severity": "warning",
                               "summary": hostile, "labels": {"note": hostile}})
        assert sent.status_code == 202, sent.text
        session = session_header(sign_in(http, local(fresh_link(site), site)))
        for path in ("/console/incidents", "/console/incidents/1", "/console/models",
                     "/console/scorecard"):
            page = http.get(path, headers=session)
            assert page.status_code == 200, path
            assert "<script>" not in page.text and "<img src=x" not in page.text, path
        assert "&lt;script&gt;" in http.get("/console/incidents/1", headers=session).text


def test_two_replicas_spend_one_link_once_and_read_each_others_sessions(console_env):
    clock = Clock()
    with served(console_env, clock=clock) as one, served(console_env, clock=clock) as two:
        link = fresh_link(one)
        pages = []
        for site in (one, two):
            with site.client() as http:
                page = http.get(local(link, site))
                pages.append((site, form_fields(page.text), page.cookies["oncall_console_signin"]))
        answers: list = [None, None]

        def press(index: int) -> None:
            site, fields, nonce = pages[index]
            with site.client() as http:
                answers[index] = http.post("/console/sign-in", data=fields,
                                           headers={"Cookie": f"oncall_console_signin={nonce}"})

        threads = [threading.Thread(target=press, args=(i,)) for i in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(a.status_code for a in answers) == [303, 401]
        winner = next(a for a in answers if a.status_code == 303)
        for site in (one, two):
            with site.client() as http:
                assert http.get("/console/incidents", headers=session_header(winner)).status_code == 200


def test_without_console_secret_the_console_is_off_and_config_check_says_so(console_env, slack):
    env = {k: v for k, v in console_env.items() if k != "CONSOLE_SECRET"}
    with served(env, clock=Clock()) as site, site.client() as http:
        off = http.get("/console/incidents")
        assert off.status_code == 404 and "CONSOLE_SECRET is not set" in off.text
        assert "CONSOLE_SECRET is not set" in slash_console(site, slack, MEMBER)
    checked = oncall_bot("config", "check", env={**env, "ONCALL_RUNBOOKS": str(ROOT / "runbooks")})
    assert "note: environment: CONSOLE_SECRET: not set: the web console (/console) is off" in checked.stdout
    made = oncall_bot("console-link", "--user", MEMBER, env=env)
    assert made.returncode == 2 and "CONSOLE_SECRET is not set" in made.stderr


def test_console_link_without_public_url_points_at_the_local_address(console_env, tmp_path: Path):
    env = {k: v for k, v in console_env.items() if k != "PUBLIC_URL"}
    port = free_port()
    made = oncall_bot("console-link", "--user", MEMBER, env={**env, "PORT": str(port)})
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith(f"http://127.0.0.1:{port}/console/sign-in?token=")
    checked = oncall_bot("config", "check", env={**env, "ONCALL_RUNBOOKS": str(ROOT / "runbooks")})
    assert "warning: environment: PUBLIC_URL: not set" in checked.stdout


def test_the_model_page_shows_the_registrys_alias_moves(console_env):
    """A signed MLflow delivery moving churn's champion is on churn's model page."""
    secret = "mlflow-webhook-secret-for-console"
    with served({**console_env, "MLFLOW_WEBHOOK_SECRET": secret}, clock=Clock()) as site, \
            site.client() as http:
        body = json.dumps({"entity": "model_version_alias", "action": "created",
                           "timestamp": site.clock().isoformat(),
                           "data": {"name": "churn", "alias": "champion", "version": "7"}})
        delivery_id, stamp = str(uuid.uuid4()), str(int(site.clock().timestamp()))
        moved = http.post("/webhooks/mlflow", content=body, headers={
            "Content-Type": "application/json", "X-MLflow-Delivery-Id": delivery_id,
            "X-MLflow-Timestamp": stamp,
            "X-MLflow-Signature": _generate_hmac_signature(secret, delivery_id, stamp, body)})
        assert moved.status_code == 200, moved.text
        session = session_header(sign_in(http, local(fresh_link(site), site)))
        page = http.get("/console/models?name=churn", headers=session)
        assert page.status_code == 200
        assert "alias moved" in page.text and "champion v? → v7" in page.text, page.text
