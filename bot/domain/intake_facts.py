"""The shapes of an intake plan: what the store loaded for it (`Facts`) and what it
returns (`Plan`), so that domain/intake.py holds only the decisions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bot.domain.alert import Alert
from bot.domain.incident import IncidentFacts, OwedDelivery
from bot.domain.matchers import Matcher, match_all
from bot.domain.routing import Route


@dataclass(frozen=True, slots=True)
class Routed:
    alert: Alert
    route: Route
    key: str
    ghash: str


@dataclass(frozen=True, slots=True)
class SilenceFacts:
    id: int
    matchers: tuple[Matcher, ...]
    starts_at: datetime
    ends_at: datetime

    def silences(self, alert: Alert, now: datetime) -> bool:
        """In force from its start up to (not including) its end."""
        return self.starts_at <= now < self.ends_at and match_all(self.matchers, alert.labels)


@dataclass(frozen=True, slots=True)
class OccurrenceFacts:
    id: int
    status: str  # firing | resolved
    starts_at: datetime | None
    ends_at: datetime | None


@dataclass(frozen=True, slots=True)
class Facts:
    """What the store loaded for a plan.

    By group hash: `open` incidents, and the newest resolved one of a group without an
    open one (`reopenable`). Per incident: `occurrences` by fingerprint (at least the
    alerts', all of an incident that may resolve or reopen); `refires` within the
    flapping window (of `refire_candidates`); `side_pages` (of one that may resolve)."""

    open: Mapping[str, IncidentFacts] = field(default_factory=dict)
    reopenable: Mapping[str, IncidentFacts] = field(default_factory=dict)
    occurrences: Mapping[int, Mapping[str, OccurrenceFacts]] = field(default_factory=dict)
    refires: Mapping[int, Sequence[datetime]] = field(default_factory=dict)
    side_pages: Mapping[int, Sequence[Mapping[str, Any]]] = field(default_factory=dict)
    silences: Sequence[SilenceFacts] = ()


@dataclass(frozen=True, slots=True)
class TimelineRow:
    incident_id: int
    kind: str
    detail: str
    actor: str


@dataclass(frozen=True, slots=True)
class RunRequest:
    incident_id: int
    runbook: str


@dataclass(frozen=True, slots=True)
class OccurrenceWrite:
    """An occurrence to insert (`id` None, from `alert`) or to update (`repeats` added)."""

    incident_id: int
    id: int | None
    alert: Alert | None
    status: str
    starts_at: datetime | None
    ends_at: datetime | None
    repeats: int


@dataclass(frozen=True, slots=True)
class BatchPlan:
    """What one batch (one request) changes, in order."""

    opened: list[int] = field(default_factory=list)
    changed: set[int] = field(default_factory=set)
    timeline: list[TimelineRow] = field(default_factory=list)
    deliveries: list[OwedDelivery] = field(default_factory=list)
    runs: list[RunRequest] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Plan:
    batches: list[BatchPlan]
    incidents: dict[int, IncidentFacts]  # as they end up, for those that changed
    occurrences: list[OccurrenceWrite]  # the new ones, then the updated ones
    heard_from: frozenset[int]  # incidents a firing alert came in for (last_alert_at)
