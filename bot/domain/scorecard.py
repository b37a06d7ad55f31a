"""The on-call scorecard: the figures a platform team is judged by, over a window.

Pure: plain incident facts, a window [since, until) and `now` in; a `Scorecard`
out. docs/reports.md defines every figure; the definitions here must match it.

Two kinds of figure:
- about the window's incidents, those triggered in [since, until): counts, MTTA,
  MTTR, the share handled at L0, security incidents, reopens;
- about things that happened in the window, whichever incident they belong to:
  pages, L2 escalations, rollbacks, and each model's availability.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.domain.pulse import PulseFacts, Satisfaction, satisfaction

if TYPE_CHECKING:
    from bot.domain.speed import Speed

# Timeline kinds the scorecard reads; the loader need not fetch any other.
EVENT_KINDS = ("resolved", "reopened", "promoted", "rollback")

_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
UNSET = "(none)"  # how a missing model, team or severity is counted


@dataclass(frozen=True, slots=True)
class Event:
    """A timeline entry, reduced to what the scorecard needs."""

    at: datetime
    kind: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class IncidentFacts:
    """One incident as the scorecard sees it: the row's facts plus its timeline events
    of the `EVENT_KINDS`. Times are timezone-aware."""

    id: int
    tier: str
    source: str
    triggered_at: datetime
    model: str | None = None
    team: str | None = None
    severity: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    acknowledged_at: datetime | None = None
    resolved_at: datetime | None = None
    paged: bool = False
    escalated_at: datetime | None = None
    escalation_paged: bool = False
    reopen_count: int = 0
    events: tuple[Event, ...] = ()


@dataclass(frozen=True, slots=True)
class WorkingHours:
    """When a page counts as inside working hours: `start` <= local time < `end` on `days`
    (0 = Monday), in time zone `tz`. Hours spanning midnight are not supported."""

    start: time = time(9)
    end: time = time(18)
    days: frozenset[int] = frozenset(range(5))
    tz: str = "UTC"

    @classmethod
    def parse(cls, hours: str = "09:00-18:00", days: str = "mon-fri", tz: str = "UTC",
              ) -> WorkingHours:
        """From `09:00-18:00`, `mon-fri` (or `sun-thu`, `mon,wed,fri`) and an IANA zone name;
        raises ValueError naming the bad part."""
        start_text, sep, end_text = hours.partition("-")
        try:
            start, end = time.fromisoformat(start_text.strip()), time.fromisoformat(end_text.strip())
        except ValueError:
            sep = ""
        if not sep:
            raise ValueError(f"working hours {hours!r} are not like 09:00-18:00")
        if start >= end:
            raise ValueError(f"working hours {hours!r} must start before they end (same day)")
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{tz!r} is not a time zone name such as UTC or Europe/Berlin") from None
        return cls(start=start, end=end, days=_parse_days(days), tz=tz)

    def contains(self, at: datetime) -> bool:
        local = at.astimezone(ZoneInfo(self.tz))
        return local.weekday() in self.days and self.start <= local.time() < self.end

    def describe(self) -> str:
        days = ",".join(_DAY_NAMES[d] for d in sorted(self.days))
        return f"{self.start:%H:%M}-{self.end:%H:%M} {days} {self.tz}"


DEFAULT_WORKING_HOURS = WorkingHours()  # Mon-Fri 09:00-18:00 UTC


def _parse_days(text: str) -> frozenset[int]:
    days: set[int] = set()
    for part in text.lower().split(","):
        first, sep, last = part.strip().partition("-")
        if first not in _DAY_NAMES or (sep and last not in _DAY_NAMES):
            raise ValueError(f"working days {text!r} are not like mon-fri or mon,wed,fri")
        day, stop = _DAY_NAMES.index(first), _DAY_NAMES.index(last if sep else first)
        days.add(day)
        while day != stop:  # a range may wrap past Sunday: sun-thu
            day = (day + 1) % 7
            days.add(day)
    return frozenset(days)


@dataclass(frozen=True, slots=True)
class Durations:
    """Median and 90th percentile (linear interpolation) of `count` durations."""

    count: int
    median: timedelta | None
    p90: timedelta | None


@dataclass(frozen=True, slots=True)
class Page:
    incident_id: int
    at: datetime
    reason: str  # "incident" (the platform on-call) | "escalation" (the model's team, L2)
    outside_hours: bool


@dataclass(frozen=True, slots=True)
class Rollback:
    incident_id: int
    at: datetime
    outcome: str  # "succeeded" | "failed" | "unknown" (detail starts with neither)


@dataclass(frozen=True, slots=True)
class Availability:
    model: str
    downtime: timedelta
    share: float  # of the measured part of the window without an open L1 incident


@dataclass(frozen=True, slots=True)
class Day:
    """One UTC day of the window: incidents triggered that day and their median MTTA and
    MTTR, and the pages to humans made that day."""

    day: date
    incidents: int
    mttr_median: timedelta | None
    mtta_median: timedelta | None = None
    pages: int = 0


@dataclass(frozen=True, slots=True)
class Scorecard:
    since: datetime
    until: datetime
    now: datetime
    hours: WorkingHours
    incidents: int
    by_tier: dict[str, int]
    by_model: dict[str, int]
    by_team: dict[str, int]
    by_source: dict[str, int]
    by_severity: dict[str, int]
    mtta: Durations
    mttr: Durations
    handled_at_l0: int
    reopened: int
    security: tuple[int, ...]
    pages: tuple[Page, ...]
    escalations: tuple[int, ...]
    rollbacks: tuple[Rollback, ...]
    availability: tuple[Availability, ...]
    daily: tuple[Day, ...]
    satisfaction: Satisfaction | None = None  # the latest pulse (domain.pulse)
    # The speed side (models shipped, change failure rate, time to restore): filled in
    # from the change records when the caller has them (bot.domain.speed).
    speed: Speed | None = None

    @property
    def l0_share(self) -> float | None:
        return self.handled_at_l0 / self.incidents if self.incidents else None

    @property
    def pages_outside_hours(self) -> int:
        return sum(page.outside_hours for page in self.pages)

    def rollbacks_with(self, outcome: str) -> int:
        return sum(rollback.outcome == outcome for rollback in self.rollbacks)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation between closest ranks (NumPy's
    default, Excel's PERCENTILE.INC): rank h = (n - 1) * q into the sorted values."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def durations(values: Sequence[timedelta]) -> Durations:
    if not values:
        return Durations(0, None, None)
    seconds = [v.total_seconds() for v in values]
    return Durations(len(values), timedelta(seconds=percentile(seconds, 0.5)),
                     timedelta(seconds=percentile(seconds, 0.9)))


def time_to_acknowledge(incident: IncidentFacts) -> timedelta | None:
    if incident.acknowledged_at is None:
        return None
    return incident.acknowledged_at - incident.triggered_at


def time_to_resolve(incident: IncidentFacts) -> timedelta | None:
    """From first trigger to the last resolve: a reopened incident's time counts whole."""
    if incident.resolved_at is None:
        return None
    return incident.resolved_at - incident.triggered_at


