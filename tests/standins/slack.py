"""A stand-in for Slack's Web API (the chat.* methods the bot uses).

Point ``slack_sdk``'s ``AsyncWebClient(token=..., base_url=slack.base_url)`` at
it.  slack_sdk 3.48 sends ``chat.postMessage``/``update``/``postEphemeral`` as
JSON bodies, ``auth.test`` form-encoded (empty) and ``chat.getPermalink`` as a
GET with a query string; all three encodings are accepted for every method.

Errors follow Slack: HTTP 200 with ``{"ok": false, "error": ...}``.  Every such
answer is also appended to ``violations``.  Injected faults answer real HTTP
errors (429 with ``Retry-After`` and ``{"ok": false, "error": "ratelimited"}``).

State: ``messages[channel_id][ts]`` is the current version of each message
(keys ``channel, ts, text, blocks, attachments, thread_ts, user``).
"""

import hashlib
import json
import re

from ._server import Reply, Request, StandIn

CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{8,}$")
BOT_USER_ID = "U0STANDBOT"
KNOWN_BLOCKS = {"section", "header", "context", "actions", "divider",
                "rich_text", "image", "input"}
TEXT_TYPES = {"mrkdwn", "plain_text"}


class SlackStandIn(StandIn):
    """Slack Web API stand-in.

    ``base_url`` ends with ``/api/`` as slack_sdk requires.  Methods served:
    ``auth.test``, ``chat.postMessage``, ``chat.update``, ``chat.postEphemeral``,
    ``chat.getPermalink``; anything else answers ``unknown_method``.
    """

    def __init__(self, token: str = "xoxb-test"):
        super().__init__()
        self.token = token
        self.messages: dict[str, dict[str, dict]] = {}
        self.ephemeral: list[dict] = []
        self._ts_counter = 0

    @property
    def base_url(self) -> str:
        return f"{self.origin}/api/"

    # -- queries -------------------------------------------------------------
    @staticmethod
    def channel_id(channel: str) -> str:
        """The stable ID this stand-in gives a channel name (``#x`` or ``x``)."""
        if CHANNEL_ID.match(channel):
            return channel
        digest = hashlib.sha1(channel.lstrip("#").lower().encode()).hexdigest()
        return "C" + digest[:10].upper()

    def calls(self, method: str | None = None) -> list[Request]:
        """Normally answered requests, optionally only those to ``method``."""
        with self.lock:
            return [r for r in self.requests if method in (None, r.name)]

    def thread(self, channel_id: str, ts: str) -> list[dict]:
        """Replies in the thread rooted at ``ts``, oldest first."""
        with self.lock:
            msgs = self.messages.get(channel_id, {}).values()
            return sorted((m for m in msgs if m.get("thread_ts") == ts),
                          key=lambda m: float(m["ts"]))

    def top_level_messages(self, channel_id: str | None = None) -> list[dict]:
        """Messages that are not thread replies, oldest first."""
        with self.lock:
            return sorted(
                (m for ch, msgs in self.messages.items() for m in msgs.values()
                 if channel_id in (None, ch) and not m.get("thread_ts")),
                key=lambda m: float(m["ts"]),
            )

    def fail(self, method: str | None = None, status: int = 500, times: int = 1,
             retry_after: int | None = None, hang: float | None = None):
        """Make the next ``times`` calls (to ``method``, or any) fail.

        They answer HTTP ``status`` (429 → ``ratelimited`` body), with a
        ``Retry-After`` header when ``retry_after`` is given.  With ``hang``
        they instead sleep ``hang`` seconds and then answer normally, like a
        slow server; the call still takes effect, as a timed-out one may.
        """
        self._add_fault(method, status, times, retry_after, hang)

    # -- StandIn hooks -------------------------------------------------------
    def route_name(self, http_method, path):
        return path.removeprefix("/api/")

    def fault_reply(self, fault, req):
        error = {429: "ratelimited", 503: "service_unavailable"}.get(
            fault.status, "internal_error")
        return Reply(fault.status, {"ok": False, "error": error})

    def route(self, req: Request) -> Reply:
        args = {k: v[-1] for k, v in req.query.items()}
        if req.raw and req.body is None:
            return self._error(req, "invalid_json"
                               if "json" in req.headers.get("content-type", "")
                               else "invalid_form_data")
        args.update(req.body or {})
        auth = req.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else args.get("token")
        if not token:
            return self._error(req, "not_authed")
        if token != self.token:
            return self._error(req, "invalid_auth")
        handler = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.postEphemeral": self._post_ephemeral,
            "chat.getPermalink": self._get_permalink,
        }.get(req.name)
        if handler is None:
            return self._error(req, "unknown_method")
        return handler(req, args)

    # -- methods -------------------------------------------------------------
    def _error(self, req, error, details=()):
        self.violation(req, error + "".join(f"; {d}" for d in details))
        body = {"ok": False, "error": error}
        if details:
            body["errors"] = list(details)
        return Reply(200, body)

    def _auth_test(self, req, args):
        return Reply(200, {"ok": True, "url": "https://standin.slack.com/",
                           "team": "Stand-in", "user": "oncall-bot",
                           "team_id": "T0STANDIN", "user_id": BOT_USER_ID,
                           "bot_id": "B0STANDBOT", "is_enterprise_install": False})

    def _content(self, req, args):
        """Validated (text, blocks, attachments) or an error Reply."""
        blocks, attachments = args.get("blocks"), args.get("attachments")
        try:  # form-encoded requests carry these as JSON strings
            blocks = json.loads(blocks) if isinstance(blocks, str) else blocks
            attachments = (json.loads(attachments) if isinstance(attachments, str)
                           else attachments)
        except ValueError:
            return self._error(req, "invalid_blocks", ["blocks is not valid JSON"])
        if blocks is not None:
            problems = block_problems(blocks)
            if problems:
                return self._error(req, "invalid_blocks", problems)
        if not (args.get("text") or blocks or attachments):
            return self._error(req, "no_text")
        return args.get("text"), blocks, attachments

    def _post_message(self, req, args):
        if not args.get("channel"):
            return self._error(req, "channel_not_found")
        channel = self.channel_id(args["channel"])
        content = self._content(req, args)
        if isinstance(content, Reply):
            return content
        thread_ts = args.get("thread_ts") or None
        if thread_ts is not None:
            parent = self.messages.get(channel, {}).get(str(thread_ts))
            if parent is None:
                return self._error(req, "thread_not_found")
            thread_ts = parent.get("thread_ts") or parent["ts"]
        text, blocks, attachments = content
        msg = {"type": "message", "channel": channel, "ts": self._next_ts(),
               "user": BOT_USER_ID, "text": text or "", "blocks": blocks,
               "attachments": attachments, "thread_ts": thread_ts}
        self.messages.setdefault(channel, {})[msg["ts"]] = msg
        return Reply(200, {"ok": True, "channel": channel, "ts": msg["ts"],
                           "message": _public(msg)})

    def _update(self, req, args):
        channel, ts = args.get("channel", ""), str(args.get("ts", ""))
        if channel not in self.messages and not CHANNEL_ID.match(channel):
            return self._error(req, "channel_not_found")  # names are not accepted
        msg = self.messages.get(channel, {}).get(ts)
        if msg is None:
            return self._error(req, "message_not_found")
        content = self._content(req, args)
        if isinstance(content, Reply):
            return content
        text, blocks, attachments = content
        msg.update(text=text or "", blocks=blocks, attachments=attachments)
        return Reply(200, {"ok": True, "channel": channel, "ts": ts,
                           "text": msg["text"], "message": _public(msg)})

    def _post_ephemeral(self, req, args):
        if not args.get("channel"):
            return self._error(req, "channel_not_found")
        if not args.get("user"):
            return self._error(req, "user_not_in_channel")
        content = self._content(req, args)
        if isinstance(content, Reply):
            return content
        text, blocks, attachments = content
        msg = {"channel": self.channel_id(args["channel"]), "user": args["user"],
               "ts": self._next_ts(), "text": text or "", "blocks": blocks,
               "attachments": attachments, "thread_ts": args.get("thread_ts")}
        self.ephemeral.append(msg)
        return Reply(200, {"ok": True, "message_ts": msg["ts"]})

    def _get_permalink(self, req, args):
        channel, ts = args.get("channel", ""), str(args.get("message_ts", ""))
        if ts not in self.messages.get(channel, {}):
            return self._error(req, "message_not_found")
        return Reply(200, {"ok": True, "channel": channel, "permalink":
                           f"https://standin.slack.com/archives/{channel}/p{ts.replace('.', '')}"})

    def _next_ts(self) -> str:
        """Unique, increasing message timestamps: 1700000000.000100, .000200, …"""
        self._ts_counter += 1
        micros = 1_700_000_000_000_000 + 100 * self._ts_counter
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


