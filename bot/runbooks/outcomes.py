"""What a run reports: one StepOutcome per step, and the RunResult; capping and redaction."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

STATUSES = ("passed", "failed", "error", "timeout", "skipped")
OUTPUT_LIMIT = 4096
REDACTED = "***"
_SECRET_NAME = re.compile(r"TOKEN|SECRET|KEY|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
_MIN_SECRET_LENGTH = 4  # shorter values ("1", "on") would blank out ordinary output


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """`output` is for people (capped, redacted); `values` are what later steps may use."""

    name: str
    kind: str
    status: str
    started_at: datetime
    duration_s: float
    output: str
    values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunResult:
    runbook: str
    params: dict[str, Any]
    outcomes: tuple[StepOutcome, ...]
    status: str


def run_status(outcomes: Iterable[StepOutcome]) -> str:
    """The worst step status: error, then timeout, then failed; `skipped` only when every
    step was skipped (a dry run); otherwise passed."""
    statuses = {o.status for o in outcomes}
    for worst in ("error", "timeout", "failed"):
        if worst in statuses:
            return worst
    return "skipped" if statuses == {"skipped"} else "passed"


def secrets_from_environment(environ: Mapping[str, str]) -> tuple[str, ...]:
    """Values of variables whose names look secret (TOKEN, SECRET, KEY, PASSWORD, ...)."""
    return tuple(value for name, value in environ.items()
                 if _SECRET_NAME.search(name) and len(value) >= _MIN_SECRET_LENGTH)


def redact(value: Any, secrets: Iterable[str]) -> Any:
    """`value` with every occurrence of a secret replaced by ***, strings inside dicts and lists too."""
    ordered = sorted({s for s in secrets if s}, key=len, reverse=True)
    if not ordered:
        return value
    return _redact(value, ordered)


def _redact(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, Mapping):
        return {key: _redact(item, secrets) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(item, secrets) for item in value]
    return value


def cap(text: str, limit: int = OUTPUT_LIMIT) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n… [{len(text) - limit} more characters cut]"
