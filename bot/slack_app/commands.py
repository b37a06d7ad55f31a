"""`/oncall`: parse (pure), ack at once, call the use case, answer ephemerally via response_url."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from slack_bolt.async_app import AsyncApp

from bot.domain.commands import HELP, Command, CommandError, parse_command
from bot.domain.messages import LONG_MESSAGE_TEXT, Mrkdwn, cut
from bot.domain.routing import Tier
from bot.usecases import ActionRefused, UseCases, slack_actor


def answer_text(text: str) -> Mrkdwn:
    """What an answer to a person shows: Mrkdwn as built, any other text (an error
    that may echo the command's arguments) escaped; cut to Slack's limit."""
    return cut(text, LONG_MESSAGE_TEXT)


def register(app: AsyncApp, usecases: UseCases) -> None:
    @app.command("/oncall")
    async def oncall(ack: Any, command: dict[str, Any], respond: Any) -> None:
        try:
            parsed = parse_command(command.get("text", ""))
        except CommandError as exc:
            await ack(response_type="ephemeral", text=answer_text(str(exc)))
            return
        await ack()
        blocks: list[dict[str, Any]] | None = None
        try:
            if parsed.name == "report":
                text, blocks = await usecases.report(parsed.text)
                await respond(text=text, blocks=blocks, response_type="ephemeral",
                              replace_original=False)
                await usecases.share_report_chart(parsed.text,
                                                  channel_id=command.get("channel_id", ""),
                                                  user_id=command["user_id"])
                return
            if parsed.name == "rollback":
                text, blocks = await usecases.preview_rollback(
                    parsed.text, slack_actor(command["user_id"]),
                    target=parsed.filters.get("version"))
            else:
                text = await run(parsed, command, usecases)
        except ActionRefused as exc:
            text = exc.text
        if blocks is not None:
            await respond(text=text, blocks=blocks, response_type="ephemeral",
                          replace_original=False)
        else:
            await respond(text=answer_text(text), response_type="ephemeral",
                          replace_original=False)

    @app.event("app_mention")
    async def mentioned(event: dict[str, Any], say: Any) -> None:
        """Someone @-mentioned the bot: point them at the command, in the thread."""
        await say(text=HELP, thread_ts=event.get("thread_ts") or event.get("ts"))


async def run(command: Command, slash: dict[str, Any], usecases: UseCases) -> str:
    """The answer to every subcommand but `report` and `rollback`; raises ActionRefused."""
    actor = slack_actor(slash["user_id"])
    name, incident_id = command.name, command.incident_id or 0
    if name == "help":
        return HELP
    if name == "who":
        return await usecases.who_is_on_call()
    if name == "changes":
        return await usecases.recent_changes(command.filters.get("model"),
                                             command.duration or timedelta(hours=24))
    if name == "console":
        return await usecases.console_link(slash["user_id"])
    if name == "list":
        return usecases.list_incidents(command.filters)
    if name == "show":
        return usecases.show_incident(incident_id)
    if name == "silences":
        return usecases.list_silences()
    if name == "silence":
        return await usecases.silence(command.matchers, command.duration,  # type: ignore[arg-type]
                                      actor, comment=command.text)
    if name == "unsilence":
        return await usecases.unsilence(incident_id, actor)
    if name == "declare":
        return (await usecases.declare(command.text, actor, model=command.filters.get("model"),
                                       tier=Tier(command.filters.get("tier", "L1")),
                                       severity=command.filters.get("severity"))).message
    if name == "runbook":
        if command.text == "list":
            return usecases.list_runbooks()
        run_id = await usecases.run_runbook(
            command.text, actor, params=dict(command.filters),
            answer_url=slash.get("response_url") or None,
            answer_channel=slash.get("channel_id") or None)
        return (f"Started `{command.text}` (run #{run_id}); its result follows here when "
                "it ends.")
    if name == "ack":
        return (await usecases.acknowledge(incident_id, actor)).message
    if name == "resolve":
        return (await usecases.resolve(incident_id, actor, note=command.text)).message
    return (await usecases.note(incident_id, command.text, actor)).message
