"""What a chart shows, as plain data: named series of values by day, grouped into panels.

Pure. `scorecard_series` picks the scorecard's figures for its chart; bot/charts.py draws
any list of series; the outbox carries them as JSON (`series_to_json`), so a chart owed in
a transaction is drawn only when it is sent, and the delivery row stays small. Adding a
figure to the chart is one more `Series` in `scorecard_series`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, timedelta
from typing import Any

from bot.domain.scorecard import Scorecard

KINDS = ("bar", "line")


@dataclass(frozen=True, slots=True)
class Series:
    """One figure over time. Series that share a `panel` are drawn on one axis (same
    unit); `None` is a gap (nothing measured that day), never a zero."""

    name: str
    panel: str
    kind: str  # "bar" (counts) or "line"
    points: tuple[tuple[date, float | None], ...]


def _minutes(value: timedelta | None) -> float | None:
    return None if value is None else value.total_seconds() / 60


def scorecard_series(s: Scorecard) -> list[Series]:
    """The scorecard's chart: pages per day, and median MTTA and MTTR of the incidents
    triggered each day (UTC days); with the speed side, models shipped per day and the
    share of each day's shipments that failed (a gap on days that shipped nothing)."""
    response = "median minutes, by day triggered"
    series = [
        Series("pages", "pages to humans per day", "bar",
               tuple((d.day, float(d.pages)) for d in s.daily)),
        Series("MTTA", response, "line", tuple((d.day, _minutes(d.mtta_median)) for d in s.daily)),
        Series("MTTR", response, "line", tuple((d.day, _minutes(d.mttr_median)) for d in s.daily)),
    ]
    if s.speed is not None:
        shipped = Counter(one.at.astimezone(UTC).date() for one in s.speed.shipped)
        failed = Counter(one.shipment.at.astimezone(UTC).date() for one in s.speed.failed)
        series += [
            Series("models shipped", "models shipped per day", "bar",
                   tuple((d.day, float(shipped[d.day])) for d in s.daily)),
            Series("change failure rate", "change failure rate (%), by day shipped", "line",
                   tuple((d.day, 100 * failed[d.day] / shipped[d.day] if shipped[d.day] else None)
                         for d in s.daily)),
        ]
    return series


def series_to_json(series: Sequence[Series]) -> list[dict[str, Any]]:
    return [{"name": s.name, "panel": s.panel, "kind": s.kind,
             "points": [[day.isoformat(), value] for day, value in s.points]} for s in series]


def series_from_json(data: Any) -> list[Series]:
    """The inverse of `series_to_json`; ValueError naming what is malformed."""
    if not isinstance(data, list):
        raise ValueError("chart series must be a list")
    series = []
    for index, item in enumerate(data):
        try:
            kind = str(item["kind"])
            if kind not in KINDS:
                raise ValueError(f"kind {kind!r} is not one of {KINDS}")
            points = tuple((date.fromisoformat(str(day)), _number(value))
                           for day, value in item["points"])
            series.append(Series(str(item["name"]), str(item["panel"]), kind, points))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"chart series [{index}] is malformed: {exc}") from None
    return series


def _number(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    return number
