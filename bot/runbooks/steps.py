"""The step kinds. Each turns a rendered spec into an action (`prepare`: validation
only, no I/O, shared by dry runs and real runs) that can say what it would do
(`describe`) and do it (`execute`). Executors return an Observation; anything they
raise becomes an `error` outcome in the engine, and the engine enforces timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import json
import math
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from bot.runbooks.checks import check_json, compare, lookup
from bot.runbooks.context import RunContext
from bot.runbooks.fetch import Fetcher, FetchRefused
from bot.runbooks.format import Step
from bot.runbooks.outcomes import OUTPUT_LIMIT
from bot.runbooks.registry import AliasMoved, ModelRegistry, iso_from_millis
from bot.runbooks.templates import Pending, render_value

DEFAULT_ALIAS = "champion"
DEFAULT_INTERVAL = 10.0
_SERIES_SHOWN = 5
_COMMAND_OUTPUT_BYTES = OUTPUT_LIMIT - 256  # room for the exit line and the "cut" note within the cap


class StepError(Exception):
    """A step that cannot run as written once rendered (bad value, missing service URL)."""


@dataclass(frozen=True, slots=True)
class Observation:
    status: str
    output: str
    values: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StepIO:
    """What executors share during one run: `fetch` is the run's only HTTP client."""

    fetch: Fetcher
    context: RunContext


def prepare(step: Step, spec: Mapping[str, Any], context: RunContext, template_context: Mapping[str, Any]):
    """The action for `step` from its rendered `spec`; raises StepError when a value is unusable."""
    if step.kind == "command":  # needs the unrendered argv too, to tell data from what is written
        return _prepare_command(spec, context, written=step.spec)
    return _PREPARE[step.kind](spec, context, template_context)


def _number(value: Any, key: str) -> float | Pending:
    if isinstance(value, Pending):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        raise StepError(f"{key}: expected a number, got {value!r}") from None


def _text(value: Any, key: str) -> str:
    if value is None or isinstance(value, dict | list):
        raise StepError(f"{key}: expected a value, got {value!r}")
    return str(value)


# --- http ---------------------------------------------------------------------------------

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


def _prepare_http(spec: Mapping[str, Any], _context: RunContext, _t: Mapping[str, Any]) -> HttpCall:
    url = _text(spec["url"], "url")
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


# --- prometheus ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PromQuery:
    base_url: str
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
        now = io.context.clock().timestamp()
        if self.range_s:
            endpoint = "/api/v1/query_range"
            params = {"query": self.query, "start": now - self.range_s, "end": now, "step": self.step_s}
        else:
            endpoint, params = "/api/v1/query", {"query": self.query, "time": now}
        response = await io.fetch.request("GET", self.base_url.rstrip("/") + endpoint, params=params,
                                          timeout=budget)
        try:
            body = response.json()
        except ValueError:
            raise StepError(f"Prometheus answered {response.status_code} and not JSON: "
                            f"{response.text[:200]}") from None
        if body.get("status") != "success":
            raise StepError(f"Prometheus refused the query: {body.get('errorType')}: {body.get('error')}")
        series = _series(body["data"])
        samples = [v for _labels, values in series for v in values]
        value = max(samples) if samples else None
        lines = [f"{self.query} → " + (f"{value:g} (max over {len(series)} series)" if value is not None
                                       else "no samples")]
        for labels, values in sorted(series, key=lambda s: -max(s[1], default=-math.inf))[:_SERIES_SHOWN]:
            shown = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
            lines.append(f"  {{{shown}}} {max(values, default=math.nan):g}")
        status = "passed"
        if self.op:
            passed = value is not None and compare(value, self.op, self.threshold)
            status = "passed" if passed else "failed"
            lines.append(f"threshold: max {self.op} {self.threshold:g} → {status}")
        return Observation(status, "\n".join(lines), {"value": value, "series": len(series)})


