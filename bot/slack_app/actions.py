"""The incident message's buttons: Acknowledge, Resolve, Escalate to model owner, Silence 1h,
Postmortem.

Each acks at once and calls its use case (which checks permission where the act is
guarded); the message is then updated in place and a thread reply added through the
outbox. Refusals and no-ops answer only the person who clicked (ephemeral).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncApp

from bot.domain.messages import cut, md, mrkdwn
from bot.slack_app.commands import answer_text
from bot.usecases import ActionRefused, Actor, Done, UseCases, slack_actor

POSTMORTEM_LIMIT = 38_000  # Slack cuts message text at 40,000 characters

Press = Callable[[UseCases, int, Actor], Awaitable[Done]]
_BUTTONS: dict[str, Press] = {
    "incident_ack": lambda uc, incident_id, actor: uc.acknowledge(incident_id, actor,
                                                                  open_only=True),
    "incident_resolve": lambda uc, incident_id, actor: uc.resolve(incident_id, actor,
                                                                  open_only=True),
    "incident_escalate": lambda uc, incident_id, actor: uc.escalate(incident_id, actor),
    "incident_silence": lambda uc, incident_id, actor: uc.silence_incident(incident_id, actor),
}


def register(app: AsyncApp, usecases: UseCases) -> None:
    async def handle(body: dict[str, Any], respond: Any, action: str) -> None:
        try:
            incident_id = int(body["actions"][0]["value"])
            done = await _BUTTONS[action](usecases, incident_id, slack_actor(body["user"]["id"]))
            # The updated message and its thread reply say what changed; a silence's
            # number is worth telling the clicker.
            text = done.message if action == "incident_silence" or not done.changed else None
        except ActionRefused as exc:
            text = exc.text
        except ValueError:
            text = "That button does not name an incident."
        if text:
            await respond(text=answer_text(text), response_type="ephemeral",
                          replace_original=False)

    def listener_for(action: str) -> Any:
        # Bolt passes listener arguments by name, so the action is bound by closure.
        async def listener(ack: Any, body: dict[str, Any], respond: Any) -> None:
            await ack()
            await handle(body, respond, action)

        return listener

    for action in _BUTTONS:
        app.action(action)(listener_for(action))

    @app.action("incident_postmortem")
    async def postmortem(ack: Any, body: dict[str, Any], respond: Any) -> None:
        """The draft, for the person who asked; `oncall-bot postmortem ID` writes it to a file."""
        await ack()
        try:
            text = await usecases.postmortem(int(body["actions"][0]["value"]))
        except (LookupError, ValueError) as exc:
            await respond(text=answer_text(str(exc)), response_type="ephemeral",
                          replace_original=False)
            return
        shown = mrkdwn(text)  # it quotes alert data: escaped like any other
        if len(shown) > POSTMORTEM_LIMIT:
            shown = md("{}\n(cut; `oncall-bot postmortem ID` has it all)",
                       cut(shown, POSTMORTEM_LIMIT))
        await respond(text=md("```\n{}\n```", shown), response_type="ephemeral",
                      replace_original=False)
