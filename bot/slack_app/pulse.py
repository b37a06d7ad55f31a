"""The satisfaction pulse's buttons and comment modal: translate, call bot.usecases.pulse.

Requests reach these through the Bolt app, so Slack's signature is verified first.
Button values and the modal's fields are passed on unchecked: the use cases check them.
"""

from __future__ import annotations

import re
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError

from bot.domain.pulse import (
    COMMENT_ACTION,
    COMMENT_BLOCK,
    COMMENT_INPUT,
    COMMENT_VIEW,
    SCORE_ACTIONS,
    PulseRefused,
    comment_saved_view,
)
from bot.slack_app.commands import answer_text
from bot.usecases import UseCases, pulse


def _action_value(body: dict[str, Any]) -> object:
    actions = body.get("actions") or [{}]
    return actions[0].get("value") if isinstance(actions[0], dict) else None


def register(app: AsyncApp, services: UseCases) -> None:
    @app.action(re.compile(SCORE_ACTIONS))
    async def score(ack: Any, body: dict[str, Any], respond: Any) -> None:
        await ack()
        try:
            text = await pulse.answer(services.pipeline, value=_action_value(body),
                                      user_id=body["user"]["id"])
        except PulseRefused as exc:
            text = answer_text(str(exc))
        await respond(text=text, response_type="ephemeral", replace_original=False)

    @app.action(COMMENT_ACTION)
    async def open_comment(ack: Any, body: dict[str, Any], respond: Any, client: Any) -> None:
        await ack()
        try:
            view = await pulse.comment_form(services.db, value=_action_value(body),
                                            user_id=body["user"]["id"])
        except PulseRefused as exc:
            await respond(text=answer_text(str(exc)), response_type="ephemeral",
                          replace_original=False)
            return
        try:
            await client.views_open(trigger_id=body.get("trigger_id"), view=view)
        except SlackApiError as exc:  # an expired trigger_id (over 3 s), a Slack outage
            await respond(text=answer_text(f"Slack did not open the comment form "
                                           f"({exc.response.get('error')}); click again."),
                          response_type="ephemeral", replace_original=False)

    @app.view(COMMENT_VIEW)
    async def comment_submitted(ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        """Checked before the ack: a refusal shows on the modal's field, as Slack does it."""
        field = (((view.get("state") or {}).get("values") or {}).get(COMMENT_BLOCK) or {}).get(
            COMMENT_INPUT) or {}
        try:
            saved = await pulse.comment(services.pipeline, pulse=view.get("private_metadata"),
                                        text=field.get("value"), user_id=body["user"]["id"])
        except PulseRefused as exc:
            await ack(response_action="errors", errors={COMMENT_BLOCK: str(exc)[:150]})
            return
        await ack(response_action="update", view=comment_saved_view(saved))
