"""POST /slack/events: Slack's events, slash commands and interactivity, handed to Bolt.

Bolt verifies the signature, but only over a body it has read whole; so the body is
read here first, bounded like the alert webhooks' (nothing past MAX_BODY is read:
413), and Bolt gets a request made of those bytes.
"""

from __future__ import annotations

from fastapi import FastAPI, Request, Response
from slack_bolt.adapter.starlette.async_handler import to_async_bolt_request, to_starlette_response
from slack_bolt.async_app import AsyncApp

from bot.web.http import Rejected, error_response, log_webhook, read_body

# Slack's own payloads are a few KB; a message with 50 blocks stays far below this.
MAX_BODY = 1024 * 1024


def register(app: FastAPI, *, slack_app: AsyncApp) -> None:
    @app.post("/slack/events")
    async def slack_events(request: Request) -> Response:
        try:
            body = await read_body(request.headers.get("content-length"), request.stream(),
                                   MAX_BODY)
            try:
                bolt_request = to_async_bolt_request(request, body)
            except UnicodeDecodeError:
                raise Rejected(400, "body", "body is not UTF-8") from None
        except Rejected as exc:
            log_webhook("slack", exc.status, reason=str(exc))
            return error_response(exc.status, str(exc))
        bolt_response = await slack_app.async_dispatch(bolt_request)
        # Bolt refuses a bad signature with 401; what was asked stays unlogged (it is the sender's).
        log_webhook("slack", bolt_response.status,
                    reason="bad or missing Slack signature" if bolt_response.status == 401 else None)
        return to_starlette_response(bolt_response)
