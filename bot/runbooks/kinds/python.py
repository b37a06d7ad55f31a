"""`python`: a function from the bot's library or a plugin module, called with the
rendered `args`; it returns a dict of values (`passed: false` fails the step)."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from bot.runbooks.kinds.base import Observation, Step, StepError, StepIO, StepSpec, rule

if TYPE_CHECKING:
    from bot.runbooks.context import RunContext

CALLABLE = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"
_CALLABLE = re.compile(CALLABLE)


class PythonStep(StepSpec):
    kind: Literal["python"]
    callable: Annotated[str, Field(pattern=CALLABLE),
                        rule(lambda v: isinstance(v, str) and bool(_CALLABLE.match(v)),
                             lambda v: f"must be 'package.module:function' (not a template), got {v!r}")]
    args: Annotated[dict[str, Any], rule(lambda v: isinstance(v, dict),
                                         "must be a mapping of argument name to value")] = {}

    @classmethod
    def prepare(cls, step: Step, spec: Mapping[str, Any], context: RunContext,
                template_context: Mapping[str, Any]) -> PythonCall:
        target = spec["callable"]
        module_name, _, function_name = target.partition(":")
        for path in context.plugin_paths:
            if path not in sys.path:
                sys.path.append(path)
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise StepError(f"callable {target}: cannot import {module_name}: {exc}") from None
        function = getattr(module, function_name, None)
        if not callable(function):
            raise StepError(f"callable {target}: {module_name} has no function {function_name}")
        return PythonCall(target=target, function=function, args=dict(spec.get("args") or {}))


@dataclass(frozen=True, slots=True)
class PythonCall:
    target: str
    function: Any
    args: dict[str, Any]

    def describe(self) -> str:
        return f"call {self.target}({', '.join(f'{k}={v!r}' for k, v in self.args.items())})"

    async def execute(self, io: StepIO, budget: float) -> Observation:
        if inspect.iscoroutinefunction(self.function):
            result = await self.function(**self.args)
        else:  # a blocking function runs in a thread; on timeout the step ends, the thread may not
            result = await asyncio.to_thread(self.function, **self.args)
        if result is None:
            result = {}
        if not isinstance(result, dict):
            raise StepError(f"{self.target} returned {type(result).__name__}, expected a dict of values")
        status = "failed" if result.get("passed") is False else "passed"
        output = str(result["message"]) if "message" in result else json.dumps(result, default=str)
        return Observation(status, output, result)
