"""What the orchestrator needs from the outside world, as small protocols.

Adapters raise `RetryLater` for anything worth another try (5xx, 429, timeouts,
connection errors) and `Undeliverable` for what will never succeed (a rejected
payload, a missing channel, bad credentials): the outbox owns retrying.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from bot.domain.delivery import Mark


class DeliveryError(Exception):
    pass


class RetryLater(DeliveryError):
    """Try again; `after` is the delay the service asked for (Retry-After), if any.

    `whole_target` means the service refused us as a whole (rate limited), so
    nothing else should be sent to it before `after` either.
    """

    def __init__(self, reason: str, *, after: float | None = None, whole_target: bool = False):
        super().__init__(reason)
        self.after = after
        self.whole_target = whole_target


class Undeliverable(DeliveryError):
    """The service refused this delivery for good."""


class MissingScope(Undeliverable):
    """Slack refused a call for want of an OAuth scope (`missing_scope`): the app must
    be given it and reinstalled. `scope` is what Slack's `needed` field names."""

    def __init__(self, reason: str, *, scope: str) -> None:
        super().__init__(reason)
        self.scope = scope


class NotInChannel(Undeliverable):
    """The bot is not a member of the channel (`not_in_channel`), or cannot see it at
    all (`channel_not_found`, as Slack answers for a private channel it was not invited to).
    `channel_id`: the channel's ID, when known (a public one may then be joined)."""

    def __init__(self, reason: str, *, channel_id: str | None = None) -> None:
        super().__init__(reason)
        self.channel_id = channel_id


@dataclass(frozen=True, slots=True)
class PostedMessage:
    channel_id: str
    ts: str


class Pager(Protocol):
    async def send(self, action: str, dedup_key: str, payload: dict[str, Any] | None,
                   routing_key_env: str | None = None) -> None:
        """Send an Events API v2 event (trigger/acknowledge/resolve) for `dedup_key`, to the
        platform on-call service, or to the service whose key is in `routing_key_env`."""


class Chat(Protocol):
    async def post(self, channel: str, text: str, blocks: list[dict[str, Any]],
                   thread_ts: str | None = None, mark: Mark | None = None) -> PostedMessage:
        """Post, with `mark` as the message's metadata."""

    async def update(self, channel_id: str, ts: str, text: str,
                     blocks: list[dict[str, Any]]) -> None: ...

    async def respond(self, response_url: str, text: str) -> None:
        """An ephemeral answer through a slash command's response_url."""

    async def post_ephemeral(self, channel: str, user: str, text: str) -> None: ...

    async def find(self, channel: str, mark: Mark, *, since: datetime,
                   thread_ts: str | None = None) -> PostedMessage | None:
        """The bot's own message carrying `mark`, posted in `channel` (or in the thread
        under `thread_ts`) since `since`, if one is found within a bounded search.
        Raises NotInChannel, MissingScope, RetryLater."""

    async def join(self, channel_id: str) -> bool:
        """Join a public channel (so that its history can be read); False for a channel
        that cannot be joined, only invited to (private channels, DMs). Raises
        MissingScope, RetryLater, Undeliverable."""


class Notes(Protocol):
    async def add_note(self, incident_key: str, content: str) -> None:
        """Add a note to the PagerDuty incident whose incident_key (our dedup_key) is given."""


class ModelRegistry(Protocol):
    """The model registry (MLflow). Every method raises `bot.runbooks.registry.RegistryError`
    (its message says what failed) when the registry refuses or cannot be reached."""

    async def serving_version(self, model: str, alias: str) -> str | None:
        """The version `alias` serves now; None when the model or the alias does not exist."""

    async def version_author(self, model: str, version: str) -> str | None:
        """The version's `user_id`, where the registry recorded one."""

    async def what_changed(self, model: str, alias: str) -> dict[str, Any]:
        """What the alias serves, and the version before (runbooks' `what_changed`)."""

    async def alias_version(self, model: str, alias: str) -> dict[str, Any] | None:
        """The model version behind `alias`; None when the model has no such alias."""

    async def webhooks(self) -> list[dict[str, Any]]:
        """The registry's webhook subscriptions."""

    async def create_webhook(self, *, name: str, url: str, events: list[tuple[str, str]],
                             secret: str) -> dict[str, Any]:
        """Subscribe `url` to `events` ((entity, action), lower case), signed with `secret`."""
