"""`http`: one request to a URL, passing when the status is as expected and every
JSON check holds; fetched only through the run's guarded client."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator

from bot.runbooks.checks import CHECK_OPERATORS, PathError, check_json, lookup, parse_path
from bot.runbooks.kinds.base import (
    Observation,
    Problem,
    Step,
    StepError,
    StepIO,
    StepSpec,
    Text,
    Value,
    as_text,
    is_template_text,
    rule,
)
from bot.runbooks.templates import Pending

if TYPE_CHECKING:
    from bot.runbooks.context import RunContext


def _json_path(value: Any) -> Any:
    if not isinstance(value, str):
        raise Problem("must be a JSON path like $.a.b[0]")
    try:
        parse_path(value)
    except PathError as exc:
        raise Problem(str(exc)) from None
    return value


JsonPath = Annotated[str, BeforeValidator(_json_path), WithJsonSchema({"type": "string", "pattern": r"^\$"})]


class Check(BaseModel):
    """`{path, op, value}`: the JSON at `path` compared with `value` (none for exists/absent)."""

    model_config = ConfigDict(extra="ignore")
    path: JsonPath
    op: Annotated[str, rule(lambda v: v in CHECK_OPERATORS,
                            lambda v: f"must be one of {', '.join(CHECK_OPERATORS)}, got {v!r}"),
                  Field(json_schema_extra={"enum": list(CHECK_OPERATORS)})] = "=="
    value: Value = None

    @model_validator(mode="before")
    @classmethod
    def _a_mapping_with_a_path(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "path" not in data:
            raise Problem("a check is {path, op, value}")
        return data

    @model_validator(mode="after")
    def _value_unless_presence(self) -> Check:
        if self.op not in ("exists", "absent") and "value" not in self.model_fields_set:
            raise Problem(f"required with op {self.op!r}", at=".value")
        return self


Status = Annotated[Any, rule(
    lambda v: is_template_text(v) or (isinstance(v, int) and not isinstance(v, bool) and 100 <= v <= 599),
    lambda v: f"must be an HTTP status code, got {v!r}"),
    WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 100, "maximum": 599}, {"type": "string"}]})]


class HttpStep(StepSpec):
    kind: Literal["http"]
    url: Text
    method: Text = "GET"
    headers: Annotated[dict[str, Any], rule(lambda v: isinstance(v, dict),
                                            "must be a mapping of header to value")] = {}
    body: Value = Field(None, alias="json")
    status: Status = 200
    checks: Annotated[list[Check], rule(lambda v: isinstance(v, list), "must be a list of {path, op, value}")] = []
    extract: Annotated[dict[str, JsonPath], rule(lambda v: isinstance(v, dict),
                                                 "must map value names to JSON paths")] = {}

    @classmethod
    def prepare(cls, step: Step, spec: Mapping[str, Any], context: RunContext,
                template_context: Mapping[str, Any]) -> HttpCall:
        url = as_text(spec["url"], "url")
        if not isinstance(url, Pending) and not url.startswith(("http://", "https://")):
            raise StepError(f"url: expected http:// or https://, got {url!r}")
        status = spec.get("status", 200)
        try:
            status = int(status)
        except (TypeError, ValueError):
            raise StepError(f"status: expected an HTTP status code, got {status!r}") from None
        return HttpCall(method=str(spec.get("method", "GET")).upper(), url=url,
                        headers={str(k): str(v) for k, v in (spec.get("headers") or {}).items()},
                        body=spec.get("json"), status=status, checks=list(spec.get("checks", [])),
                        extract=dict(spec.get("extract", {})))


@dataclass(frozen=True, slots=True)
class HttpCall:
    method: str
    url: str
    headers: dict[str, str]
    body: Any
    status: int
    checks: list[dict[str, Any]]
    extract: dict[str, str]

    def describe(self) -> str:
        lines = [f"{self.method} {self.url} expecting {self.status}"]
        lines += [f"check {c['path']} {c.get('op', '==')} {c.get('value', '')!r}".rstrip()
                  for c in self.checks]
        return "\n".join(lines)

    async def execute(self, io: StepIO, budget: float) -> Observation:
        response = await io.fetch.request(self.method, self.url, headers=self.headers, json=self.body,
                                          timeout=budget)
        lines = [f"{self.method} {self.url} → {response.status_code} (expected {self.status})"]
        passed = response.status_code == self.status
        try:
            document = response.json()
        except ValueError:
            document = None
        for check in self.checks:
            if document is None:
                ok, line = False, f"{check['path']}: the response is not JSON"
            else:
                ok, line = check_json(document, check["path"], check.get("op", "=="), check.get("value"))
            passed = passed and ok
            lines.append(("ok   " if ok else "FAIL ") + line)
        values: dict[str, Any] = {"status": response.status_code}
        for name, path in self.extract.items():
            found, value = lookup(document, path) if document is not None else (False, None)
            values[name] = value if found else None
        if not passed and not self.checks:
            lines.append(response.text[:500])
        return Observation("passed" if passed else "failed", "\n".join(lines), values)
