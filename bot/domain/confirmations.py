"""When a rollback confirmation still holds, whether a due run that changes production may
start, and where a run's result may be answered.

Pure decisions over times and ids, so expiry is table-tested with the time passed in.
"""

from __future__ import annotations

from datetime import datetime, timedelta

CONFIRM_WITHIN = timedelta(minutes=10)  # a preview's Confirm button works this long
# Slack accepts posts to a slash command's response_url for 30 minutes; a result due
# later (or refused there) goes as a new ephemeral message instead. The margin covers
# the delivery itself and clock differences.
RESPONSE_URL_FOR = timedelta(minutes=30)
_RESPONSE_URL_MARGIN = timedelta(minutes=1)
ALIAS_MOVED = "the alias moved since the preview"


def confirmation_refusal(*, expires_at: datetime, used_at: datetime | None,
                         previewed_by: str, confirmed_by: str, now: datetime) -> str | None:
    """Why a stored confirmation cannot be used now, or None when it can."""
    if used_at is not None:
        return "This rollback was already confirmed or cancelled; nothing changed."
    if previewed_by != confirmed_by:
        return "This confirmation belongs to someone else's preview; nothing changed."
    if now >= expires_at:
        minutes = int(CONFIRM_WITHIN.total_seconds() // 60)
        return (f"This preview expired (confirmations hold for {minutes} minutes); nothing "
                "changed. Ask for a new preview.")
    return None


def not_to_start(*, changes_production: bool, started: bool, requested_at: datetime,
                 now: datetime) -> str | None:
    """Why a run that is due (never leased, or its lease expired) must not start, or None.

    A run that changes production was started once already if its lease expired: its
    process died mid-run and production may have moved on since (a later roll-forward),
    so it is never resumed. One confirmed but never started is held to the
    confirmation's own ten minutes. Runs that change nothing simply run (again)."""
    if not changes_production:
        return None
    if started:
        return ("the bot stopped while it ran (its lease expired), and production may have "
                "changed since")
    if now - requested_at >= CONFIRM_WITHIN:
        minutes = int(CONFIRM_WITHIN.total_seconds() // 60)
        return f"it was confirmed more than {minutes} minutes ago and never started"
    return None


def answer_through_response_url(requested_at: datetime, now: datetime) -> bool:
    """True while the request's response_url still takes the answer."""
    return now - requested_at < RESPONSE_URL_FOR - _RESPONSE_URL_MARGIN
