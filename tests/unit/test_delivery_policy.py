"""The outbox's decisions: retry budget, ordering, undelivered-page alarms, schema readiness."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.db import schema_problem
from bot.domain.delivery import (
    PAGE_ALERT_REPEAT,
    PendingPage,
    Queued,
    expired,
    failure_notice,
    given_up,
    loud_channels,
    loud_message,
    may_go,
    must_wait,
    parse_mention,
)

T0 = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
DAY = timedelta(hours=24)


@pytest.mark.parametrize(("target", "age", "gone"), [
    ("slack", timedelta(hours=23, minutes=59), False),
    ("slack", DAY, True),
    ("pagerduty_rest", timedelta(days=3), True),
    ("pagerduty", timedelta(days=30), False),  # a page never expires
])
def test_expired_after_the_budget_except_pages(target, age, gone):
    assert expired(target, T0, T0 + age, DAY) is gone


def q(id_: int, target: str, action: str, incident: int | None = 1) -> Queued:
    return Queued(id_, incident, target, action)


@pytest.mark.parametrize(("later", "earlier", "posted", "waits"), [
    (q(2, "pagerduty", "resolve"), q(1, "pagerduty", "trigger"), False, True),
    (q(2, "pagerduty", "trigger"), q(1, "pagerduty", "trigger", incident=9), False, False),
    (q(1, "pagerduty", "trigger"), q(2, "pagerduty", "resolve"), False, False),  # only earlier
    (q(2, "pagerduty_rest", "note"), q(1, "pagerduty_rest", "note"), False, False),
    (q(2, "pagerduty_rest", "note"), q(1, "pagerduty", "trigger"), False, False),
    (q(2, "slack", "sync"), q(1, "slack", "sync"), True, True),  # updates in order
    (q(2, "slack", "reply"), q(1, "slack", "sync"), False, True),  # under the post
    (q(2, "slack", "reply"), q(1, "slack", "sync"), True, False),  # the post is there
    (q(2, "slack", "reply"), q(1, "slack", "reply"), False, False),  # a stuck reply holds none
    (q(2, "slack", "sync"), q(1, "slack", "reply"), False, False),
    (q(2, "slack", "run_sync"), q(1, "slack", "run_sync"), True, True),
    (q(2, "slack", "run_sync"), q(1, "slack", "sync"), True, False),
    (q(2, "slack", "post", None), q(1, "slack", "post", None), False, False),
])
def test_must_wait_only_where_order_matters(later, earlier, posted, waits):
    assert must_wait(later, earlier, posted=posted) is waits


def test_may_go_lets_a_poison_row_hold_back_only_what_depends_on_it():
    pending = [q(1, "pagerduty_rest", "note"),  # stuck: "no incident for this key"
               q(2, "pagerduty_rest", "note"), q(3, "slack", "reply"),
               q(4, "pagerduty", "trigger", incident=2), q(5, "pagerduty", "resolve", incident=2),
               q(6, "slack", "sync", incident=3), q(7, "slack", "reply", incident=3)]
    assert [r.id for r in may_go(pending, posted=[1])] == [1, 2, 3, 4, 6]


def page(id_: int, channel: str = "C1", *, age: timedelta, alerted: timedelta | None = None,
         now: datetime = T0, title: str = "Drift") -> PendingPage:
    return PendingPage(id_, id_, title, channel, now - age,
                       None if alerted is None else now - alerted)


def test_loud_channels_after_the_threshold_then_every_repeat():
    after = timedelta(minutes=5)
    assert loud_channels([page(1, age=timedelta(minutes=4))], T0, after=after) == {}
    fresh = page(1, age=timedelta(minutes=5))
    assert loud_channels([fresh], T0, after=after) == {"C1": [fresh]}
    told = page(1, age=timedelta(minutes=20), alerted=timedelta(minutes=14))
    assert loud_channels([told], T0, after=after) == {}
    again = page(1, age=timedelta(minutes=20), alerted=PAGE_ALERT_REPEAT)
    assert loud_channels([again], T0, after=after) == {"C1": [again]}


def test_loud_channels_name_every_overdue_page_of_a_channel_once_one_is_due():
    after = timedelta(minutes=5)
    told = page(1, age=timedelta(minutes=9), alerted=timedelta(minutes=4))
    new = page(2, age=timedelta(minutes=5))
    elsewhere = page(3, "C2", age=timedelta(minutes=9), alerted=timedelta(minutes=4))
    assert loud_channels([told, new, elsewhere], T0, after=after) == {"C1": [told, new]}


def test_loud_message_mentions_escapes_and_bounds_what_it_names():
    pages = [page(1, age=timedelta(minutes=7), title="<!channel> & <https://evil|x>")]
    text = loud_message(pages, T0, mention=parse_mention("here"))
    assert text.startswith(":rotating_light: *PAGE NOT DELIVERED* <!here>")
    assert "for 7m" in text
    assert "#1 &lt;!channel&gt; &amp; &lt;https://evil|x&gt;" in text
    assert "<!channel>" not in text and "<https://evil" not in text
    many = [page(i, age=timedelta(minutes=6)) for i in range(1, 14)]
    text = loud_message(many, T0, mention=parse_mention("S0123"))
    assert "13 pages" in text and "…and 3 more incidents" in text and "#11 " not in text
    # A mention that is not Mrkdwn (not from parse_mention) is shown, never pinged.
    assert "&lt;!here&gt;" in loud_message(pages, T0, mention="<!here>")  # type: ignore[arg-type]


def test_a_failure_notice_escapes_the_error_it_quotes():
    notice = failure_notice("slack said <!channel> & <https://evil|x>")
    assert notice == (":warning: Not delivered: slack said &lt;!channel&gt; &amp; "
                      "&lt;https://evil|x&gt;")


@pytest.mark.parametrize(("value", "rendered"), [
    ("here", "<!here>"), ("HERE", "<!here>"), (" S0123ABC ", "<!subteam^S0123ABC>")])
def test_parse_mention(value, rendered):
    assert parse_mention(value) == rendered


@pytest.mark.parametrize("value", ["channel", "<!here>", "S01>|x", "U0123ABC", "s0123", ""])
def test_parse_mention_refuses_anything_else(value):
    with pytest.raises(ValueError, match="user-group ID"):
        parse_mention(value)


def test_given_up_names_the_delivery_budget_and_reason():
    assert given_up("pagerduty_rest", "note", DAY, "PagerDuty has no incident for this key "
                    "yet") == ("gave up on pagerduty_rest note after 1d: PagerDuty has no "
                               "incident for this key yet")


@pytest.mark.parametrize(("stamped", "problem"), [
    ("0007", None),
    ("0099", None),  # newer code migrated: a rolling upgrade must not stop old replicas
    ("0005", "the schema is at revision 0005, older than 0007"),
    (None, "the database has no schema yet"),
])
def test_schema_problem(stamped, problem):
    assert schema_problem(stamped, "0007", frozenset({"0001", "0005", "0007"})) == problem


def test_settings_read_the_bots_durations_and_refuse_a_bad_mention():
    from bot.settings import ConfigurationError, load_settings

    settings = load_settings(delivery_retry_budget="1h30m", page_undelivered_alert_after="2s")
    assert settings.delivery_retry_budget == timedelta(minutes=90)
    assert settings.page_undelivered_alert_after == timedelta(seconds=2)
    assert load_settings().delivery_retry_budget == DAY
    with pytest.raises(ConfigurationError, match="PAGE_UNDELIVERED_MENTION"):
        load_settings(page_undelivered_mention="<!channel>")
    with pytest.raises(ConfigurationError, match="DELIVERY_RETRY_BUDGET"):
        load_settings(delivery_retry_budget="soon")
