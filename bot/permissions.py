"""Gathers the facts the permission decision needs: a user's Slack user groups and
whether they are on call now in PagerDuty (matched by email). Both are cached for a
minute; a lookup that fails counts as "no", never as "yes"."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from bot.domain.console import ConsoleError, check_user_id, sign_in_refusal
from bot.domain.permissions import Guarded
from bot.domain.permissions import refusal as refusal_of
from bot.domain.routing import Permissions
from bot.ports import OnCall, OnCallUnavailable

log = logging.getLogger(__name__)
CACHE_SECONDS = 60.0


class _Cache:
    def __init__(self) -> None:
        self._values: dict[str, tuple[float, object]] = {}

    async def get(self, key: str, load: Callable[[], Awaitable[object]]) -> object:
        hit = self._values.get(key)
        if hit and time.monotonic() - hit[0] < CACHE_SECONDS:
            return hit[1]
        value = await load()
        self._values[key] = (time.monotonic(), value)
        return value


class Gatekeeper:
    def __init__(self, permissions: Permissions, *, slack: AsyncWebClient,
                 oncall: OnCall | None) -> None:
        self.permissions = permissions
        self.slack = slack
        self.oncall = oncall
        self._cache = _Cache()

    async def refusal(self, user_id: str, action: Guarded) -> str | None:
        """None when the user may; otherwise the ephemeral refusal naming who may
        (the decision is domain.permissions'; this gathers its facts)."""
        groups = await self._groups_of(user_id)
        on_call = self.permissions.on_call and await self._is_on_call(user_id)
        return refusal_of(user_id, action, permissions=self.permissions, groups_of_user=groups,
                          on_call=on_call)

    async def _groups_of(self, user_id: str) -> set[str]:
        found = set()
        for group in self.permissions.groups:
            members = await self._cache.get(f"group:{group}", lambda g=group: self._members(g))
            if user_id in members:  # type: ignore[operator]
                found.add(group)
        return found

    async def _members(self, group: str) -> set[str]:
        try:
            response = await self.slack.usergroups_users_list(usergroup=group)
            return set(response.get("users") or [])
        except (SlackApiError, SlackClientError, OSError) as exc:
            log.warning("could not list members of Slack group %s: %s", group, exc)
            return set()

    async def _is_on_call(self, user_id: str) -> bool:
        if self.oncall is None:
            return False
        try:
            shifts = await self.oncall.now()
        except OnCallUnavailable as exc:
            log.warning("permission check without on-call facts: %s", exc)
            return False
        email = await self._cache.get(f"email:{user_id}", lambda: self._email(user_id))
        return bool(email) and any((s.email or "").lower() == email for s in shifts)

    async def _email(self, user_id: str) -> str | None:
        try:
            response = await self.slack.users_info(user=user_id)
            email = (response.get("user") or {}).get("profile", {}).get("email")
            return email.lower() if email else None
        except (SlackApiError, SlackClientError, OSError) as exc:
            log.warning("could not look up Slack user %s: %s", user_id, exc)
            return None


async def console_refusal(slack: AsyncWebClient | None, user_id: str) -> str | None:
    """Why `user_id` may not have a console sign-in link now, or None. Asked of Slack at
    every link (not cached): a member deactivated or made a guest since gets none. Without
    Slack, or when Slack does not answer, the answer is no."""
    try:
        check_user_id(user_id)
    except ConsoleError as exc:
        return str(exc)
    if slack is None:
        return "Slack is not configured (SLACK_BOT_TOKEN), so the user cannot be checked"
    try:
        response = await slack.users_info(user=user_id)
    except SlackApiError as exc:
        if exc.response.get("error") == "user_not_found":
            return sign_in_refusal(None)
        log.warning("could not look up Slack user %s: %s", user_id, exc.response.get("error"))
        return "Slack did not say who you are; try again in a minute"
    except (SlackClientError, OSError) as exc:
        log.warning("could not look up Slack user %s: %s", user_id, type(exc).__name__)
        return "Slack did not say who you are; try again in a minute"
    return sign_in_refusal(response.get("user"))
