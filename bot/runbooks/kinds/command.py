"""`command`: a program run directly with no shell, each rendered item exactly one
argument. The program is written literally, and a rendered value that would be read
as an option is refused unless the step says `allow_options: true`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BeforeValidator, Field, WithJsonSchema

from bot.runbooks.kinds.base import (
    IDENTIFIER,
    Flag,
    Observation,
    Problem,
    Step,
    StepError,
    StepIO,
    StepSpec,
    as_text,
    is_identifier,
    is_template_text,
    rule,
)
from bot.runbooks.outcomes import OUTPUT_LIMIT

if TYPE_CHECKING:
    from bot.runbooks.context import RunContext

_COMMAND_OUTPUT_BYTES = OUTPUT_LIMIT - 256  # room for the exit line and the "cut" note within the cap


def _argv(value: Any) -> Any:
    if not isinstance(value, list) or not value or \
            not all(isinstance(item, str | int | float) for item in value):
        raise Problem("must be a non-empty list of strings (no shell: one item per argument)")
    if is_template_text(value[0]):
        raise Problem("the program must be written literally, not a template", at="[0]")
    return value


Argv = Annotated[list[str | int | float], BeforeValidator(_argv), Field(min_length=1)]
EnvNames = Annotated[list[str], rule(
    lambda v: isinstance(v, list) and all(is_identifier(n) for n in v),
    "must be a list of environment variable names"),
    WithJsonSchema({"type": "array", "items": {"type": "string", "pattern": IDENTIFIER}})]


class CommandStep(StepSpec):
    kind: Literal["command"]
    argv: Argv
    """The program (written literally) and its arguments, one item each; no shell."""
    env_allow: EnvNames = []
    """Environment variables passed on besides PATH."""
    allow_options: Flag = False
    """Let a rendered value start with '-' (it would be read as an option)."""

    @classmethod
    def prepare(cls, step: Step, spec: Mapping[str, Any], context: RunContext,
                template_context: Mapping[str, Any]) -> Command:
        """A rendered value that starts with `-` would be read as an option (`--kubeconfig=…`,
        `-o`), so it is refused unless the step sets `allow_options: true`; a `-` written
        in the runbook itself (step.spec, unrendered) is the runbook's."""
        argv = [as_text(item, f"argv[{i}]") for i, item in enumerate(spec["argv"])]
        if not spec.get("allow_options", False):
            for index, (value, source) in enumerate(zip(argv, step.spec["argv"], strict=True)):
                if index and value.startswith("-") and not str(source).startswith("-"):
                    shown = value if len(value) <= 80 else value[:80] + "…"
                    raise StepError(f"argv[{index}]: the rendered value {shown!r} starts with '-' and would "
                                    "be read as an option; set allow_options: true on the step to allow it")
        names = ["PATH", *spec.get("env_allow", [])]
        env = {name: context.environ[name] for name in names if name in context.environ}
        return Command(argv=argv, env=env)


@dataclass(frozen=True, slots=True)
class Command:
    """argv is executed directly (no shell): a rendered value is one argument, whatever it holds."""

    argv: list[str]
    env: dict[str, str]

    def describe(self) -> str:
        return f"exec {json.dumps(self.argv)} with env {sorted(self.env)}"

    async def execute(self, io: StepIO, budget: float) -> Observation:
        started = time.monotonic()
        try:
            process = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, env=self.env, start_new_session=True)
        except OSError as exc:
            raise StepError(f"cannot start {self.argv[0]!r}: {exc}") from None
        try:
            kept, total = bytearray(), 0
            assert process.stdout is not None
            while chunk := await process.stdout.read(65536):
                total += len(chunk)
                kept += chunk[:max(0, _COMMAND_OUTPUT_BYTES - len(kept))]
            code = await process.wait()
        finally:
            if process.returncode is None:  # cancelled by the step's timeout: end the whole group
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        output = kept.decode("utf-8", errors="replace")
        if total > len(kept):
            output += f"\n… [{total - len(kept)} more bytes of output cut]"
        elapsed = time.monotonic() - started
        header = f"exit {code} after {elapsed:.1f}s"
        return Observation("passed" if code == 0 else "failed", f"{header}\n{output}".rstrip(),
                           {"exit_code": code, "output": output})
