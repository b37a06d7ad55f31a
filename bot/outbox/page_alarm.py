"""The loud-page alarm: a page PagerDuty has not taken for a while is announced in
Slack (`domain.delivery`), since a page retried for ever must not fail quietly.

Read from the outbox rows, so it works while PagerDuty is down and across restarts;
each announcement is recorded on the rows, so replicas do not announce one twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from anyio import to_thread

from bot import store
from bot.clock import Clock
from bot.db import Database
from bot.domain.delivery import PAGE_ALERT_REPEAT, loud_channels, loud_message
from bot.domain.messages import Mrkdwn

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PageAlarm:
    """When and how an undelivered page is announced in Slack."""

    after: timedelta  # undelivered this long: announced
    mention: Mrkdwn  # <!here> or <!subteam^S…>, from parse_mention
    default_channel: str  # for a page whose incident names no channel

    @property
    def check_seconds(self) -> float:
        """How often the outbox looks for overdue pages: the alarm comes at most this
        late, and the look is one read of the pending pages' index."""
        return min(self.after.total_seconds() / 10, 15.0)


async def watch_pages(db: Database, alarm: PageAlarm, *, clock: Clock,
                      wake: Callable[[], None]) -> None:
    """Announce overdue pages until cancelled; `wake` the dispatcher when an
    announcement was written (it is a delivery of its own)."""
    while True:
        try:
            if await to_thread.run_sync(announce_overdue_pages, db, alarm, clock):
                wake()
        except Exception:
            log.exception("could not check for undelivered pages; retrying")
        await asyncio.sleep(alarm.check_seconds)


def announce_overdue_pages(db: Database, alarm: PageAlarm, clock: Clock) -> bool:
    """True when an announcement was owed and written."""
    now = clock()
    with db.read() as session:
        pages = store.pending_pages(session=session, since=now - alarm.after,
                                    default_channel=alarm.default_channel)
    owed = loud_channels(pages, now, after=alarm.after)
    if not owed:
        return False
    announced = False
    with db.write() as session:
        for channel, listed in owed.items():
            text = loud_message(listed, now, mention=alarm.mention)
            if store.announce_pages(channel, listed, text, session=session, now=now,
                                    repeat=PAGE_ALERT_REPEAT):
                log.error("%d page(s) not taken by PagerDuty; announced in %s",
                          len(listed), channel)
                announced = True
    return announced
