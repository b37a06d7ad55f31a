"""Shared pieces of the HTTP edges: refusals with their status, bounded body reads,
JSON decoding and bearer tokens compared in constant time."""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import AsyncIterator, Collection, Sequence
from itertools import accumulate

from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

# Deeper than any webhook format needs, shallow enough that nothing recursing over
# the decoded value (the JSON decoder, pydantic) comes near Python's recursion limit.
MAX_DEPTH = 64
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_SURROGATE = re.compile("[\ud800-\udfff]")
webhook_log = logging.getLogger("bot.web.webhooks")


def log_webhook(source: str, status: int, *, alerts: int | None = None, opened: Sequence[int] = (),
                changed: Collection[int] = (), reason: str | None = None) -> None:
    """One line per webhook accepted or refused, for an operator wondering whether an
    alert arrived. Never the body nor a header: both are the sender's (tokens, attacker
    text); `reason` is our own refusal message."""
    fields: dict[str, object] = {"source": source, "status": status}
    if alerts is not None:
        fields["alerts"] = alerts
    if alerts is not None or changed:
        fields.update(opened=list(opened), changed=sorted(changed))
    if reason is not None:
        fields["reason"] = reason
    # The fields go on the line as fields (JSON keys, or [k=v] in text): bot/logs.py.
    webhook_log.log(logging.INFO if status < 400 else logging.WARNING, "webhook %s %s", source,
                    "accepted" if status < 400 else "refused", extra={"webhook": fields})


class Rejected(Exception):
    """A request refused before it changed anything: status, metric reason, message."""

    def __init__(self, status: int, reason: str, message: str, **extra: object) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.extra = extra


def error_response(status: int, message: str, headers: dict[str, str] | None = None,
                   **extra: object) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def check_token(authorization: str, tokens: Sequence[bytes]) -> None:
    """`authorization`: the Authorization header as received ("" when absent); `tokens`:
    every token in force (two while one is rotated), none when intake is open."""
    if not tokens:
        return
    offered = authorization.encode()
    # Compare with every token, so timing says nothing about which one matched.
    results = [hmac.compare_digest(offered, b"Bearer " + token) for token in tokens]
    if not any(results):
        raise Rejected(401, "token", "missing or wrong bearer token in the Authorization header")


async def read_body(declared: str | None, stream: AsyncIterator[bytes], limit: int) -> bytes:
    """The body from `stream`, refused (413) as soon as it is over `limit` bytes, or at
    once when the declared Content-Length already is; nothing past the limit is read."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Rejected(413, "size", f"body of {declared} bytes is over the limit of {limit} bytes")
    chunks, size = [], 0
    try:
        async for chunk in stream:
            size += len(chunk)
            if size > limit:
                raise Rejected(413, "size", f"body is over the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise Rejected(400, "body", "the client went away before the whole body arrived") from None
    return b"".join(chunks)


def decode_json(body: bytes) -> object:
    """The JSON value of `body`, its text made storable: NUL characters removed and
    lone UTF-16 surrogates replaced with U+FFFD, in keys and values alike. Refused
    (400) when it is not JSON or nested deeper than MAX_DEPTH."""
    try:
        # As json.loads(bytes) does: UTF-8, or UTF-16/32 told by the first bytes.
        text = body.decode(json.detect_encoding(body), "surrogatepass")
    except UnicodeDecodeError as exc:
        raise Rejected(400, "json", f"body is not valid JSON: {exc}") from None
    if _depth(text) > MAX_DEPTH:
        raise Rejected(400, "json", f"body is nested deeper than {MAX_DEPTH} levels")
    try:
        return _clean(json.loads(text))
    except ValueError as exc:  # JSONDecodeError, or an integer of over 4300 digits
        raise Rejected(400, "json", f"body is not valid JSON: {exc}") from None


def _depth(text: str) -> int:
    """How deep the arrays and objects of `text` nest (0 when they cannot pass
    MAX_DEPTH), counted without recursing: strings and their brackets are dropped
    first."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:  # the usual case, cheaply
        return 0
    brackets = _NOT_BRACKETS.sub("", _STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def _clean(value: object) -> object:
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, list):
        return [_clean(item) for item in value]
    if isinstance(value, dict):
        return {_text(key): _clean(item) for key, item in value.items()}
    return value


def _text(value: str) -> str:
    if "\x00" in value:
        value = value.replace("\x00", "")
    if not value.isascii():
        value = _SURROGATE.sub("\ufffd", value)
    return value
