"""The rollback buttons: "Roll back" on an incident message previews, Confirm runs,
Cancel uses the preview up (see bot/usecases/rollback.py for the rules)."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncApp

from bot.usecases import ActionRefused, UseCases, slack_actor


def register(app: AsyncApp, usecases: UseCases) -> None:
    @app.action("incident_rollback")
    async def roll_back(ack: Any, body: dict[str, Any], respond: Any) -> None:
        await ack()
        try:
            incident_id: int | None = int(body["actions"][0]["value"])
        except ValueError:
            incident_id = None
        try:
            text, blocks = await usecases.preview_incident_rollback(
                incident_id, slack_actor(body["user"]["id"]))
            await respond(text=text, blocks=blocks, response_type="ephemeral",
                          replace_original=False)
        except ActionRefused as exc:
            await respond(text=exc.text, response_type="ephemeral", replace_original=False)

    @app.action("rollback_confirm")
    async def confirm_pressed(ack: Any, body: dict[str, Any], respond: Any) -> None:
        await ack()
        try:
            text = await usecases.confirm_rollback(str(body["actions"][0].get("value") or ""),
                                                   slack_actor(body["user"]["id"]))
        except ActionRefused as exc:
            text = exc.text
        await respond(text=text, response_type="ephemeral", replace_original=True)

    @app.action("rollback_cancel")
    async def cancel(ack: Any, body: dict[str, Any], respond: Any) -> None:
        """Use up the preview's confirmation, so its Confirm no longer works."""
        await ack()
        await usecases.cancel_rollback(str(body["actions"][0].get("value") or ""),
                                       slack_actor(body["user"]["id"]))
        await respond(text="Rollback cancelled; nothing changed.", response_type="ephemeral",
                      replace_original=True)
