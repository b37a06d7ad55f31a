"""PagerDuty Events API v2 through the official `pagerduty` client.

The client is synchronous and, left alone, retries 429 forever and 5xx several
times with blocking sleeps. The outbox owns retries, so the client is set to make
exactly one attempt, and calls run on threads of the adapter's own, off the
event loop and out of the way of the threads that serve webhooks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pagerduty

from bot.domain.ratelimit import TokenBucket
from bot.ports import RetryLater, Undeliverable

log = logging.getLogger(__name__)

# The client's retry table maps status → tries; -1 means forever, 0 falls through
# to its built-in endless 429 loop. A negative count other than -1 makes it return
# the first response as it is, which is the one attempt we want.
_RETURN_AT_ONCE = -2


def single_attempt(client: pagerduty.ApiClient, timeout: float) -> None:
    """Configure a pagerduty client for one HTTP attempt and no sleeping."""
    client.retry = {429: _RETURN_AT_ONCE}
    client.max_network_attempts = 0
    client.timeout = timeout


def _error_text(response: Any) -> str:
    try:
        body = response.json()
        detail = body.get("message") or body.get("status") or ""
        errors = body.get("errors") or []
        return f"HTTP {response.status_code}: {detail} {json.dumps(errors)[:300]}".strip()
    except ValueError:
        return f"HTTP {response.status_code}"


def _retry_after(response: Any) -> float | None:
    value = response.headers.get("Retry-After") or response.headers.get("ratelimit-reset")
    try:
        return float(value) if value else None
    except ValueError:
        return None


class PagerDutyEvents:
    """Implements `Pager` for one integration (routing) key."""

    def __init__(self, routing_key: str, *, base_url: str, ssl_context: ssl.SSLContext,
                 timeout: float, per_minute: int) -> None:
        self._client = pagerduty.EventsApiV2Client(routing_key, base_url=base_url,
                                                   verify=ssl_context)
        single_attempt(self._client, timeout)
        self._bucket = TokenBucket(per_minute, time.monotonic()) if per_minute else None
        # Events of one incident are never in flight together (the outbox sends them in
        # order), so events of different incidents may go out in parallel.
        self._threads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="pagerduty")

    async def send(self, action: str, dedup_key: str, payload: dict[str, Any] | None) -> None:
        if self._bucket is not None:
            wait = self._bucket.take(time.monotonic())
            if wait > 0:
                raise RetryLater("over the Events API rate limit", after=wait, whole_target=True)
        await asyncio.get_running_loop().run_in_executor(
            self._threads, self._send, action, dedup_key, payload)

    def _send(self, action: str, dedup_key: str, payload: dict[str, Any] | None) -> None:
        properties = {"payload": payload} if payload else {}
        try:
            self._client.send_event(action, dedup_key=dedup_key, **properties)
        except pagerduty.HttpError as exc:
            status = exc.response.status_code
            text = _error_text(exc.response)
            if status == 429:
                raise RetryLater(text, after=_retry_after(exc.response), whole_target=True) from None
            if status >= 500 or status == 408:
                raise RetryLater(text) from None
            raise Undeliverable(text) from None
        except pagerduty.Error as exc:
            # Network failures and malformed answers: worth another try later.
            raise RetryLater(f"PagerDuty unreachable: {type(exc.__cause__ or exc).__name__}") from None

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
        self._client.close()
