"""Shared pieces of the HTTP edges: refusals with their status, bounded body reads,
JSON decoding and bearer tokens compared in constant time."""

from __future__ import annotations

import hmac
import json
from collections.abc import AsyncIterator

from fastapi.responses import JSONResponse


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


def check_token(authorization: str, token: bytes | None) -> None:
    """`authorization`: the Authorization header as received ("" when absent)."""
    if token is None:
        return
    if not hmac.compare_digest(authorization.encode(), b"Bearer " + token):
        raise Rejected(401, "token", "missing or wrong bearer token in the Authorization header")


async def read_body(declared: str | None, stream: AsyncIterator[bytes], limit: int) -> bytes:
    """The body from `stream`, refused (413) as soon as it is over `limit` bytes, or at
    once when the declared Content-Length already is."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Rejected(413, "size", f"body of {declared} bytes is over the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            raise Rejected(413, "size", f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def decode_json(body: bytes) -> object:
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Rejected(400, "json", f"body is not valid JSON: {exc}") from None
