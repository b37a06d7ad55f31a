"""The runbook file format: runbooks/*.yaml parsed into frozen values, through the
pydantic models below (the step kinds are in bot/runbooks/kinds/).

Everything that can be checked without running is checked at load, so a broken
runbook is refused when the bot starts (or by `oncall-bot runbook lint` in CI), never
half-way through an incident: field types, step kinds and their fields, durations,
matchers, and every template's syntax and references. Each problem names the file
and the key, e.g. `runbooks/x.yaml: steps[2].threshold.op: ...`. The same models give
the JSON Schema editors use (`oncall-bot runbook schema`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from bot.domain.matchers import Matcher, MatcherError
from bot.runbooks.kinds import AnyStep
from bot.runbooks.kinds.base import IDENTIFIER, Duration, Flag, Problem, Step, StepSpec, Value, is_identifier, rule
from bot.runbooks.problems import from_validation, whole_runbook

FORMAT_VERSION = 1
PARAM_TYPES = ("string", "int", "float", "bool")
DEFAULT_RUN_TIMEOUT = 600.0
RUNBOOK_NAME = r"^[a-z0-9][a-z0-9_-]*$"
_RUNBOOK_NAME = re.compile(RUNBOOK_NAME)


class RunbookError(ValueError):
    """A runbook that cannot be loaded or run as asked; the message names the file and key."""


def _regex(value: Any) -> Any:
    if value is None:
        return value
    try:
        if not isinstance(value, str):
            raise re.error("must be a string")
        re.compile(value)
    except re.error as exc:
        raise Problem(f"not a regular expression: {exc}") from None
    return value


def _matcher(value: Any) -> Matcher:
    try:
        return Matcher.parse(str(value))
    except MatcherError as exc:
        raise Problem(str(exc)) from None


def _param_mapping(value: Any) -> Any:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Problem("must be a mapping with type, default, from_label, ...")
    return value


SourceName = Annotated[str | None, rule(lambda v: v is None or isinstance(v, str),
                                        "must be a label or annotation name")]


class ParamSpec(BaseModel):
    """A param as written: where its value comes from and what it must look like."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    type: Annotated[Literal["string", "int", "float", "bool"], rule(
        lambda v: v in PARAM_TYPES, lambda v: f"must be one of {', '.join(PARAM_TYPES)}, got {v!r}")] = "string"
    pattern: Annotated[str | None, BeforeValidator(_regex)] = None
    """A regular expression the whole value must match, whoever gives it."""
    default: Value = None
    from_label: SourceName = None
    """The alert label to take the value from."""
    from_annotation: SourceName = None
    """The alert annotation to take the value from (after the label)."""
    required: Flag = False
    """Refuse the run when no value is found."""
    description: Annotated[str, BeforeValidator(str)] = ""

    @field_validator("default")
    @classmethod
    def _default_fits(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None or "type" not in info.data or "pattern" not in info.data:
            return value  # a bad type or pattern is the problem reported
        try:
            return coerce(value, info.data["type"], info.data["pattern"])
        except ValueError as exc:
            raise Problem(str(exc)) from None


ParamName = Annotated[str, Field(pattern=IDENTIFIER),
                      rule(is_identifier, "param names are identifiers (letters, digits, _)")]
MatcherText = Annotated[Any, PlainValidator(_matcher),
                        WithJsonSchema({"type": "string", "description": 'Alertmanager syntax: model="churn"'})]


class RunbookSpec(BaseModel):
    """A runbook file as written."""

    model_config = ConfigDict(extra="forbid", title="oncall-bot runbook", use_attribute_docstrings=True)
    version: Annotated[Literal[1], rule(lambda v: v == FORMAT_VERSION and not isinstance(v, bool),
                                        lambda v: f"must be {FORMAT_VERSION}, got {v!r}")]
    name: Annotated[str, Field(pattern=RUNBOOK_NAME),
                    rule(lambda v: isinstance(v, str) and bool(_RUNBOOK_NAME.match(v)),
                         lambda v: f"must be lower-case letters, digits, - or _, got {v!r}")]
    description: Annotated[str, rule(lambda v: isinstance(v, str), "must be a string")] = ""
    matchers: Annotated[list[MatcherText], rule(lambda v: isinstance(v, list),
                                                "must be a list of matchers like 'model=\"churn\"'")] = []
    """The alerts this runbook serves, in Alertmanager syntax; [] = chosen by name only."""
    changes_production: Flag = False
    """Never run automatically; required with an mlflow set_alias step."""
    params: Annotated[dict[ParamName, Annotated[ParamSpec, BeforeValidator(_param_mapping)]],
                      rule(lambda v: isinstance(v, dict), "must be a mapping of name to {type, default, ...}"),
                      Field(json_schema_extra={"additionalProperties": False})] = {}
    timeout: Duration = DEFAULT_RUN_TIMEOUT
    """The whole run: 30s, 5m, 1h or seconds (default 10m)."""
    steps: Annotated[list[AnyStep], rule(lambda v: isinstance(v, list) and bool(v),
                                         "must be a non-empty list of steps"), Field(min_length=1)]


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    type: str = "string"
    default: Any = None
    from_label: str | None = None
    from_annotation: str | None = None
    required: bool = False
    description: str = ""
    pattern: str | None = None  # a regular expression the whole value must match


@dataclass(frozen=True, slots=True)
class Runbook:
    name: str
    description: str
    matchers: tuple[Matcher, ...]
    changes_production: bool
    params: tuple[Param, ...]
    timeout: float
    steps: tuple[Step, ...]
    source: str = ""


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a runbook file, for editors (YAML language servers)."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            **RunbookSpec.model_json_schema(mode="validation")}


def load_runbooks(directory: str | Path) -> dict[str, Runbook]:
    """Every `*.yaml`/`*.yml` in `directory`, by name, in file-name order.

    Raises RunbookError listing every problem (file and key) if any file is invalid.
    """
    runbooks, problems = _load(Path(directory))
    if problems:
        raise RunbookError("\n".join(problems))
    return runbooks


def lint(directory: str | Path) -> list[str]:
    """Every problem in the runbooks of `directory`, one line each; empty when all load."""
    return _load(Path(directory))[1]


def parse_runbook(data: Any, source: str) -> Runbook:
    """One runbook from decoded YAML; raises RunbookError listing its problems."""
    runbook, problems = _parse(data, source)
    if problems or runbook is None:
        raise RunbookError("\n".join(problems))
    return runbook


def _load(directory: Path) -> tuple[dict[str, Runbook], list[str]]:
    if not directory.is_dir():
        return {}, [f"{directory}: not a directory of runbooks"]
    runbooks: dict[str, Runbook] = {}
    problems: list[str] = []
    files = sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])
    for path in files:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            problems.append(f"{path}: (file): cannot read YAML: {exc}")
            continue
        runbook, found = _parse(data, str(path))
        problems.extend(found)
        if runbook is None or found:
            continue
        if runbook.name in runbooks:
            problems.append(f"{path}: name: runbook {runbook.name!r} is also defined in "
                            f"{runbooks[runbook.name].source}")
            continue
        runbooks[runbook.name] = runbook
    return runbooks, problems


