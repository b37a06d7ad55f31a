"""`oncall-bot mlflow subscribe --url PUBLIC_URL`: point MLflow's registry webhooks at
the bot in one command (POST /api/2.0/mlflow/webhooks), signed with MLFLOW_WEBHOOK_SECRET.

Run again, it finds the subscription it made (same URL) and changes nothing."""

from __future__ import annotations

import argparse
import asyncio
import sys

from bot.adapters.mlflow import MlflowRegistry
from bot.adapters.tls import client_ssl_context
from bot.domain.changes import EVENTS
from bot.runbooks.registry import RegistryError
from bot.settings import Settings

WEBHOOK_NAME = "oncall-bot"
PATH = "/webhooks/mlflow"


async def _subscribe(registry: MlflowRegistry, url: str, secret: str) -> str:
    for webhook in await registry.webhooks():
        if webhook.get("url") == url:
            return (f"MLflow already delivers to {url} (webhook {webhook.get('webhook_id')}, "
                    f"{webhook.get('status', '?').lower()}); nothing changed")
    created = await registry.create_webhook(name=WEBHOOK_NAME, url=url, events=list(EVENTS),
                                            secret=secret)
    events = ", ".join(f"{e}.{a}" for e, a in EVENTS)
    return f"subscribed {url} to {events} (webhook {created.get('webhook_id')})"


def _run(settings: Settings, args: argparse.Namespace) -> int:
    base = (args.url or settings.public_url or "").rstrip("/")
    problems = []
    if not base:
        problems.append("give --url (the bot's public base URL) or set PUBLIC_URL")
    elif not base.startswith(("http://", "https://")):
        problems.append(f"--url must be an http(s):// URL, got {base!r}")
    if not settings.mlflow_tracking_uri:
        problems.append("MLFLOW_TRACKING_URI is not set: which MLflow?")
    if settings.mlflow_webhook_secret is None:
        problems.append("MLFLOW_WEBHOOK_SECRET is not set: the bot refuses unsigned deliveries")
    if problems:
        for problem in problems:
            print(f"oncall-bot: {problem}", file=sys.stderr)
        return 2
    assert settings.mlflow_tracking_uri and settings.mlflow_webhook_secret

    async def run() -> str:
        registry = MlflowRegistry(settings.mlflow_tracking_uri or "",
                                  ssl_context=client_ssl_context(settings.oncall_ca_bundle),
                                  timeout=settings.delivery_timeout_seconds)
        try:
            return await _subscribe(registry, base + PATH,
                                    settings.mlflow_webhook_secret.get_secret_value())  # type: ignore[union-attr]
        finally:
            await registry.close()

    try:
        print(asyncio.run(run()))
    except RegistryError as exc:
        print(f"oncall-bot: {exc}", file=sys.stderr)
        return 1
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    mlflow = commands.add_parser("mlflow", help="the MLflow model registry")
    sub = mlflow.add_subparsers(dest="mlflow_command", required=True)
    subscribe = sub.add_parser(
        "subscribe", help="create the registry webhook that tells the bot of model changes")
    subscribe.add_argument("--url", help="the bot's public base URL (default: PUBLIC_URL); "
                           f"MLflow delivers to it + {PATH}")
    subscribe.set_defaults(run=_run)
