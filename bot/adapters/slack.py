"""Slack's Web API through slack_sdk's AsyncWebClient: chat.postMessage, chat.update
and chat.postEphemeral, what finding an unrecorded post takes (conversations.history
and .replies, conversations.join, conversations.list to learn a channel name's ID),
file uploads (files.getUploadURLExternal, a POST of the bytes to the URL it returns,
files.completeUploadExternal), and response_urls through its AsyncWebhookClient.

The SDK's own retry handlers are turned off: the outbox owns retries, honouring
a 429's Retry-After for everything it sends to Slack.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.domain.delivery import Mark
from bot.ports import MissingScope, NotInChannel, PostedMessage, RetryLater, Undeliverable

# Slack answers these with ok=false but they pass with time.
_TRANSIENT_ERRORS = {
    "ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout",
}
_NOT_IN_CHANNEL = {"not_in_channel", "channel_not_found"}
_CANNOT_JOIN = "method_not_supported_for_channel_type"
_CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{8,}")
# A search reads at most this many pages of history (or of a thread, or of the
# channel list): the bound on what one delivery attempt may cost in Slack calls.
_PAGES = 5
_PAGE_SIZE = 200


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
        self._channel_ids: dict[str, str] = {}  # channel name (no '#') → ID
        self._me: tuple[str, str] | None = None  # (user ID, bot ID) from auth.test

    def start(self) -> None:
        """Give the client one pooled session for all calls (without it the SDK opens a
        new session, and a new connection, per call); must run inside the event loop."""
        if self.client.session is None or self.client.session.closed:
            self.client.session = aiohttp.ClientSession()

    async def post(self, channel: str, text: str, blocks: list[dict[str, Any]],
                   thread_ts: str | None = None, mark: Mark | None = None) -> PostedMessage:
        response = await self._call(
            self.client.chat_postMessage, channel=channel, text=text, blocks=blocks,
            thread_ts=thread_ts, unfurl_links=False, unfurl_media=False,
            metadata=mark.metadata() if mark is not None else None,
        )
        if not _CHANNEL_ID.fullmatch(channel):
            self._channel_ids[channel.lstrip("#")] = response["channel"]
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

    async def find(self, channel: str, mark: Mark, *, since: datetime,
                   thread_ts: str | None = None) -> PostedMessage | None:
        channel_id = await self._channel_id(channel)
        if channel_id is None:
            raise NotInChannel(f"no channel named {channel} that the bot can see")
        me = await self._identity()
        oldest = f"{since.timestamp():.6f}"
        if thread_ts is None:
            pages = self._pages(self.client.conversations_history, "messages",
                                channel=channel_id, include_all_metadata=True, oldest=oldest)
        else:
            pages = self._pages(self.client.conversations_replies, "messages",
                                channel=channel_id, ts=thread_ts, include_all_metadata=True,
                                oldest=oldest)
        try:
            return await self._oldest_match(pages, mark, me, threaded=thread_ts is not None,
                                            channel_id=channel_id)
        except NotInChannel as exc:
            raise NotInChannel(str(exc), channel_id=channel_id) from None

    @staticmethod
    async def _oldest_match(pages: AsyncIterator[dict], mark: Mark, me: tuple[str, str], *,
                            threaded: bool, channel_id: str) -> PostedMessage | None:
        found = None
        async for message in pages:
            mine = ((bool(me[0]) and message.get("user") == me[0])
                    or (bool(me[1]) and message.get("bot_id") == me[1]))
            top = threaded or message.get("thread_ts") in (None, message.get("ts"))
            if mine and top and mark.matches(message.get("metadata")) and (
                    found is None or float(message["ts"]) < float(found)):
                found = str(message["ts"])  # the oldest, should there be two
        return None if found is None else PostedMessage(channel_id=channel_id, ts=found)

    async def join(self, channel_id: str) -> bool:
        try:
            await self._call(self.client.conversations_join, channel=channel_id)
        except Undeliverable as exc:
            if isinstance(exc, MissingScope) or not str(exc).endswith(_CANNOT_JOIN):
                raise
            return False  # a private channel (or a DM): only an invite lets the bot in
        return True

    async def upload(self, channel: str, filename: str, title: str, content: bytes, *,
                     comment: str) -> str:
        """Slack's three steps. A file uploaded but never completed is not shared (Slack
        drops it), so a failure before the last step leaves nothing in the channel. The
        bot joins a public channel it is not in: sharing a file needs membership."""
        channel_id = await self._channel_id(channel)
        if channel_id is None:
            raise NotInChannel(f"no channel named {channel} that the bot can see")
        issued = await self._call(self.client.files_getUploadURLExternal, filename=filename,
                                  length=len(content), alt_txt=title)
        file_id = str(issued["file_id"])
        await self._send_bytes(str(issued["upload_url"]), content)
        for attempt in (1, 2):
            try:
                await self._call(self.client.files_completeUploadExternal,
                                 files=[{"id": file_id, "title": title}], channel_id=channel_id,
                                 initial_comment=comment)
                return file_id
            except NotInChannel:
                if attempt == 2 or not await self.join(channel_id):
                    raise
        raise AssertionError("unreachable")

    async def _send_bytes(self, url: str, content: bytes) -> None:
        """The upload itself: raw bytes to the URL Slack issued (pre-signed: no token)."""
        assert self.client.session is not None, "start() first"
        try:
            async with self.client.session.post(
                    url, data=content, ssl=self._ssl,
                    headers={"Content-Type": "application/octet-stream"},
                    timeout=aiohttp.ClientTimeout(total=self._timeout)) as response:
                status = response.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise RetryLater(f"Slack upload unreachable: {type(exc).__name__}") from None
        if status == 429 or status >= 500:
            raise RetryLater(f"Slack upload HTTP {status}")
        if status >= 400:
            raise Undeliverable(f"Slack upload HTTP {status}")

    async def find_upload(self, channel: str, filename: str, *, since: datetime) -> bool:
        channel_id = await self._channel_id(channel)
        if channel_id is None:
            raise NotInChannel(f"no channel named {channel} that the bot can see")
        me = await self._identity()
        async for message in self._pages(self.client.conversations_history, "messages",
                                         channel=channel_id, oldest=f"{since.timestamp():.6f}"):
            mine = ((bool(me[0]) and message.get("user") == me[0])
                    or (bool(me[1]) and message.get("bot_id") == me[1]))
            if mine and any(isinstance(f, dict) and f.get("name") == filename
                            for f in message.get("files") or []):
                return True
        return False

    async def _channel_id(self, channel: str) -> str | None:
        """A channel's ID: history takes no names. Learnt from posts, or else looked
        up once in conversations.list (public and private channels the bot can see)."""
        if _CHANNEL_ID.fullmatch(channel):
            return channel
        name = channel.lstrip("#")
        if name not in self._channel_ids:
            async for listed in self._pages(self.client.conversations_list, "channels",
                                            types="public_channel,private_channel",
                                            exclude_archived=True):
                self._channel_ids.setdefault(str(listed.get("name")), str(listed.get("id")))
                if listed.get("name") == name:
                    break
        return self._channel_ids.get(name)

    async def _identity(self) -> tuple[str, str]:
        """Who the bot is, so that only its own messages are adopted."""
        if self._me is None:
            response = await self._call(self.client.auth_test)
            self._me = (str(response.get("user_id") or ""), str(response.get("bot_id") or ""))
        return self._me

    async def _pages(self, method: Any, field: str, **kwargs: Any) -> AsyncIterator[dict]:
        cursor = None
        for _ in range(_PAGES):
            response = await self._call(method, limit=_PAGE_SIZE, cursor=cursor, **kwargs)
            for item in response.get(field) or []:
                if isinstance(item, dict):
                    yield item
            cursor = (response.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return

    async def _call(self, method: Any, **kwargs: Any) -> Any:
        try:
            return await method(**kwargs)
        except SlackApiError as exc:
            status = exc.response.status_code
            data = exc.response.data if isinstance(exc.response.data, dict) else {}
            error = data.get("error")
            reason = f"Slack HTTP {status}: {error or 'no error code'}"
            if status == 429:
                after = exc.response.headers.get("Retry-After") or exc.response.headers.get(
                    "retry-after")
                raise RetryLater(reason, after=float(after) if after else None,
                                 whole_target=True) from None
            if status >= 500 or error in _TRANSIENT_ERRORS:
                raise RetryLater(reason) from None
            if error == "missing_scope":
                scope = str(data.get("needed") or "unknown")
                raise MissingScope(f"{reason} (needs the {scope} scope)", scope=scope) from None
            if error in _NOT_IN_CHANNEL:
                raise NotInChannel(reason) from None
            raise Undeliverable(reason) from None
        except (TimeoutError, aiohttp.ClientError, SlackClientError, ValueError) as exc:
            raise RetryLater(f"Slack unreachable: {type(exc).__name__}") from None

    async def close(self) -> None:
        if self.client.session is not None:
            await self.client.session.close()