def _public(msg: dict) -> dict:
    """The message object as Slack returns it (no null fields)."""
    return {k: v for k, v in msg.items() if v is not None and k != "channel"}


# -- Block Kit ----------------------------------------------------------------
def block_problems(blocks) -> list[str]:
    """Minimal Block Kit validation; returns problems (``[]`` when valid)."""
    if not isinstance(blocks, list):
        return ["blocks must be an array"]
    problems = [] if len(blocks) <= 50 else ["more than 50 blocks"]
    block_ids = set()
    for i, block in enumerate(blocks):
        where = f"[json-pointer:/blocks/{i}]"
        if not isinstance(block, dict) or block.get("type") not in KNOWN_BLOCKS:
            problems.append(f"unknown or missing block type {where}")
            continue
        block_id = block.get("block_id")
        if block_id is not None:
            if not isinstance(block_id, str) or not 0 < len(block_id) <= 255:
                problems.append(f"block_id must be 1-255 chars {where}")
            elif block_id in block_ids:
                problems.append(f"duplicate block_id {block_id!r} {where}")
            block_ids.add(block_id)
        problems += [f"{p} {where}" for p in _block_problems(block)]
    return problems


def _text_problems(obj, name, max_len, plain_only=False) -> list[str]:
    types = {"plain_text"} if plain_only else TEXT_TYPES
    if not isinstance(obj, dict) or obj.get("type") not in types:
        return [f"{name} must be a {' or '.join(sorted(types))} text object"]
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        return [f"{name}.text must be a non-empty string"]
    if len(text) > max_len:
        return [f"{name}.text longer than {max_len} chars"]
    return []


