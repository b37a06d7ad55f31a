"""Runbook values rendered in Jinja2's immutable sandbox.

A runbook is reviewed code, but the values it renders come from alerts, which anyone
who can reach the alert webhook controls. The sandbox refuses attribute access to
Python internals (`__class__`, `__globals__`, ...) and mutation of the context, the
environment has no loader (no `include` of files), and the helpers that hand out
functions (`lipsum`, `cycler`, `joiner`) are removed. A rendered value is data: it is
never passed to a shell.

Values spliced into PromQL go through two filters: `promql_string` makes a complete
double-quoted string literal (`\\`, `"` and control characters escaped), and
`promql_duration` lets through only a PromQL duration (`5m`, `1h30m`; an int is
seconds) and fails the step for anything else. Lint insists on them for values that
come from alert labels and annotations.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from jinja2 import StrictUndefined, TemplateError, meta, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

CONTEXT_NAMES = frozenset({"alert", "incident", "params", "steps"})

# One `{{ expression }}` and nothing else: rendered to the expression's own value
# (an int stays an int), so typed params survive into step fields and python args.
_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{((?:(?!\{\{|\}\}).)*)\}\}\s*$", re.DOTALL)
_TEMPLATE_MARK = re.compile(r"\{\{|\{%|\{#")
# PromQL's duration grammar (Prometheus model.ParseDuration): units in this order, each once.
_PROMQL_DURATION = re.compile(r"^(?=\d)(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?$")
_AUTHORITY_END = re.compile(r"^https?://[^/?#]+[/?#]", re.IGNORECASE)
PROMQL_FILTERS = frozenset({"promql_string", "promql_duration"})


class Pending(str):
    """A dry run's stand-in for a value an earlier step would expose: renders as
    `<steps.name.key>`, and any attribute of it is another Pending."""

    def __getattr__(self, name: str) -> Pending:
        if name.startswith("_"):
            raise AttributeError(name)
        return Pending(f"{str(self)[:-1]}.{name}>")

    def __getitem__(self, key):  # type: ignore[override]
        return Pending(f"{str(self)[:-1]}.{key}>")


class TemplateFailure(Exception):
    """A template that does not parse, names something undefined, or was refused by the sandbox."""


class UndefinedReference(TemplateFailure):
    """A template read a value that is not there (often an earlier step's that did not pass)."""


class BadValue(ValueError):
    """A value a filter refuses (e.g. not a PromQL duration); the message says which and why."""


def promql_string(value: Any) -> str:
    """`value` as a PromQL double-quoted string literal, quotes included: whatever it holds,
    it stays one string (`churn"} or vector(1)` cannot close the selector)."""
    escaped = []
    for char in str(value):
        if char in ('\\', '"'):
            escaped.append("\\" + char)
        elif char == "\n":
            escaped.append("\\n")
        elif char == "\r":
            escaped.append("\\r")
        elif char == "\t":
            escaped.append("\\t")
        elif 0xD800 <= ord(char) <= 0xDFFF:  # a lone surrogate is no UTF-8: PromQL would refuse it
            escaped.append("\\ufffd")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\u{ord(char):04x}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'


def promql_duration(value: Any) -> str:
    """`value` if it is a PromQL duration (`30s`, `5m`, `1h30m`, `1w`); an int counts as
    seconds. Raises BadValue for anything else, which fails the step."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return f"{value}s"
    text = str(value)
    if not _PROMQL_DURATION.match(text) or not any(c in "123456789" for c in text):
        shown = text if len(text) <= 80 else text[:80] + "…"
        raise BadValue(f"{shown!r} is not a PromQL duration (like 30s, 5m or 1h30m)")
    return text


def literal_prefix(url: str) -> str | None:
    """The scheme and host (and port) of `url` when they are written literally, i.e. no
    template mark before the end of the authority; None otherwise."""
    mark = _TEMPLATE_MARK.search(url)
    if mark is None:
        return url
    head = _AUTHORITY_END.match(url[:mark.start()])
    return head.group(0)[:-1] if head else None


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
    for name in ("lipsum", "cycler", "joiner"):
        env.globals.pop(name, None)
    env.filters["promql_string"] = promql_string
    env.filters["promql_duration"] = promql_duration
    return env


_ENV = _environment()


def is_template(text: str) -> bool:
    return bool(_TEMPLATE_MARK.search(text))


def render_value(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every string inside `value` (dicts and lists walked); raises TemplateFailure."""
    if isinstance(value, str):
        return _render_text(value, context)
    if isinstance(value, Mapping):
        return {key: render_value(item, context) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [render_value(item, context) for item in value]
    return value


def _render_text(text: str, context: Mapping[str, Any]) -> Any:
    if not is_template(text):
        return text
    try:
        single = _SINGLE_EXPRESSION.match(text)
        if single:
            result = _ENV.compile_expression(single.group(1), undefined_to_none=False)(**context)
            if isinstance(result, StrictUndefined):
                str(result)  # raises the UndefinedError or SecurityError it carries
            return result
        return _ENV.from_string(text).render(**context)
    except BadValue as exc:
        raise TemplateFailure(str(exc)) from None
    except SecurityError as exc:
        raise TemplateFailure(f"template {text!r} refused by the sandbox: {exc}") from None
    except UndefinedError as exc:
        raise UndefinedReference(f"template {text!r}: {exc}") from None
    except TemplateError as exc:
        raise TemplateFailure(f"template {text!r}: {exc}") from None
    except Exception as exc:  # e.g. TypeError "no loader" for {% include %}, ZeroDivisionError
        raise TemplateFailure(f"template {text!r}: {type(exc).__name__}: {exc}") from None


def template_strings(value: Any, key: str) -> Iterator[tuple[str, str]]:
    """(key path, text) of every template string inside `value`, for validation."""
    if isinstance(value, str):
        if is_template(value):
            yield key, value
    elif isinstance(value, Mapping):
        for name, item in value.items():
            yield from template_strings(item, f"{key}.{name}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from template_strings(item, f"{key}[{index}]")


def template_problems(text: str, *, params: set[str], earlier_steps: set[str]) -> list[str]:
    """Syntax errors and references a run could never satisfy: unknown top-level names,
    undeclared params, and steps that are not earlier in the runbook."""
    try:
        tree = _ENV.parse(text)
    except TemplateError as exc:
        return [f"template syntax error: {exc}"]
    problems = [f"unknown name {name!r} (templates see {', '.join(sorted(CONTEXT_NAMES))})"
                for name in sorted(meta.find_undeclared_variables(tree) - CONTEXT_NAMES)
                if name not in _ENV.globals]
    for root, attribute in _attribute_references(tree):
        if root == "params" and attribute not in params:
            problems.append(f"param {attribute!r} is not declared in params")
        elif root == "steps" and attribute not in earlier_steps:
            problems.append(f"step {attribute!r} is not an earlier step")
    return problems


def referenced_steps(value: Any) -> set[str]:
    """The earlier steps (`steps.NAME…`) the templates inside `value` read."""
    found = set()
    for _key, text in template_strings(value, ""):
        try:
            tree = _ENV.parse(text)
        except TemplateError:
            continue
        found.update(attribute for root, attribute in _attribute_references(tree) if root == "steps")
    return found


def _attribute_references(tree: nodes.Template) -> Iterator[tuple[str, str]]:
    for node in tree.find_all(nodes.Getattr):
        if isinstance(node.node, nodes.Name):
            yield node.node.name, node.attr
    for node in tree.find_all(nodes.Getitem):
        if isinstance(node.node, nodes.Name) and isinstance(node.arg, nodes.Const) \
                and isinstance(node.arg.value, str):
            yield node.node.name, node.arg.value


def unfiltered_alert_values(text: str, tainted_params: set[str]) -> list[str]:
    """The alert-derived values (`alert.labels…`, `alert.annotations…`, and params in
    `tainted_params`) that `text` uses outside a promql_string or promql_duration filter.
    Anything inside such a filter's input is safe: the filter's output is."""
    try:
        tree = _ENV.parse(text)
    except TemplateError:
        return []  # reported as a syntax error elsewhere
    found: list[str] = []

    def visit(node: nodes.Node, safe: bool) -> None:
        if isinstance(node, nodes.Filter) and node.name in PROMQL_FILTERS:
            if node.node is not None:
                visit(node.node, True)
            for child in [*node.args, *node.kwargs]:
                visit(child, safe)
            return
        if not safe and isinstance(node, nodes.Getattr | nodes.Getitem) and isinstance(node.node, nodes.Name):
            attribute = node.attr if isinstance(node, nodes.Getattr) else \
                (node.arg.value if isinstance(node.arg, nodes.Const) else None)
            root = node.node.name
            if (root == "params" and (attribute in tainted_params or (attribute is None and tainted_params))) or \
                    (root == "alert" and attribute in ("labels", "annotations", None)):
                found.append(f"{root}.{attribute}" if attribute is not None else root)
        for child in node.iter_child_nodes():
            visit(child, safe)

    visit(tree, False)
    return list(dict.fromkeys(found))
