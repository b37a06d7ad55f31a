"""A failed start-up told in one line.

uvicorn logs a failed lifespan start-up as Starlette hands it over: the whole traceback.
An operator at 3 a.m. needs the one line that names the problem, so this wrapper replaces
that message with it (secrets masked) before uvicorn sees it.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

Message = dict[str, Any]
ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[Message]],
                    Callable[[Message], Awaitable[None]]], Awaitable[None]]


def describe(exc: BaseException, secrets: Sequence[str] = ()) -> str:
    """`start-up failed: <what>`; a database error's own first line, not SQLAlchemy's wrapping."""
    cause = getattr(exc, "orig", None) or exc
    first = next((line.strip() for line in str(cause).splitlines() if line.strip()), "")
    text = f"{type(cause).__name__}: {first}" if first else type(cause).__name__
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return f"start-up failed: {text}"


class OneLineStartupFailure:
    """ASGI middleware for the lifespan scope only; requests pass through untouched."""

    def __init__(self, app: ASGIApp, *, secrets: Sequence[str] = ()) -> None:
        self.app = app
        self.secrets = tuple(secrets)

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_one_line(message: Message) -> None:
            # Starlette sends `lifespan.startup.failed` from inside its `except` block.
            failure = sys.exc_info()[1]
            if message["type"] == "lifespan.startup.failed" and failure is not None:
                message = {**message, "message": describe(failure, self.secrets)}
            await send(message)

        await self.app(scope, receive, send_one_line)
