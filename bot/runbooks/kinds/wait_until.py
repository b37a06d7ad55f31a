"""`wait_until`: an inline step of any other kind, tried every `interval` until it
passes or the step's timeout runs out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from bot.ports import FetchRefused
from bot.runbooks.kinds.base import Duration, Observation, Step, StepIO, StepSpec
from bot.runbooks.templates import render_value

if TYPE_CHECKING:
    from bot.runbooks.context import RunContext

DEFAULT_INTERVAL = 10.0


class WaitUntilStep(StepSpec):
    literal_fields: ClassVar[tuple[str, ...]] = ("step", "interval")
    nestable: ClassVar[bool] = False

    kind: Literal["wait_until"]
    step: InnerStep  # noqa: F821 (the union of nestable kinds, given by the registry)
    interval: Duration = DEFAULT_INTERVAL

    @classmethod
    def inner_steps(cls, raw: Mapping[str, Any]) -> list[tuple[str, Any]]:
        return [(".step", raw.get("step"))]

    @classmethod
    def needs(cls, spec: Mapping[str, Any]) -> tuple[str, ...]:
        inner = spec.get("step")
        return inner.needs() if isinstance(inner, Step) else ()

    @classmethod
    def prepare(cls, step: Step, spec: Mapping[str, Any], context: RunContext,
                template_context: Mapping[str, Any]) -> WaitUntil:
        inner: Step = spec["step"]
        inner_spec = render_value(inner.spec, template_context)
        return WaitUntil(step=inner, inner=inner.prepare(inner_spec, context, template_context),
                         interval=spec.get("interval", DEFAULT_INTERVAL))


@dataclass(frozen=True, slots=True)
class WaitUntil:
    step: Step
    inner: Any
    interval: float

    def describe(self) -> str:
        return f"every {self.interval:g}s until passed: {self.inner.describe()}"

    async def execute(self, io: StepIO, budget: float) -> Observation:
        """Polls until the inner step passes; ends itself with `timeout` (keeping the last
        attempt's output) when `budget` runs out."""
        deadline = time.monotonic() + budget
        attempts, last = 0, Observation("timeout", "no attempt finished", {})
        while (remaining := deadline - time.monotonic()) > 0:
            attempts += 1
            try:
                async with asyncio.timeout(min(self.step.timeout, remaining)):
                    last = await self.inner.execute(io, min(self.step.timeout, remaining))
            except TimeoutError:
                last = Observation("timeout", f"attempt {attempts} timed out", {})
            except FetchRefused:  # waiting will not change the policy
                raise
            except Exception as exc:  # a refused connection is what we are waiting out
                last = Observation("error", f"{type(exc).__name__}: {exc}", {})
            if last.status == "passed":
                return Observation("passed", f"passed on attempt {attempts}\n{last.output}", last.values)
            await asyncio.sleep(max(0.0, min(self.interval, deadline - time.monotonic())))
        return Observation("timeout", f"still not passing after {attempts} attempts in {budget:g}s; "
                                      f"last ({last.status}):\n{last.output}", last.values)
