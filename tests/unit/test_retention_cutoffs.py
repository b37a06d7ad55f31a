"""The pure retention decisions: cutoffs from `now`, and which incidents go."""

from datetime import UTC, datetime, timedelta

import pytest

from bot.domain.retention import Cutoffs, cutoffs, prune_incident

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("days", "incident_days", "expected"), [
    (400, None, Cutoffs(records=NOW - timedelta(days=400))),
    (1, None, Cutoffs(records=NOW - timedelta(days=1))),
    (400, 730, Cutoffs(records=NOW - timedelta(days=400), incidents=NOW - timedelta(days=730))),
    (400, 30, Cutoffs(records=NOW - timedelta(days=400), incidents=NOW - timedelta(days=30))),
])
def test_cutoffs(days, incident_days, expected):
    assert cutoffs(NOW, retention_days=days, incident_retention_days=incident_days) == expected


@pytest.mark.parametrize(("days", "incident_days"), [(0, None), (-1, None), (400, 0)])
def test_cutoffs_refuse_a_period_under_a_day(days, incident_days):
    with pytest.raises(ValueError):
        cutoffs(NOW, retention_days=days, incident_retention_days=incident_days)


CUTOFF = NOW - timedelta(days=30)


@pytest.mark.parametrize(("state", "resolved_at", "cutoff", "expected"), [
    ("resolved", CUTOFF - timedelta(seconds=1), CUTOFF, True),
    ("resolved", CUTOFF, CUTOFF, False),  # at the cutoff is not before it
    ("resolved", CUTOFF + timedelta(days=1), CUTOFF, False),
    ("resolved", CUTOFF - timedelta(days=1), None, False),  # incidents kept forever
    ("triggered", CUTOFF - timedelta(days=900), CUTOFF, False),  # never an open one
    ("acknowledged", CUTOFF - timedelta(days=900), CUTOFF, False),
    ("triggered", None, CUTOFF, False),
    ("resolved", None, CUTOFF, False),
])
def test_prune_incident(state, resolved_at, cutoff, expected):
    assert prune_incident(state=state, resolved_at=resolved_at, cutoff=cutoff) is expected


def test_settings_name_a_bad_retention_and_read_an_empty_one_as_unset(monkeypatch):
    from bot.settings import ConfigurationError, load_settings

    monkeypatch.setenv("INCIDENT_RETENTION_DAYS", "")
    settings = load_settings()
    assert (settings.retention_days, settings.incident_retention_days) == (400, None)
    assert settings.retention_cutoffs(NOW) == Cutoffs(records=NOW - timedelta(days=400))
    monkeypatch.setenv("INCIDENT_RETENTION_DAYS", "730")
    assert load_settings().retention_cutoffs(NOW).incidents == NOW - timedelta(days=730)
    for name, value in (("RETENTION_DAYS", "0"), ("INCIDENT_RETENTION_DAYS", "soon")):
        monkeypatch.setenv(name, value)
        with pytest.raises(ConfigurationError, match=name):
            load_settings()
        monkeypatch.delenv(name)
