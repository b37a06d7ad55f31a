"""What people ask: the incidents, one incident's timeline, silences, who is on call, the
scorecard, a postmortem draft. Read-only; answers come rendered for Slack."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bot import store
from bot.domain.answers import (
    incident_detail_text,
    incident_list_text,
    on_call_text,
    silence_list_text,
)
from bot.domain.changes import changes_text
from bot.domain.messages import Mrkdwn
from bot.models import Incident
from bot.ports import OnCallUnavailable
from bot.reports import postmortem_for, slack_report
from bot.silences import list_silences
from bot.usecases.actions import open_incidents
from bot.usecases.base import Base
from bot.usecases.console import link_for_slack
from bot.usecases.report_chart import share_report_chart


class QueryCases(Base):
    def list_incidents(self, filters: dict[str, str]) -> Mrkdwn | str:
        with self.db.read() as session:
            incidents = open_incidents(session=session, filters=filters)
            if not incidents:
                return "No incidents match." if filters else "No open incidents."
            return incident_list_text(incidents, self.now())

    def show_incident(self, incident_id: int) -> Mrkdwn | str:
        with self.db.read() as session:
            incident = session.get(Incident, incident_id)
            if incident is None:
                return f"There is no incident #{incident_id}."
            return incident_detail_text(incident, store.timeline(incident_id, session=session),
                                        self.now())

    def list_silences(self) -> Mrkdwn | str:
        now = self.now()
        with self.db.read() as session:
            silences = list_silences(session=session, now=now)
        return silence_list_text(silences, now) if silences else "No silences in force."

    async def who_is_on_call(self) -> Mrkdwn | str:
        if self.oncall is None:
            return "PagerDuty's REST API is not configured (PAGERDUTY_API_TOKEN is not set)."
        try:
            shifts = await self.oncall.now()
        except OnCallUnavailable as exc:
            return f"Could not ask PagerDuty who is on call: {exc}."
        if not shifts:
            return "Nobody is on call now according to PagerDuty."
        return on_call_text(shifts)

    async def report(self, period: str) -> tuple[str, list[dict[str, Any]]]:
        """The scorecard of the last `period`; ValueError (fit for the user) for a bad one."""
        return await self.read(lambda session, now: slack_report(period, session=session,
                                                                 now=now, routing=self.routing))

    async def share_report_chart(self, period: str, *, channel_id: str, user_id: str) -> bool:
        """Owe the upload of the period's chart into the channel `/oncall report` was typed in."""
        return await share_report_chart(self.pipeline, period=period, channel_id=channel_id,
                                        user_id=user_id)

    async def recent_changes(self, model: str | None, period: timedelta) -> Mrkdwn | str:
        """`/oncall changes [model] [24h]`: the model changes of the period, newest first."""
        found = await self.changes.recent(model=model, period=period)
        return changes_text(found, now=self.now(), model=model, period=period)

    async def console_link(self, user_id: str) -> Mrkdwn | str:
        """`/oncall console`: a fresh one-time sign-in link, or why there is none."""
        return await link_for_slack(self.console, user_id)

    async def postmortem(self, incident_id: int) -> str:
        """The draft; LookupError when there is no such incident."""
        return await self.read(lambda session, now: postmortem_for(incident_id,
                                                                   session=session, now=now))
