"""`/oncall report`'s chart: shared in the channel the command was typed in.

The answer itself goes only to whoever asked (response_url, ephemeral); a file can only
be shared into a channel, where everyone there sees it, and the comment says who asked.
The upload is owed through the outbox, so it is made once, whatever becomes of the request.
"""

from __future__ import annotations

from datetime import datetime

from anyio import to_thread
from sqlmodel import Session

from bot import charts
from bot.domain.messages import md, mention
from bot.models import Delivery
from bot.pipeline import Pipeline
from bot.reports import chart_upload, report_window, scorecard_for


async def share_report_chart(pipeline: Pipeline, *, period: str, channel_id: str,
                             user_id: str) -> bool:
    """Owe the upload of the scorecard's chart for the last `period`; False when none is
    owed (Slack deliveries off, no matplotlib here: said in the log, or a bad period,
    which the answer already names)."""
    if not pipeline.policy.slack or not channel_id:
        return False
    await to_thread.run_sync(charts.available)  # matplotlib loads outside the transaction

    def owe(session: Session, now: datetime) -> bool:
        try:
            since, until = report_window(period, now)
        except ValueError:
            return False
        scorecard = scorecard_for(session=session, since=since, until=until, now=now,
                                  routing=pipeline.routing)
        chart = chart_upload(scorecard, comment=md(
            "Scorecard chart, {:%b %d %H:%M} – {:%b %d %H:%M} UTC, for {}", since, until,
            mention(user_id)))
        if chart is None:
            return False
        session.add(Delivery(incident_id=None, target="slack", action="upload",
                             payload={"channel": channel_id, "chart": chart},
                             created_at=now, next_attempt_at=now))
        return True

    return await pipeline.transact(owe)
