"""Pure checks: a tiny JSON path (`$.a.b[0]`, `$['odd key']`) and the comparisons
shared by http checks and prometheus thresholds."""

from __future__ import annotations

import math
import re
from typing import Any

OPERATORS = ("==", "!=", "<", "<=", ">", ">=")
CHECK_OPERATORS = (*OPERATORS, "exists", "absent")
_MISSING = object()
_TOKEN = re.compile(r"""\.([A-Za-z_][A-Za-z0-9_-]*)|\[(-?\d+)\]|\[(?:'([^']*)'|"([^"]*)")\]""")


class PathError(ValueError):
    """A path that is not `$` followed by `.key`, `[index]` or `['key']` parts."""


def parse_path(path: str) -> tuple[str | int, ...]:
    if not path.startswith("$"):
        raise PathError(f"JSON path {path!r} must start with $")
    parts: list[str | int] = []
    position = 1
    while position < len(path):
        token = _TOKEN.match(path, position)
        if token is None:
            raise PathError(f"JSON path {path!r}: cannot read {path[position:]!r}")
        key, index, quoted, double_quoted = token.groups()
        parts.append(int(index) if index is not None else
                     next(p for p in (key, quoted, double_quoted) if p is not None))
        position = token.end()
    return tuple(parts)


def lookup(document: Any, path: str) -> tuple[bool, Any]:
    """(found, value) of `path` in a decoded JSON document; an absent key or index is not found."""
    value = document
    for part in parse_path(path):
        if isinstance(part, int) and isinstance(value, list) and -len(value) <= part < len(value):
            value = value[part]
        elif isinstance(part, str) and isinstance(value, dict) and part in value:
            value = value[part]
        else:
            return False, None
    return True, value


def compare(actual: Any, op: str, expected: Any) -> bool:
    """`actual op expected`; ordering operators compare numbers (numeric strings too) and
    are false for anything that is not a number or is NaN."""
    if op in ("==", "!="):
        equal = _as_number(actual) == _as_number(expected) if _numeric_pair(actual, expected) \
            else actual == expected
        return equal if op == "==" else not equal
    left, right = _as_number(actual), _as_number(expected)
    if left is None or right is None or math.isnan(left) or math.isnan(right):
        return False
    return {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op]


def check_json(document: Any, path: str, op: str, expected: Any = None) -> tuple[bool, str]:
    """One http check: (passed, a line saying what was found)."""
    found, actual = lookup(document, path)
    if op == "exists":
        return found, f"{path} {'exists' if found else 'is missing'}"
    if op == "absent":
        return not found, f"{path} {'is missing' if not found else 'exists'}"
    if not found:
        return False, f"{path} is missing (wanted {op} {expected!r})"
    passed = compare(actual, op, expected)
    return passed, f"{path} = {actual!r} ({'ok' if passed else 'wanted'} {op} {expected!r})"


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _numeric_pair(left: Any, right: Any) -> bool:
    return _as_number(left) is not None and _as_number(right) is not None
