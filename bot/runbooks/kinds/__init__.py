"""The step kinds, one module each: its schema (a pydantic model) and its run
(`prepare`, then the action's `describe`/`execute`). Adding a kind is a module and
a line in KINDS."""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import BeforeValidator, Field

from bot.runbooks.kinds.base import Problem, StepSpec
from bot.runbooks.kinds.command import CommandStep
from bot.runbooks.kinds.http import HttpStep
from bot.runbooks.kinds.mlflow import MlflowStep
from bot.runbooks.kinds.note import NoteStep
from bot.runbooks.kinds.prometheus import PrometheusStep
from bot.runbooks.kinds.python import PythonStep
from bot.runbooks.kinds.wait_until import WaitUntilStep

KINDS: tuple[type[StepSpec], ...] = (HttpStep, PrometheusStep, CommandStep, PythonStep, MlflowStep,
                                     WaitUntilStep, NoteStep)
BY_KIND: dict[str, type[StepSpec]] = {kind.model_fields["kind"].annotation.__args__[0]: kind for kind in KINDS}


def _a_mapping(value: Any) -> Any:
    if not isinstance(value, dict):
        raise Problem("a step is a mapping with name, kind and its fields")
    return value


def _union(kinds: tuple[type[StepSpec], ...]) -> Any:
    """A step of one of `kinds`, chosen by its `kind` field."""
    return Annotated[Union[kinds], Field(discriminator="kind"), BeforeValidator(_a_mapping)]  # noqa: UP007


AnyStep = _union(KINDS)
InnerStep = _union(tuple(kind for kind in KINDS if kind.nestable))
for _kind in KINDS:
    _kind.model_rebuild(_types_namespace={"InnerStep": InnerStep})