def _block_problems(block: dict) -> list[str]:
    kind = block["type"]
    if kind == "section":
        if "text" not in block and "fields" not in block:
            return ["section needs text or fields"]
        problems = (_text_problems(block["text"], "text", 3000)
                    if "text" in block else [])
        fields = block.get("fields", [])
        if not isinstance(fields, list) or len(fields) > 10:
            return problems + ["fields must be an array of at most 10"]
        for j, f in enumerate(fields):
            problems += _text_problems(f, f"fields[{j}]", 2000)
        return problems
    if kind == "header":
        return _text_problems(block.get("text"), "text", 150, plain_only=True)
    if kind == "context":
        elements = block.get("elements")
        if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
            return ["context elements must be an array of 1-10"]
        return [p for j, e in enumerate(elements)
                if not (isinstance(e, dict) and e.get("type") == "image")
                for p in _text_problems(e, f"elements[{j}]", 3000)]
    if kind == "actions":
        elements = block.get("elements")
        if not isinstance(elements, list) or not 1 <= len(elements) <= 25:
            return ["actions elements must be an array of 1-25"]
        problems, action_ids = [], set()
        for j, e in enumerate(elements):
            if not isinstance(e, dict) or "type" not in e:
                problems.append(f"elements[{j}] needs a type")
                continue
            action_id = e.get("action_id")
            if action_id is not None:
                if not isinstance(action_id, str) or not 0 < len(action_id) <= 255:
                    problems.append(f"elements[{j}].action_id must be 1-255 chars")
                elif action_id in action_ids:
                    problems.append(f"duplicate action_id {action_id!r}")
                action_ids.add(action_id)
            if e["type"] == "button":
                problems += _text_problems(e.get("text"), f"elements[{j}].text",
                                           75, plain_only=True)
                if len(str(e.get("value", ""))) > 2000:
                    problems.append(f"elements[{j}].value longer than 2000 chars")
                if e.get("style") not in (None, "primary", "danger"):
                    problems.append(f"elements[{j}].style must be primary or danger")
        return problems
    if kind == "image":
        if not (block.get("image_url") or block.get("slack_file")) or not block.get("alt_text"):
            return ["image needs image_url (or slack_file) and alt_text"]
    if kind == "input":
        return (_text_problems(block.get("label"), "label", 2000, plain_only=True)
                + ([] if isinstance(block.get("element"), dict) else ["input needs an element"]))
    if kind == "rich_text" and not isinstance(block.get("elements"), list):
        return ["rich_text needs elements"]
    return []
