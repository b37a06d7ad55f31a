"""The speed side of the scorecard, from the model change records: models shipped, change
failure rate, time to restore. Pure; docs/reports.md defines each figure.

- A model is *shipped* when its serving alias moves to a version that alias never served
  before (a rollback to an earlier version, or back again, ships nothing).
- A shipment *failed* when, within the change window after it, an L1 incident of that
  model opened, or the model was rolled back (the bot's rollback on one of its incidents,
  or its serving alias moved back to a version it served before).
- *Time to restore* a failed shipment: from the move to the first of: the failing
  incident resolved, the alias moved off the failed version.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from bot.domain.changes import Change
from bot.domain.scorecard import UNSET, Durations, IncidentFacts, durations


@dataclass(frozen=True, slots=True)
class Shipment:
    model: str
    alias: str
    team: str
    at: datetime
    version: str


@dataclass(frozen=True, slots=True)
class FailedShipment:
    shipment: Shipment
    why: str  # "incident #12" | "rollback"
    restored_at: datetime | None  # None: not restored yet

    @property
    def time_to_restore(self) -> timedelta | None:
        return None if self.restored_at is None else self.restored_at - self.shipment.at


@dataclass(frozen=True, slots=True)
class Speed:
    shipped: tuple[Shipment, ...]
    by_model: dict[str, int]
    by_team: dict[str, int]
    by_week: dict[date, int]  # Monday of each ISO week of the window
    by_quarter: dict[str, int]  # "2026-Q3"
    failed: tuple[FailedShipment, ...]
    time_to_restore: Durations

    @property
    def change_failure_rate(self) -> float | None:
        return len(self.failed) / len(self.shipped) if self.shipped else None


def quarter(at: datetime) -> str:
    return f"{at.year}-Q{(at.month - 1) // 3 + 1}"


def shipments(changes: Sequence[Change], *, serving: Mapping[str, str] | None = None,
              teams: Mapping[str, str] | None = None,
              default_alias: str = "champion") -> list[Shipment]:
    """Every move of a serving alias to a version it never served before, oldest first.
    `changes` must hold each alias's history from its start (or the served-before check
    sees less); `serving` maps a model to its serving alias."""
    seen: dict[tuple[str, str], set[str]] = {}
    found = []
    for change in sorted(changes, key=lambda c: c.moved_at):
        if change.alias != (serving or {}).get(change.model, default_alias):
            continue
        served = seen.setdefault((change.model, change.alias), set())
        if change.from_version:
            served.add(change.from_version)
        if change.to_version and change.to_version not in served:
            found.append(Shipment(change.model, change.alias,
                                  (teams or {}).get(change.model) or UNSET,
                                  change.moved_at, change.to_version))
        if change.to_version:
            served.add(change.to_version)
    return found


def _failure(shipment: Shipment, changes: Sequence[Change], incidents: Sequence[IncidentFacts],
             window: timedelta) -> FailedShipment | None:
    start, end = shipment.at, shipment.at + window
    # The alias left the shipped version: the first later move of it.
    left = min((c for c in changes if (c.model, c.alias) == (shipment.model, shipment.alias)
                and c.moved_at > start
                and c.from_version == shipment.version), key=lambda c: c.moved_at, default=None)
    l1 = min((i for i in incidents if i.model == shipment.model and i.tier == "L1"
              and start <= i.triggered_at <= end), key=lambda i: i.triggered_at, default=None)
    rolled = [e.at for i in incidents if i.model == shipment.model for e in i.events
              if e.kind == "rollback" and start <= e.at <= end]
    moved_back = left is not None and left.moved_at <= end and left.to_version is not None and (
        _older(left.to_version, shipment.version))
    if l1 is None and not rolled and not moved_back:
        return None
    restored = [t for t in (l1.resolved_at if l1 else None,
                            left.moved_at if left else None) if t is not None]
    return FailedShipment(shipment, f"incident #{l1.id}" if l1 else "rollback",
                          min(restored, default=None))


def _older(version: str, than: str) -> bool:
    return version.isdigit() and than.isdigit() and int(version) < int(than)


def compute_speed(changes: Sequence[Change], incidents: Sequence[IncidentFacts], *,
                  since: datetime, until: datetime, window: timedelta,
                  serving: Mapping[str, str] | None = None,
                  teams: Mapping[str, str] | None = None,
                  default_alias: str = "champion") -> Speed:
    """The speed figures of shipments made in [since, until). `changes` and `incidents`
    must reach `window` past `until`, so late shipments' failures are seen."""
    shipped = [s for s in shipments(changes, serving=serving, teams=teams,
                                    default_alias=default_alias) if since <= s.at < until]
    failed = [f for f in (_failure(s, changes, incidents, window) for s in shipped) if f]
    weeks = Counter((s.at.date() - timedelta(days=s.at.weekday())) for s in shipped)
    return Speed(
        shipped=tuple(shipped),
        by_model=dict(Counter(s.model for s in shipped).most_common()),
        by_team=dict(Counter(s.team for s in shipped).most_common()),
        by_week=dict(sorted(weeks.items())),
        by_quarter=dict(sorted(Counter(quarter(s.at) for s in shipped).items())),
        failed=tuple(failed),
        time_to_restore=durations([t for f in failed if (t := f.time_to_restore) is not None]),
    )
