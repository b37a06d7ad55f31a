"""Runbooks: diagnostics and rollbacks as YAML (runbooks/*.yaml), loaded, linted and run.

The format is documented in runbooks/README.md. Loading and selection are pure;
running does its I/O in the step kinds' executors (bot/runbooks/kinds/), and fetches only
through the run's guarded client (bot/adapters/http_probe.py).
"""

from bot.runbooks.context import RunContext
from bot.runbooks.engine import OnStep, configured, resolve_params, run, select_runbook, unmet_prerequisites
from bot.runbooks.format import Param, Runbook, RunbookError, Step, lint, load_runbooks, parse_runbook
from bot.runbooks.outcomes import RunResult, StepOutcome, redact

__all__ = [
    "configured",
    "unmet_prerequisites",
    "OnStep", "Param", "RunContext", "RunResult", "Runbook", "RunbookError", "Step", "StepOutcome",
    "lint", "load_runbooks", "parse_runbook", "redact", "resolve_params", "run", "select_runbook",
]
