"""The metadata that identifies the bot's Slack messages, and the search window."""

from datetime import UTC, datetime, timedelta

import pytest

from bot.domain.delivery import (
    SEARCH_MARGIN,
    incident_mark,
    notice_mark,
    reply_mark,
    run_mark,
    search_from,
)


def test_metadata_is_in_slacks_format():
    assert incident_mark(7, 42).metadata() == {
        "event_type": "oncall_incident", "event_payload": {"incident_id": 7, "delivery_id": 42}}


@pytest.mark.parametrize(("mark", "metadata", "matches"), [
    # An incident's message is the incident's, whichever delivery posted it.
    (incident_mark(7, 42), {"event_type": "oncall_incident",
                            "event_payload": {"incident_id": 7, "delivery_id": 41}}, True),
    (incident_mark(7, 42), {"event_type": "oncall_incident",
                            "event_payload": {"incident_id": 8, "delivery_id": 42}}, False),
    # A run's reply is the run's; another reply of the same delivery id is not.
    (run_mark(7, 3, 42), {"event_type": "oncall_run",
                          "event_payload": {"incident_id": 7, "run_id": 3, "delivery_id": 9}},
     True),
    (run_mark(7, 3, 42), {"event_type": "oncall_reply",
                          "event_payload": {"incident_id": 7, "delivery_id": 42}}, False),
    # Other replies and notices are one per delivery.
    (reply_mark(7, 42), {"event_type": "oncall_reply",
                         "event_payload": {"incident_id": 7, "delivery_id": 43}}, False),
    (notice_mark(42), {"event_type": "oncall_notice", "event_payload": {"delivery_id": 42}},
     True),
    # Whatever else a message carries is not ours.
    (incident_mark(7, 42), None, False),
    (incident_mark(7, 42), "oncall_incident", False),
    (incident_mark(7, 42), {"event_type": "oncall_incident"}, False),
    (incident_mark(7, 42), {"event_type": "oncall_incident", "event_payload": [7]}, False),
    (incident_mark(7, 42), {"event_type": "other", "event_payload": {"incident_id": 7}}, False),
])
def test_a_mark_matches_only_its_own_message(mark, metadata, matches):
    assert mark.matches(metadata) is matches


def test_a_first_attempt_just_posts_and_a_later_one_looks_back_from_before_the_first():
    first = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    assert search_from(None) is None
    assert search_from(first) == first - SEARCH_MARGIN
    assert SEARCH_MARGIN >= timedelta(minutes=1)
