"""The console's sign-in decisions (bot/domain/console.py), table-driven, time passed in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.domain.console import (
    SESSION_TTL,
    ConsoleError,
    parse_filter,
    parse_period,
    session_cookie,
    session_user,
    sign_in_refusal,
    token_hash,
)

NOW = datetime(2026, 12, 6, 22, 0, tzinfo=UTC)
SECRET = "s" * 40


def test_a_session_names_its_user_until_it_expires():
    cookie = session_cookie("U0ADA0001", secret=SECRET, now=NOW)
    assert session_user(cookie, secret=SECRET, now=NOW) == "U0ADA0001"
    assert session_user(cookie, secret=SECRET, now=NOW + SESSION_TTL - timedelta(seconds=1)) == "U0ADA0001"
    assert session_user(cookie, secret=SECRET, now=NOW + SESSION_TTL) is None


def altered(cookie: str) -> list[str]:
    version, user, expires, mac = cookie.split(".")
    later = str(int(expires) + 86400)
    other = session_cookie("U0EVE0001", secret=SECRET, now=NOW).split(".")[1]
    return [f"{version}.{user}.{later}.{mac}",  # expiry pushed out
            f"{version}.{other}.{expires}.{mac}",  # another user
            f"{version}.{user}.{expires}.{mac[:-2]}AA",  # MAC changed
            f"{version}.{user}.{expires}",  # no MAC
            session_cookie("U0ADA0001", secret="t" * 40, now=NOW),  # another secret
            "", "v1", "." * 3, "x" * 1000]


@pytest.mark.parametrize("index", range(9))
def test_an_altered_or_foreign_cookie_names_nobody(index):
    cookie = altered(session_cookie("U0ADA0001", secret=SECRET, now=NOW))[index]
    assert session_user(cookie, secret=SECRET, now=NOW) is None


def test_the_record_keeps_a_hash_not_the_token():
    assert token_hash("abc") != "abc" and len(token_hash("abc")) == 64
    assert token_hash("abc") == token_hash("abc") != token_hash("abd")


@pytest.mark.parametrize(("user", "refused"), [
    ({"id": "U1", "deleted": False, "is_bot": False}, None),
    (None, "Slack does not know this user"),
    ({"id": "U1", "deleted": True}, "the Slack account is deactivated"),
    ({"id": "U1", "is_bot": True}, "bots and apps do not sign in"),
    ({"id": "U1", "is_restricted": True}, "guests of the workspace do not sign in"),
    ({"id": "U1", "is_ultra_restricted": True}, "guests of the workspace do not sign in"),
])
def test_who_may_sign_in(user, refused):
    assert sign_in_refusal(user) == refused


@pytest.mark.parametrize(("states", "model", "since", "problem"), [
    (["open"], None, None, "state must be one of"),
    ([], None, "7", "is not a period"),
    ([], None, "-1d", "is not a period"),
    ([], None, "0s", "is not a period"),
    ([], None, "99999999999d", "is not a period"),
])
def test_bad_filters_are_named(states, model, since, problem):
    with pytest.raises(ConsoleError, match=problem):
        parse_filter(states, model, since)


def test_a_filter_reads_as_the_cli_takes_it():
    wanted = parse_filter(["triggered", "triggered", "resolved"], "  churn ", "7d")
    assert wanted.states == ("triggered", "resolved") and wanted.model == "churn"
    assert wanted.since_time(NOW) == NOW - timedelta(days=7) and wanted.active
    assert not parse_filter([], "", "").active


@pytest.mark.parametrize("period", ["", None, "7d", "30d", "24h"])
def test_periods(period):
    assert parse_period(period)[1] > timedelta(0)


@pytest.mark.parametrize("period", ["0d", "401d", "week", "1e9d"])
def test_bad_periods(period):
    with pytest.raises(ConsoleError):
        parse_period(period)
