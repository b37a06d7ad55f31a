"""The Slack app (slack-bolt, async): the `/oncall` command and the incident buttons.

Listeners only translate: Slack payloads in, calls into the use cases out, answers
back to the person (ephemeral, through response_url). Every listener acks first, so
Slack's three seconds are never at risk; the work runs after the ack.
"""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.usecases import UseCases


def build_slack_app(*, signing_secret: str, client: AsyncWebClient,
                    usecases: UseCases) -> AsyncApp:
    from bot.slack_app import actions, commands, pulse, rollback

    app = AsyncApp(signing_secret=signing_secret, client=client)
    commands.register(app, usecases)
    actions.register(app, usecases)
    rollback.register(app, usecases)
    pulse.register(app, usecases)
    return app