def _series(data: Mapping[str, Any]) -> list[tuple[dict[str, str], list[float]]]:
    """(labels, non-NaN sample values) of each series in an instant or range answer."""
    kind, result = data.get("resultType"), data.get("result")
    if kind in ("scalar", "string"):
        result = [{"metric": {}, "value": result}]
    found = []
    for item in result or []:
        raw = item.get("values") or ([item["value"]] if "value" in item else [])
        values = [float(v) for _ts, v in raw if not math.isnan(float(v))]
        found.append((item.get("metric", {}), values))
    return found


def _prepare_prometheus(spec: Mapping[str, Any], context: RunContext, _t: Mapping[str, Any]) -> PromQuery:
    base_url = spec.get("url") or context.prometheus_url
    if not base_url:
        raise StepError("no Prometheus to ask: set PROMETHEUS_URL or the step's url")
    threshold = spec.get("threshold") or {}
    return PromQuery(base_url=_text(base_url, "url"), query=_text(spec["query"], "query"),
                     range_s=spec.get("range"), step_s=spec.get("step", 60.0), op=threshold.get("op"),
                     threshold=_number(threshold["value"], "threshold.value") if threshold else None)


# --- command ------------------------------------------------------------------------------

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


def _prepare_command(spec: Mapping[str, Any], context: RunContext, *, written: Mapping[str, Any]) -> Command:
    """A rendered value that starts with `-` would be read as an option (`--kubeconfig=…`,
    `-o`), so it is refused unless the step sets `allow_options: true`; a `-` written
    in the runbook itself is the runbook's."""
    argv = [_text(item, f"argv[{i}]") for i, item in enumerate(spec["argv"])]
    if not spec.get("allow_options", False):
        for index, (value, source) in enumerate(zip(argv, written["argv"], strict=True)):
            if index and value.startswith("-") and not str(source).startswith("-"):
                shown = value if len(value) <= 80 else value[:80] + "…"
                raise StepError(f"argv[{index}]: the rendered value {shown!r} starts with '-' and would "
                                "be read as an option; set allow_options: true on the step to allow it")
    names = ["PATH", *spec.get("env_allow", [])]
    env = {name: context.environ[name] for name in names if name in context.environ}
    return Command(argv=argv, env=env)


# --- python -------------------------------------------------------------------------------

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


def _prepare_python(spec: Mapping[str, Any], context: RunContext, _t: Mapping[str, Any]) -> PythonCall:
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


# --- mlflow -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class RegistryAction:
    base_url: str
    action: str
    model: str
    alias: str
    version: str | None
    max_results: int
    expected: str | None = None  # set_alias: only from this version (re-read just before)

    def describe(self) -> str:
        target = f" to version {self.version}" if self.action == "set_alias" else ""
        if self.action == "set_alias" and self.expected is not None:
            target += f" if it still serves version {self.expected}"
        return f"MLflow {self.base_url}: {self.action} {self.model}@{self.alias}{target}"

    async def execute(self, io: StepIO, budget: float) -> Observation:
        registry = ModelRegistry(io.fetch, self.base_url, io.context.clock)
        name, alias = self.model, self.alias
        if self.action == "what_changed":
            found = await registry.what_changed(name, alias)
            return Observation("passed", _what_changed_text(found), found)
        if self.action == "get_alias":
            version = await registry.alias_version(name, alias)
            if version is None:
                return Observation("failed", f"{name} has no alias {alias!r}", {})
            values = _version_values(version)
            text = f"{name}@{alias} → v{values['version']} (created {values['created_at']}, " \
                   f"source {values['source']})"
            return Observation("passed", text, values)
        if self.action == "list_versions":
            versions = [_version_values(v) for v in await registry.versions(name, self.max_results)]
            for version in versions:
                run_id = version["run_id"]
                version["metrics"] = await registry.run_metrics(run_id) if run_id else {}
            lines = [f"v{v['version']}  created {v['created_at']}  tags {v['tags']}  metrics {v['metrics']}"
                     for v in versions]
            text = "\n".join(lines) or f"{name} has no versions"
            return Observation("passed", text, {"versions": versions})
        try:
            before = await registry.set_alias(name, alias, self.version or "",
                                              expected=self.expected)
        except AliasMoved as exc:
            return Observation("failed", str(exc), {"expected_version": self.expected})
        moved = f"v{before} → v{self.version}" if before != self.version else f"already v{self.version}"
        return Observation("passed", f"{name}@{alias}: {moved}",
                           {"previous_version": before, "version": self.version})


