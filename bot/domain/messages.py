"""Slack messages: data in, mrkdwn and Block Kit out, rendered by Jinja2 templates.

Every value from outside (alert labels and annotations, runbook output, PagerDuty
agent names, silence matchers, command arguments) is attacker-written, and Slack's
mrkdwn acts on `<…>`: `<!channel>` pages a channel, `<https://x|text>` disguises
a link. So text for Slack is `Mrkdwn`: text the bot wrote, in which every outside
value is escaped and the only `<…>` sequences are the ones made here (`mention`
from a Slack user ID, `link` from a URL that `safe_url` accepts). `md` builds it
from a format string and values, escaping each value; `cut` shortens it to one
of Slack's limits without breaking an escape or a link. Block Kit mrkdwn text
objects are made only from `Mrkdwn` (`mrkdwn_text`), so a value that skipped
escaping fails the render instead of reaching Slack; plain_text objects
(`plain_text`) are never escaped, since Slack shows them as written.
"""

from __future__ import annotations

import json
import re
import string
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any
from urllib.parse import urlsplit

from jinja2 import Environment, PackageLoader, StrictUndefined

# Slack's limits, in characters (docs.slack.dev Block Kit reference). Context
# elements take the field limit, more conservative than the 3,000 of a text object.
SECTION_TEXT = 3000
FIELD_TEXT = 2000
CONTEXT_TEXT = 2000
HEADER_TEXT = 150
# chat.postMessage's `text`: Slack cuts it at 40,000; 4,000 is what its docs advise.
MESSAGE_TEXT = 4000
LONG_MESSAGE_TEXT = 38_000  # a digest or report that is meant to be long
URL_LENGTH = 1500  # a longer URL is shown, not linked: a link must fit its block

LINK_ANNOTATIONS = (("runbook_url", "Runbook"), ("dashboard_url", "Dashboard"),
                    ("panel_url", "Panel"))
_USER_ID = re.compile(r"[UW][A-Z0-9]+")
_GROUP_ID = re.compile(r"S[A-Z0-9]+")


class Mrkdwn(str):
    """mrkdwn the bot wrote: outside values in it are escaped. Concatenating two gives
    a plain `str` (which would be escaped again): build with `md` and `md_join`."""

    __slots__ = ()


def mrkdwn(text: object) -> Mrkdwn:
    """Escape the three characters Slack's mrkdwn treats as control characters;
    `Mrkdwn` is already escaped and passes unchanged."""
    if isinstance(text, Mrkdwn):
        return text
    return Mrkdwn(str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))


class _Escaping(string.Formatter):
    def format_field(self, value: Any, format_spec: str) -> str:
        if format_spec[:1] == "." and format_spec[1:].isdigit() and isinstance(value, str):
            limit = int(format_spec[1:])
            if isinstance(value, Mrkdwn):
                return cut(value, limit)
            return mrkdwn(shorten(value, limit))
        if isinstance(value, Mrkdwn) and not format_spec:
            return value
        return mrkdwn(format(value, format_spec))


_FORMATTER = _Escaping()


def md(template: str, /, *args: object, **kwargs: object) -> Mrkdwn:
    """`template.format(...)` with every value escaped (unless already `Mrkdwn`).

    The template is the bot's own text and may hold mrkdwn (`*bold*`, backticks);
    never pass outside text as the template. A precision (`{:.200}`) shortens a
    string value to that many characters, with "…", before it is escaped.
    """
    return Mrkdwn(_FORMATTER.vformat(template, args, kwargs))


def md_join(parts: Iterable[object], sep: str = "\n") -> Mrkdwn:
    """`sep.join(parts)`, each part escaped unless already `Mrkdwn`; `sep` is the bot's own."""
    return Mrkdwn(sep.join(mrkdwn(part) for part in parts))


