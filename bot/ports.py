"""What the orchestrator needs from the outside world, as small protocols.

Adapters raise `RetryLater` for anything worth another try (5xx, 429, timeouts,
connection errors) and `Undeliverable` for what will never succeed (a rejected
payload, a missing channel, bad credentials): the outbox owns retrying.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


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
                   thread_ts: str | None = None) -> PostedMessage: ...

    async def update(self, channel_id: str, ts: str, text: str,
                     blocks: list[dict[str, Any]]) -> None: ...

    async def respond(self, response_url: str, text: str) -> None:
        """An ephemeral answer through a slash command's response_url."""

    async def post_ephemeral(self, channel: str, user: str, text: str) -> None: ...


class Notes(Protocol):
    async def add_note(self, incident_key: str, content: str) -> None:
        """Add a note to the PagerDuty incident whose incident_key (our dedup_key) is given."""