def is_security(labels: Mapping[str, str]) -> bool:
    return (str(labels.get("security", "")).lower() == "true"
            or str(labels.get("category", "")).lower() == "security")


def rollback_outcome(detail: str) -> str:
    for outcome in ("succeeded", "failed"):
        if detail.lower().startswith(outcome):
            return outcome
    return "unknown"


def open_intervals(incident: IncidentFacts, now: datetime) -> list[tuple[datetime, datetime]]:
    """When the incident was open: from its trigger, closed by each `resolved` event and
    opened again by each `reopened` one; a still-open incident is open until `now`."""
    intervals: list[tuple[datetime, datetime]] = []
    start: datetime | None = incident.triggered_at
    for event in sorted(incident.events, key=lambda e: e.at):
        if event.kind == "resolved" and start is not None:
            intervals.append((start, event.at))
            start = None
        elif event.kind == "reopened" and start is None:
            start = event.at
    if start is not None:
        intervals.append((start, incident.resolved_at or now))
    return intervals


def covered(intervals: Iterable[tuple[datetime, datetime]], since: datetime, until: datetime,
            ) -> timedelta:
    """Length of the union of `intervals` within [since, until): overlaps count once."""
    total, reached = timedelta(0), since
    for start, end in sorted(intervals):
        start, end = max(start, reached), min(end, until)
        if end > start:
            total += end - start
            reached = end
    return total


def page_time(incident: IncidentFacts) -> datetime:
    """An L1 is paged when it opens; an L0 promoted to L1 when it is promoted."""
    promoted = [e.at for e in incident.events if e.kind == "promoted"]
    return min(promoted) if promoted else incident.triggered_at


