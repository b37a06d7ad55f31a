"""Running a diagnostics runbook on demand: checked now, run by the runbook worker."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, col, select

from bot import store
from bot.domain.answers import runbook_list_text
from bot.domain.messages import Mrkdwn, md
from bot.domain.permissions import Guarded
from bot.models import Incident
from bot.runbooks import RunbookError, resolve_params
from bot.runs import first_alert
from bot.usecases.actions import ActionRefused, Actor
from bot.usecases.base import Base


class RunbookCases(Base):
    def list_runbooks(self) -> Mrkdwn | str:
        return runbook_list_text(self.runbooks.values()) or "No runbooks are loaded."

    async def run_runbook(self, name: str, actor: Actor, *, params: dict[str, str],
                          answer_url: str | None, answer_channel: str | None) -> int:
        """Ask the worker for a run of `name` (for the latest open incident of
        `params["model"]`, if any); returns the run's id. Running one needs the
        permission resolving an L1 needs; its params are checked (names, types,
        patterns) before anything is written. Raises ActionRefused. The result is
        answered through `answer_url` (or posted to `answer_channel`)."""
        await self.guard(actor, Guarded.RUN_RUNBOOK)
        runbook = self.runbooks.get(name)
        if runbook is None:
            raise ActionRefused(md("There is no runbook `{}`; `/oncall runbook list` shows them.",
                                   name))
        if runbook.changes_production:
            raise ActionRefused(md("`{}` changes production: use `/oncall rollback MODEL` to "
                                   "preview it.", runbook.name))
        model = params.get("model")

        def ask(session: Session, now: datetime) -> int:
            incident = (session.exec(select(Incident).where(
                Incident.model == model, col(Incident.state).in_(store.OPEN_STATES))
                .order_by(col(Incident.id).desc())).first() if model else None)
            alert = first_alert(incident, session=session)
            labels = dict(alert.labels) if alert else dict(incident.labels if incident else {})
            try:  # what the worker will resolve, refused now rather than failed later
                resolve_params(runbook, labels, dict(alert.annotations) if alert else {},
                               params)
            except RunbookError as exc:
                raise ActionRefused(md("Not run: {}", exc)) from None
            record = store.request_run(incident, runbook.name, "manual", session=session,
                                       now=now, requested_by=actor.id, params=dict(params))
            record.answer_url = answer_url
            record.answer_channel = answer_channel
            return record.id  # type: ignore[return-value]

        return await self.pipeline.transact(ask)

