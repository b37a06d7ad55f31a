"""Runbook values rendered in Jinja2's immutable sandbox.

A runbook is reviewed code, but the values it renders come from alerts, which anyone
who can reach the alert webhook controls. The sandbox refuses attribute access to
Python internals (`__class__`, `__globals__`, ...) and mutation of the context, the
environment has no loader (no `include` of files), and the helpers that hand out
functions (`lipsum`, `cycler`, `joiner`) are removed. A rendered value is data: it is
never passed to a shell.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from jinja2 import StrictUndefined, TemplateError, meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

CONTEXT_NAMES = frozenset({"alert", "incident", "params", "steps"})

# One `{{ expression }}` and nothing else: rendered to the expression's own value
# (an int stays an int), so typed params survive into step fields and python args.
_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{((?:(?!\{\{|\}\}).)*)\}\}\s*$", re.DOTALL)
_TEMPLATE_MARK = re.compile(r"\{\{|\{%|\{#")


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


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
    for name in ("lipsum", "cycler", "joiner"):
        env.globals.pop(name, None)
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
    except SecurityError as exc:
        raise TemplateFailure(f"template {text!r} refused by the sandbox: {exc}") from None
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


def _attribute_references(tree: nodes.Template) -> Iterator[tuple[str, str]]:
    for node in tree.find_all(nodes.Getattr):
        if isinstance(node.node, nodes.Name):
            yield node.node.name, node.attr
    for node in tree.find_all(nodes.Getitem):
        if isinstance(node.node, nodes.Name) and isinstance(node.arg, nodes.Const) \
                and isinstance(node.arg.value, str):
            yield node.node.name, node.arg.value
