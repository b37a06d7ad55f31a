"""The web console's use cases: give a sign-in link, spend it, and read the record for
the pages (incidents, one incident, models, the scorecard and its chart).

The edges (bot/web/console.py, the `/oncall console` listener, the CLI) call these and
never touch a session. Everything here reads, but for the link table.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from anyio import to_thread
from slack_sdk.web.async_client import AsyncWebClient

from bot import charts, incident_record, reports
from bot.clock import Clock
from bot.db import Database
from bot.domain.charts import scorecard_series
from bot.domain.console import (
    LINK_TTL,
    ConsoleError,
    ListFilter,
    check_user_id,
    parse_period,
    session_cookie,
    token_hash,
)
from bot.domain.messages import Mrkdwn, link, md
from bot.domain.scorecard import Scorecard
from bot.permissions import console_refusal
from bot.store import console as links

SIGN_IN_PATH = "/console/sign-in"


@dataclass(frozen=True, slots=True)
class Console:
    """What the console's use cases need; built once in create_app (or by the CLI).
    `secret` None: the console is off."""

    db: Database
    secret: str | None
    public_url: str | None
    clock: Clock
    slack: AsyncWebClient | None = None

    @property
    def enabled(self) -> bool:
        return self.secret is not None


# --- sign-in ------------------------------------------------------------------------


def create_link(console: Console, user_id: str, *, created_by: str, base_url: str) -> str:
    """A new one-time sign-in link for `user_id`, valid LINK_TTL. Only the token's hash is
    stored; the token itself exists only in the URL returned."""
    check_user_id(user_id)
    token = secrets.token_urlsafe(32)
    now = console.clock()
    with console.db.write() as session:
        links.save_link(token_hash(token), user_id, session=session, created_by=created_by,
                        now=now, expires_at=now + LINK_TTL)
    return f"{base_url.rstrip('/')}{SIGN_IN_PATH}?{urlencode({'token': token})}"


async def link_for_slack(console: Console, user_id: str) -> Mrkdwn | str:
    """`/oncall console`: the ephemeral answer, a fresh link or why there is none. Whether
    the user may sign in is asked of Slack now, not taken from a cache."""
    if not console.enabled:
        return "The web console is off: CONSOLE_SECRET is not set."
    if console.public_url is None:
        return "The web console's address is not configured: PUBLIC_URL is not set."
    refusal = await console_refusal(console.slack, user_id)
    if refusal:
        return f"No console link: {refusal}."
    url = await to_thread.run_sync(lambda: create_link(
        console, user_id, created_by=f"slack:{user_id}", base_url=console.public_url or ""))
    return md("{} (valid for {} minutes, once; it opens a page with a Sign in button).",
              link(url, "Sign in to the on-call console"), int(LINK_TTL.total_seconds() // 60))


async def link_for_operator(console: Console, user_id: str, *, operator: str,
                            base_url: str) -> str:
    """`oncall-bot console-link --user U…`: the same kind of link, for an operator to hand
    on. Checked with Slack as `/oncall console` is when Slack is configured; raises
    ConsoleError saying why there is no link."""
    if not console.enabled:
        raise ConsoleError("the web console is off: CONSOLE_SECRET is not set")
    check_user_id(user_id)
    if console.slack is not None:
        refusal = await console_refusal(console.slack, user_id)
        if refusal:
            raise ConsoleError(f"no link for {user_id}: {refusal}")
    return await to_thread.run_sync(lambda: create_link(
        console, user_id, created_by=f"cli:{operator}", base_url=base_url))


def link_state(console: Console, token: str) -> str:
    """`fresh`, `used`, `expired` or `unknown`: what the sign-in page says of a link,
    without spending it."""
    with console.db.read() as session:
        found = links.find_link(token_hash(token), session=session)
    if found is None:
        return "unknown"
    if found.used_at is not None:
        return "used"
    return "expired" if found.expires_at <= console.clock() else "fresh"


def sign_in(console: Console, token: str) -> str:
    """Spend the link once and return the session cookie's value; raises ConsoleError
    when the link is unknown, used or expired (nothing changes then)."""
    if not console.enabled:
        raise ConsoleError("the console is off")
    now = console.clock()
    with console.db.write() as session:
        user_id = links.spend_link(token_hash(token), session=session, now=now)
    if user_id is None:
        raise ConsoleError("This sign-in link is used, expired or unknown. Ask for a new one "
                           "with /oncall console in Slack.")
    return session_cookie(user_id, secret=console.secret or "", now=now)


# --- the pages ------------------------------------------------------------------------


def incidents(console: Console, wanted: ListFilter) -> dict[str, Any]:
    """The incident list as `oncall-bot incidents list` reads it, newest first."""
    now = console.clock()
    with console.db.read() as session:
        rows = incident_record.list_incidents(session=session, states=wanted.states,
                                              model=wanted.model, since=wanted.since_time(now))
    return {"rows": rows, "limited": len(rows) == incident_record.LIST_LIMIT,
            "limit": incident_record.LIST_LIMIT}


def incident(console: Console, incident_id: int) -> dict[str, Any] | None:
    """One incident as `oncall-bot incidents show` reads it: timeline, deliveries, runs."""
    with console.db.read() as session:
        return incident_record.incident_detail(incident_id, session=session)


def scorecard(console: Console, period: str | None) -> Scorecard:
    _, length = parse_period(period)
    now = console.clock()
    with console.db.read() as session:
        return reports.scorecard_for(session=session, since=now - length, until=now, now=now)


def charts_available() -> bool:
    """Whether the scorecard's chart can be drawn (matplotlib, the `charts` extra)."""
    return charts.available()


def chart(console: Console, period: str | None) -> bytes:
    """The scorecard's trend chart as PNG; raises ChartsUnavailable without matplotlib."""
    card = scorecard(console, period)
    return charts.render_png(scorecard_series(card), title=reports.chart_title(card))


def models(console: Console, period: str | None) -> dict[str, Any]:
    """Each model with incidents in the period, with its availability over it."""
    _, length = parse_period(period)
    now = console.clock()
    card = scorecard(console, period)
    with console.db.read() as session:
        rows = incident_record.model_summaries(session=session, since=now - length)
    shares = {a.model: a for a in card.availability}
    return {"rows": [{**row, "availability": shares.get(row["model"])} for row in rows]}


def model(console: Console, name: str, period: str | None) -> dict[str, Any]:
    """One model over the period: its incidents, its changes and its availability."""
    _, length = parse_period(period)
    now = console.clock()
    card = scorecard(console, period)
    with console.db.read() as session:
        rows = incident_record.list_incidents(session=session, model=name, since=now - length)
        changes = incident_record.model_changes(name, session=session, since=now - length)
    availability = next((a for a in card.availability if a.model == name), None)
    return {"incidents": rows, "changes": changes, "availability": availability}


__all__ = ["Console", "ConsoleError", "chart", "charts_available", "create_link", "incident", "incidents",
           "link_for_operator", "link_for_slack", "link_state", "model", "models", "scorecard", "sign_in"]
