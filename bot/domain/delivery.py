"""What the outbox decides, as plain functions of rows and `now`.

A page (PagerDuty Events: trigger, acknowledge, resolve) is retried until
PagerDuty takes it, and is made loud in Slack while it is not taken; everything
else gives up after a retry budget, so that one poison row cannot hold back its
incident for ever. Deliveries wait for earlier ones only where order matters:
a page for the page before it (a trigger before its resolve), and a Slack
message for the post it updates or replies under.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bot.domain.durations import format_duration
from bot.domain.messages import Mrkdwn, md, md_join

# How often a page that stays undelivered is announced again.
PAGE_ALERT_REPEAT = timedelta(minutes=15)
# At most this many incidents are named in one loud message; the rest are counted.
_LOUD_NAMED = 10


def is_page(target: str) -> bool:
    return target == "pagerduty"


def expired(target: str, created_at: datetime, now: datetime, budget: timedelta) -> bool:
    """True once a delivery other than a page has been owed for `budget` or longer."""
    return not is_page(target) and now - created_at >= budget


@dataclass(frozen=True, slots=True)
class Wait:
    """Within one incident and target, a pending `later` delivery waits for an earlier
    pending `earlier` one (None: any action); with `until_posted`, only while the
    incident has no Slack message yet."""

    target: str
    later: str | None
    earlier: str | None
    until_posted: bool = False


# Every ordering the outbox keeps; anything not listed goes in any order.
# PagerDuty REST notes wait for nothing (a note's page is found by its key, and a
# note that finds none retries until its budget ends).
WAITS: tuple[Wait, ...] = (
    Wait("pagerduty", None, None),  # a trigger before its acknowledge and resolve
    Wait("slack", "sync", "sync"),  # the post before its updates, the updates in order
    Wait("slack", "reply", "sync", until_posted=True),  # replies go under the post
    Wait("slack", "run_sync", "sync", until_posted=True),
    Wait("slack", "run_sync", "run_sync"),  # a run's reply before its edits
)


@dataclass(frozen=True, slots=True)
class Queued:
    """A pending delivery as ordering sees it."""

    id: int
    incident_id: int | None
    target: str
    action: str


def must_wait(later: Queued, earlier: Queued, *, posted: bool) -> bool:
    """Whether `later` may not go while `earlier` is pending; `posted`: the incident
    already has its Slack message."""
    if (later.incident_id is None or later.incident_id != earlier.incident_id
            or later.target != earlier.target or earlier.id >= later.id):
        return False
    return any(rule.target == later.target and rule.later in (None, later.action)
               and rule.earlier in (None, earlier.action)
               and not (rule.until_posted and posted) for rule in WAITS)


def may_go(pending: Sequence[Queued], *, posted: Iterable[int] = ()) -> list[Queued]:
    """The pending deliveries that no earlier pending one holds back; `posted`: the
    incidents that have their Slack message. The store's claim query is this filter
    written in SQL (see `store.due_deliveries`)."""
    has_message = set(posted)
    return [row for row in pending
            if not any(must_wait(row, other, posted=row.incident_id in has_message)
                       for other in pending)]


# --- undelivered pages ------------------------------------------------------

_USERGROUP = re.compile(r"S[A-Z0-9]{2,20}")


def parse_mention(value: str) -> Mrkdwn:
    """`here`, or a Slack user-group ID (S0123…), as Slack mrkdwn; raises ValueError."""
    cleaned = value.strip()
    if cleaned.lower() == "here":
        return Mrkdwn("<!here>")
    if _USERGROUP.fullmatch(cleaned):
        return Mrkdwn(f"<!subteam^{cleaned}>")
    raise ValueError(f"{value!r} is neither `here` nor a Slack user-group ID like S0123ABC")


@dataclass(frozen=True, slots=True)
class PendingPage:
    """A page not yet taken by PagerDuty, with what the loud message names."""

    delivery_id: int
    incident_id: int | None
    title: str
    channel: str
    created_at: datetime
    alerted_at: datetime | None  # the last loud message about it, if any


def loud_channels(pages: Sequence[PendingPage], now: datetime, *, after: timedelta,
                  repeat: timedelta = PAGE_ALERT_REPEAT) -> dict[str, list[PendingPage]]:
    """The channels owed a loud message now, each with every overdue page it names.

    A page is overdue once undelivered for `after`. A channel is owed a message when
    one of its overdue pages was never announced, or last announced `repeat` ago;
    the message then names all its overdue pages, so they are announced together."""
    overdue: dict[str, list[PendingPage]] = {}
    for page in pages:
        if now - page.created_at >= after:
            overdue.setdefault(page.channel, []).append(page)
    return {channel: listed for channel, listed in overdue.items()
            if any(p.alerted_at is None or now - p.alerted_at >= repeat for p in listed)}


def loud_message(pages: Sequence[PendingPage], now: datetime, *, mention: Mrkdwn) -> Mrkdwn:
    """The "PAGE NOT DELIVERED" text; `mention` is from `parse_mention`."""
    oldest = format_duration(now - min(p.created_at for p in pages))
    by_incident: dict[int | None, PendingPage] = {}
    for page in sorted(pages, key=lambda p: p.created_at):
        by_incident.setdefault(page.incident_id, page)
    named = [md("• #{} {}", p.incident_id, p.title) if p.incident_id is not None
             else md("• {}", p.title) for p in list(by_incident.values())[:_LOUD_NAMED]]
    more = len(by_incident) - len(named)
    lines = [md(":rotating_light: *PAGE NOT DELIVERED* {}: PagerDuty has not taken {} page{} "
                "for {}. Nobody has been woken: page the on-call by hand.", mention, len(pages),
                "s" if len(pages) != 1 else "", oldest), *named]
    if more:
        lines.append(md("…and {} more incident{}", more, "s" if more != 1 else ""))
    return md_join(lines)


def given_up(target: str, action: str, budget: timedelta, error: str | None) -> str:
    """Timeline detail and thread reply for a delivery that ran out of its budget."""
    return (f"gave up on {target} {action} after {format_duration(budget)}: "
            f"{error or 'no answer'}")


def failure_notice(detail: str) -> Mrkdwn:
    """The thread reply for a delivery that failed for good (`detail` as on the timeline)."""
    return md(":warning: Not delivered: {}", detail)


# --- effectively-once Slack messages ---------------------------------------
#
# Every message the outbox posts carries Slack message metadata naming what it is.
# A post whose answer was never recorded (the process was killed, or its lease ran
# out) may be in Slack already: before posting it again, the outbox looks for it in
# the channel's history (or the thread's replies) since the first attempt, and
# adopts the message it finds instead of posting a second one.

# Slack's clock and ours differ a little; a message is looked for from this long
# before the first attempt.
SEARCH_MARGIN = timedelta(minutes=2)


@dataclass(frozen=True, slots=True)
class Mark:
    """The metadata that says which message of ours a Slack message is."""

    event_type: str
    payload: Mapping[str, int]
    key: tuple[str, ...]  # the payload fields that identify the message when looked for

    def metadata(self) -> dict[str, Any]:
        """As chat.postMessage takes it: {"event_type": …, "event_payload": {…}}."""
        return {"event_type": self.event_type, "event_payload": dict(self.payload)}

    def matches(self, metadata: Any) -> bool:
        """Whether a message's `metadata` (as conversations.history returns it with
        include_all_metadata) is this mark. Anything malformed is not."""
        if not isinstance(metadata, dict) or metadata.get("event_type") != self.event_type:
            return False
        found = metadata.get("event_payload")
        return isinstance(found, dict) and all(
            str(found.get(field)) == str(self.payload[field]) for field in self.key)


def incident_mark(incident_id: int, delivery_id: int) -> Mark:
    """An incident's top-level message; one per incident, whichever delivery posted it."""
    return Mark("oncall_incident", {"incident_id": incident_id, "delivery_id": delivery_id},
                key=("incident_id",))


def run_mark(incident_id: int, run_id: int, delivery_id: int) -> Mark:
    """The thread reply that shows a runbook run; one per run."""
    return Mark("oncall_run", {"incident_id": incident_id, "run_id": run_id,
                               "delivery_id": delivery_id}, key=("run_id",))


def reply_mark(incident_id: int, delivery_id: int) -> Mark:
    """A thread reply (a note, a new alert, a failure notice); one per delivery."""
    return Mark("oncall_reply", {"incident_id": incident_id, "delivery_id": delivery_id},
                key=("delivery_id",))


def notice_mark(delivery_id: int) -> Mark:
    """A channel message that belongs to no incident; one per delivery."""
    return Mark("oncall_notice", {"delivery_id": delivery_id}, key=("delivery_id",))


def search_from(first_attempt_at: datetime | None) -> datetime | None:
    """Where to look for a message before posting it: None (just post) on a first
    attempt, else from a little before the first attempt."""
    return None if first_attempt_at is None else first_attempt_at - SEARCH_MARGIN
