"""What every step kind shares: the fields of a step, the value types that carry
their own lint messages, and what a prepared action returns.

A kind is a pydantic model (its schema, validated at load) with a `prepare`
classmethod (its run): `prepare` turns the rendered spec into an action without
I/O, shared by dry runs and real runs, that can say what it would do (`describe`)
and do it (`execute`). Executors return an Observation; anything they raise
becomes an `error` outcome in the engine, which enforces timeouts.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from bot.domain.durations import parse_duration
from bot.ports import Fetch, Prometheus
from bot.runbooks.templates import Pending, is_template

if TYPE_CHECKING:  # context.py imports the format, which imports the kinds
    from bot.runbooks.context import RunContext

DEFAULT_STEP_TIMEOUT = 30.0
IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]*$"
_IDENTIFIER = re.compile(IDENTIFIER)


class Problem(ValueError):
    """A lint problem raised inside validation; `at` (e.g. `[0]`, `.version`) is added
    to the key path pydantic reports, for a rule about a part of the field checked."""

    def __init__(self, message: str, at: str = "") -> None:
        super().__init__(message)
        self.at = at


def rule(test, message) -> BeforeValidator:
    """A validator that lets `value` through when `test(value)` holds, else raises
    Problem(message(value)): the rule's lint message lives next to its type."""
    def validate(value: Any) -> Any:
        if not test(value):
            raise Problem(message(value) if callable(message) else message)
        return value
    return BeforeValidator(validate)


def is_identifier(value: Any) -> bool:
    return isinstance(value, str) and bool(_IDENTIFIER.match(value))


def is_template_text(value: Any) -> bool:
    return isinstance(value, str) and is_template(value)


def _seconds(value: Any) -> float:
    """A positive duration (`30s`, `5m`, `1h`, or seconds) in seconds; literal, not a template."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    if isinstance(value, str):
        try:
            seconds = parse_duration(value).total_seconds()
        except ValueError:
            seconds = 0
        if seconds > 0:
            return seconds
    raise Problem(f"must be a positive duration like 30s, 5m or 1h (or seconds), got {value!r}")


Duration = Annotated[float, BeforeValidator(_seconds), WithJsonSchema({"anyOf": [
    {"type": "number", "exclusiveMinimum": 0},
    {"type": "string", "pattern": r"^\s*([0-9]+[smhdwSMHDW])+\s*$"}]})]
Flag = Annotated[bool, rule(lambda v: isinstance(v, bool), "must be true or false")]
StepName = Annotated[str, Field(pattern=IDENTIFIER),
                       rule(is_identifier, lambda v: f"step names are identifiers (letters, digits, _), got {v!r}")]
# Written as text, possibly a template; not type-checked at load (rendered values are checked when prepared).
Text = Annotated[Any, WithJsonSchema({"type": "string"})]
Value = Annotated[Any, WithJsonSchema({})]


class StepSpec(BaseModel):
    """The fields every step has; a kind adds its own and a `kind: Literal[...]`."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), use_attribute_docstrings=True)
    BASE_FIELDS: ClassVar[frozenset[str]] = frozenset({"name", "kind", "timeout", "stop_on_failure"})
    literal_fields: ClassVar[tuple[str, ...]] = ()  # durations and inner steps: not templates
    nestable: ClassVar[bool] = True  # may be wait_until's inner step

    name: StepName
    """Unique in the runbook; later templates read this step's values as steps.NAME.KEY."""
    timeout: Duration = DEFAULT_STEP_TIMEOUT
    """30s, 5m, 1h or seconds (default 30s)."""
    stop_on_failure: Flag = False
    """When this step fails, skip the rest (default: record it and go on)."""

    @classmethod
    def fields(cls) -> list[str]:
        """The kind's own fields as written in YAML, for "expected ..." in lint messages."""
        return sorted((f.alias or n) for n, f in cls.model_fields.items() if n not in cls.BASE_FIELDS)

    @classmethod
    def lint(cls, raw: Mapping[str, Any], facts: LintFacts) -> Iterator[tuple[str, str]]:
        """Rules that need the whole runbook: (key suffix, problem) for this step."""
        return iter(())

    @classmethod
    def inner_steps(cls, raw: Mapping[str, Any]) -> list[tuple[str, Any]]:
        """(key suffix, raw step) of steps written inside this one."""
        return []

    @classmethod
    def needs(cls, spec: Mapping[str, Any]) -> tuple[str, ...]:
        """The environment variables this step cannot run without, from its spec as
        written (a pure function: the start-up report and the run's skip both use it)."""
        return ()

    @classmethod
    def prepare(cls, step: Step, spec: Mapping[str, Any], context: RunContext,
                template_context: Mapping[str, Any]) -> Any:
        """The action for `step` from its rendered `spec`; raises StepError when a value is unusable."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class LintFacts:
    """What a kind's whole-runbook rules may consult."""

    tainted_params: frozenset[str]  # params whose value may come from an alert label or annotation
    changes_production: bool


@dataclass(frozen=True, slots=True)
class Step:
    """One loaded step; `spec` holds its kind-specific fields as written (templates not
    yet rendered, durations in seconds, an inner step as a Step); `kind_of` runs it."""

    name: str
    kind: str
    timeout: float
    stop_on_failure: bool
    spec: Mapping[str, Any]
    kind_of: type[StepSpec]

    def prepare(self, spec: Mapping[str, Any], context: RunContext, template_context: Mapping[str, Any]):
        return self.kind_of.prepare(self, spec, context, template_context)

    def needs(self) -> tuple[str, ...]:
        return self.kind_of.needs(self.spec)


class StepError(Exception):
    """A step that cannot run as written once rendered (bad value, missing service URL)."""


@dataclass(frozen=True, slots=True)
class Observation:
    status: str
    output: str
    values: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StepIO:
    """What executors share during one run: `fetch` is the run's only HTTP client (the
    guarded probe), `prometheus` asks PromQL through it."""

    fetch: Fetch
    prometheus: Prometheus
    context: RunContext


def as_number(value: Any, key: str) -> float | Pending:
    if isinstance(value, Pending):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        raise StepError(f"{key}: expected a number, got {value!r}") from None


def as_text(value: Any, key: str) -> str:
    if value is None or isinstance(value, dict | list):
        raise StepError(f"{key}: expected a value, got {value!r}")
    return str(value)
