"""Webhook payload parsers: one module per monitoring source, all pure.

Each source module exposes ``parse(document) -> list[Alert]`` over the already
decoded JSON value, so the HTTP layer owns bytes, auth and status codes while the
rules for what a valid payload is live here, testable without a server.

This module also holds the vocabulary the parsers share: the error type, the
pydantic building blocks, and the translation of pydantic's errors into
messages that name the sender's own field path (``alerts[3].labels.team``),
because whoever reads a 422 is fixing a template, not reading our code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, PlainValidator, ValidationError
from pydantic_core import PydanticCustomError

from bot.domain.alert import Alert


class PayloadError(ValueError):
    """Well-formed JSON that is not a valid payload (the HTTP layer answers 422).

    ``problems`` keeps one message per offending field so callers can return them
    as a list; ``str()`` joins them for logs.
    """

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class Wire(BaseModel):
    """Base for payload models: strict types, unknown fields ignored.

    Strict so that a label value of 7 is reported instead of silently becoming
    "7"; ignoring extras so that senders adding fields (Alertmanager and Grafana
    do, release by release) never break intake.
    """

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


Status = Literal["firing", "resolved"]
StringMap = dict[str, str]

# RFC 3339 date-time. datetime.fromisoformat alone would also take ISO 8601
# basic forms and naive times, which would make "RFC3339 only" a lie.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})", re.I)
# Go's zero time.Time, which Alertmanager and Grafana send for "not set" (endsAt
# of every firing alert).
_GO_ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)


def _timestamp(value: object) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str) and _RFC3339.fullmatch(value):
        try:
            # upper(): fromisoformat rejects RFC 3339's lowercase "t"/"z"; it
            # truncates Go's nanoseconds to microseconds (Python 3.11+).
            parsed = datetime.fromisoformat(value.upper())
        except ValueError:  # shaped right but impossible, e.g. month 13
            pass
        else:
            try:
                parsed.astimezone(UTC)
            except OverflowError:  # in UTC before year 1 or after 9999: the record
                return None  # cannot keep it, so it is unset, and the alert kept
            return None if parsed == _GO_ZERO_TIME else parsed
    raise PydanticCustomError(
        "rfc3339", "must be an RFC 3339 timestamp such as 2026-05-04T09:12:31Z"
    )


# Optional aware timestamp; null and Go's zero time both mean "unset".
Timestamp = Annotated[datetime | None, PlainValidator(_timestamp)]


def expect(wanted: str) -> AfterValidator:
    """Pin a protocol field (``version``) so a format change fails loudly, by name."""

    def check(got: str) -> str:
        if got != wanted:
            raise PydanticCustomError(
                "unexpected_value", "expected '{wanted}', got '{got}'", {"wanted": wanted, "got": got}
            )
        return got

    return AfterValidator(check)


_MESSAGES = {
    "missing": "required",
    "string_type": "must be a string",
    "string_too_short": "must not be empty",
    "too_short": "must not be empty",
    "too_long": "must have at most {max_length} items, got {actual_length}",
    "list_type": "must be a list",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "literal_error": "must be {expected}",
}
# A 1000-alert batch that is wrong everywhere should not produce a 1000-line 422.
_MAX_PROBLEMS = 20


def _path(loc: Sequence[int | str]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else part
    return path or "body"


def _problems(error: ValidationError) -> list[str]:
    problems = []
    for detail in error.errors():
        template = _MESSAGES.get(detail["type"])
        message = template.format(**detail.get("ctx", {})) if template else detail["msg"]
        problems.append(f"{_path(detail['loc'])}: {message}")
    if len(problems) > _MAX_PROBLEMS:
        hidden = len(problems) - _MAX_PROBLEMS
        problems = [*problems[:_MAX_PROBLEMS], f"... and {hidden} more problems"]
    return problems


M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], document: object) -> M:
    """Validate ``document`` as ``model``, raising PayloadError with field paths."""
    try:
        return model.model_validate(document)
    except ValidationError as error:
        raise PayloadError(_problems(error)) from None


from bot.intake import alertmanager, generic, grafana  # noqa: E402  (they import the above)

Parser = Callable[[object], list[Alert]]
PARSERS: dict[str, Parser] = {
    "alertmanager": alertmanager.parse,
    "grafana": grafana.parse,
    "generic": generic.parse,
}
