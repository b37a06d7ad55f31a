"""A stand-in for Slack's Web API (the methods the bot uses) and response_urls.

Point ``slack_sdk``'s ``AsyncWebClient(token=..., base_url=slack.base_url)`` at
it.  slack_sdk 3.48 sends ``chat.postMessage``/``update``/``postEphemeral`` as
JSON bodies, ``auth.test`` form-encoded (empty) and ``chat.getPermalink`` as a
GET with a query string; all three encodings are accepted for every method.

Errors follow Slack: HTTP 200 with ``{"ok": false, "error": ...}``.  Every such
answer is also appended to ``violations``.  Injected faults answer real HTTP
errors (429 with ``Retry-After`` and ``{"ok": false, "error": "ratelimited"}``).

State: ``messages[channel_id][ts]`` is the current version of each message
(keys ``channel, ts, text, blocks, attachments, thread_ts, user``);
``views`` lists the modals opened (``{"trigger_id", "view"}``); users and
user groups are registered with :meth:`SlackStandIn.add_user` /
:meth:`SlackStandIn.add_usergroup`.

Channels: ``channels[id]`` (``{"id", "name", "is_private", "members"}``).
Public channels come into being when first named; :meth:`SlackStandIn.add_channel`
makes a private one.  As in Slack, the bot may post in any public channel
(``chat:write.public``) but reads its history only as a member
(``conversations.join``); a private channel it was not invited to is
``channel_not_found`` to every method.  Messages keep ``metadata``
(``{"event_type", "event_payload"}``) and ``conversations.history`` /
``.replies`` return it only with ``include_all_metadata``.  ``scopes`` is the
set the token was granted (all by default): a method whose scope is missing
answers ``missing_scope`` with ``needed`` and ``provided``, as Slack does.
:meth:`SlackStandIn.stall` makes a call take effect but hold its answer back
(a post whose outcome the bot never learns).

Look-ups that merely miss (``user_not_found`` for a well-formed but unknown
ID, ``users_not_found``, ``no_such_subteam``) are legitimate answers, not
violations; a malformed request (missing argument, a name where an ID is
required, an invalid view, a reused trigger_id) is.

Files (docs.slack.dev, files.getUploadURLExternal and files.completeUploadExternal):
``files.getUploadURLExternal`` (``filename``, ``length``; scope ``files:write``) answers
``upload_url`` and ``file_id``; the upload is a POST of the raw bytes (or a multipart
form with the file) to ``upload_url``, without a token, and must carry ``length`` bytes;
``files.completeUploadExternal`` (``files=[{"id", "title"}]`` as JSON, ``channel_id``,
``initial_comment``, ``thread_ts``) shares the uploaded files: a message with ``files``
in the channel, whose members only may share there (``not_in_channel`` otherwise).
:meth:`SlackStandIn.uploads` gives what was shared, with its bytes.

``response_url``: ``POST {origin}/response/<name>`` takes a JSON body like
Slack's response_url payloads and answers HTTP 200 ``ok`` as plain text (errors:
HTTP 400 and a plain-text code such as ``no_text``, recorded as violations).
Accepted bodies are only recorded (:meth:`SlackStandIn.responses`); they do
not change ``messages``.
"""

import base64
import email.parser
import email.policy
import hashlib
import itertools
import json
import re
import threading
import time
from urllib.parse import parse_qs, urlsplit

from ._server import Reply, Request, StandIn, _parse_body

CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{8,}$")
BOT_USER_ID = "U0STANDBOT"
TEAM_ID = "T0STANDIN"
APP_ID = "A0STANDAPP"
USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
USERGROUP_ID = re.compile(r"^S[A-Z0-9]{2,}$")
RESPONSE_PATH = "/response/"
UPLOAD_PATH = "/upload/v1/"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
KNOWN_BLOCKS = {"section", "header", "context", "actions", "divider",
                "rich_text", "image", "input"}
TEXT_TYPES = {"mrkdwn", "plain_text"}
# chat.postMessage: "Slack will truncate messages containing more than 40,000
# characters"; its documented error for such text is msg_too_long.
MAX_TEXT = 40_000


