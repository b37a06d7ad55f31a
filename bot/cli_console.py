"""`oncall-bot console-link --user U…`: a one-time sign-in link to the web console, as
`/oncall console` gives in Slack, for an operator to hand on."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from bot.adapters.slack import SlackChat
from bot.adapters.tls import client_ssl_context
from bot.clock import utcnow
from bot.db import Database
from bot.domain.console import ConsoleError
from bot.settings import Settings
from bot.usecases.console import Console, link_for_operator


def _console_link(settings: Settings, args: argparse.Namespace) -> int:
    db = Database(settings.database_url, lock_timeout=settings.database_lock_timeout_seconds)
    db.upgrade()
    chat = SlackChat(settings.slack_bot_token.get_secret_value(), base_url=settings.slack_api_url,
                     ssl_context=client_ssl_context(settings.oncall_ca_bundle),
                     timeout=settings.delivery_timeout_seconds) if settings.slack_bot_token else None
    console = Console(db=db, public_url=settings.public_url, clock=utcnow,
                      secret=settings.console_secret.get_secret_value()
                      if settings.console_secret else None,
                      slack=chat.client if chat is not None else None)
    # Without PUBLIC_URL the link points at the address `serve` listens on by default.
    base_url = settings.public_url or (f"http://{os.environ.get('HOST', '127.0.0.1')}:"
                                       f"{os.environ.get('PORT', '8080')}")

    async def make() -> str:
        try:
            return await link_for_operator(console, args.user, operator=args.by, base_url=base_url)
        finally:
            if chat is not None:
                await chat.close()

    try:
        url = asyncio.run(make())
    except ConsoleError as exc:
        print(f"oncall-bot: {exc}", file=sys.stderr)
        return 2
    finally:
        db.dispose()
    if chat is None:
        print(f"note: {args.user} was not checked with Slack (SLACK_BOT_TOKEN is not set)",
              file=sys.stderr)
    print(url)
    return 0


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    link = commands.add_parser(
        "console-link", help="print a one-time sign-in link to the web console (valid 10 minutes)")
    link.add_argument("--user", required=True, metavar="U…",
                      help="the Slack user ID the session will be for (e.g. U0123ABCD)")
    link.add_argument("--by", default=os.environ.get("USER", "cli"),
                      help="who made the link, kept with it (default: $USER)")
    link.set_defaults(run=_console_link)
