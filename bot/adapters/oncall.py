"""PagerDuty's REST API through the `pagerduty` REST client: who is on call now
(`GET /oncalls`), and notes on incidents.

On-call answers are cached for a minute: `/oncall who` and permission checks
may ask often, and PagerDuty rate-limits the REST API per account.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pagerduty

from bot.adapters.pagerduty import single_attempt
from bot.ports import OnCallShift, OnCallUnavailable, RetryLater, Undeliverable

log = logging.getLogger(__name__)

CACHE_SECONDS = 60.0
# GET /oncalls is read page by page (classic offset pagination, at most 100 a page);
# this many pages bounds one answer, should `more` never turn false.
PAGE_SIZE = 100
MAX_PAGES = 20


class PagerDutyOnCall:
    """Implements `OnCall` over PagerDuty's GET /oncalls."""

    def __init__(self, api_token: str, *, base_url: str, ssl_context: ssl.SSLContext,
                 timeout: float, escalation_policy_ids: Sequence[str],
                 schedule_ids: Sequence[str]) -> None:
        self._client = pagerduty.RestApiV2Client(api_token, base_url=base_url,
                                                 verify=ssl_context)
        single_attempt(self._client, timeout)
        self._params: dict[str, object] = {"include[]": ["users"]}
        if escalation_policy_ids:
            self._params["escalation_policy_ids[]"] = list(escalation_policy_ids)
        if schedule_ids:
            self._params["schedule_ids[]"] = list(schedule_ids)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pagerduty-rest")
        self._cached: tuple[float, list[OnCallShift]] | None = None

    async def now(self) -> list[OnCallShift]:
        """Everyone on call now, lowest escalation level first (cached for a minute)."""
        if self._cached and time.monotonic() - self._cached[0] < CACHE_SECONDS:
            return self._cached[1]
        shifts = await asyncio.get_running_loop().run_in_executor(self._thread, self._fetch)
        self._cached = (time.monotonic(), shifts)
        return shifts

    def _fetch(self) -> list[OnCallShift]:
        try:
            entries = self._every_page()
        except pagerduty.HttpError as exc:
            raise OnCallUnavailable(
                f"PagerDuty answered HTTP {exc.response.status_code} to GET /oncalls") from None
        except pagerduty.Error:
            raise OnCallUnavailable("PagerDuty could not be reached") from None
        shifts = [
            OnCallShift(
                name=entry["user"].get("name") or entry["user"].get("summary", "?"),
                email=entry["user"].get("email"),
                user_id=entry["user"]["id"],
                level=int(entry.get("escalation_level") or 1),
                until=entry.get("end"),
                schedule=(entry.get("schedule") or {}).get("summary"),
                escalation_policy=(entry.get("escalation_policy") or {}).get("summary"),
            )
            for entry in entries
        ]
        return sorted(shifts, key=lambda s: (s.level, s.name))

    def _every_page(self) -> list[dict]:
        """Every on-call entry: a large account has more than one page of them, and who is
        on call (and so who may resolve) must not depend on which page they fell on."""
        entries: list[dict] = []
        for _ in range(MAX_PAGES):
            body = self._client.jget("/oncalls", params={**self._params, "offset": len(entries),
                                                         "limit": PAGE_SIZE})
            page = (body.get("oncalls") or []) if isinstance(body, dict) else []
            entries.extend(page)
            if not page or not body.get("more"):
                return entries
        log.warning("GET /oncalls: more than %d pages; using the first %d entries",
                    MAX_PAGES, len(entries))
        return entries

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)
        self._client.close()


class PagerDutyNotes:
    """Implements `Notes`: finds the PagerDuty incident by its incident_key (our dedup_key)
    and adds a note, through the REST client with one attempt per call (the outbox retries).
    PagerDuty requires a From header naming a user's email for account-level tokens."""

    def __init__(self, api_token: str, *, base_url: str, ssl_context: ssl.SSLContext,
                 timeout: float, from_email: str | None) -> None:
        self._client = pagerduty.RestApiV2Client(api_token, base_url=base_url,
                                                 verify=ssl_context, default_from=from_email)
        single_attempt(self._client, timeout)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pagerduty-notes")

    async def add_note(self, incident_key: str, content: str) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._add, incident_key,
                                                         content)

    def _add(self, incident_key: str, content: str) -> None:
        try:
            found = self._client.rget("/incidents", params={"incident_key": incident_key})
            if not found:
                raise RetryLater("PagerDuty has no incident for this key yet")
            self._client.rpost(f"/incidents/{found[0]['id']}/notes",
                               json={"note": {"content": content}})
        except pagerduty.HttpError as exc:
            status = exc.response.status_code
            message = f"PagerDuty REST answered HTTP {status}"
            if status == 429 or status >= 500:
                raise RetryLater(message, whole_target=status == 429) from None
            raise Undeliverable(message) from None
        except pagerduty.Error:
            raise RetryLater("PagerDuty REST could not be reached") from None

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)
        self._client.close()