class SlackStandIn(StandIn):
    """Slack Web API stand-in.

    ``base_url`` ends with ``/api/`` as slack_sdk requires.  Methods served:
    ``auth.test``, ``chat.postMessage``, ``chat.update``, ``chat.postEphemeral``,
    ``chat.getPermalink``, ``users.info``, ``users.lookupByEmail``,
    ``usergroups.users.list``, ``views.open``, ``conversations.history``,
    ``conversations.replies``, ``conversations.join``, ``conversations.list``,
    ``files.getUploadURLExternal``, ``files.completeUploadExternal`` (and the upload
    URLs the first one hands out); anything else answers
    ``unknown_method``.  ``response_url(name)`` gives a response_url served
    by the same server (recorded under the name ``response_url``).
    """

    def __init__(self, token: str = "xoxb-test"):
        super().__init__()
        self.token = token
        self.messages: dict[str, dict[str, dict]] = {}
        self.ephemeral: list[dict] = []
        self.views: list[dict] = []  # {"trigger_id", "view"} per views.open
        self.users: dict[str, dict] = {}  # id -> user object (as users.info returns)
        self.usergroups: dict[str, dict] = {}  # id -> {"id", "handle", "users"}
        self._responses: list[tuple[str, dict]] = []  # (name, body) accepted
        self._ts_counter = 0
        self._view_ids = itertools.count(1)
        self.channels: dict[str, dict] = {}  # id -> {"id", "name", "is_private", "members"}
        self.files: dict[str, dict] = {}  # file_id -> {"id", "name", "length", "title",
        # "alt_txt", "content" (bytes once uploaded), "shares": [{"channel", "ts", ...}]}
        self._file_ids = itertools.count(1)
        self.scopes: set[str] = set(SCOPES.values()) | {"chat:write", "chat:write.public",
                                                          "files:write",
                                                          "groups:history", "groups:read"}
        self._stalls: list[list] = []  # [method, times left]
        self._released = threading.Event()
        self._local = threading.local()

    @property
    def base_url(self) -> str:
        return f"{self.origin}/api/"

    def response_url(self, name: str = "x") -> str:
        """A response_url served here; POSTs to it are kept by :meth:`responses`."""
        return f"{self.origin}{RESPONSE_PATH}{name}"

    # -- configuration -------------------------------------------------------
    def add_user(self, user_id: str, name: str, email: str, real_name: str | None = None,
                 tz: str = "Europe/London", display_name: str | None = None) -> dict:
        """Register a workspace member for ``users.info`` / ``users.lookupByEmail``.

        ``name`` is the Slack username (handle); ``real_name`` defaults to it
        and ``display_name`` to ``real_name``.  Returns the user object.
        """
        if not USER_ID.match(user_id):
            raise ValueError(f"Slack user IDs look like U0123ABCD, not {user_id!r}")
        real_name = real_name or name
        display_name = real_name if display_name is None else display_name
        user = {"id": user_id, "team_id": TEAM_ID, "name": name, "deleted": False,
                "real_name": real_name, "tz": tz, "is_bot": False, "is_admin": False,
                "profile": {"email": email, "real_name": real_name,
                            "display_name": display_name,
                            "real_name_normalized": real_name,
                            "display_name_normalized": display_name,
                            "team": TEAM_ID}}
        with self.lock:
            self.users[user_id] = user
        return json.loads(json.dumps(user))

    def add_usergroup(self, group_id: str, handle: str, user_ids: list[str]) -> dict:
        """Register a user group (``S…`` ID, ``handle`` without ``@``)."""
        if not USERGROUP_ID.match(group_id):
            raise ValueError(f"Slack user group IDs look like S0123ABCD, not {group_id!r}")
        group = {"id": group_id, "handle": handle.lstrip("@"), "users": list(user_ids)}
        with self.lock:
            self.usergroups[group_id] = group
        return dict(group, users=list(user_ids))

    def add_channel(self, name: str, *, private: bool = False,
                    members: tuple[str, ...] = ()) -> str:
        """Register a channel (a private one's ID starts with G); returns its ID."""
        channel_id = self.channel_id(name)
        if private:
            channel_id = "G" + channel_id[1:]
        with self.lock:
            self.channels[channel_id] = {"id": channel_id, "name": name.lstrip("#"),
                                         "is_private": private, "members": set(members)}
        return channel_id

    def stall(self, method: str, times: int = 1, threaded: bool | None = None):
        """The next ``times`` calls to ``method`` take effect, but their answers wait
        until :meth:`release` (or 60 s): a client killed meanwhile never learns them.
        ``threaded``: only thread replies (True) or only top-level posts (False)."""
        with self.lock:
            self._released.clear()
            self._stalls.append([method, times, threaded])

    def release(self):
        self._released.set()

    def uploads(self, channel_id: str | None = None) -> list[dict]:
        """Files shared (by files.completeUploadExternal), optionally only in
        ``channel_id``: ``{"id", "name", "title", "content", "channel", "ts",
        "initial_comment", "thread_ts"}``, in the order shared."""
        with self.lock:
            shared = [{"id": f["id"], "name": f["name"], "title": f["title"],
                       "content": f["content"], **share}
                      for f in self.files.values() for share in f["shares"]]
        return sorted((u for u in shared if channel_id in (None, u["channel"])),
                      key=lambda u: float(u["ts"]))

    def responses(self, name: str | None = None) -> list[dict]:
        """JSON bodies accepted at response_urls (optionally only ``name``'s), in order."""
        with self.lock:
            return [json.loads(json.dumps(body)) for n, body in self._responses
                    if name in (None, n)]

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
        if path.startswith(RESPONSE_PATH):
            return "response_url"
        if path.startswith(UPLOAD_PATH):
            return "upload_url"
        return path.removeprefix("/api/")

    def fault_reply(self, fault, req):
        error = {429: "ratelimited", 503: "service_unavailable"}.get(
            fault.status, "internal_error")
        return Reply(fault.status, {"ok": False, "error": error})

    def route(self, req: Request) -> Reply:
        if req.name == "upload_url":  # pre-signed: no token, the body is the file
            return self._upload(req)
        args = {k: v[-1] for k, v in req.query.items()}
        if req.raw and req.body is None:
            return self._error(req, "invalid_json"
                               if "json" in req.headers.get("content-type", "")
                               else "invalid_form_data")
        args.update(req.body or {})
        self._local.req = req  # for a stall: its answer is held back on this thread
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
            "users.info": self._users_info,
            "users.lookupByEmail": self._users_lookup_by_email,
            "usergroups.users.list": self._usergroups_users_list,
            "views.open": self._views_open,
            "conversations.history": self._conversations_history,
            "conversations.replies": self._conversations_replies,
            "conversations.join": self._conversations_join,
            "conversations.list": self._conversations_list,
            "files.getUploadURLExternal": self._get_upload_url,
            "files.completeUploadExternal": self._complete_upload,
        }.get(req.name)
        if handler is None:
            return self._error(req, "unknown_method")
        return handler(req, args)

    # -- methods -------------------------------------------------------------
    def _error(self, req, error, details=(), violation=True):
        """Slack's error answer; recorded as a violation unless it is a mere miss."""
        if violation:
            self.violation(req, error + "".join(f"; {d}" for d in details))
        body = {"ok": False, "error": error}
        if details:
            body["errors"] = list(details)
        return Reply(200, body)

    def _invalid_arguments(self, req, messages):
        """``invalid_arguments`` with ``response_metadata.messages``, as views.* answer."""
        self.violation(req, "invalid_arguments" + "".join(f"; {m}" for m in messages))
        return Reply(200, {"ok": False, "error": "invalid_arguments",
                           "response_metadata": {"messages": [f"[ERROR] {m}"
                                                              for m in messages]}})

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
        if len(str(args.get("text") or "")) > MAX_TEXT:
            return self._error(req, "msg_too_long", [f"text longer than {MAX_TEXT} chars"])
        return args.get("text"), blocks, attachments

    def _post_message(self, req, args):
        if not args.get("channel"):
            return self._error(req, "channel_not_found")
        refused = self._missing_scope(req, "chat:write")
        if refused is not None:
            return refused
        known = self._channel(args["channel"])
        if known is not None and known["is_private"] and BOT_USER_ID not in known["members"]:
            return self._error(req, "channel_not_found", violation=False)
        channel = known["id"] if known is not None else self.channel_id(args["channel"])
        content = self._content(req, args)
        if isinstance(content, Reply):
            return content
        metadata = args.get("metadata")
        if isinstance(metadata, str):  # form-encoded: a JSON string
            try:
                metadata = json.loads(metadata)
            except ValueError:
                return self._error(req, "invalid_metadata_format", ["metadata is not JSON"])
        if metadata is not None:
            problems = metadata_problems(metadata)
            if problems:
                return self._error(req, "invalid_metadata_format", problems)
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
        if metadata is not None:
            msg["metadata"] = {"event_type": metadata["event_type"],
                               "event_payload": metadata.get("event_payload") or {}}
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

    def _users_info(self, req, args):
        user_id = args.get("user")
        if not user_id:
            return self._error(req, "invalid_arguments", ["user is required"])
        if not USER_ID.match(str(user_id)):  # a name or email where an ID belongs
            return self._error(req, "user_not_found", [f"{user_id!r} is not a user ID"])
        user = self.users.get(user_id)
        if user is None:
            return self._error(req, "user_not_found", violation=False)
        return Reply(200, {"ok": True, "user": user})

    def _users_lookup_by_email(self, req, args):
        email = args.get("email")
        if not email:
            return self._error(req, "invalid_arguments", ["email is required"])
        if "@" not in str(email):
            return self._error(req, "invalid_email", [f"{email!r} is not an email"])
        for user in self.users.values():
            if user["profile"]["email"].lower() == str(email).lower():
                return Reply(200, {"ok": True, "user": user})
        return self._error(req, "users_not_found", violation=False)

    def _usergroups_users_list(self, req, args):
        group_id = args.get("usergroup")
        if not group_id:
            return self._error(req, "invalid_arguments", ["usergroup is required"])
        if not USERGROUP_ID.match(str(group_id)):  # e.g. the @handle instead of the ID
            return self._error(req, "no_such_subteam",
                               [f"{group_id!r} is not a user group ID"])
        group = self.usergroups.get(group_id)
        if group is None:
            return self._error(req, "no_such_subteam", violation=False)
        return Reply(200, {"ok": True, "users": list(group["users"])})

    def _views_open(self, req, args):
        trigger_id = args.get("trigger_id") or args.get("interactivity_pointer")
        view = args.get("view")
        if isinstance(view, str):  # form-encoded: view is a JSON string
            try:
                view = json.loads(view)
            except ValueError:
                return self._invalid_arguments(req, ["view is not valid JSON "
                                                     "[json-pointer:/view]"])
        if not trigger_id:
            return self._invalid_arguments(req, ["missing required field: trigger_id"])
        if not isinstance(view, dict):
            return self._invalid_arguments(req, ["missing required field: view"])
        problems = view_problems(view)
        if problems:
            return self._invalid_arguments(req, problems)
        if any(v["trigger_id"] == trigger_id for v in self.views):
            return self._error(req, "exchanged_trigger_id",
                               ["each trigger_id opens at most one view"])
        view_id = f"V{next(self._view_ids):010d}"
        opened = {
            "id": view_id, "team_id": TEAM_ID, "type": "modal",
            "blocks": view.get("blocks", []),
            "private_metadata": view.get("private_metadata", ""),
            "callback_id": view.get("callback_id", ""),
            "state": {"values": {}},
            "hash": hashlib.sha1(f"{view_id}:{time.time()}".encode()).hexdigest()[:20],
            "title": view["title"], "close": view.get("close"),
            "submit": view.get("submit"),
            "clear_on_close": bool(view.get("clear_on_close", False)),
            "notify_on_close": bool(view.get("notify_on_close", False)),
            "previous_view_id": None, "root_view_id": view_id, "app_id": APP_ID,
            "external_id": view.get("external_id", ""),
            "app_installed_team_id": TEAM_ID, "bot_id": "B0STANDBOT",
        }
        self.views.append({"trigger_id": trigger_id, "view": opened})
        return Reply(200, {"ok": True, "view": opened})

    # -- files ----------------------------------------------------------------
    def _get_upload_url(self, req, args):
        refused = self._missing_scope(req, "files:write")
        if refused is not None:
            return refused
        filename = args.get("filename")
        try:
            length = int(args.get("length") or 0)
        except (TypeError, ValueError):
            return self._error(req, "invalid_arguments", ["length must be an integer"])
        if not isinstance(filename, str) or not filename:
            return self._error(req, "invalid_arguments", ["filename is required"])
        if length <= 0:
            return self._error(req, "missing_argument", ["length must be above 0"])
        if len(str(args.get("alt_txt") or "")) > 1000:
            return self._error(req, "alt_txt_too_large")
        file_id = f"F{next(self._file_ids):010d}"
        self.files[file_id] = {"id": file_id, "name": filename, "length": length,
                               "alt_txt": args.get("alt_txt"), "title": None,
                               "content": None, "shares": []}
        return Reply(200, {"ok": True, "upload_url": f"{self.origin}{UPLOAD_PATH}{file_id}",
                           "file_id": file_id})

    def _upload(self, req):
        file = self.files.get(req.path[len(UPLOAD_PATH):])
        if req.http_method != "POST" or file is None:
            self.violation(req, "uploads are a POST to an upload_url that was handed out")
            return Reply(404, "not found")
        content = req.raw
        if req.headers.get("content-type", "").startswith("multipart/form-data"):
            message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                b"Content-Type: " + req.headers["content-type"].encode() + b"\r\n\r\n" + req.raw)
            parts = [p for p in message.iter_parts() if p.get_filename() is not None]
            content = parts[0].get_content() if parts else b""
        if len(content) != file["length"]:
            self.violation(req, f"uploaded {len(content)} bytes, announced {file['length']}")
            return Reply(400, "length mismatch")
        file["content"] = bytes(content)
        return Reply(200, f"OK - {len(content)}")

    def _complete_upload(self, req, args):
        refused = self._missing_scope(req, "files:write")
        if refused is not None:
            return refused
        files = args.get("files")
        try:
            files = json.loads(files) if isinstance(files, str) else files
        except ValueError:
            return self._error(req, "invalid_arguments", ["files is not JSON"])
        if not isinstance(files, list) or not files or not all(
                isinstance(f, dict) and isinstance(f.get("id"), str) for f in files):
            return self._error(req, "invalid_arguments", ['files must be [{"id", "title"}]'])
        known = [self.files.get(f["id"]) for f in files]
        if any(f is None for f in known):
            return self._error(req, "file_not_found")
        if any(f["content"] is None for f in known):
            return self._error(req, "invalid_arguments", ["a file was never uploaded"])
        ref = args.get("channel_id") or ""
        if not ref:
            for f, given in zip(known, files):
                f["title"] = given.get("title") or f["name"]
            return Reply(200, {"ok": True, "files": [{"id": f["id"], "title": f["title"]}
                                                     for f in known]})
        if not CHANNEL_ID.match(ref):
            return self._error(req, "channel_not_found", [f"{ref!r} is not a channel ID"])
        channel = self._channel(ref)
        if channel is None or (channel["is_private"] and BOT_USER_ID not in channel["members"]):
            return self._error(req, "channel_not_found", violation=False)
        if BOT_USER_ID not in channel["members"]:
            return self._error(req, "not_in_channel", violation=False)
        thread_ts = args.get("thread_ts") or None
        for f, given in zip(known, files):
            f["title"] = given.get("title") or f["name"]
        msg = {"type": "message", "channel": channel["id"], "ts": self._next_ts(),
               "user": BOT_USER_ID, "text": args.get("initial_comment") or "",
               "blocks": None, "attachments": None, "thread_ts": thread_ts, "upload": True,
               "files": [{"id": f["id"], "name": f["name"], "title": f["title"],
                          "mimetype": "image/png" if f["content"].startswith(PNG_SIGNATURE)
                          else "application/octet-stream"} for f in known]}
        self.messages.setdefault(channel["id"], {})[msg["ts"]] = msg
        for f in known:
            f["shares"].append({"channel": channel["id"], "ts": msg["ts"],
                                "initial_comment": msg["text"], "thread_ts": thread_ts})
        return Reply(200, {"ok": True, "files": [{"id": f["id"], "title": f["title"]}
                                                 for f in known]})

    # -- response_url --------------------------------------------------------
    def _answer(self, h):
        """response_url POSTs answer plain text; everything else as the base class."""
        if not urlsplit(h.path).path.startswith(RESPONSE_PATH):
            if self._stalls:
                answer = h.send_response

                def stalled(*args, **kwargs):  # after the call took effect, before its answer
                    req = self._local.__dict__.pop("req", None)
                    if req is not None and self._take_stall(req):
                        self._released.wait(60)
                    answer(*args, **kwargs)

                h.send_response = stalled
            return super()._answer(h)
        url = urlsplit(h.path)
        raw = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        headers = {k.lower(): v for k, v in h.headers.items()}
        req = Request(name=self.route_name(h.command, url.path), http_method=h.command,
                      path=url.path, query=parse_qs(url.query, keep_blank_values=True),
                      headers=headers, raw=raw,
                      body=_parse_body(headers.get("content-type", ""), raw))
        fault = self._take_fault(req.name)
        if fault is not None and fault.hang is not None:
            time.sleep(fault.hang)
            fault = None
        with self.lock:
            if fault is not None:
                status, text = fault.status, self.fault_reply(fault, req).body["error"]
            else:
                try:
                    status, text = self._response_url(req)
                except Exception as exc:  # a stand-in bug: make it visible
                    self.violation(req, f"stand-in crashed: {exc!r}")
                    status, text = 500, "stand-in crashed"
            req.status, req.response = status, text
            (self.failed_requests if fault else self.requests).append(req)
        payload = text.encode()
        try:
            h.send_response(status)
            h.send_header("Content-Type", "text/plain; charset=utf-8")
            h.send_header("Content-Length", str(len(payload)))
            if fault is not None and fault.retry_after is not None:
                h.send_header("Retry-After", str(fault.retry_after))
            h.end_headers()
            h.wfile.write(payload)
        except OSError:
            pass

    def _response_url(self, req: Request) -> tuple[int, str]:
        """Validate and record one response_url POST: (HTTP status, text)."""
        def reject(status, error, detail):
            self.violation(req, f"{error}; {detail}")
            return status, error

        if req.http_method != "POST":
            return reject(405, "invalid_method", "response_urls take POST only")
        if not req.headers.get("content-type", "").startswith("application/json"):
            return reject(400, "invalid_payload", "Content-Type must be application/json")
        body = req.body
        if not isinstance(body, dict):
            return reject(400, "invalid_payload", "body must be a JSON object")
        if body.get("response_type", "ephemeral") not in ("ephemeral", "in_channel"):
            return reject(400, "invalid_payload",
                          f"response_type must be ephemeral or in_channel, "
                          f"got {body['response_type']!r}")
        for flag in ("replace_original", "delete_original"):
            if flag in body and not isinstance(body[flag], bool):
                return reject(400, "invalid_payload", f"{flag} must be a boolean")
        blocks = body.get("blocks")
        if blocks is not None:
            problems = block_problems(blocks)
            if problems:
                return reject(400, "invalid_blocks", "; ".join(problems))
        if not (body.get("text") or blocks or body.get("attachments")
                or body.get("delete_original")):
            return reject(400, "no_text", "text, blocks or delete_original is required")
        if len(str(body.get("text") or "")) > MAX_TEXT:
            return reject(400, "msg_too_long", f"text longer than {MAX_TEXT} chars")
        self._responses.append((req.path[len(RESPONSE_PATH):], body))
        return 200, "ok"

    def _take_stall(self, req) -> bool:
        with self.lock:
            threaded = bool((req.body or {}).get("thread_ts")) if isinstance(req.body,
                                                                          dict) else False
            for stall in self._stalls:
                if (stall[0] == req.name and isinstance(req.response, dict)
                        and req.response.get("ok") and stall[2] in (None, threaded)):
                    stall[1] -= 1
                    if stall[1] <= 0:
                        self._stalls.remove(stall)
                    return True
        return False

    # -- channels, membership, history ----------------------------------------
    def _channel(self, ref: str, *, create: bool = True) -> dict | None:
        """The channel an ID or name refers to; public channels come into being when named."""
        channel_id = self.channel_id(ref) if ref else ""
        found = self.channels.get(channel_id) or next(
            (c for c in self.channels.values() if c["name"] == ref.lstrip("#")), None)
        if found is None and create and ref and not CHANNEL_ID.match(ref):
            found = self.channels[channel_id] = {"id": channel_id, "name": ref.lstrip("#"),
                                                 "is_private": False, "members": set()}
        if found is None and create and CHANNEL_ID.match(ref or "") and ref.startswith("C"):
            found = self.channels[ref] = {"id": ref, "name": ref.lower(), "is_private": False,
                                          "members": set()}
        return found

    def _missing_scope(self, req, needed: str):
        """Slack's answer to a call whose token lacks ``needed`` (not a violation: a setup
        problem the bot must report, not a malformed call)."""
        if needed in self.scopes:
            return None
        return Reply(200, {"ok": False, "error": "missing_scope", "needed": needed,
                           "provided": ",".join(sorted(self.scopes))})

    def _readable(self, req, args):
        """(channel, None) when the bot may read the channel's messages, else (None, Reply)."""
        ref = args.get("channel") or ""
        if not CHANNEL_ID.match(ref):  # history takes IDs only
            return None, self._error(req, "channel_not_found", [f"{ref!r} is not a channel ID"])
        channel = self._channel(ref)
        visible = channel is not None and (not channel["is_private"]
                                           or BOT_USER_ID in channel["members"])
        if not visible:
            return None, self._error(req, "channel_not_found", violation=False)
        scope = "groups:history" if channel["is_private"] else "channels:history"
        refused = self._missing_scope(req, scope)
        if refused is not None:
            return None, refused
        if BOT_USER_ID not in channel["members"]:
            return None, self._error(req, "not_in_channel", violation=False)
        return channel, None

    def _history_page(self, req, args, messages):
        """Filter by oldest/latest (exclusive unless inclusive), page by cursor and limit."""
        try:
            oldest = float(args.get("oldest") or 0)
            latest = float(args["latest"]) if args.get("latest") else float("inf")
            limit = int(args.get("limit") or 100)
            offset = int(base64.b64decode(args["cursor"]).decode().removeprefix("next_ts:")
                         ) if args.get("cursor") else 0
        except (ValueError, KeyError):
            return self._error(req, "invalid_arguments",
                               ["oldest, latest, limit and cursor must be well-formed"])
        if not 1 <= limit <= 999:
            return self._error(req, "invalid_limit", [f"limit {limit} is not 1-999"])
        inclusive = _truthy(args.get("inclusive"))
        kept = [m for m in messages
                if (oldest < float(m["ts"]) or (inclusive and oldest == float(m["ts"])))
                and (float(m["ts"]) < latest or (inclusive and float(m["ts"]) == latest))]
        page = kept[offset:offset + limit]
        more = offset + limit < len(kept)
        metadata = _truthy(args.get("include_all_metadata"))
        body = {"ok": True, "messages": [_listed(m, metadata) for m in page], "has_more": more,
                "response_metadata": {"next_cursor": base64.b64encode(
                    f"next_ts:{offset + limit}".encode()).decode() if more else ""}}
        return Reply(200, body)

    def _conversations_history(self, req, args):
        channel, refused = self._readable(req, args)
        if refused is not None:
            return refused
        messages = sorted((m for m in self.messages.get(channel["id"], {}).values()
                           if not m.get("thread_ts")),
                          key=lambda m: float(m["ts"]), reverse=True)  # newest first
        return self._history_page(req, args, messages)

    def _conversations_replies(self, req, args):
        channel, refused = self._readable(req, args)
        if refused is not None:
            return refused
        ts = str(args.get("ts") or "")
        parent = self.messages.get(channel["id"], {}).get(ts)
        if parent is None:
            return self._error(req, "thread_not_found", violation=False)
        root = parent.get("thread_ts") or parent["ts"]
        thread = sorted((m for m in self.messages[channel["id"]].values()
                         if m["ts"] == root or m.get("thread_ts") == root),
                        key=lambda m: float(m["ts"]))  # the parent first, then oldest first
        return self._history_page(req, args, thread)

    def _conversations_join(self, req, args):
        ref = args.get("channel") or ""
        if not CHANNEL_ID.match(ref):
            return self._error(req, "channel_not_found", [f"{ref!r} is not a channel ID"])
        channel = self._channel(ref)
        if channel is None or (channel["is_private"] and BOT_USER_ID not in channel["members"]):
            return self._error(req, "channel_not_found", violation=False)
        if channel["is_private"] or ref.startswith("D"):
            return self._error(req, "method_not_supported_for_channel_type", violation=False)
        refused = self._missing_scope(req, "channels:join")
        if refused is not None:
            return refused
        already = BOT_USER_ID in channel["members"]
        channel["members"].add(BOT_USER_ID)
        body = {"ok": True, "channel": _conversation(channel)}
        if already:
            body.update(warning="already_in_channel",
                        response_metadata={"warnings": ["already_in_channel"]})
        return Reply(200, body)

    def _conversations_list(self, req, args):
        types = set(str(args.get("types") or "public_channel").split(","))
        if not types <= {"public_channel", "private_channel", "mpim", "im"}:
            return self._error(req, "invalid_types", [f"unknown types {sorted(types)}"])
        for kind, scope in (("public_channel", "channels:read"),
                            ("private_channel", "groups:read")):
            refused = kind in types and self._missing_scope(req, scope)
            if refused:
                return refused
        listed = [c for c in sorted(self.channels.values(), key=lambda c: c["id"])
                  if ("private_channel" if c["is_private"] else "public_channel") in types
                  and (not c["is_private"] or BOT_USER_ID in c["members"])]
        try:
            limit = int(args.get("limit") or 100)
            offset = int(base64.b64decode(args["cursor"]).decode().removeprefix("offset:")
                         ) if args.get("cursor") else 0
        except (ValueError, KeyError):
            return self._error(req, "invalid_cursor")
        page, more = listed[offset:offset + limit], offset + limit < len(listed)
        return Reply(200, {"ok": True, "channels": [_conversation(c) for c in page],
                           "response_metadata": {"next_cursor": base64.b64encode(
                               f"offset:{offset + limit}".encode()).decode() if more else ""}})

    def _next_ts(self) -> str:
        """Unique, increasing message timestamps that are, as in Slack, the time of the
        post (so that ``oldest``/``latest`` in history mean what they say)."""
        micros = max(int(time.time() * 1_000_000), self._ts_counter + 100)
        self._ts_counter = micros
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