def cut(text: object, limit: int) -> Mrkdwn:
    """At most `limit` characters of mrkdwn, ending in "…" when shortened. The cut never
    falls inside an escape (`&amp;`) or a `<…>` mention or link: those go whole."""
    text = mrkdwn(text)
    if len(text) <= limit:
        return text
    head = text[: limit - 1]
    amp = head.rfind("&")
    if amp != -1 and ";" not in head[amp:]:
        head = head[:amp]
    bracket = head.rfind("<")
    if bracket != -1 and ">" not in head[bracket:]:
        head = head[:bracket]
    return Mrkdwn(head + "…")


def shorten(text: str, limit: int) -> str:
    """Plain text (not mrkdwn) of at most `limit` characters."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def mention(user_id: str) -> Mrkdwn:
    """A Slack user mention, made only from something shaped like a user ID."""
    if _USER_ID.fullmatch(user_id):
        return Mrkdwn(f"<@{user_id}>")
    return mrkdwn(user_id)


def group_mention(group_id: str) -> Mrkdwn:
    """A user group mention (`<!subteam^S…>`), made only from something shaped like its ID."""
    if _GROUP_ID.fullmatch(group_id):
        return Mrkdwn(f"<!subteam^{group_id}>")
    return mrkdwn(group_id)


def actor_mrkdwn(actor: str) -> Mrkdwn:
    """A timeline actor as Slack shows it: `slack:U123` becomes a mention, any other
    (a PagerDuty agent's name, a source) is shown as text."""
    kind, _, ident = actor.partition(":")
    if kind == "slack" and _USER_ID.fullmatch(ident):
        return mention(ident)
    return md("{:.200}", ident if kind == "pagerduty" and ident else actor)


def safe_url(url: object) -> str | None:
    """The URL as it may go inside `<…|…>`, or None: only http(s) with a host, no `<`,
    `>` or `|`, no whitespace or control characters, at most URL_LENGTH characters."""
    if not isinstance(url, str) or not url or len(url) > URL_LENGTH:
        return None
    if any(ch in "<>|" or unicodedata.category(ch)[0] in "CZ" for ch in url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return url.replace("&", "&amp;")


def link(url: object, label: str) -> Mrkdwn:
    """A link to `url` titled `label`; a URL `safe_url` refuses is shown, escaped, as text."""
    safe = safe_url(url)
    if safe is None:
        return md("{} (not a safe link): {:.300}", label, str(url))
    return Mrkdwn(f"<{safe}|{mrkdwn(label)}>")


def mrkdwn_text(text: Mrkdwn, limit: int) -> dict[str, str]:
    """A Block Kit mrkdwn text object; refuses text that did not come through `md`."""
    if not isinstance(text, Mrkdwn):
        raise TypeError(f"mrkdwn text must be Mrkdwn (built with md), not {type(text).__name__}")
    return {"type": "mrkdwn", "text": cut(text, limit) or "—"}


def plain_text(text: object, limit: int) -> dict[str, Any]:
    """A Block Kit plain_text object: shown as written, so nothing is escaped."""
    return {"type": "plain_text", "text": shorten(str(text), limit) or "—", "emoji": True}


def install(env: Environment) -> Environment:
    """Give a Jinja2 environment the helpers Slack templates build their text with."""
    env.globals.update(md=md, link=link, mrkdwn_text=mrkdwn_text,
                       plain_text=plain_text, SECTION_TEXT=SECTION_TEXT, FIELD_TEXT=FIELD_TEXT,
                       CONTEXT_TEXT=CONTEXT_TEXT, HEADER_TEXT=HEADER_TEXT)
    env.filters["mrkdwn"] = mrkdwn
    return env


@cache
def _environment() -> Environment:
    # The templates ship with the package: no need to stat them at every message.
    return install(Environment(loader=PackageLoader("bot", "templates"),
                               undefined=StrictUndefined, autoescape=False, auto_reload=False))


def render_blocks(template: str, **values: Any) -> list[dict[str, Any]]:
    """Block Kit blocks from a JSON template under bot/templates/ (helpers: `install`)."""
    return json.loads(_environment().get_template(template).render(**values))


@dataclass(frozen=True, slots=True)
class IncidentView:
    """What an incident message shows; built from the incident row by the caller."""

    id: int
    title: str
    state: str
    tier: str
    route: str
    model: str | None = None
    version: str | None = None
    environment: str | None = None
    severity: str | None = None
    team: str | None = None
    description: str | None = None
    alert_count: int = 1
    firing: int = 1
    triggered_at: datetime | None = None
    acknowledged_by: str | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    escalated_team: str | None = None
    can_roll_back: bool = False  # a rollback runbook serves the incident's model
    annotations: Mapping[str, str] = field(default_factory=dict)
    change_note: str | None = None  # "Changed 14 min before: churn champion v6 → v7"

    @property
    def status_line(self) -> Mrkdwn:
        """Slack users are shown as mentions."""
        parts = [md("{} of {} alert(s) firing", self.firing, self.alert_count)]
        if self.triggered_at:
            parts.append(md("opened {:%Y-%m-%d %H:%M:%S} UTC", self.triggered_at))
        if self.acknowledged_by:
            parts.append(md("acknowledged by {}", actor_mrkdwn(self.acknowledged_by)))
        if self.escalated_team:
            parts.append(md("escalated to {:.200}", self.escalated_team))
        if self.resolved_at:
            parts.append(md("resolved {:%H:%M:%S} UTC by {}", self.resolved_at,
                            actor_mrkdwn(self.resolved_by or "")))
        return md_join(parts, " · ")

    @property
    def links(self) -> list[Mrkdwn]:
        """An http(s) annotation becomes a link, or text when `safe_url` refuses it;
        any other (`javascript:`…) is left out."""
        return [link(self.annotations[key], label) for key, label in LINK_ANNOTATIONS
                if str(self.annotations.get(key, "")).lower().startswith(("http://", "https://"))]


def incident_message(view: IncidentView) -> tuple[Mrkdwn, list[dict[str, Any]]]:
    """Fallback text (notifications, screen readers) and blocks for an incident."""
    text = md("[{}] {} #{}: {:.1000}", view.state.upper(), view.tier, view.id, view.title)
    return cut(text, MESSAGE_TEXT), render_blocks("slack/incident.json.j2", i=view)


@dataclass(frozen=True, slots=True)
class RunStepView:
    name: str
    status: str
    duration_s: float
    output: str


@dataclass(frozen=True, slots=True)
class RunView:
    """What a runbook run's thread reply shows."""

    title: str  # "Diagnostics", "Rollback", "Runbook run"
    runbook: str
    status: str
    total: int
    steps: list[RunStepView]


def run_message(view: RunView) -> tuple[Mrkdwn, list[dict[str, Any]]]:
    text = md("{} {:.200}: {}", view.title, view.runbook, view.status)
    return cut(text, MESSAGE_TEXT), render_blocks("slack/run.json.j2", r=view)


# Thread replies: the bot's own words; every {field} is escaped when filled (`thread_reply`),
# and a precision caps an outside value's length.
REPLIES = {
    "joined": "Another alert joined: {alert:.1500}",
    "refired": "Fired again: {alert:.1500}",
    "reopened": "Reopened: {alert:.1500}",
    "promoted": "Promoted to L1 and paged: {reason:.500}.",
    "acknowledged": "Acknowledged by {actor} via {via}.",
    "resolved": "Resolved by {actor} via {via}.",
    "resolved_with_note": "Resolved by {actor} via {via}. Note: {note:.3000}",
    "note": "Note from {actor}: {text:.3500}",
    "escalated": "Escalated to model owner {team:.200} by {actor}: {how}.",
    "not_acknowledged": ":alarm_clock: Not acknowledged after {waited}: {how}.",
    "still_open": "{who}: incident #{id} is still open, {since} after you acknowledged it.",
    "silenced": "Silenced for 1h by {actor}: {matchers:.1000}",
}


def thread_reply(kind: str, **values: object) -> Mrkdwn:
    """The thread reply `kind` of REPLIES, filled with `values` and cut to Slack's limit."""
    return cut(md(REPLIES[kind], **values), MESSAGE_TEXT)
