"""The speed side of the scorecard against a quarter computed by hand (docs/reports.md)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from bot.domain.changes import Change
from bot.domain.scorecard import Event, IncidentFacts
from bot.domain.speed import compute_speed, shipments

Q3, Q4 = datetime(2026, 7, 1, tzinfo=UTC), datetime(2026, 10, 1, tzinfo=UTC)
WINDOW = timedelta(hours=2)
SERVING = {"churn": "champion", "fraud": "prod"}
TEAMS = {"churn": "ds-churn", "fraud": "ds-fraud"}


def at(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def move(model: str, alias: str, before: str | None, after: str | None, when: datetime) -> Change:
    return Change(model, alias, before, after, when, source="webhook")


CHANGES = [
    move("churn", "champion", None, "1", at(6, 20, 9)),     # shipped before the quarter
    move("churn", "champion", "1", "2", at(7, 6, 10)),      # shipped; L1 at 10:30: failed
    move("churn", "champion", "2", "1", at(7, 6, 11)),      # rolled back: restored, ships nothing
    move("churn", "champion", "1", "3", at(7, 8, 9)),       # shipped; only an L0 after it
    move("fraud", "prod", "4", "5", at(8, 3, 12)),          # shipped; rolled back at 13:00
    move("fraud", "prod", "5", "4", at(8, 3, 13)),          # the rollback's move
    move("fraud", "champion", "1", "2", at(8, 10, 8)),      # not fraud's serving alias
    move("churn", "champion", "3", "4", at(9, 30, 23)),     # shipped; L1 after the quarter ends
    move("churn", "champion", "4", "5", at(10, 2, 9)),      # next quarter
]
INCIDENTS = [
    IncidentFacts(id=1, tier="L1", source="alertmanager", triggered_at=at(7, 6, 10, 30),
                  model="churn", resolved_at=at(7, 6, 11, 15)),
    IncidentFacts(id=2, tier="L0", source="alertmanager", triggered_at=at(7, 8, 9, 30),
                  model="churn", resolved_at=at(7, 8, 9, 45)),
    IncidentFacts(id=3, tier="L1", source="alertmanager", triggered_at=at(7, 8, 12),  # 3h after
                  model="churn", resolved_at=at(7, 8, 12, 30)),
    IncidentFacts(id=4, tier="L1", source="alertmanager", triggered_at=datetime(
        2026, 10, 1, 0, 30, tzinfo=UTC), model="churn",
        resolved_at=datetime(2026, 10, 1, 2, 30, tzinfo=UTC)),
    IncidentFacts(id=5, tier="L0", source="generic", triggered_at=at(8, 3, 12, 50), model="fraud",
                  resolved_at=at(8, 3, 13, 30),
                  events=(Event(at(8, 3, 13), "rollback", "succeeded: fraud v5 → v4"),)),
    IncidentFacts(id=6, tier="L1", source="alertmanager", triggered_at=at(7, 6, 10, 40),
                  model="fraud"),  # another model's incident fails nothing of churn
]


def test_the_hand_computed_quarter():
    speed = compute_speed(CHANGES, INCIDENTS, since=Q3, until=Q4, window=WINDOW,
                          serving=SERVING, teams=TEAMS)
    assert [(s.model, s.version) for s in speed.shipped] == [
        ("churn", "2"), ("churn", "3"), ("fraud", "5"), ("churn", "4")]
    assert speed.by_model == {"churn": 3, "fraud": 1}
    assert speed.by_team == {"ds-churn": 3, "ds-fraud": 1}
    assert speed.by_week == {date(2026, 7, 6): 2, date(2026, 8, 3): 1, date(2026, 9, 28): 1}
    assert speed.by_quarter == {"2026-Q3": 4}
    assert [(f.shipment.version, f.why) for f in speed.failed] == [
        ("2", "incident #1"), ("5", "rollback"), ("4", "incident #4")]
    assert speed.change_failure_rate == 0.75
    # v2: the alias left it at 11:00, before #1 resolved (11:15): 1h. v5: moved back at
    # 13:00: 1h. v4: never moved off; #4 resolved at 02:30 the next day: 3h30m.
    assert [f.time_to_restore for f in speed.failed] == [
        timedelta(hours=1), timedelta(hours=1), timedelta(hours=3, minutes=30)]
    assert speed.time_to_restore.count == 3
    assert speed.time_to_restore.median == timedelta(hours=1)
    assert speed.time_to_restore.p90 == timedelta(hours=3)  # 1h + 0.8 × 2h30m


def test_nothing_shipped_has_no_failure_rate():
    speed = compute_speed([], INCIDENTS, since=Q3, until=Q4, window=WINDOW)
    assert speed.shipped == () and speed.change_failure_rate is None
    assert speed.time_to_restore.count == 0


def test_moving_back_and_forth_ships_each_version_once():
    back_and_forth = [move("m", "champion", "1", "2", at(7, 1, 9)),
                      move("m", "champion", "2", "1", at(7, 1, 10)),
                      move("m", "champion", "1", "2", at(7, 1, 11)),
                      move("m", "champion", "2", None, at(7, 1, 12)),   # alias deleted
                      move("m", "champion", None, "2", at(7, 1, 13))]
    assert [s.version for s in shipments(back_and_forth)] == ["2"]
