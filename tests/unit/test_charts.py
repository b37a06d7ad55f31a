"""The chart's series: what the scorecard puts on it, their JSON for the outbox, and the
PNG drawn from them (matplotlib, the `charts` extra)."""

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest

from bot.domain.changes import Change
from bot.domain.charts import Series, scorecard_series, series_from_json, series_to_json
from bot.domain.scorecard import IncidentFacts, compute
from bot.domain.speed import compute_speed

SINCE = datetime(2026, 3, 2, tzinfo=UTC)
MIN = timedelta(minutes=1)


def test_scorecard_series_are_pages_mtta_and_mttr_by_day():
    incidents = [
        IncidentFacts(1, "L1", "alertmanager", SINCE + timedelta(hours=9), paged=True,
                      acknowledged_at=SINCE + timedelta(hours=9) + 4 * MIN,
                      resolved_at=SINCE + timedelta(hours=9) + 40 * MIN),
        IncidentFacts(2, "L1", "alertmanager", SINCE + timedelta(hours=10), paged=True,
                      acknowledged_at=SINCE + timedelta(hours=10) + 6 * MIN),
        IncidentFacts(3, "L0", "grafana", SINCE + timedelta(days=1, hours=3),
                      resolved_at=SINCE + timedelta(days=1, hours=4)),
    ]
    card = compute(incidents, since=SINCE, until=SINCE + timedelta(days=2),
                   now=SINCE + timedelta(days=3))
    pages, mtta, mttr = scorecard_series(card)
    days = (date(2026, 3, 2), date(2026, 3, 3))
    assert (pages.kind, pages.points) == ("bar", tuple(zip(days, (2.0, 0.0), strict=True)))
    assert mtta.points == tuple(zip(days, (5.0, None), strict=True))  # median of 4 and 6
    assert mttr.points == tuple(zip(days, (40.0, 60.0), strict=True))
    assert mtta.panel == mttr.panel != pages.panel  # both in minutes: one axis


def test_with_the_speed_side_the_chart_shows_models_shipped_and_change_failure_rate():
    """churn ships v2 on day one and an L1 of churn follows within the window (failed);
    fraud ships v8 the same day and holds; nothing ships on day two (a gap, not 0%)."""
    changes = [Change("churn", "champion", "1", "2", SINCE + timedelta(hours=8)),
               Change("fraud", "champion", "7", "8", SINCE + timedelta(hours=11))]
    incidents = [IncidentFacts(1, "L1", "alertmanager", SINCE + timedelta(hours=9), paged=True,
                               model="churn")]
    card = replace(compute(incidents, since=SINCE, until=SINCE + timedelta(days=2),
                           now=SINCE + timedelta(days=3)),
                   speed=compute_speed(changes, incidents, since=SINCE,
                                       until=SINCE + timedelta(days=2), window=timedelta(hours=2)))
    *_, shipped, failure_rate = scorecard_series(card)
    days = (date(2026, 3, 2), date(2026, 3, 3))
    assert (shipped.kind, shipped.points) == ("bar", tuple(zip(days, (2.0, 0.0), strict=True)))
    assert failure_rate.points == tuple(zip(days, (50.0, None), strict=True))
    assert len(scorecard_series(replace(card, speed=None))) == 3


def test_series_survive_the_outbox_json():
    series = [Series("pages", "per day", "bar", ((date(2026, 3, 2), 2.0),)),
              Series("MTTR", "minutes", "line", ((date(2026, 3, 2), None),))]
    assert series_from_json(series_to_json(series)) == series


@pytest.mark.parametrize("bad", [
    {"series": "x"}, [{"name": "a", "panel": "p", "kind": "pie", "points": []}],
    [{"name": "a", "panel": "p", "kind": "bar", "points": [["2026-13-01", 1]]}],
    [{"name": "a", "panel": "p", "kind": "bar", "points": [["2026-03-01", "inf"]]}],
    [{"name": "a", "kind": "bar", "points": []}],
])
def test_malformed_series_are_refused_by_name(bad):
    with pytest.raises(ValueError, match="series"):
        series_from_json(bad)


def test_the_chart_is_a_png_with_one_panel_per_unit():
    pytest.importorskip("matplotlib")
    from bot.charts import render_png

    days = [date(2026, 3, 2) + timedelta(days=n) for n in range(7)]
    series = [Series("pages", "pages per day", "bar", tuple((d, float(n)) for n, d in
                                                             enumerate(days))),
              Series("models shipped", "pages per day", "bar", tuple((d, 1.0) for d in days)),
              Series("MTTR", "minutes", "line", tuple((d, None if n % 2 else 30.0)
                                                      for n, d in enumerate(days)))]
    png = render_png(series, title="t")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (800, 560)  # 8 x (1.2 + 2.2 * 2 panels) inches at 100 dpi
    with pytest.raises(ValueError):
        render_png([], title="nothing")
