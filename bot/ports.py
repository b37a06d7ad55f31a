"""What the orchestrator needs from the outside world, as small protocols.

Adapters raise `RetryLater` for anything worth another try (5xx, 429, timeouts,
connection errors) and `Undeliverable` for what will never succeed (a rejected
payload, a missing channel, bad credentials): the outbox owns retrying.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
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
        platform on-call service, or to the service whose key was in `routing_key_env` when
        the bot started (Undeliverable when that variable was not set then)."""


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

    async def upload(self, channel: str, filename: str, title: str, content: bytes, *,
                     comment: str) -> str:
        """Share a file in `channel` with `comment` as its message; returns the file's ID.
        Raises NotInChannel, MissingScope, RetryLater, Undeliverable."""

    async def find_upload(self, channel: str, filename: str, *, since: datetime) -> bool:
        """Whether the bot shared a file named `filename` in `channel` since `since`,
        within a bounded search. Raises NotInChannel, MissingScope, RetryLater."""


class Notes(Protocol):
    async def add_note(self, incident_key: str, content: str) -> None:
        """Add a note to the PagerDuty incident whose incident_key (our dedup_key) is given."""


class OnCallUnavailable(Exception):
    """The on-call schedule could not be asked; the message says why, for a human."""


@dataclass(frozen=True, slots=True)
class OnCallShift:
    name: str
    email: str | None
    user_id: str
    level: int
    until: str | None  # ISO time; None for a permanent on-call
    schedule: str | None
    escalation_policy: str | None


class OnCall(Protocol):
    async def now(self) -> list[OnCallShift]:
        """Everyone on call now, lowest escalation level first. Raises OnCallUnavailable."""


class FetchRefused(Exception):
    """A URL the run's host policy does not allow; nothing was sent. The message names what to set."""


class FetchError(Exception):
    """An answer that will not be read: too large, compressed, or too many redirects."""


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer read whole, within a size cap; shaped like the httpx.Response parts
    runbook steps use."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes
    url: str

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


class Fetch(Protocol):
    async def request(self, method: str, url: str, *, params: Any = None, json: Any = None,
                      headers: dict[str, str] | None = None,
                      timeout: float | None = None) -> Answer:
        """One request within a runbook run's host policy (the run's guarded client).
        Raises FetchRefused (nothing sent), FetchError (answer not read), or httpx's
        errors (unreachable, timeouts)."""


@dataclass(frozen=True, slots=True)
class Series:
    """One series of a PromQL answer: its labels and its non-NaN sample values."""

    labels: Mapping[str, str]
    values: list[float]


class PrometheusError(Exception):
    """Prometheus refused a query or answered something that is not its API's JSON."""


class Prometheus(Protocol):
    async def query(self, fetch: Fetch, promql: str, *, at: float, url: str | None = None,
                    range_s: float | None = None, step_s: float = 60.0,
                    timeout: float | None = None) -> list[Series]:
        """The series of an instant query at `at` (a Unix time), or of a range query over
        the `range_s` seconds ending then. Asks `url`, else the configured Prometheus,
        through `fetch` (so the run's host policy holds). Raises PrometheusError, and what
        `fetch` raises."""


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