def _public(msg: dict) -> dict:
    """The message object as Slack returns it (no null fields)."""
    return {k: v for k, v in msg.items() if v is not None and k != "channel"}


# -- mrkdwn -------------------------------------------------------------------
_ANGLED = re.compile(r"<([^<>]*)>")


def control_sequences(text: str) -> list[str]:
    """What Slack's mrkdwn would act on in ``text`` rather than show: every ``<…>``
    sequence (``<@U…>``, ``<!channel>``, ``<!subteam^S…>``, ``<url|label>``), any
    stray ``<`` or ``>``, and each ``&`` that starts none of the three escapes
    (``&amp;``, ``&lt;``, ``&gt;``; docs.slack.dev "Formatting text for app surfaces")."""
    found = [m.group(0) for m in _ANGLED.finditer(text)]
    rest = _ANGLED.sub("", text)
    found += [c for c in "<>" if c in rest]
    found += re.findall(r"&(?!amp;|lt;|gt;)", text)
    return found


# Scopes of the public-channel forms of the conversations.* methods served here.
SCOPES = {"conversations.history": "channels:history", "conversations.join": "channels:join",
          "conversations.list": "channels:read"}


def _truthy(value) -> bool:
    """A boolean argument as Slack reads it: true, 1 (query strings, forms or JSON)."""
    return value is True or str(value).lower() in ("true", "1")


