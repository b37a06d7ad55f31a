"""The web console's sign-in, decided: one-time links, signed session cookies, who may
sign in, and the list filters. Pure: times and secrets are passed in.

A link's token is 256 random bits; the record keeps only its SHA-256, so reading the
table signs nobody in. A session is a cookie `v1.<user>.<expiry>.<mac>`, the MAC an
HMAC-SHA256 under a key derived from CONSOLE_SECRET, compared in constant time: any
replica with the same secret reads it, and no server-side session store is needed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.domain.durations import parse_duration
from bot.domain.incident import IncidentState

LINK_TTL = timedelta(minutes=10)
SESSION_TTL = timedelta(hours=12)
SESSION_COOKIE = "oncall_console"
# Slack user IDs: U… (or W… on Enterprise Grid), upper-case letters and digits.
USER_ID = re.compile(r"[UW][A-Z0-9]{2,30}")


class ConsoleError(ValueError):
    """A request the console refuses; the message says why, fit to show."""


def token_hash(token: str) -> str:
    """What the record keeps of a link's token. A plain SHA-256 suffices: the token is
    256 random bits, so there is nothing to guess offline."""
    return hashlib.sha256(token.encode()).hexdigest()


def check_user_id(user_id: str) -> str:
    if not USER_ID.fullmatch(user_id):
        raise ConsoleError(f"{user_id[:40]!r} is not a Slack user ID (like U0123ABCD)")
    return user_id


def sign_in_refusal(user: Mapping[str, Any] | None) -> str | None:
    """Why a Slack user (as `users.info` returns them) may not have a console link, or
    None. Anyone who may use `/oncall` may: a full member of the workspace. Not a
    deactivated account, a bot or app, nor a guest: guests see only the channels they
    are invited to, and the console shows what every alert channel shows."""
    if not user:
        return "Slack does not know this user"
    if user.get("deleted"):
        return "the Slack account is deactivated"
    if user.get("is_bot") or user.get("is_app_user"):
        return "bots and apps do not sign in"
    if user.get("is_restricted") or user.get("is_ultra_restricted"):
        return "guests of the workspace do not sign in"
    return None


def _key(secret: str) -> bytes:
    # A key of its own for sessions, so the secret signs nothing else by accident.
    return hmac.new(secret.encode(), b"oncall-bot console session v1", hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def session_cookie(user_id: str, *, secret: str, now: datetime) -> str:
    """A session for `user_id` until now + SESSION_TTL."""
    body = f"v1.{_b64(user_id.encode())}.{int((now + SESSION_TTL).timestamp())}"
    mac = hmac.new(_key(secret), body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}"


def session_user(cookie: str | None, *, secret: str, now: datetime) -> str | None:
    """The signed-in user, or None for a missing, forged, altered or expired cookie."""
    if not cookie or len(cookie) > 400:
        return None
    body, _, mac = cookie.rpartition(".")
    expected = _b64(hmac.new(_key(secret), body.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(mac.encode(), expected.encode()):
        return None
    version, user, expires = (body.split(".") + ["", "", ""])[:3]
    if version != "v1" or not expires.isdigit():
        return None
    if datetime.fromtimestamp(int(expires), UTC) <= now:
        return None
    try:
        return base64.urlsafe_b64decode(user + "=" * (-len(user) % 4)).decode()
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class ListFilter:
    """The incident list's filters, as `oncall-bot incidents list` takes them."""

    states: tuple[str, ...] = ()
    model: str | None = None
    since: str | None = None  # a duration like 7d, as typed

    def since_time(self, now: datetime) -> datetime | None:
        return now - parse_duration(self.since) if self.since else None

    @property
    def active(self) -> bool:
        return bool(self.states or self.model or self.since)


def parse_filter(states: list[str], model: str | None, since: str | None) -> ListFilter:
    """The filter from the list form's fields; raises ConsoleError naming a bad one."""
    known = {s.value for s in IncidentState}
    for state in states:
        if state not in known:
            raise ConsoleError(f"state must be one of {', '.join(sorted(known))}")
    model = (model or "").strip() or None
    since = (since or "").strip() or None
    if since is not None:
        try:
            if not timedelta(0) < parse_duration(since) <= timedelta(days=3660):
                raise ValueError
        except (ValueError, OverflowError):
            raise ConsoleError(f"since: {since[:40]!r} is not a period like 24h, 7d or 30d") from None
    return ListFilter(states=tuple(dict.fromkeys(states)), model=model, since=since)


def parse_period(period: str | None, default: str = "7d") -> tuple[str, timedelta]:
    """A report period like 7d; raises ConsoleError when it is not one."""
    period = (period or "").strip() or default
    try:
        length = parse_duration(period)
    except (ValueError, OverflowError):
        length = timedelta(0)
    if length <= timedelta(0) or length > timedelta(days=400):
        raise ConsoleError(f"period: {period[:40]!r} is not a period like 7d or 30d (at most 400d)")
    return period, length
