"""`prometheus`: a PromQL query, instant or over a range, optionally against a threshold
on the max over every series. Values from the alert reach the query only through the
promql_string/promql_duration filters (a lint rule, below)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from bot.ports import PrometheusError
from bot.runbooks.checks import OPERATORS, compare
from bot.runbooks.kinds.base import (
    Duration,
    LintFacts,
    Observation,
    Problem,
    Step,
    StepError,
    StepIO,
    StepSpec,
    Text,
    Value,
    as_number,
    as_text,
    rule,
)
from bot.runbooks.templates import Pending, unfiltered_alert_values

if TYPE_CHECKING:
    from bot.runbooks.context import RunContext

_SERIES_SHOWN = 5


class Threshold(BaseModel):
    """The healthy condition: `{op: "<", value: 0.05}` passes while the max stays below 0.05."""

    model_config = ConfigDict(extra="ignore")
    op: Annotated[str, rule(lambda v: v in OPERATORS, lambda v: f"must be one of {', '.join(OPERATORS)}, got {v!r}"),
                  Field(json_schema_extra={"enum": list(OPERATORS)})]
    value: Value

    @model_validator(mode="before")
    @classmethod
    def _op_and_value(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "op" not in data or "value" not in data:
            raise Problem("must be {op, value}")
        return data


class PrometheusStep(StepSpec):
    literal_fields: ClassVar[tuple[str, ...]] = ("range", "step")

    kind: Literal["prometheus"]
    query: Text
    range: Duration | None = None
    """Makes it a range query over this long, ending now."""
    step: Duration | None = None
    """The resolution of a range query (default 1m)."""
    url: Text = None
    """The Prometheus to ask (default PROMETHEUS_URL)."""
    threshold: Threshold | None = None
    """Passes when the max over every series and sample satisfies it."""

    @field_validator("step")
    @classmethod
    def _only_with_range(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and "range" in info.data and info.data["range"] is None:
            raise Problem("only for range queries (set range too)")
        return value

    @classmethod
    def lint(cls, raw: Mapping[str, Any], facts: LintFacts) -> Iterator[tuple[str, str]]:
        if isinstance(raw.get("query"), str):
            for value in unfiltered_alert_values(raw["query"], set(facts.tainted_params)):
                yield ".query", (f"{value} comes from the alert: splice it with | promql_string (inside "
                                 "a selector) or | promql_duration (inside [...])")

    @classmethod
    def needs(cls, spec: Mapping[str, Any]) -> tuple[str, ...]:
        return () if spec.get("url") else ("PROMETHEUS_URL",)

    @classmethod
    def prepare(cls, step: Step, spec: Mapping[str, Any], context: RunContext,
                template_context: Mapping[str, Any]) -> PromQuery:
        base_url = spec.get("url") or context.prometheus_url
        if not base_url:
            raise StepError("no Prometheus to ask: set PROMETHEUS_URL or the step's url")
        threshold = spec.get("threshold") or {}
        return PromQuery(base_url=as_text(base_url, "url"), own_url=bool(spec.get("url")),
                         query=as_text(spec["query"], "query"),
                         range_s=spec.get("range"), step_s=spec.get("step", 60.0), op=threshold.get("op"),
                         threshold=as_number(threshold["value"], "threshold.value") if threshold else None)


@dataclass(frozen=True, slots=True)
class PromQuery:
    base_url: str
    own_url: bool  # the step names its Prometheus (else the configured one is asked)
    query: str
    range_s: float | None
    step_s: float
    op: str | None
    threshold: float | Pending | None

    def describe(self) -> str:
        kind = f"range {timedelta(seconds=self.range_s)} step {self.step_s:g}s" if self.range_s else "instant"
        rule = f"; passes when max {self.op} {self.threshold}" if self.op else ""
        return f"PromQL ({kind}) at {self.base_url}: {self.query}{rule}"

    async def execute(self, io: StepIO, budget: float) -> Observation:
        try:
            series = await io.prometheus.query(
                io.fetch, self.query, at=io.context.clock().timestamp(),
                url=self.base_url if self.own_url else None, range_s=self.range_s,
                step_s=self.step_s, timeout=budget)
        except PrometheusError as exc:
            raise StepError(str(exc)) from None
        samples = [v for one in series for v in one.values]
        value = max(samples) if samples else None
        lines = [f"{self.query} → " + (f"{value:g} (max over {len(series)} series)" if value is not None
                                       else "no samples")]
        for one in sorted(series, key=lambda s: -max(s.values, default=-math.inf))[:_SERIES_SHOWN]:
            shown = ", ".join(f'{k}="{v}"' for k, v in sorted(one.labels.items()))
            lines.append(f"  {{{shown}}} {max(one.values, default=math.nan):g}")
        status = "passed"
        if self.op:
            passed = value is not None and compare(value, self.op, self.threshold)
            status = "passed" if passed else "failed"
            lines.append(f"threshold: max {self.op} {self.threshold:g} → {status}")
        return Observation(status, "\n".join(lines), {"value": value, "series": len(series)})