def _listed(msg: dict, with_metadata: bool) -> dict:
    """A message as conversations.history/.replies list it: metadata only when asked."""
    listed = _public(msg)
    if not with_metadata:
        listed.pop("metadata", None)
    return json.loads(json.dumps(listed))


def _conversation(channel: dict) -> dict:
    """A conversation object (the fields the bot could read)."""
    return {"id": channel["id"], "name": channel["name"], "is_channel": True,
            "is_group": False, "is_im": False, "is_private": channel["is_private"],
            "is_archived": False, "is_member": BOT_USER_ID in channel["members"]}


def metadata_problems(metadata) -> list[str]:
    """Message metadata as chat.postMessage takes it:
    ``{"event_type": str, "event_payload": {…}}``."""
    if not isinstance(metadata, dict):
        return ["metadata must be an object"]
    problems = []
    if not isinstance(metadata.get("event_type"), str) or not metadata["event_type"]:
        problems.append("metadata.event_type must be a non-empty string")
    if not isinstance(metadata.get("event_payload"), dict):
        problems.append("metadata.event_payload must be an object")
    unknown = set(metadata) - {"event_type", "event_payload"}
    if unknown:
        problems.append(f"unknown metadata fields {sorted(unknown)}")
    return problems


# -- Block Kit ----------------------------------------------------------------
def block_problems(blocks, max_blocks: int = 50, pointer: str = "/blocks") -> list[str]:
    """Minimal Block Kit validation; returns problems (``[]`` when valid).

    Messages take at most 50 blocks, modals and Home tabs 100.
    """
    if not isinstance(blocks, list):
        return ["blocks must be an array"]
    problems = [] if len(blocks) <= max_blocks else [f"more than {max_blocks} blocks"]
    block_ids = set()
    for i, block in enumerate(blocks):
        where = f"[json-pointer:{pointer}/{i}]"
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


def view_problems(view: dict) -> list[str]:
    """Problems with a modal view object for ``views.open`` (``[]`` when valid)."""
    if view.get("type") != "modal":
        return [f"view type must be 'modal', got {view.get('type')!r} "
                "[json-pointer:/view/type]"]
    problems = [f"{p} [json-pointer:/view/{name}]"
                for name in ("title", "submit", "close")
                if name == "title" or view.get(name) is not None
                for p in _text_problems(view.get(name), name, 24, plain_only=True)]
    blocks = view.get("blocks")
    if not isinstance(blocks, list):
        return problems + ["view needs a blocks array [json-pointer:/view/blocks]"]
    problems += block_problems(blocks, max_blocks=100, pointer="/view/blocks")
    if view.get("submit") is None and any(isinstance(b, dict) and b.get("type") == "input"
                                          for b in blocks):
        problems.append("submit is required when a view has input blocks "
                        "[json-pointer:/view/submit]")
    for name, limit in (("callback_id", 255), ("private_metadata", 3000),
                        ("external_id", 255)):
        if len(str(view.get(name, ""))) > limit:
            problems.append(f"{name} longer than {limit} chars [json-pointer:/view/{name}]")
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
