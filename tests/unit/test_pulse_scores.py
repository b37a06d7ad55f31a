"""The satisfaction pulse, pure: what a click may carry, and the scorecard's figure
checked against a hand-computed set of pulses.

| pulse | opened (UTC)     | scores        | mean | comments |
| 1     | 2026-01-05 10:00 | 2, 3, 4       | 3.00 | —        |
| 2     | 2026-02-02 10:00 | 4, 4, 5, 3, 5 | 4.20 | "faster", "<!channel>" |
| 3     | 2026-03-02 10:00 | 5, 1          | 3.00 |          |
| 4     | 2026-04-06 10:00 | (none)        | —    |          |
"""

from datetime import UTC, datetime

import pytest

from bot.domain.pulse import (
    COMMENT_LIMIT,
    Answer,
    PulseFacts,
    PulseRefused,
    comment_saved_view,
    parse_answer,
    parse_comment,
    pulse_message,
    satisfaction,
)
from bot.domain.routing import ChannelSchedule
from bot.domain.scorecard import compute
from bot.timers import occurrence


def at(month: int, day: int, hour: int = 10) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


PULSES = [PulseFacts(1, at(1, 5), (2, 3, 4)),
          PulseFacts(2, at(2, 2), (4, 4, 5, 3, 5), ("faster", "<!channel>")),
          PulseFacts(3, at(3, 2), (5, 1)),
          PulseFacts(4, at(4, 6))]


@pytest.mark.parametrize(("until", "expected"), [
    # (opened, count, mean, previous mean, trend)
    (at(2, 10), (at(2, 2), 5, 4.2, 3.0, 1.2)),  # pulse 2 against pulse 1: 4.20 - 3.00
    (at(3, 3), (at(3, 2), 2, 3.0, 4.2, -1.2)),  # pulse 3 against pulse 2
    (at(1, 6), (at(1, 5), 3, 3.0, None, None)),  # the first pulse: no trend
    (at(5, 1), (at(4, 6), 0, None, 3.0, None)),  # no answers yet: no mean, no trend
    (at(2, 2), (at(1, 5), 3, 3.0, None, None)),  # opened exactly at `until`: not yet
])
def test_satisfaction_is_the_latest_pulse_and_its_change(until, expected):
    found = satisfaction(PULSES, until=until)
    assert found is not None
    got = (found.opened_at, found.count, found.mean, found.previous_mean, found.trend)
    assert got[:4] == expected[:4]
    assert got[4] == pytest.approx(expected[4]) if expected[4] is not None else got[4] is None


def test_no_pulse_before_the_window_ends():
    assert satisfaction(PULSES, until=at(1, 5)) is None
    assert satisfaction([], until=at(9, 1)) is None


def test_the_scorecard_carries_satisfaction_and_its_comments():
    card = compute([], since=at(2, 1), until=at(3, 1), now=at(3, 2), pulses=PULSES)
    assert card.satisfaction is not None
    assert (card.satisfaction.mean, card.satisfaction.count) == (4.2, 5)
    assert card.satisfaction.comments == ("faster", "<!channel>")
    assert compute([], since=at(2, 1), until=at(3, 1), now=at(3, 2)).satisfaction is None


@pytest.mark.parametrize(("value", "expected"), [
    ("7:1", Answer(7, 1)), ("7:5", Answer(7, 5)), ("123456:3", Answer(123456, 3)),
])
def test_a_score_button_names_a_pulse_and_a_score_from_1_to_5(value, expected):
    assert parse_answer(value) == expected


@pytest.mark.parametrize("value", [
    "7:0", "7:6", "7:-1", "7:", "7", "7:3.0", "7: 3", "7:\u0663", "7:33", None, 7,
    ":3", "0:3", "-7:3", "x:3", "\u0667:3", "1" * 19 + ":3", "7:3:3",
])
def test_anything_else_in_a_button_is_refused(value):
    with pytest.raises(PulseRefused):
        parse_answer(value)


def test_comments_are_trimmed_and_bounded():
    assert parse_comment("  fine  ") == "fine"
    assert parse_comment(None) == ""
    assert parse_comment("x" * COMMENT_LIMIT) == "x" * COMMENT_LIMIT
    with pytest.raises(PulseRefused, match="at most 1000 characters"):
        parse_comment("x" * (COMMENT_LIMIT + 1))


def test_a_comment_is_shown_escaped():
    (block,) = comment_saved_view("<!here> & <https://evil.example|x>")["blocks"]
    assert "&lt;!here&gt; &amp; &lt;https://evil.example|x&gt;" in block["text"]["text"]


def test_the_message_has_five_score_buttons_and_a_comment_button():
    text, blocks = pulse_message(42)
    values = [e["value"] for b in blocks if b["type"] == "actions" for e in b["elements"]]
    assert values == ["42:1", "42:2", "42:3", "42:4", "42:5", "42"]
    assert "Platform pulse" in text


@pytest.mark.parametrize(("cron", "tz", "now", "expected"), [
    ("0 10 1 * *", "Europe/Berlin", datetime(2026, 12, 1, 9, 0, 5, tzinfo=UTC),
     datetime(2026, 12, 1, 9, 0, tzinfo=UTC)),  # 10:00 in Berlin, fired 5 s ago
    ("0 10 1 * *", "Europe/Berlin", datetime(2026, 12, 20, tzinfo=UTC),
     datetime(2026, 12, 1, 9, 0, tzinfo=UTC)),  # fired late (missed while down)
    ("0 10 1 * *", "Europe/Berlin", datetime(2026, 7, 1, 8, 0, tzinfo=UTC),
     datetime(2026, 7, 1, 8, 0, tzinfo=UTC)),  # summer time: 10:00 is 08:00 UTC
    ("*/5 * * * *", "UTC", datetime(2026, 3, 3, 12, 7, tzinfo=UTC),
     datetime(2026, 3, 3, 12, 5, tzinfo=UTC)),
])
def test_a_firing_names_the_cron_occurrence_it_answers(cron, tz, now, expected):
    assert occurrence(ChannelSchedule(cron, tz), now) == expected