def _counts(values: Iterable[str | None]) -> dict[str, int]:
    counted = Counter(value or UNSET for value in values)
    return dict(sorted(counted.items(), key=lambda item: (-item[1], item[0])))


def _within(at: datetime | None, since: datetime, until: datetime) -> bool:
    return at is not None and since <= at < until


def compute(incidents: Sequence[IncidentFacts], *, since: datetime, until: datetime,
            now: datetime, hours: WorkingHours = DEFAULT_WORKING_HOURS,
            pulses: Sequence[PulseFacts] = ()) -> Scorecard:
    """The scorecard for [since, until) as known at `now`.

    `incidents` must include every incident open at any time in the window (the
    loader's overlap query); others are ignored where they do not count. `pulses` must
    include the two latest opened before `until`.
    """
    if until <= since:
        raise ValueError("the window must end after it starts")
    cohort = [i for i in incidents if _within(i.triggered_at, since, until)]

    pages = [Page(i.id, page_time(i), "incident", not hours.contains(page_time(i)))
             for i in incidents if i.paged and _within(page_time(i), since, until)]
    pages += [Page(i.id, i.escalated_at, "escalation", not hours.contains(i.escalated_at))
              for i in incidents
              if i.escalation_paged and i.escalated_at and _within(i.escalated_at, since, until)]
    rollbacks = [Rollback(i.id, e.at, rollback_outcome(e.detail))
                 for i in incidents for e in i.events
                 if e.kind == "rollback" and _within(e.at, since, until)]

    return Scorecard(
        since=since, until=until, now=now, hours=hours,
        incidents=len(cohort),
        by_tier=_counts(i.tier for i in cohort),
        by_model=_counts(i.model for i in cohort),
        by_team=_counts(i.team for i in cohort),
        by_source=_counts(i.source for i in cohort),
        by_severity=_counts(i.severity for i in cohort),
        mtta=durations([d for i in cohort if (d := time_to_acknowledge(i)) is not None]),
        mttr=durations([d for i in cohort if (d := time_to_resolve(i)) is not None]),
        handled_at_l0=sum(i.tier == "L0" and not i.paged and not i.escalation_paged
                          for i in cohort),
        reopened=sum(i.reopen_count > 0 for i in cohort),
        security=tuple(i.id for i in cohort if is_security(i.labels)),
        pages=tuple(sorted(pages, key=lambda p: (p.at, p.incident_id))),
        escalations=tuple(i.id for i in incidents if _within(i.escalated_at, since, until)),
        rollbacks=tuple(sorted(rollbacks, key=lambda r: (r.at, r.incident_id))),
        availability=availability(incidents, since=since, until=until, now=now),
        daily=daily(cohort, since=since, until=until, pages=pages),
        satisfaction=satisfaction(pulses, until=until),
    )


def availability(incidents: Sequence[IncidentFacts], *, since: datetime, until: datetime,
                 now: datetime) -> tuple[Availability, ...]:
    """Per model seen in `incidents`: the share of [since, min(until, now)) with no open
    L1 incident for it. Empty when that span is (the window lies in the future)."""
    end = min(until, now)
    if end <= since:
        return ()
    span = end - since
    result = []
    for model in sorted({i.model for i in incidents if i.model}):
        down = covered((interval for i in incidents if i.model == model and i.tier == "L1"
                        for interval in open_intervals(i, now)), since, end)
        result.append(Availability(model, down, 1 - down / span))
    return tuple(result)


def daily(cohort: Sequence[IncidentFacts], *, since: datetime, until: datetime,
          pages: Sequence[Page] = ()) -> tuple[Day, ...]:
    """Every UTC day the window touches, with no gaps, for a trend chart."""
    first = since.astimezone(UTC).date()
    last = (until - timedelta(microseconds=1)).astimezone(UTC).date()
    days = []
    for offset in range((last - first).days + 1):
        day = first + timedelta(days=offset)
        of_day = [i for i in cohort if i.triggered_at.astimezone(UTC).date() == day]
        resolved = [d for i in of_day if (d := time_to_resolve(i)) is not None]
        acknowledged = [d for i in of_day if (d := time_to_acknowledge(i)) is not None]
        days.append(Day(day, len(of_day), durations(resolved).median,
                        durations(acknowledged).median,
                        sum(p.at.astimezone(UTC).date() == day for p in pages)))
    return tuple(days)
