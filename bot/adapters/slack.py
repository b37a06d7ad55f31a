"""Slack's Web API (chat.postMessage, chat.update, chat.postEphemeral) through slack_sdk's
AsyncWebClient, and response_urls through its AsyncWebhookClient.

The SDK's own retry handlers are turned off: the outbox owns retries, honouring
a 429's Retry-After for everything it sends to Slack.
"""

from __future__ import annotations

import ssl
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.ports import PostedMessage, RetryLater, Undeliverable

# Slack answers these with ok=false but they pass with time.
_TRANSIENT_ERRORS = {
    "ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout",
}


class SlackChat:
    """Implements `Chat` over the Web API at SLACK_API_URL."""

    def __init__(self, token: str, *, base_url: str, ssl_context: ssl.SSLContext,
                 timeout: float) -> None:
        self.client = AsyncWebClient(
            token=token, base_url=base_url, ssl=ssl_context, timeout=int(timeout),
            retry_handlers=[],
        )
        self._ssl = ssl_context
        self._timeout = int(timeout)

    def start(self) -> None:
        """Give the client one pooled session for all calls (without it the SDK opens a
        new session, and a new connection, per call); must run inside the event loop."""
        if self.client.session is None or self.client.session.closed:
            self.client.session = aiohttp.ClientSession()

    async def post(self, channel: str, text: str, blocks: list[dict[str, Any]],
                   thread_ts: str | None = None) -> PostedMessage:
        response = await self._call(
            self.client.chat_postMessage, channel=channel, text=text, blocks=blocks,
            thread_ts=thread_ts, unfurl_links=False, unfurl_media=False,
        )
        return PostedMessage(channel_id=response["channel"], ts=response["ts"])

    async def update(self, channel_id: str, ts: str, text: str,
                     blocks: list[dict[str, Any]]) -> None:
        await self._call(self.client.chat_update, channel=channel_id, ts=ts, text=text,
                         blocks=blocks)

    async def post_ephemeral(self, channel: str, user: str, text: str) -> None:
        await self._call(self.client.chat_postEphemeral, channel=channel, user=user, text=text)

    async def respond(self, response_url: str, text: str) -> None:
        """Undeliverable when Slack refuses it (expired, or used up): answer another way."""
        hook = AsyncWebhookClient(response_url, ssl=self._ssl, timeout=self._timeout,
                                  session=self.client.session, retry_handlers=[])
        try:
            response = await hook.send(text=text, response_type="ephemeral",
                                       replace_original=False)
        except (TimeoutError, aiohttp.ClientError, SlackClientError, ValueError) as exc:
            raise RetryLater(f"Slack unreachable: {type(exc).__name__}") from None
        if response.status_code == 429 or response.status_code >= 500:
            raise RetryLater(f"Slack response_url HTTP {response.status_code}")
        if response.status_code >= 400:
            raise Undeliverable(f"Slack response_url HTTP {response.status_code}: "
                                f"{str(response.body)[:100]}")

    async def _call(self, method: Any, **kwargs: Any) -> Any:
        try:
            return await method(**kwargs)
        except SlackApiError as exc:
            status = exc.response.status_code
            error = exc.response.get("error") if isinstance(exc.response.data, dict) else None
            reason = f"Slack HTTP {status}: {error or 'no error code'}"
            if status == 429:
                after = exc.response.headers.get("Retry-After") or exc.response.headers.get(
                    "retry-after")
                raise RetryLater(reason, after=float(after) if after else None,
                                 whole_target=True) from None
            if status >= 500 or error in _TRANSIENT_ERRORS:
                raise RetryLater(reason) from None
            raise Undeliverable(reason) from None
        except (TimeoutError, aiohttp.ClientError, SlackClientError, ValueError) as exc:
            raise RetryLater(f"Slack unreachable: {type(exc).__name__}") from None

    async def close(self) -> None:
        if self.client.session is not None:
            await self.client.session.close()
