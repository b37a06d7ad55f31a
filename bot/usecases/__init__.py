"""Use cases: what the bot does, named and in one place.

`UseCases` is the one orchestrator, built once in create_app and handed to the edges
(web/, slack_app/, timers). Edges translate and call these; they never touch a
session or SQL. Each use case loads through the store, lets the domain decide
(bot/domain/: permissions, transitions, messages), persists in one transaction, and
wakes delivery. The path of an alert: web/alerts.py parses it (bot/intake), `ingest`
hands it to the Pipeline, which plans with domain/intake.py, persists with
store/intake.py, and the outbox (bot/outbox/) sends what the plan owes.

| group | module | use cases |
| --- | --- | --- |
| alerts | bot/pipeline.py | ingest |
| incidents | incidents.py | acknowledge, resolve, note, escalate, silence_incident, declare, |
| | | silence, unsilence, apply_pagerduty_event |
| rollback | rollback.py | preview_rollback, preview_incident_rollback, confirm_rollback, cancel_rollback |
| runbooks | runbooks.py | list_runbooks, run_runbook |
| timers | timers.py | fire_timer, timers_wanted, timers_scheduled, handoff_digest |
| queries | queries.py | list_incidents, show_incident, list_silences, who_is_on_call, report, |
| | | share_report_chart, recent_changes, console_link, postmortem |
| lifecycle | lifecycle.py | record_drift, take_event (Events API v2), registry_event (MLflow) |
| timers | timers.py | open_pulse (the satisfaction pulse's cron) |

In-transaction steps shared by several use cases (lock an incident, acknowledge it,
fire a timer) are in actions.py.
"""

from __future__ import annotations

from collections.abc import Sequence

from bot.db import DatabaseUnavailable, unavailable_when_transient
from bot.domain.alert import Alert
from bot.store import IngestResult
from bot.usecases.actions import ActionRefused, Actor, Done
from bot.usecases.incidents import IncidentCases, slack_actor
from bot.usecases.lifecycle import LifecycleCases
from bot.usecases.queries import QueryCases
from bot.usecases.rollback import RollbackCases
from bot.usecases.runbooks import RunbookCases
from bot.usecases.timers import TimerCases

__all__ = ["ActionRefused", "Actor", "DatabaseUnavailable", "Done", "UseCases", "slack_actor"]


class UseCases(IncidentCases, RollbackCases, RunbookCases, TimerCases, QueryCases,
               LifecycleCases):
    async def ingest(self, alerts: Sequence[Alert]) -> IngestResult:
        """Commit the alerts and what they change (group commit: see Pipeline.ingest);
        returns once that is durable. Database errors propagate (DatabaseUnavailable
        for the transient ones: answer 503)."""
        with unavailable_when_transient():
            return await self.pipeline.ingest(alerts)

    def readiness_problem(self) -> str | None:
        """None when the bot can serve (the database answers, its schema is one this
        code runs on); otherwise what is wrong."""
        return self.db.readiness_problem()

    def load(self) -> float:
        """How busy intake has been over the last second or so (0 to 1)."""
        return self.pipeline.load()
