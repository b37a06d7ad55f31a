"""The Slack app (slack-bolt, async): the `/oncall` command and the incident buttons.

Listeners only translate: Slack payloads in, calls into the incident actions out,
answers back to the person (ephemeral, through response_url). Every listener acks
first, so Slack's three seconds are never at risk; the work runs after the ack.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.db import Database
from bot.domain.routing import RoutingConfig
from bot.permissions import Gatekeeper
from bot.pipeline import Pipeline
from bot.ports import ModelRegistry, OnCall
from bot.runbooks import Runbook
from bot.store import DeliveryPolicy
from bot.usecases.changes import ModelChanges
from bot.usecases.console import Console


@dataclass(frozen=True, slots=True)
class Services:
    """What listeners may use; built once in create_app."""

    pipeline: Pipeline
    db: Database
    routing: RoutingConfig
    policy: DeliveryPolicy
    gatekeeper: Gatekeeper
    oncall: OnCall | None
    runbooks: Mapping[str, Runbook]
    console: Console
    registry: ModelRegistry | None  # None: MLFLOW_TRACKING_URI is not set
    changes: ModelChanges


def build_slack_app(*, signing_secret: str, client: AsyncWebClient,
                    services: Services) -> AsyncApp:
    from bot.slack_app import actions, commands, pulse, rollback

    app = AsyncApp(signing_secret=signing_secret, client=client)
    commands.register(app, services)
    actions.register(app, services)
    rollback.register(app, services)
    pulse.register(app, services)
    return app
