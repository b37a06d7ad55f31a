"""Choosing a runbook for an alert, resolving its params, and running it step by step.

`select_runbook` and `resolve_params` are pure. `run` is the only function here with
I/O, all of it inside the step executors; it never raises for a step's failure: every
step ends as a StepOutcome, and the run as a RunResult.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from typing import Any

from bot.adapters.http_probe import HostPolicy, HttpProbe
from bot.adapters.prometheus import PrometheusApi
from bot.adapters.tls import client_ssl_context
from bot.domain.matchers import match_all
from bot.ports import FetchError, FetchRefused, PrometheusError
from bot.runbooks.context import RunContext
from bot.runbooks.format import Runbook, RunbookError, coerce
from bot.runbooks.kinds.base import Observation, Step, StepError, StepIO
from bot.runbooks.outcomes import RunResult, StepOutcome, cap, redact, run_status, secrets_from_environment
from bot.runbooks.registry import RegistryError
from bot.runbooks.templates import (
    Pending,
    TemplateFailure,
    UndefinedReference,
    literal_prefix,
    referenced_steps,
    render_value,
)

OnStep = Callable[[int, StepOutcome], Awaitable[None]]
_FAILED = ("failed", "error", "timeout")
_WAIT_GRACE_S = 1.0  # wait_until ends itself at its timeout; this only catches a stuck attempt
_WHAT_HAPPENED = {"failed": "failed", "error": "failed", "timeout": "timed out", "skipped": "did not run"}


def configured(context: RunContext) -> frozenset[str]:
    """The prerequisite variables (what a kind's `needs` names) this context has."""
    return frozenset(name for name, value in (("PROMETHEUS_URL", context.prometheus_url),
                                              ("MLFLOW_TRACKING_URI", context.mlflow_uri)) if value)


def runbook_needs(runbook: Runbook) -> list[str]:
    """Every variable some step of the runbook cannot run without, in order of first need."""
    return list(dict.fromkeys(name for step in runbook.steps for name in step.needs()))


def unmet_prerequisites(runbooks: Mapping[str, Runbook], have: frozenset[str]) -> list[str]:
    """One line per runbook that cannot fully work with only `have` set, for the start-up log:
    "error-rate-high needs MLFLOW_TRACKING_URI and PROMETHEUS_URL"."""
    lines = []
    for runbook in runbooks.values():
        missing = [name for name in runbook_needs(runbook) if name not in have]
        if missing:
            lines.append(f"runbook {runbook.name} needs {_and(missing)}: until "
                         f"{'it is' if len(missing) == 1 else 'they are'} set, its steps that use "
                         f"{'it' if len(missing) == 1 else 'them'} are skipped")
    return lines


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def select_runbook(runbooks: Mapping[str, Runbook], name: str | None,
                   labels: Mapping[str, str]) -> Runbook | None:
    """The runbook to run automatically for an alert: the one the route names, else the
    first (in file order) whose matchers all hold. Never one that changes production:
    a route naming such a runbook gets None; runbooks without matchers are chosen by
    name only. A name the directory does not hold falls back to matching."""
    if name is not None and name in runbooks:
        chosen = runbooks[name]
        return None if chosen.changes_production else chosen
    return next((r for r in runbooks.values()
                 if r.matchers and not r.changes_production and match_all(r.matchers, labels)), None)


def resolve_params(runbook: Runbook, labels: Mapping[str, str], annotations: Mapping[str, str],
                   given: Mapping[str, Any]) -> dict[str, Any]:
    """Each param from, in order: `given`, its label, its annotation, its default.

    Raises RunbookError for an unknown given param, a value of the wrong type, or a
    required param with no value.
    """
    unknown = sorted(set(given) - {p.name for p in runbook.params})
    if unknown:
        raise RunbookError(f"{runbook.name}: unknown param(s) {', '.join(unknown)} "
                           f"(declared: {', '.join(p.name for p in runbook.params) or 'none'})")
    resolved: dict[str, Any] = {}
    for param in runbook.params:
        if param.name in given:
            value, origin = given[param.name], "given"
        elif param.from_label and labels.get(param.from_label):
            value, origin = labels[param.from_label], f"label {param.from_label}"
        elif param.from_annotation and annotations.get(param.from_annotation):
            value, origin = annotations[param.from_annotation], f"annotation {param.from_annotation}"
        else:
            value, origin = param.default, "default"
        if value is None:
            if param.required:
                sources = [f"label {param.from_label}" if param.from_label else "",
                           f"annotation {param.from_annotation}" if param.from_annotation else ""]
                hint = " or ".join(s for s in sources if s)
                raise RunbookError(f"{runbook.name}: param {param.name!r} is required"
                                   + (f" (from {hint}, or given)" if hint else ""))
            resolved[param.name] = None
            continue
        try:
            resolved[param.name] = coerce(value, param.type, param.pattern)
        except ValueError as exc:
            raise RunbookError(f"{runbook.name}: param {param.name!r} ({origin}): {exc}") from None
    return resolved


async def run(runbook: Runbook, params: Mapping[str, Any], *, context: RunContext,
              on_step: OnStep | None = None, dry_run: bool = False) -> RunResult:
    """Run the steps in order, awaiting `on_step(index, outcome)` after each.

    A failed step is recorded and the rest continue, unless it has stop_on_failure,
    when the rest are `skipped`. Each step is bounded by its timeout and by what is
    left of the runbook's. With `dry_run`, every step is rendered and validated but
    not executed: `skipped`, with what would run as its output (values earlier steps
    would expose render as `<steps.name.key>`). Every fetch goes through the context's
    HTTP probe (bot/adapters/http_probe.py) within this runbook's host policy; a URL it
    refuses fails its step, naming why.
    """
    secrets = (*secrets_from_environment(context.environ), *context.secrets)
    outcomes: list[StepOutcome] = []
    exposed: dict[str, Any] = {s.name: Pending(f"<steps.{s.name}>") for s in runbook.steps} if dry_run else {}
    template_context = {"alert": {"labels": dict(context.labels), "annotations": dict(context.annotations)},
                        "incident": dict(context.incident), "params": dict(params), "steps": exposed}
    deadline = time.monotonic() + runbook.timeout
    stopped_by: str | None = None
    policy = HostPolicy.build([context.prometheus_url, context.mlflow_uri, *literal_urls(runbook)],
                              context.allowed_hosts)
    async with AsyncExitStack() as owned:
        probe = context.probe or await owned.enter_async_context(
            HttpProbe(ssl_context=client_ssl_context(context.ca_bundle)))
        io = StepIO(fetch=probe.within(policy), context=context,
                    prometheus=context.prometheus or PrometheusApi(context.prometheus_url))
        have, statuses = configured(context), {}
        for index, step in enumerate(runbook.steps):
            started_at, started = context.clock(), time.monotonic()
            remaining = deadline - started
            if stopped_by is not None:
                seen = Observation("skipped", f"not run: {stopped_by}", {})
            elif remaining <= 0:
                seen = Observation("skipped", f"not run: the runbook's timeout ({runbook.timeout:g}s) "
                                              "ran out", {})
            elif not dry_run and (missing := [name for name in step.needs() if name not in have]):
                seen = Observation("skipped", f"skipped: needs {_and(missing)}, which is not set",
                                   {"missing": missing})
            else:
                seen = await _step(step, io, template_context, min(step.timeout, remaining), dry_run,
                                   statuses)
                if seen.status == "timeout" and step.timeout > remaining:
                    seen = Observation("timeout", f"{seen.output} (the runbook's timeout, "
                                                  f"{runbook.timeout:g}s, ran out)", seen.values)
            outcome = StepOutcome(name=step.name, kind=step.kind, status=seen.status, started_at=started_at,
                                  duration_s=round(time.monotonic() - started, 3),
                                  output=cap(redact(seen.output, secrets)),
                                  values=redact(seen.values, secrets))
            outcomes.append(outcome)
            statuses[step.name] = seen.status
            if not dry_run:
                exposed[step.name] = seen.values
            if seen.status in _FAILED and step.stop_on_failure and stopped_by is None:
                stopped_by = f"step {step.name!r} {seen.status} and stops the run"
            if on_step is not None:
                await on_step(index, outcome)
    return RunResult(runbook=runbook.name, params=dict(params), outcomes=tuple(outcomes),
                     status=run_status(outcomes))


def _blame_earlier(step: Step, statuses: Mapping[str, str]) -> Observation | None:
    """A step whose template reads an earlier step that did not pass fails because of it:
    say so ("skipped: step what_changed did not run") instead of the undefined name."""
    specs = [step.spec, *(inner.spec for inner in step.spec.values() if isinstance(inner, Step))]
    earlier = sorted(name for spec in specs for name in referenced_steps(spec)
                     if statuses.get(name, "passed") != "passed")
    if not earlier:
        return None
    reasons = [f"step {name} {_WHAT_HAPPENED.get(statuses[name], statuses[name])}" for name in earlier]
    return Observation("skipped", f"skipped: {', '.join(reasons)}", {})


def literal_urls(runbook: Runbook) -> list[str]:
    """The URLs (up to their host and port) written literally in the runbook's `url`
    fields, wait_until's inner steps included: `https://models.internal/{{ params.model }}`
    counts, `{{ params.endpoint_url }}` does not."""
    found = []
    steps = [*runbook.steps, *(inner for s in runbook.steps for inner in s.spec.values() if isinstance(inner, Step))]
    for step in steps:
        url = step.spec.get("url")
        if isinstance(url, str) and (prefix := literal_prefix(url)) is not None:
            found.append(prefix)
    return found


async def _step(step: Step, io: StepIO, template_context: Mapping[str, Any], budget: float,
                dry_run: bool, statuses: Mapping[str, str]) -> Observation:
    try:
        spec = render_value(step.spec, template_context)
        action = step.prepare(spec, io.context, template_context)
        if dry_run:
            return Observation("skipped", f"would run: {action.describe()}", {})
        limit = budget + _WAIT_GRACE_S if step.kind == "wait_until" else budget
        async with asyncio.timeout(limit):
            return await action.execute(io, budget)
    except TimeoutError:
        return Observation("timeout", f"timed out after {budget:g}s", {})
    except FetchRefused as exc:
        return Observation("failed", f"refused: {exc}", {})
    except UndefinedReference as exc:
        return _blame_earlier(step, statuses) or Observation("error", str(exc), {})
    except (TemplateFailure, StepError, RegistryError, FetchError, PrometheusError) as exc:
        return Observation("error", str(exc), {})
    except Exception as exc:  # unreachable services, a plugin's bug: this step's error, not the run's
        return Observation("error", f"{type(exc).__name__}: {exc}", {})
