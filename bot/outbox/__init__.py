"""The outbox: delivers what incident changes owed to PagerDuty and Slack, at least once.

Each delivery row was written in the same transaction as the incident change that
owed it, so a crash loses nothing: on restart the rows are still pending. Order is
kept only where it matters (a trigger before its resolve, a Slack post before its
updates and replies), so a stuck row holds back nothing else. A send that may have
reached the service unrecorded is sent again: harmless for a page (its dedup_key),
while a Slack message or chart is first looked for and adopted when found.

- `dispatcher`: the loop that claims, leases, retries and records outcomes; drains on SIGTERM.
- `senders`: one delivery sent by its action (page, note, post, upload, answer, reply,
  run reply, the incident's message).
- `slack_once`: Slack messages and charts looked for before they are posted again.
- `page_alarm`: pages PagerDuty has not taken, announced loudly in Slack.
"""

from bot.outbox.dispatcher import Backoff, Dispatcher
from bot.outbox.page_alarm import PageAlarm

__all__ = ["Backoff", "Dispatcher", "PageAlarm"]
