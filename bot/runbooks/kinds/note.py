"""`note`: text for the incident thread; always passes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from bot.runbooks.kinds.base import Observation, Step, StepIO, StepSpec, Text

if TYPE_CHECKING:
    from bot.runbooks.context import RunContext


class NoteStep(StepSpec):
    kind: Literal["note"]
    message: Text

    @classmethod
    def prepare(cls, step: Step, spec: Mapping[str, Any], context: RunContext,
                template_context: Mapping[str, Any]) -> Note:
        return Note(message=str(spec["message"]))


@dataclass(frozen=True, slots=True)
class Note:
    message: str

    def describe(self) -> str:
        return f"note: {self.message}"

    async def execute(self, io: StepIO, budget: float) -> Observation:
        return Observation("passed", self.message, {"message": self.message})