def _parse(data: Any, source: str) -> tuple[Runbook | None, list[str]]:
    """The runbook and every problem found (`source: key: problem`)."""
    if not isinstance(data, dict):
        return None, [f"{source}: (file): a runbook is a mapping with version, name, steps, ..."]
    found: list[tuple[str, str]] = []
    spec = None
    try:
        spec = RunbookSpec.model_validate(data)
    except ValidationError as exc:
        found.extend(from_validation(exc, data, RunbookSpec, ParamSpec))
    found.extend(whole_runbook(data))
    problems = [f"{source}: {key}: {message}" for key, message in found]
    if spec is None or problems:
        return None, problems
    params = tuple(Param(name=name, type=param.type, default=param.default, from_label=param.from_label,
                         from_annotation=param.from_annotation, required=param.required,
                         description=param.description, pattern=param.pattern)
                   for name, param in spec.params.items())
    return Runbook(name=spec.name, description=spec.description, matchers=tuple(spec.matchers),
                   changes_production=spec.changes_production, params=params, timeout=spec.timeout,
                   steps=tuple(_step(step, raw) for step, raw in zip(spec.steps, data["steps"], strict=True)),
                   source=source), []


def _step(model: StepSpec, raw: dict[str, Any]) -> Step:
    """The loaded step: its fields as written, with durations in seconds and inner steps loaded."""
    spec = {name: value for name, value in raw.items() if name not in StepSpec.BASE_FIELDS}
    for name in type(model).literal_fields:
        if name in spec:
            value = getattr(model, name)
            spec[name] = _step(value, raw[name]) if isinstance(value, StepSpec) else value
    return Step(name=model.name, kind=model.kind, timeout=model.timeout, stop_on_failure=model.stop_on_failure,
                spec=spec, kind_of=type(model))


def coerce(value: Any, kind: str, pattern: str | None = None) -> Any:
    """`value` as a param of `kind`, whose text must match all of `pattern` when given;
    raises ValueError saying what was wrong (the rule, and the value cut short)."""
    if pattern is not None and not isinstance(value, bool | dict | list) and (
            re.fullmatch(pattern, str(value)) is None):
        raise ValueError(f"{_shown(value)} does not match the pattern {pattern!r}")
    if kind == "string":
        if isinstance(value, bool | dict | list):
            raise ValueError(f"expected a string, got {_shown(value)}")
        return str(value)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "yes", "1", "on"):
            return True
        if text in ("false", "no", "0", "off"):
            return False
        raise ValueError(f"expected a bool (true/false), got {_shown(value)}")
    if isinstance(value, bool):
        raise ValueError(f"expected {kind}, got {value!r}")
    try:
        if kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value) if not isinstance(value, str) else int(value.strip())
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected {kind}, got {_shown(value)}") from None


def _shown(value: Any, limit: int = 60) -> str:
    """A value for an error message: someone else wrote it, and it may be long."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"
