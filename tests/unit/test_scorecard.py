"""The scorecard, checked figure by figure against a hand-computed week.

The week: Monday 2026-03-02 00:00 UTC to Monday 2026-03-09 00:00 UTC (10080 minutes),
seen at `NOW`, a day after it ended. Working hours are the default, Mon-Fri 09:00-18:00 UTC.

| id | model  | tier | team     | source       | trig (UTC)      | ack   | resolved | TTA | TTR  |
| 1  | churn  | L1   | ds-churn | alertmanager | Mon 02 09:00    | 09:04 | 09:40    | 4m  | 40m  |
| 2  | churn  | L1   | ds-churn | alertmanager | Tue 03 02:00    | 02:10 | 03:00    | 10m | 60m  |
| 3  | fraud  | L0   | ds-fraud | grafana      | Wed 04 12:00    | —     | 12:20    | —   | 20m  |
| 4  | fraud  | L1   | ds-fraud | generic      | Sat 07 11:00    | 11:30 | 13:00    | 30m | 120m |
| 5  | churn  | L1   | ds-churn | alertmanager | Sun 08 22:00    | 22:02 | open     | 2m  | —    |
| 6  | ranker | L1   | —        | alertmanager | Thu 05 18:00    | 18:20 | 18:50    | 20m | 50m  |
| 7  | churn  | L1   | ds-churn | alertmanager | Sun 01 23:00    | —     | Mon 01:00 (straddles the start) |
| 8  | fraud  | L1   | ds-fraud | alertmanager | Mon 09 00:00 (= until: after the window)     |
"""

from datetime import UTC, date, datetime, time, timedelta

import pytest

from bot.domain.scorecard import (
    Event,
    IncidentFacts,
    WorkingHours,
    compute,
    covered,
    open_intervals,
    percentile,
    rollback_outcome,
)


def at(day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC)


SINCE, UNTIL, NOW = at(2), at(9), at(10, 12)
MIN = timedelta(minutes=1)
WEEK_MINUTES = 7 * 24 * 60  # 10080

CHURN = dict(model="churn", team="ds-churn", source="alertmanager", severity="critical")
WEEK = [
    IncidentFacts(1, "L1", triggered_at=at(2, 9), acknowledged_at=at(2, 9, 4),
                  resolved_at=at(2, 9, 40), paged=True, labels={"security": "false"}, **CHURN),
    IncidentFacts(2, "L1", triggered_at=at(3, 2), acknowledged_at=at(3, 2, 10),
                  resolved_at=at(3, 3), paged=True, escalated_at=at(3, 2, 30),
                  escalation_paged=True,
                  events=(Event(at(3, 2, 45), "rollback", "succeeded: churn v6 restored"),
                          Event(at(3, 3), "resolved")), **CHURN),
    IncidentFacts(3, "L0", model="fraud", team="ds-fraud", source="grafana", severity="warning",
                  labels={"security": "true"}, triggered_at=at(4, 12),
                  resolved_at=at(4, 12, 20), events=(Event(at(4, 12, 20), "resolved"),)),
    IncidentFacts(4, "L1", model="fraud", team="ds-fraud", source="generic", severity="critical",
                  labels={"category": "security"}, triggered_at=at(7, 11),
                  acknowledged_at=at(7, 11, 30), resolved_at=at(7, 13), paged=True,
                  reopen_count=1,
                  events=(Event(at(7, 11, 40), "rollback", "failed: registry unreachable"),
                          Event(at(7, 11, 50), "resolved"), Event(at(7, 12, 20), "reopened"),
                          Event(at(7, 13), "resolved"))),
    IncidentFacts(5, "L1", triggered_at=at(8, 22), acknowledged_at=at(8, 22, 2), paged=True,
                  **CHURN),
    IncidentFacts(6, "L1", model="ranker", source="alertmanager", severity="critical",
                  triggered_at=at(5, 18), acknowledged_at=at(5, 18, 20),
                  resolved_at=at(5, 18, 50), paged=True,
                  escalated_at=at(5, 18, 30), escalation_paged=False),  # Slack mention: no page
    IncidentFacts(7, "L1", triggered_at=at(1, 23), resolved_at=at(2, 1), paged=True,
                  events=(Event(at(1, 23, 30), "rollback", "succeeded"),), **CHURN),
    IncidentFacts(8, "L1", model="fraud", team="ds-fraud", source="alertmanager",
                  triggered_at=at(9), paged=True),
]


@pytest.fixture(scope="module")
def card():
    return compute(WEEK, since=SINCE, until=UNTIL, now=NOW)


def test_incidents_of_the_window_are_those_triggered_in_it(card):
    # #1-#6; #7 was triggered before `since`, #8 exactly at `until` (excluded).
    assert card.incidents == 6
    assert card.by_tier == {"L1": 5, "L0": 1}
    assert card.by_model == {"churn": 3, "fraud": 2, "ranker": 1}
    assert card.by_team == {"ds-churn": 3, "ds-fraud": 2, "(none)": 1}
    assert card.by_source == {"alertmanager": 4, "generic": 1, "grafana": 1}  # ties by name
    assert card.by_severity == {"critical": 5, "warning": 1}
    assert card.reopened == 1  # #4


