"""Slack messages and charts shared once, though a send may be repeated.

A send whose answer was lost is sent again (at least once); before it is, the
earlier attempt's message is looked for by the metadata it was posted with and
adopted when found (`SlackOnce.post`), and a chart by its file name
(`SlackOnce.upload`), so that each incident has one message. Slack setup problems
met on the way (a scope missing, a channel the bot is not in) are said once per
process, in the log and on the timeline of the incident at hand.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from anyio import to_thread

from bot.charts import ChartsUnavailable, render_png
from bot.domain.charts import series_from_json
from bot.domain.delivery import Mark
from bot.ports import Chat, MissingScope, NotInChannel, PostedMessage, RetryLater, Undeliverable

log = logging.getLogger(__name__)


class SlackOnce:
    """One per dispatcher: remembers, for this process, the channels joined and the
    setup problems already said."""

    def __init__(self, chat: Chat | None) -> None:
        self.chat = chat
        self._joined: set[str] = set()  # Slack channel IDs joined (or tried) by this process
        self._told: set[tuple[str, str]] = set()  # Slack setup problems already said

    async def post(self, channel: str, text: str, blocks: list[dict[str, Any]],
                   mark: Mark, *, since: datetime | None, notes: list[str],
                   thread_ts: str | None = None) -> PostedMessage:
        """Post a message, unless an earlier attempt whose answer was lost posted it
        already: then adopt that message, brought up to date (`domain.delivery`).
        `since`: where to look from (None: no earlier attempt, just post).

        A search Slack cannot answer for now (5xx, 429) retries the delivery; one it can
        never answer (a scope missing, a private channel the bot is not in) is said once
        in `notes` and the log, and the message is posted regardless: a possible second
        copy rather than none."""
        assert self.chat is not None
        if since is not None:
            found = await self._search(channel, mark, since, thread_ts, notes)
            if found is not None:
                log.info("%s message %s already in Slack (%s %s): adopted", mark.event_type,
                         dict(mark.payload), found.channel_id, found.ts)
                if blocks:  # it shows the state of its first attempt
                    await self.chat.update(found.channel_id, found.ts, text, blocks)
                return found
        try:
            posted = await self.chat.post(channel, text, blocks, thread_ts=thread_ts, mark=mark)
        except NotInChannel as exc:
            self._tell_once(("invite", channel), f"Slack: the bot cannot post in {channel} "
                            f"({exc}): invite it to the channel (/invite @oncall-bot); a "
                            "private channel needs an invite", notes=[])
            raise Undeliverable(f"{exc}: the bot is not in {channel}; invite it "
                                "(/invite @oncall-bot)") from None
        if thread_ts is None and posted.channel_id not in self._joined:
            await self._join(posted.channel_id, channel, notes)
        return posted

    async def upload(self, channel: str, chart: dict[str, Any], *,
                     since: datetime | None, notes: list[str]) -> None:
        """Draw a chart (`domain.charts` series) and share it, unless an earlier attempt
        already did: its file name is unique to the delivery and looked for in the
        channel's history first. Where the search cannot be made, the chart may be
        shared twice (at least once); see `post`."""
        assert self.chat is not None
        if since is not None:
            try:
                if await self.chat.find_upload(channel, chart["filename"], since=since):
                    log.info("chart %s already shared in %s: not uploaded again",
                             chart["filename"], channel)
                    return
            except MissingScope as exc:
                self.tell_missing_scope(exc, notes)
            except NotInChannel:
                pass  # not a member yet, so it shared nothing there
        try:
            content = await to_thread.run_sync(lambda: render_png(
                series_from_json(chart["series"]), title=chart["title"]))
        except (ChartsUnavailable, ValueError) as exc:
            raise Undeliverable(f"the chart cannot be drawn: {exc}") from None
        try:
            await self.chat.upload(channel, chart["filename"], chart["title"], content,
                                   comment=chart.get("comment") or "")
        except MissingScope as exc:
            self.tell_missing_scope(exc, notes)
            raise

    async def _search(self, channel: str, mark: Mark, since: datetime, thread_ts: str | None,
                      notes: list[str]) -> PostedMessage | None:
        """The message, if found; None also when the search cannot be made (said once)."""
        assert self.chat is not None
        for attempt in (1, 2):
            try:
                return await self.chat.find(channel, mark, since=since, thread_ts=thread_ts)
            except MissingScope as exc:
                self.tell_missing_scope(exc, notes)
                return None
            except NotInChannel as exc:  # join a public channel, then look again
                if attempt == 2 or exc.channel_id is None or not await self._join(
                        exc.channel_id, channel, notes):
                    self._tell_once(("invite", channel), f"Slack: the bot cannot read {channel} "
                                    "to look for a message it may have posted: invite it to the "
                                    "channel (/invite @oncall-bot)", notes=notes)
                    return None
        return None

    async def _join(self, channel_id: str, channel: str, notes: list[str]) -> bool:
        """Join a public channel once per process, so that its history can be read;
        False when the bot could not (not said again: the post worked)."""
        assert self.chat is not None
        self._joined.add(channel_id)
        try:
            return await self.chat.join(channel_id)
        except MissingScope as exc:
            self.tell_missing_scope(exc, notes)
        except (RetryLater, Undeliverable) as exc:
            log.warning("could not join Slack channel %s: %s", channel, exc)
            self._joined.discard(channel_id)  # try again with the next post
        return False

    def tell_missing_scope(self, exc: MissingScope, notes: list[str]) -> None:
        self._tell_once(("scope", exc.scope), f"Slack: the app lacks the {exc.scope} scope; "
                        "add it (see slack-app-manifest.yml) and reinstall the app", notes=notes)

    def _tell_once(self, key: tuple[str, str], text: str, *, notes: list[str]) -> None:
        """Say a Slack setup problem once per process: in the log, and in `notes` for the
        timeline of the incident at hand."""
        if key in self._told:
            return
        self._told.add(key)
        log.error("%s", text)
        notes.append(text)