def _version_values(version: Mapping[str, Any]) -> dict[str, Any]:
    return {"version": version["version"], "created_at": iso_from_millis(version.get("creation_timestamp")),
            "run_id": version.get("run_id") or None, "source": version.get("source"),
            "status": version.get("status"), "description": version.get("description") or "",
            "tags": {t["key"]: t["value"] for t in version.get("tags", [])},
            "aliases": list(version.get("aliases", []))}


def _what_changed_text(found: Mapping[str, Any]) -> str:
    moved = (f"alias moved to it at {found['moved_at']} by oncall-bot" if found["moved_by_bot"] else
             "when the alias moved is unknown: MLflow keeps no alias history and oncall-bot did not move it "
             f"(not before the version was created, {found['current_created_at']})")
    previous = (f"previous version: v{found['previous_version']} ({found['previous_source']})"
                if found["previous_version"] else "previous version: none")
    return (f"{found['model']}@{found['alias']} serves v{found['current_version']} "
            f"(created {found['current_created_at']}, run {found['current_run_id'] or '-'})\n"
            f"{moved}\n{previous}")


def _prepare_mlflow(spec: Mapping[str, Any], context: RunContext, _t: Mapping[str, Any]) -> RegistryAction:
    if not context.mlflow_uri:
        raise StepError("no MLflow to ask: set MLFLOW_TRACKING_URI")
    version = spec.get("version")
    if spec["action"] == "set_alias" and (version is None or str(version).strip() in ("", "None")):
        raise StepError("version: no version to set the alias to")
    try:
        max_results = int(spec.get("max_results", 10))
    except (TypeError, ValueError):
        raise StepError(f"max_results: expected a number, got {spec.get('max_results')!r}") from None
    expected = spec.get("expect_version")
    return RegistryAction(base_url=context.mlflow_uri, action=spec["action"],
                          model=_text(spec["model"], "model"),
                          alias=_text(spec.get("alias") or DEFAULT_ALIAS, "alias"),
                          version=None if version is None else _text(version, "version"),
                          max_results=max_results,
                          expected=None if expected is None or str(expected).strip() in ("", "None")
                          else _text(expected, "expect_version"))


# --- wait_until ---------------------------------------------------------------------------

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


def _prepare_wait(spec: Mapping[str, Any], context: RunContext,
                  template_context: Mapping[str, Any]) -> WaitUntil:
    inner: Step = spec["step"]
    inner_spec = render_value(inner.spec, template_context)
    return WaitUntil(step=inner, inner=prepare(inner, inner_spec, context, template_context),
                     interval=spec.get("interval", DEFAULT_INTERVAL))


# --- note ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Note:
    message: str

    def describe(self) -> str:
        return f"note: {self.message}"

    async def execute(self, io: StepIO, budget: float) -> Observation:
        return Observation("passed", self.message, {"message": self.message})


def _prepare_note(spec: Mapping[str, Any], _context: RunContext, _t: Mapping[str, Any]) -> Note:
    return Note(message=str(spec["message"]))


_PREPARE = {"http": _prepare_http, "prometheus": _prepare_prometheus,
            "python": _prepare_python, "mlflow": _prepare_mlflow, "wait_until": _prepare_wait,
            "note": _prepare_note}