def test_mtta_median_and_p90(card):
    # Acknowledged: #1 4m, #2 10m, #4 30m, #5 2m, #6 20m -> sorted 2, 4, 10, 20, 30 (n=5).
    # median: rank (5-1)*0.5 = 2 -> 10m.  p90: rank (5-1)*0.9 = 3.6 -> 20 + 0.6*(30-20) = 26m.
    assert (card.mtta.count, card.mtta.median, card.mtta.p90) == (5, 10 * MIN, 26 * MIN)


def test_mttr_median_and_p90_leave_out_the_still_open_incident(card):
    # Resolved: #1 40m, #2 60m, #3 20m, #4 120m (trigger to the last resolve), #6 50m;
    # #5 is open. Sorted 20, 40, 50, 60, 120: median rank 2 -> 50m;
    # p90 rank 3.6 -> 60 + 0.6*(120-60) = 96m.
    assert (card.mttr.count, card.mttr.median, card.mttr.p90) == (5, 50 * MIN, 96 * MIN)


def test_share_handled_at_l0(card):
    assert card.handled_at_l0 == 1  # #3: L0, nobody paged
    assert card.l0_share == pytest.approx(1 / 6)


def test_pages_and_those_outside_working_hours(card):
    # #1 Mon 09:00 inside (09:00 is in); #2 Tue 02:00 out; #2's L2 page Tue 02:30 out;
    # #6 Thu 18:00 out (18:00 is not in); #4 Sat 11:00 out (weekend); #5 Sun 22:00 out.
    # #7 paged before the window and #8 at its end: not counted. #6's escalation paged nobody.
    assert [(p.incident_id, p.reason, p.outside_hours) for p in card.pages] == [
        (1, "incident", False), (2, "incident", True), (2, "escalation", True),
        (6, "incident", True), (4, "incident", True), (5, "incident", True)]
    assert card.pages_outside_hours == 5


def test_l2_escalations_count_paged_and_slack_mentions(card):
    assert card.escalations == (2, 6)


def test_rollbacks_and_their_outcome(card):
    # #2 succeeded, #4 failed; #7's rollback happened before the window.
    assert [(r.incident_id, r.outcome) for r in card.rollbacks] == [(2, "succeeded"), (4, "failed")]
    assert (card.rollbacks_with("succeeded"), card.rollbacks_with("failed")) == (1, 1)


def test_security_incidents_by_label(card):
    assert card.security == (3, 4)  # security="true" and category="security"; #1 says "false"


def test_availability_per_model(card):
    # Window 10080 minutes. Open L1 time within it:
    # churn:  #7 00:00-01:00 (60, started before) + #1 40 + #2 60 + #5 22:00-24:00 (120, still
    #         open, cut at `until`) = 280 -> 1 - 280/10080 = 0.972222
    # fraud:  #3 is L0; #4 11:00-11:50 + 12:20-13:00 (resolved, then reopened) = 90;
    #         #8 starts at `until` -> 1 - 90/10080 = 0.991071
    # ranker: #6 50 -> 1 - 50/10080 = 0.995040
    figures = {a.model: (a.downtime, round(a.share, 6)) for a in card.availability}
    assert figures == {"churn": (280 * MIN, 0.972222), "fraud": (90 * MIN, 0.991071),
                       "ranker": (50 * MIN, 0.99504)}


def test_daily_counts_and_median_mttr(card):
    assert [(d.day, d.incidents, d.mttr_median) for d in card.daily] == [
        (date(2026, 3, 2), 1, 40 * MIN), (date(2026, 3, 3), 1, 60 * MIN),
        (date(2026, 3, 4), 1, 20 * MIN), (date(2026, 3, 5), 1, 50 * MIN),
        (date(2026, 3, 6), 0, None), (date(2026, 3, 7), 1, 120 * MIN),
        (date(2026, 3, 8), 1, None)]  # #5 still open


def test_daily_pages_and_median_mtta(card):
    # Pages by when they were made: #1 Mon; #2 Tue, and its L2 page at 02:30 Tue; #6 Thu
    # (its escalation was a Slack mention); #4 Sat; #5 Sun. #3 is L0; #7 paged on Sun 01.
    assert [d.pages for d in card.daily] == [1, 2, 0, 1, 0, 1, 1]
    assert [d.mtta_median for d in card.daily] == [
        4 * MIN, 10 * MIN, None, 20 * MIN, None, 30 * MIN, 2 * MIN]  # #3 never acknowledged


def test_no_incidents():
    card = compute([], since=SINCE, until=UNTIL, now=NOW)
    assert card.incidents == 0 and card.l0_share is None
    assert (card.mtta.count, card.mtta.median, card.mtta.p90) == (0, None, None)
    assert card.mttr.median is None and card.pages == () and card.availability == ()
    assert [d.incidents for d in card.daily] == [0] * 7


