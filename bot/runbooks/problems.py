"""Lint messages in the format's own words: pydantic's ValidationError locations
turned into key paths (`steps[2].argv[0]`), and the rules that need the whole
runbook (template references, duplicate step names, each kind's `lint`).

The whole-runbook rules walk the decoded YAML rather than the validated model, so
a file with a type error still gets every other problem reported in the same lint.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from bot.runbooks.kinds import BY_KIND
from bot.runbooks.kinds.base import LintFacts, Problem, StepSpec
from bot.runbooks.templates import template_problems, template_strings

_MISSING_HINTS = {"version": "required (must be 1)", "name": "required (lower-case letters, digits, - or _)",
                  "steps": "required: a non-empty list of steps"}


def from_validation(error: ValidationError, data: Any, runbook: type[BaseModel],
                    param: type[BaseModel]) -> Iterator[tuple[str, str]]:
    """(key path, problem) for each error pydantic found in `data`."""
    for found in error.errors(include_url=False):
        key, owner, node = _walk(found["loc"], data, runbook, param)
        kind = found["type"]
        if kind in ("value_error", "assertion_error") and isinstance(found.get("ctx", {}).get("error"), Problem):
            problem = found["ctx"]["error"]
            yield key + problem.at, str(problem)
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            expected = found.get("ctx", {}).get("expected_tags", "").replace("'", "")
            tag = node.get("kind") if isinstance(node, Mapping) else None
            yield _join(key, ".kind"), f"unknown step kind {tag!r} (expected one of {expected})"
        elif kind == "missing":
            field = found["loc"][-1]
            if isinstance(owner, type) and issubclass(owner, StepSpec):
                yield key, f"required for a {_kind_name(owner)} step"
            else:
                yield key, _MISSING_HINTS.get(field, "required") if owner is runbook else "required"
        elif kind == "extra_forbidden":
            if isinstance(owner, type) and issubclass(owner, StepSpec):
                yield key, (f"unknown field for a {_kind_name(owner)} step "
                            f"(expected {', '.join(owner.fields())})")
            else:
                known = sorted((owner or runbook).model_fields)
                yield key, f"unknown key (expected one of {', '.join(known)})"
        else:
            yield key or "(file)", found["msg"]


def _walk(loc: tuple[Any, ...], data: Any, runbook: type[BaseModel],
          param: type[BaseModel]) -> tuple[str, Any, Any]:
    """The key path of `loc` over `data`, the model owning its last part (a step kind,
    the runbook or a param; None elsewhere), and the value at the path. A kind's name
    in `loc` (pydantic's tag for the union) is no part of the path."""
    key, node, consumed = "", data, 0
    owner: Any = runbook  # of the next part
    owner_of_last: Any = runbook
    for part in loc:
        if part == "[key]":
            continue
        if isinstance(part, str) and isinstance(node, Mapping) and node.get("kind") == part \
                and part in BY_KIND and part not in node:
            owner = BY_KIND[part]
            continue
        owner_of_last = owner
        if isinstance(part, int) and isinstance(node, list):
            key += f"[{part}]"
            node = node[part] if -len(node) <= part < len(node) else None
        else:
            key = _join(key, f".{part}")
            node = node.get(part) if isinstance(node, Mapping) else None
        consumed += 1
        owner = param if consumed == 2 and loc[0] == "params" else None
    return key, owner_of_last, node


def _join(key: str, part: str) -> str:
    return part.lstrip(".") if not key else key + part


def _kind_name(kind: type[StepSpec]) -> str:
    return next(name for name, cls in BY_KIND.items() if cls is kind)


def whole_runbook(data: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """Problems no single field shows: templates naming undeclared params or later
    steps, duplicate step names, and each kind's rules about the runbook (alert values
    in PromQL, set_alias without changes_production)."""
    raw_params = data.get("params") if isinstance(data.get("params"), Mapping) else {}
    declared = {name for name in raw_params if isinstance(name, str)}
    tainted = frozenset(name for name, spec in raw_params.items()
                        if isinstance(spec, Mapping) and (spec.get("from_label") or spec.get("from_annotation")))
    facts = LintFacts(tainted_params=tainted, changes_production=data.get("changes_production") is True)
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list):
        return
    earlier: set[str] = set()
    for index, raw in enumerate(raw_steps):
        key = f"steps[{index}]"
        yield from _step(raw, key, declared, earlier, facts)
        name = raw.get("name") if isinstance(raw, Mapping) else None
        if isinstance(name, str):
            if name in earlier:
                yield f"{key}.name", f"duplicate step name {name!r}"
            earlier.add(name)


def _step(raw: Any, key: str, declared: set[str], earlier: set[str],
          facts: LintFacts) -> Iterator[tuple[str, str]]:
    name = raw.get("kind") if isinstance(raw, Mapping) else None
    kind = BY_KIND.get(name) if isinstance(name, str) else None
    if kind is None:
        return  # reported by validation
    fields = {name: value for name, value in raw.items()
              if name not in StepSpec.BASE_FIELDS and name not in kind.literal_fields}
    for where, text in template_strings(fields, key):
        for problem in template_problems(text, params=declared, earlier_steps=earlier):
            yield where, problem
    for suffix, problem in kind.lint(raw, facts):
        yield key + suffix, problem
    for suffix, inner in kind.inner_steps(raw):
        yield from _step(inner, key + suffix, declared, earlier, facts)
