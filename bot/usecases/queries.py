"""What people ask: the incidents, one incident's timeline, silences, who is on call, the
scorecard, a postmortem draft. Read-only; answers come rendered for Slack."""

from __future__ import annotations

from typing import Any

from bot import store
from bot.adapters.oncall import OnCallUnavailable
from bot.domain.answers import (
    incident_detail_text,
    incident_list_text,
    on_call_text,
    silence_list_text,
)
from bot.domain.messages import Mrkdwn
from bot.models import Incident
from bot.reports import postmortem_for, slack_report
from bot.silences import list_silences
from bot.usecases.actions import open_incidents
from bot.usecases.base import Base


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
                                                                 now=now))

    async def postmortem(self, incident_id: int) -> str:
        """The draft; LookupError when there is no such incident."""
        return await self.read(lambda session, now: postmortem_for(incident_id,
                                                                   session=session, now=now))