def test_a_window_still_running_measures_availability_up_to_now():
    # Seen Wednesday 00:00: 2 days (2880 min) measured; churn open since Tuesday 00:00
    # (1440 min, still open) -> 1 - 1440/2880 = 50%.
    open_one = IncidentFacts(1, "L1", "alertmanager", triggered_at=at(3), model="churn")
    card = compute([open_one], since=SINCE, until=UNTIL, now=at(4))
    assert [(a.downtime, a.share) for a in card.availability] == [(1440 * MIN, 0.5)]
    assert card.mttr.count == 0


def test_a_window_in_the_future_has_no_availability():
    card = compute(WEEK, since=at(20), until=at(27), now=NOW)
    assert card.availability == () and card.incidents == 0


def test_simultaneous_l1_incidents_of_one_model_count_once():
    # 10:00-11:00 and 10:30-12:00 overlap: 2h down, not 2h30.
    a = IncidentFacts(1, "L1", "alertmanager", triggered_at=at(2, 10), resolved_at=at(2, 11),
                      model="churn")
    b = IncidentFacts(2, "L1", "alertmanager", triggered_at=at(2, 10, 30),
                      resolved_at=at(2, 12), model="churn")
    card = compute([a, b], since=SINCE, until=UNTIL, now=NOW)
    assert card.availability[0].downtime == 120 * MIN


def test_an_l0_promoted_to_l1_is_paged_when_promoted_not_when_opened():
    # Opened Wed 07:00 (outside hours), promoted and paged at 10:00 (inside).
    promoted = IncidentFacts(1, "L1", "alertmanager", triggered_at=at(4, 7), paged=True,
                             events=(Event(at(4, 10), "promoted", "L0 → L1: flapping"),))
    card = compute([promoted], since=SINCE, until=UNTIL, now=NOW)
    assert [(p.at, p.outside_hours) for p in card.pages] == [(at(4, 10), False)]
    assert card.handled_at_l0 == 0


@pytest.mark.parametrize("when, inside", [
    (at(2, 8, 59), False), (at(2, 9), True), (at(2, 17, 59), True), (at(2, 18), False),
    (at(7, 12), False),  # Saturday
    (at(6, 17, 59), True),  # Friday
])
def test_working_hours_boundaries(when, inside):
    assert WorkingHours().contains(when) is inside


def test_working_hours_in_another_time_zone():
    berlin = WorkingHours.parse("09:00-18:00", "mon-fri", "Europe/Berlin")  # UTC+1 in March
    assert berlin.contains(at(2, 8, 30))  # 09:30 in Berlin
    assert not berlin.contains(at(2, 17, 30))  # 18:30 in Berlin
    assert not berlin.contains(at(1, 23, 30))  # Monday 00:30 in Berlin: too early


def test_working_days_ranges_may_wrap_past_sunday():
    assert WorkingHours.parse(days="sun-thu").days == {6, 0, 1, 2, 3}
    assert WorkingHours.parse(days="mon,wed,fri").days == {0, 2, 4}
    assert WorkingHours.parse(hours="08:30-17:00").start == time(8, 30)


@pytest.mark.parametrize("hours, days, tz, problem", [
    ("9-18", "mon-fri", "UTC", "not like 09:00-18:00"),
    ("18:00-09:00", "mon-fri", "UTC", "must start before"),
    ("09:00-18:00", "weekdays", "UTC", "working days"),
    ("09:00-18:00", "mon-fri", "Mars/Olympus", "time zone"),
])
def test_bad_working_hours_are_refused_by_name(hours, days, tz, problem):
    with pytest.raises(ValueError, match=problem):
        WorkingHours.parse(hours, days, tz)


def test_percentile_interpolates_linearly():
    assert percentile([4, 1, 3, 2], 0.5) == 2.5  # an even count's median is the mean of the middle two
    assert percentile([7], 0.9) == 7
    assert percentile([10, 20], 0.9) == 19  # rank 0.9 -> 10 + 0.9*10


def test_open_intervals_follow_resolves_and_reopens():
    incident = WEEK[3]  # #4
    assert open_intervals(incident, NOW) == [(at(7, 11), at(7, 11, 50)), (at(7, 12, 20), at(7, 13))]
    assert open_intervals(WEEK[4], NOW) == [(at(8, 22), NOW)]  # #5, still open


def test_covered_clips_to_the_window():
    assert covered([(at(1), at(3)), (at(8, 12), at(12))], SINCE, UNTIL) == timedelta(days=1, hours=12)


@pytest.mark.parametrize("detail, outcome", [
    ("succeeded: churn v6", "succeeded"), ("failed: timeout", "failed"), ("Succeeded", "succeeded"),
    ("skipped", "unknown")])
def test_rollback_outcome_from_detail(detail, outcome):
    assert rollback_outcome(detail) == outcome


def test_an_empty_window_is_refused():
    with pytest.raises(ValueError):
        compute([], since=UNTIL, until=SINCE, now=NOW)
