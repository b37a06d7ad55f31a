"""The runbook file format: parse and validate runbooks/*.yaml into frozen values.

Everything that can be checked without running is checked at load, so a broken
runbook is refused when the bot starts (or by `oncall-bot runbook lint` in CI), never
half-way through an incident: field types, step kinds and their fields, durations,
matchers, and every template's syntax and references. Each problem names the file
and the key, e.g. `runbooks/x.yaml: steps[2].threshold.op: ...`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bot.domain.durations import parse_duration
from bot.domain.matchers import Matcher, MatcherError
from bot.runbooks.checks import CHECK_OPERATORS, OPERATORS, PathError, parse_path
from bot.runbooks.templates import is_template, template_problems, template_strings, unfiltered_alert_values

FORMAT_VERSION = 1
PARAM_TYPES = ("string", "int", "float", "bool")
MLFLOW_ACTIONS = {  # action -> fields it needs besides `model`
    "get_alias": (), "list_versions": (), "set_alias": ("version",), "what_changed": (),
}
# kind -> (required fields, optional fields), besides name/kind/timeout/stop_on_failure
STEP_FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "http": (frozenset({"url"}), frozenset({"method", "headers", "json", "status", "checks", "extract"})),
    "prometheus": (frozenset({"query"}), frozenset({"range", "step", "url", "threshold"})),
    "command": (frozenset({"argv"}), frozenset({"env_allow", "allow_options"})),
    "python": (frozenset({"callable"}), frozenset({"args"})),
    "mlflow": (frozenset({"action", "model"}),
               frozenset({"alias", "version", "expect_version", "max_results"})),
    "wait_until": (frozenset({"step"}), frozenset({"interval"})),
    "note": (frozenset({"message"}), frozenset()),
}
DURATION_FIELDS = {"prometheus": ("range", "step"), "wait_until": ("interval",)}  # literal, not templates
DEFAULT_STEP_TIMEOUT = 30.0
DEFAULT_RUN_TIMEOUT = 600.0
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RUNBOOK_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_CALLABLE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_RUNBOOK_KEYS = {"version", "name", "description", "matchers", "changes_production", "params",
                 "timeout", "steps"}
_PARAM_KEYS = {"type", "default", "from_label", "from_annotation", "required", "description",
               "pattern"}


class RunbookError(ValueError):
    """A runbook that cannot be loaded or run as asked; the message names the file and key."""


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
class Step:
    """One step; `spec` holds its kind-specific fields, templates not yet rendered."""

    name: str
    kind: str
    timeout: float
    stop_on_failure: bool
    spec: Mapping[str, Any]


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


@dataclass
class _Problems:
    source: str
    found: list[str] = field(default_factory=list)

    def add(self, key: str, message: str) -> None:
        self.found.append(f"{self.source}: {key}: {message}")


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
    problems = _Problems(source)
    runbook = _parse(data, problems)
    if problems.found or runbook is None:
        raise RunbookError("\n".join(problems.found))
    return runbook


def _load(directory: Path) -> tuple[dict[str, Runbook], list[str]]:
    if not directory.is_dir():
        return {}, [f"{directory}: not a directory of runbooks"]
    runbooks: dict[str, Runbook] = {}
    problems: list[str] = []
    files = sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])
    for path in files:
        found = _Problems(str(path))
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            found.add("(file)", f"cannot read YAML: {exc}")
            problems.extend(found.found)
            continue
        runbook = _parse(data, found)
        problems.extend(found.found)
        if runbook is None or found.found:
            continue
        if runbook.name in runbooks:
            problems.append(f"{path}: name: runbook {runbook.name!r} is also defined in "
                            f"{runbooks[runbook.name].source}")
            continue
        runbooks[runbook.name] = runbook
    return runbooks, problems


def _parse(data: Any, problems: _Problems) -> Runbook | None:
    if not isinstance(data, dict):
        problems.add("(file)", "a runbook is a mapping with version, name, steps, ...")
        return None
    for key in sorted(set(data) - _RUNBOOK_KEYS):
        problems.add(key, f"unknown key (expected one of {', '.join(sorted(_RUNBOOK_KEYS))})")
    if data.get("version") != FORMAT_VERSION:
        problems.add("version", f"must be {FORMAT_VERSION}, got {data.get('version')!r}")
    name = data.get("name")
    if not isinstance(name, str) or not _RUNBOOK_NAME.match(name):
        problems.add("name", f"must be lower-case letters, digits, - or _, got {name!r}")
        name = "?"
    description = data.get("description", "")
    if not isinstance(description, str):
        problems.add("description", "must be a string")
    matchers = _matchers(data.get("matchers", []), problems)
    changes_production = data.get("changes_production", False)
    if not isinstance(changes_production, bool):
        problems.add("changes_production", "must be true or false")
    params = _params(data.get("params", {}), problems)
    timeout = _duration(data.get("timeout", DEFAULT_RUN_TIMEOUT), "timeout", problems)
    steps = _steps(data.get("steps"), {p.name for p in params}, problems)
    _hostile_input_checks(data.get("steps"), params, changes_production is True, problems)
    return Runbook(name=name, description=description if isinstance(description, str) else "",
                   matchers=matchers, changes_production=changes_production is True,
                   params=params, timeout=timeout, steps=steps, source=problems.source)


def _hostile_input_checks(raw_steps: Any, params: tuple[Param, ...], changes_production: bool,
                          problems: _Problems) -> None:
    """Rules against alert data steering a run: values from labels and annotations go
    into PromQL only through promql_string/promql_duration, and a runbook that moves
    an alias says it changes production (so it never runs by itself)."""
    if not isinstance(raw_steps, list):
        return
    tainted = {p.name for p in params if p.from_label or p.from_annotation}
    for index, raw in enumerate(raw_steps):
        if not isinstance(raw, dict):
            continue
        for key, step in ((f"steps[{index}]", raw), (f"steps[{index}].step", raw.get("step"))):
            if not isinstance(step, dict):
                continue
            if step.get("kind") == "prometheus" and isinstance(step.get("query"), str):
                for value in unfiltered_alert_values(step["query"], tainted):
                    problems.add(f"{key}.query", f"{value} comes from the alert: splice it with "
                                                 "| promql_string (inside a selector) or | promql_duration "
                                                 "(inside [...])")
            if step.get("kind") == "mlflow" and step.get("action") == "set_alias" and not changes_production:
                problems.add(f"{key}.action", "set_alias changes production: the runbook must declare "
                                              "changes_production: true")


def _matchers(raw: Any, problems: _Problems) -> tuple[Matcher, ...]:
    if not isinstance(raw, list):
        problems.add("matchers", "must be a list of matchers like 'model=\"churn\"'")
        return ()
    parsed = []
    for index, text in enumerate(raw):
        try:
            parsed.append(Matcher.parse(str(text)))
        except MatcherError as exc:
            problems.add(f"matchers[{index}]", str(exc))
    return tuple(parsed)


def _params(raw: Any, problems: _Problems) -> tuple[Param, ...]:
    if not isinstance(raw, dict):
        problems.add("params", "must be a mapping of name to {type, default, ...}")
        return ()
    params = []
    for name, spec in raw.items():
        key = f"params.{name}"
        if not isinstance(name, str) or not _NAME.match(name):
            problems.add(key, "param names are identifiers (letters, digits, _)")
            continue
        spec = {} if spec is None else spec
        if not isinstance(spec, dict):
            problems.add(key, "must be a mapping with type, default, from_label, ...")
            continue
        for unknown in sorted(set(spec) - _PARAM_KEYS):
            problems.add(f"{key}.{unknown}",
                         f"unknown key (expected one of {', '.join(sorted(_PARAM_KEYS))})")
        kind = spec.get("type", "string")
        if kind not in PARAM_TYPES:
            problems.add(f"{key}.type", f"must be one of {', '.join(PARAM_TYPES)}, got {kind!r}")
            continue
        pattern = spec.get("pattern")
        if pattern is not None:
            try:
                if not isinstance(pattern, str):
                    raise re.error("must be a string")
                re.compile(pattern)
            except re.error as exc:
                problems.add(f"{key}.pattern", f"not a regular expression: {exc}")
                continue
        default = spec.get("default")
        if default is not None:
            try:
                default = coerce(default, kind, pattern)
            except ValueError as exc:
                problems.add(f"{key}.default", str(exc))
        for source_key in ("from_label", "from_annotation"):
            if spec.get(source_key) is not None and not isinstance(spec[source_key], str):
                problems.add(f"{key}.{source_key}", "must be a label or annotation name")
        if not isinstance(spec.get("required", False), bool):
            problems.add(f"{key}.required", "must be true or false")
        params.append(Param(name=name, type=kind, default=default,
                            from_label=spec.get("from_label"), from_annotation=spec.get("from_annotation"),
                            required=spec.get("required") is True,
                            description=str(spec.get("description", "")), pattern=pattern))
    return tuple(params)


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


def _duration(raw: Any, key: str, problems: _Problems) -> float:
    if isinstance(raw, int | float) and not isinstance(raw, bool) and raw > 0:
        return float(raw)
    if isinstance(raw, str):
        try:
            seconds = parse_duration(raw).total_seconds()
            if seconds > 0:
                return seconds
        except ValueError:
            pass
    problems.add(key, f"must be a positive duration like 30s, 5m or 1h (or seconds), got {raw!r}")
    return DEFAULT_STEP_TIMEOUT


def _steps(raw: Any, params: set[str], problems: _Problems) -> tuple[Step, ...]:
    if not isinstance(raw, list) or not raw:
        problems.add("steps", "must be a non-empty list of steps")
        return ()
    steps: list[Step] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        step = _step(item, f"steps[{index}]", params, seen, problems, nested=False)
        if step is not None:
            if step.name in seen:
                problems.add(f"steps[{index}].name", f"duplicate step name {step.name!r}")
            seen.add(step.name)
            steps.append(step)
    return tuple(steps)


def _step(raw: Any, key: str, params: set[str], earlier: set[str], problems: _Problems,
          *, nested: bool) -> Step | None:
    if not isinstance(raw, dict):
        problems.add(key, "a step is a mapping with name, kind and its fields")
        return None
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        problems.add(f"{key}.name", f"step names are identifiers (letters, digits, _), got {name!r}")
        name = "?"
    kind = raw.get("kind")
    if kind not in STEP_FIELDS or (nested and kind == "wait_until"):
        allowed = [k for k in STEP_FIELDS if not (nested and k == "wait_until")]
        problems.add(f"{key}.kind", f"unknown step kind {kind!r} (expected one of {', '.join(allowed)})")
        return None
    required, optional = STEP_FIELDS[kind]
    spec = {k: v for k, v in raw.items() if k not in ("name", "kind", "timeout", "stop_on_failure")}
    for missing in sorted(required - set(spec)):
        problems.add(f"{key}.{missing}", f"required for a {kind} step")
    for unknown in sorted(set(spec) - required - optional):
        problems.add(f"{key}.{unknown}", f"unknown field for a {kind} step "
                                          f"(expected {', '.join(sorted(required | optional))})")
    stop_on_failure = raw.get("stop_on_failure", False)
    if not isinstance(stop_on_failure, bool):
        problems.add(f"{key}.stop_on_failure", "must be true or false")
    timeout = _duration(raw.get("timeout", DEFAULT_STEP_TIMEOUT), f"{key}.timeout", problems)
    for duration_key in DURATION_FIELDS.get(kind, ()):
        if duration_key in spec:
            spec[duration_key] = _duration(spec[duration_key], f"{key}.{duration_key}", problems)
    _kind_checks(kind, spec, key, params, earlier, problems)
    for where, text in template_strings({k: v for k, v in spec.items() if not isinstance(v, Step)}, key):
        for problem in template_problems(text, params=params, earlier_steps=earlier):
            problems.add(where, problem)
    return Step(name=name, kind=kind, timeout=timeout, stop_on_failure=stop_on_failure is True, spec=spec)


def _kind_checks(kind: str, spec: dict[str, Any], key: str, params: set[str], earlier: set[str],
                 problems: _Problems) -> None:
    """Shape of kind-specific fields that are not templates (templates are checked when rendered)."""
    def literal(name: str) -> Any:
        value = spec.get(name)
        return None if isinstance(value, str) and is_template(value) else value

    if kind == "http":
        if "headers" in spec and not isinstance(spec["headers"], dict):
            problems.add(f"{key}.headers", "must be a mapping of header to value")
        status = literal("status")
        if status is not None and not (isinstance(status, int) and 100 <= status <= 599):
            problems.add(f"{key}.status", f"must be an HTTP status code, got {status!r}")
        if "extract" in spec:
            if not isinstance(spec["extract"], dict):
                problems.add(f"{key}.extract", "must map value names to JSON paths")
            else:
                for value_name, path in spec["extract"].items():
                    _check_path(path, f"{key}.extract.{value_name}", problems)
        checks = spec.get("checks", [])
        if not isinstance(checks, list):
            problems.add(f"{key}.checks", "must be a list of {path, op, value}")
            return
        for index, check in enumerate(checks):
            where = f"{key}.checks[{index}]"
            if not isinstance(check, dict) or "path" not in check:
                problems.add(where, "a check is {path, op, value}")
                continue
            _check_path(check["path"], f"{where}.path", problems)
            op = check.get("op", "==")
            if op not in CHECK_OPERATORS:
                problems.add(f"{where}.op", f"must be one of {', '.join(CHECK_OPERATORS)}, got {op!r}")
            elif op not in ("exists", "absent") and "value" not in check:
                problems.add(f"{where}.value", f"required with op {op!r}")
    elif kind == "prometheus":
        threshold = spec.get("threshold")
        if threshold is not None:
            if not isinstance(threshold, dict) or "op" not in threshold or "value" not in threshold:
                problems.add(f"{key}.threshold", "must be {op, value}")
            elif threshold["op"] not in OPERATORS:
                problems.add(f"{key}.threshold.op", f"must be one of {', '.join(OPERATORS)}, "
                                                   f"got {threshold['op']!r}")
        if "step" in spec and "range" not in spec:
            problems.add(f"{key}.step", "only for range queries (set range too)")
    elif kind == "command":
        argv = spec.get("argv")
        if not isinstance(argv, list) or not argv or \
                not all(isinstance(item, str | int | float) for item in argv):
            problems.add(f"{key}.argv",
                         "must be a non-empty list of strings (no shell: one item per argument)")
        if isinstance(argv, list) and argv and isinstance(argv[0], str) and is_template(argv[0]):
            problems.add(f"{key}.argv[0]", "the program must be written literally, not a template")
        if not isinstance(spec.get("allow_options", False), bool):
            problems.add(f"{key}.allow_options", "must be true or false")
        env_allow = spec.get("env_allow", [])
        if not isinstance(env_allow, list) or \
                not all(isinstance(n, str) and _NAME.match(n) for n in env_allow):
            problems.add(f"{key}.env_allow", "must be a list of environment variable names")
    elif kind == "python":
        target = spec.get("callable")
        if not isinstance(target, str) or not _CALLABLE.match(target):
            problems.add(f"{key}.callable",
                         f"must be 'package.module:function' (not a template), got {target!r}")
        if "args" in spec and not isinstance(spec["args"], dict):
            problems.add(f"{key}.args", "must be a mapping of argument name to value")
    elif kind == "mlflow":
        action = spec.get("action")
        if action not in MLFLOW_ACTIONS:
            problems.add(f"{key}.action", f"must be one of {', '.join(MLFLOW_ACTIONS)}, got {action!r}")
        else:
            for needed in MLFLOW_ACTIONS[action]:
                if needed not in spec:
                    problems.add(f"{key}.{needed}", f"required for mlflow action {action}")
    elif kind == "wait_until":
        inner = _step(spec.get("step"), f"{key}.step", params, earlier, problems, nested=True)
        if inner is not None:
            spec["step"] = inner


def _check_path(path: Any, key: str, problems: _Problems) -> None:
    if not isinstance(path, str):
        problems.add(key, "must be a JSON path like $.a.b[0]")
        return
    try:
        parse_path(path)
    except PathError as exc:
        problems.add(key, str(exc))
