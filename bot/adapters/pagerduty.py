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
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pagerduty
from pydantic import SecretStr

from bot.clock import Monotonic
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
    """Implements `Pager`: the platform on-call service's integration key, plus other
    services' keys (model teams for L2, the escalation service), found by the name of the
    variable that held them at start, which is all a delivery records: no key is stored."""

    def __init__(self, routing_key: str, *, base_url: str, ssl_context: ssl.SSLContext,
                 timeout: float, per_minute: int, routing_keys: Mapping[str, SecretStr],
                 monotonic: Monotonic = time.monotonic) -> None:
        """`routing_keys`: the other services' keys by variable name, read at start
        (settings.routing_keys). `per_minute`: events per integration key, by a token bucket
        timed by `monotonic` (0: no limit)."""
        self._routing_key = routing_key
        self._routing_keys = dict(routing_keys)
        self._base_url = base_url
        self._ssl_context = ssl_context
        self._timeout = timeout
        self._per_minute = per_minute
        self._monotonic = monotonic
        self._clients: dict[str, pagerduty.EventsApiV2Client] = {}
        self._buckets: dict[str, TokenBucket] = {}
        # Events of one incident are never in flight together (the outbox sends them in
        # order), so events of different incidents may go out in parallel.
        self._threads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="pagerduty")

    def _key(self, routing_key_env: str | None) -> str:
        if routing_key_env is None:
            return self._routing_key
        key = self._routing_keys.get(routing_key_env)
        if key is None:
            raise Undeliverable(f"the PagerDuty key variable {routing_key_env} was not set "
                                "when the bot started")
        return key.get_secret_value()

    def _client(self, key: str) -> pagerduty.EventsApiV2Client:
        client = self._clients.get(key)
        if client is None:
            client = pagerduty.EventsApiV2Client(key, base_url=self._base_url,
                                                 verify=self._ssl_context)
            single_attempt(client, self._timeout)
            self._clients[key] = client
        return client

    async def send(self, action: str, dedup_key: str, payload: dict[str, Any] | None,
                   routing_key_env: str | None = None) -> None:
        key = self._key(routing_key_env)
        if self._per_minute:
            now = self._monotonic()
            bucket = self._buckets.setdefault(key, TokenBucket(self._per_minute, now))
            wait = bucket.take(now)
            if wait > 0:
                raise RetryLater("over the Events API rate limit", after=wait, whole_target=True)
        client = self._client(key)
        await asyncio.get_running_loop().run_in_executor(
            self._threads, self._send, client, action, dedup_key, payload)

    @staticmethod
    def _send(client: pagerduty.EventsApiV2Client, action: str, dedup_key: str,
              payload: dict[str, Any] | None) -> None:
        properties = {"payload": payload} if payload else {}
        try:
            client.send_event(action, dedup_key=dedup_key, **properties)
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
        for client in self._clients.values():
            client.close()
