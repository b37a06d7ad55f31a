"""`/oncall`: parse (pure), ack at once, do the work, answer ephemerally via response_url."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from anyio import to_thread
from slack_bolt.async_app import AsyncApp
from sqlmodel import Session, col, select

from bot import store
from bot.domain.changes import changes_text
from bot.domain.commands import HELP, Command, CommandError, parse_command
from bot.domain.messages import (
    LONG_MESSAGE_TEXT,
    Mrkdwn,
    cut,
    incident_detail_text,
    incident_list_text,
    mention,
    mrkdwn,
    on_call_text,
    silence_created_text,
    silence_list_text,
)
from bot.domain.permissions import Guarded
from bot.domain.routing import Tier
from bot.incident_actions import (
    ActionRefused,
    Actor,
    acknowledge,
    add_note,
    declare,
    locked,
    open_incidents,
    resolve,
)
from bot.models import Incident
from bot.ports import OnCallUnavailable
from bot.reports import slack_report
from bot.runbooks import RunbookError, resolve_params
from bot.runs import first_alert
from bot.silences import add_silence, expire_silence, list_silences
from bot.slack_app import Services
from bot.slack_app.rollback import latest_open_incident, preview
from bot.usecases.console import link_for_slack
from bot.usecases.report_chart import share_report_chart


def slack_actor(user_id: str) -> Actor:
    return Actor(id=f"slack:{user_id}", mention=mention(user_id), via="slack")


def answer_text(text: str) -> Mrkdwn:
    """What an answer to a person shows: Mrkdwn as built, any other text (an error
    that may echo the command's arguments) escaped; cut to Slack's limit."""
    return cut(text, LONG_MESSAGE_TEXT)


def register(app: AsyncApp, services: Services) -> None:
    @app.command("/oncall")
    async def oncall(ack: Any, command: dict[str, Any], respond: Any) -> None:
        try:
            parsed = parse_command(command.get("text", ""))
        except CommandError as exc:
            await ack(response_type="ephemeral", text=answer_text(str(exc)))
            return
        await ack()
        if parsed.name == "rollback":
            await rollback_command(parsed, command["user_id"], services, respond)
            return
        if parsed.name == "runbook":
            await runbook_command(parsed, command, services, respond)
            return
        if parsed.name == "console":
            text = await link_for_slack(services.console, command["user_id"])
            await respond(text=answer_text(text), response_type="ephemeral",
                          replace_original=False)
            return
        if parsed.name == "report":
            text, blocks = await report(parsed.text, services)
            await respond(text=text, blocks=blocks, response_type="ephemeral",
                          replace_original=False)
            await share_report_chart(services.pipeline, period=parsed.text,
                                     channel_id=command.get("channel_id", ""),
                                     user_id=command["user_id"])
            return
        try:
            text = await run(parsed, command["user_id"], services)
        except ActionRefused as exc:
            text = exc.text
        await respond(text=answer_text(text), response_type="ephemeral", replace_original=False)

    @app.event("app_mention")
    async def mentioned(event: dict[str, Any], say: Any) -> None:
        """Someone @-mentioned the bot: point them at the command, in the thread."""
        await say(text=HELP, thread_ts=event.get("thread_ts") or event.get("ts"))


async def run(command: Command, user_id: str, services: Services) -> str:
    actor = slack_actor(user_id)
    name = command.name
    if name == "help":
        return HELP
    if name == "who":
        return await who(services)
    if name == "changes":
        return await changes(command, services)
    if name in ("list", "show", "silences"):
        with services.db.read() as session:
            now = services.pipeline.clock()
            if name == "list":
                return list_text(session, command.filters, now)
            if name == "show":
                return show_text(session, command.incident_id, now)  # type: ignore[arg-type]
            return silences_text(session, now)
    if name in ("silence", "unsilence"):
        refusal = await services.gatekeeper.refusal(user_id, Guarded.SILENCE)
        if refusal:
            return refusal
        return await services.pipeline.transact(
            lambda session, now: silence(command, session, now, actor))
    if name == "resolve":
        await _check_resolve(command.incident_id, user_id, services)  # type: ignore[arg-type]
    if name == "declare":
        tier = Tier(command.filters.get("tier", "L1"))
        return (await services.pipeline.transact(lambda session, now: declare(
            command.text, model=command.filters.get("model"), tier=tier,
            severity=command.filters.get("severity"), routing=services.routing,
            session=session, policy=services.policy, now=now, actor=actor))).message

    def act(session: Session, now: datetime) -> str:
        incident = locked(command.incident_id, session=session)  # type: ignore[arg-type]
        common = {"session": session, "policy": services.policy, "now": now, "actor": actor}
        if name == "ack":
            return acknowledge(incident, **common).message
        if name == "resolve":
            return resolve(incident, note=command.text, **common).message
        return add_note(incident, command.text, **common).message

    return await services.pipeline.transact(act)


async def rollback_command(command: Command, user_id: str, services: Services,
                           respond: Any) -> None:
    """Preview a rollback of MODEL (to VERSION); it runs only after Confirm."""
    try:
        refusal = await services.gatekeeper.refusal(user_id, Guarded.ROLLBACK)
        if refusal:
            raise ActionRefused(refusal)
        with services.db.read() as session:
            incident = latest_open_incident(command.text, session=session)
        labels = dict(incident.labels) if incident else {"model": command.text}
        text, blocks = await preview(services, model=command.text, labels=labels,
                                     incident_id=incident.id if incident else None,
                                     target=command.filters.get("version"), user_id=user_id)
        await respond(text=text, blocks=blocks, response_type="ephemeral",
                      replace_original=False)
    except ActionRefused as exc:
        await respond(text=answer_text(exc.text), response_type="ephemeral",
                      replace_original=False)


async def runbook_command(command: Command, slash: dict[str, Any], services: Services,
                          respond: Any) -> None:
    """`runbook list`, or ask the runbook worker for a diagnostics run now. Running one
    needs the permission resolving an L1 needs; its params are checked (names, types,
    patterns) before anything is written. The answer says it started; the result
    follows through the same response_url (see RunWorker and the outbox's `answer`)."""
    if command.text == "list":
        lines = [f"• `{mrkdwn(r.name)}`{' (changes production)' if r.changes_production else ''}"
                 f": {mrkdwn(r.description.strip())}" for r in services.runbooks.values()]
        await respond(text="\n".join(lines) or "No runbooks are loaded.",
                      response_type="ephemeral", replace_original=False)
        return
    user_id = slash["user_id"]
    refusal = await services.gatekeeper.refusal(user_id, Guarded.RUN_RUNBOOK)
    runbook = services.runbooks.get(command.text)
    if refusal:
        text = refusal
    elif runbook is None:
        text = (f"There is no runbook `{mrkdwn(command.text)}`; `/oncall runbook list` "
                "shows them.")
    elif runbook.changes_production:
        text = f"`{runbook.name}` changes production: use `/oncall rollback MODEL` to preview it."
    else:
        model = command.filters.get("model")

        def ask(session: Session, now: datetime) -> int:
            incident = (session.exec(select(Incident).where(
                Incident.model == model, col(Incident.state).in_(store.OPEN_STATES))
                .order_by(col(Incident.id).desc())).first() if model else None)
            alert = first_alert(incident, session=session)
            labels = dict(alert.labels) if alert else dict(incident.labels if incident else {})
            try:  # what the worker will resolve, refused now rather than failed later
                resolve_params(runbook, labels, dict(alert.annotations) if alert else {},
                               command.filters)
            except RunbookError as exc:
                raise ActionRefused(f"Not run: {mrkdwn(exc)}") from None
            record = store.request_run(incident, runbook.name, "manual", session=session,
                                       now=now, requested_by=f"slack:{user_id}",
                                       params=dict(command.filters))
            record.answer_url = slash.get("response_url") or None
            record.answer_channel = slash.get("channel_id") or None
            return record.id  # type: ignore[return-value]

        try:
            run_id = await services.pipeline.transact(ask)
            text = (f"Started `{runbook.name}` (run #{run_id}); its result follows here when "
                    "it ends.")
        except ActionRefused as exc:
            text = str(exc)
    await respond(text=text, response_type="ephemeral", replace_original=False)


async def report(period: str, services: Services) -> tuple[str, list[dict[str, Any]]]:
    def build() -> tuple[str, list[dict[str, Any]]]:
        with services.db.read() as session:
            return slack_report(period, session=session, now=services.pipeline.clock(),
                                routing=services.routing)

    return await to_thread.run_sync(build)


async def changes(command: Command, services: Services) -> Mrkdwn | str:
    period = command.duration or timedelta(hours=24)
    model = command.filters.get("model")
    found = await services.changes.recent(model=model, period=period)
    return changes_text(found, now=services.pipeline.clock(), model=model, period=period)


async def _check_resolve(incident_id: int, user_id: str, services: Services) -> None:
    """Resolving an L1 is guarded; raises ActionRefused naming who may."""
    with services.db.read() as session:
        incident = session.get(Incident, incident_id)
    if incident is None:
        raise ActionRefused(f"There is no incident #{incident_id}.")
    if incident.tier == Tier.L1.value:
        refusal = await services.gatekeeper.refusal(user_id, Guarded.RESOLVE_L1)
        if refusal:
            raise ActionRefused(refusal)


async def who(services: Services) -> str:
    if services.oncall is None:
        return "PagerDuty's REST API is not configured (PAGERDUTY_API_TOKEN is not set)."
    try:
        shifts = await services.oncall.now()
    except OnCallUnavailable as exc:
        return f"Could not ask PagerDuty who is on call: {exc}."
    if not shifts:
        return "Nobody is on call now according to PagerDuty."
    return on_call_text(shifts)


def list_text(session: Session, filters: dict[str, str], now: datetime) -> Mrkdwn | str:
    incidents = open_incidents(session=session, filters=filters)
    if not incidents:
        return "No incidents match." if filters else "No open incidents."
    return incident_list_text(incidents, now)


def show_text(session: Session, incident_id: int, now: datetime) -> Mrkdwn | str:
    incident = session.get(Incident, incident_id)
    if incident is None:
        return f"There is no incident #{incident_id}."
    return incident_detail_text(incident, store.timeline(incident_id, session=session), now)


def silences_text(session: Session, now: datetime) -> Mrkdwn | str:
    silences = list_silences(session=session, now=now)
    return silence_list_text(silences, now) if silences else "No silences in force."


def silence(command: Command, session: Session, now: datetime, actor: Actor) -> str:
    if command.name == "unsilence":
        if expire_silence(command.incident_id, session=session, now=now) is None:  # type: ignore[arg-type]
            return f"There is no silence #{command.incident_id} in force."
        return f"Silence #{command.incident_id} ended."
    created = add_silence(command.matchers, command.duration,  # type: ignore[arg-type]
                          session=session, now=now, created_by=actor.id, comment=command.text)
    return silence_created_text(created)
