"""The runbook engine's pure parts: the format, JSON paths, params, templates, redaction,
selection, and runs of steps that need no outside service (note, python)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from bot.runbooks import (
    RunbookError,
    RunContext,
    lint,
    load_runbooks,
    parse_runbook,
    redact,
    resolve_params,
    run,
    select_runbook,
)
from bot.runbooks.checks import check_json, compare, lookup
from bot.runbooks.outcomes import secrets_from_environment
from bot.runbooks.templates import TemplateFailure, render_value

SHIPPED = Path(__file__).resolve().parents[2] / "runbooks"
NOW = datetime(2026, 5, 4, 9, 15, tzinfo=UTC)


def runbook_of(**fields):
    data = {"version": 1, "name": "t", "steps": [{"name": "n", "kind": "note", "message": "hi"}]}
    data.update(fields)
    return parse_runbook(data, "t.yaml")


def problems_of(tmp_path: Path, text: str) -> list[str]:
    (tmp_path / "bad.yaml").write_text(text)
    return lint(tmp_path)


def run_sync(runbook, params=None, **kwargs):
    context = kwargs.pop("context", RunContext(clock=lambda: NOW, environ={}))
    return asyncio.run(run(runbook, params or {}, context=context, **kwargs))


# --- format -------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("version: 2\nname: x\nsteps: [{name: a, kind: note, message: m}]", "bad.yaml: version: must be 1"),
    ("version: 1\nname: x\nsteps: [{name: a, kind: shell, message: m}]", "bad.yaml: steps[0].kind: unknown step kind 'shell'"),
    ("version: 1\nname: x\nsteps: [{name: a, kind: note}]", "bad.yaml: steps[0].message: required for a note step"),
    ("version: 1\nname: x\nsteps: [{name: a, kind: note, message: m, colour: red}]", "bad.yaml: steps[0].colour: unknown field"),
    ("version: 1\nname: x\nsteps: [{name: a, kind: note, message: m}, {name: a, kind: note, message: m}]",
     "bad.yaml: steps[1].name: duplicate step name 'a'"),
    ("version: 1\nname: x\nmatchers: ['model=~\"(\"']\nsteps: [{name: a, kind: note, message: m}]",
     "bad.yaml: matchers[0]: matcher"),
    ("version: 1\nname: x\nparams: {n: {type: number}}\nsteps: [{name: a, kind: note, message: m}]",
     "bad.yaml: params.n.type: must be one of string, int, float, bool"),
    ("version: 1\nname: x\nparams: {n: {type: int, default: lots}}\nsteps: [{name: a, kind: note, message: m}]",
     "bad.yaml: params.n.default: expected int"),
    ("version: 1\nname: x\nsteps: [{name: a, kind: note, message: '{{ params.missing }}'}]",
     "bad.yaml: steps[0].message: param 'missing' is not declared"),
    ("version: 1\nname: x\nsteps: [{name: a, kind: note, message: '{{ steps.later.v }}'}, {name: later, kind: note, message: m}]",
     "bad.yaml: steps[0].message: step 'later' is not an earlier step"),
    ("version: 1\nname: x\nsteps: [{name: a, kind: note, message: '{{ open(\"/etc/passwd\") }}'}]",
     "bad.yaml: steps[0].message: unknown name 'open'"),
    ("version: 1\nname: x\nsteps: [{name: a, kind: note, message: '{{ params.x '}]",
     "bad.yaml: steps[0].message: template syntax error"),
    ("version: 1\nname: x\nsteps: [{name: a, kind: note, message: m, timeout: soon}]",
     "bad.yaml: steps[0].timeout: must be a positive duration"),
    ("version: 1\nname: x\nsteps: [{name: a, kind: prometheus, query: up, threshold: {op: '=>', value: 1}}]",
     "bad.yaml: steps[0].threshold.op: must be one of"),
    ("version: 1\nname: x\nsteps: [{name: a, kind: http, url: 'http://x', checks: [{path: 'a.b', op: exists}]}]",
     "bad.yaml: steps[0].checks[0].path: JSON path 'a.b' must start with $"),
    ("version: 1\nname: x\nsteps: [{name: a, kind: command, argv: 'rm -rf /'}]",
     "bad.yaml: steps[0].argv: must be a non-empty list"),
    ("version: 1\nname: x\nsteps: [{name: a, kind: python, callable: '{{ params.fn }}'}]",
     "bad.yaml: steps[0].callable: must be 'package.module:function'"),
    ("version: 1\nname: x\nsteps: [{name: a, kind: mlflow, action: set_alias, model: m}]",
     "bad.yaml: steps[0].version: required for mlflow action set_alias"),
    ("version: 1\nname: x\nsteps: [{name: w, kind: wait_until, step: {name: i, kind: wait_until, step: {}}}]",
     "bad.yaml: steps[0].step.kind: unknown step kind 'wait_until'"),
    ("version: 1\nname: x\nsteps: [{name: w, kind: wait_until, step: {name: i, kind: note, message: '{{ params.p }}'}}]",
     "bad.yaml: steps[0].step.message: param 'p' is not declared"),
    ("- not a mapping", "bad.yaml: (file): a runbook is a mapping"),
    ("version: 1\nname: x\nsteps: [{name: a, kind: note, message: m}]\nmatcher: []", "bad.yaml: matcher: unknown key"),
])
def test_invalid_runbook_names_file_and_key(tmp_path, text, expected):
    problems = problems_of(tmp_path, text)
    assert any(p.startswith(str(tmp_path / expected.split(":")[0])) and expected.split(": ", 1)[1] in p
               for p in problems), problems
    with pytest.raises(RunbookError, match=str(tmp_path / "bad.yaml")):
        load_runbooks(tmp_path)


def test_duplicate_runbook_names_across_files(tmp_path):
    for name in ("a.yaml", "b.yaml"):
        (tmp_path / name).write_text("version: 1\nname: same\nsteps: [{name: s, kind: note, message: m}]")
    assert lint(tmp_path) == [f"{tmp_path / 'b.yaml'}: name: runbook 'same' is also defined in {tmp_path / 'a.yaml'}"]


def test_shipped_runbooks_lint_clean_and_every_diagnostic_asks_what_changed_first():
    assert lint(SHIPPED) == []
    runbooks = load_runbooks(SHIPPED)
    assert set(runbooks) == {"model-endpoint-down", "error-rate-high", "latency-regression", "prediction-drift",
                             "stale-features", "rollback-model"}
    for runbook in runbooks.values():
        first = runbook.steps[0]
        assert (first.kind, first.spec["action"]) == ("mlflow", "what_changed"), runbook.name
        assert runbook.changes_production == (runbook.name == "rollback-model")


# --- JSON paths and comparisons -----------------------------------------------------------

DOC = {"a": {"b": [10, {"c": "x"}]}, "odd key": True, "n": "0.5"}


@pytest.mark.parametrize("path, found, value", [
    ("$", True, DOC), ("$.a.b[0]", True, 10), ("$.a.b[-1].c", True, "x"), ("$['odd key']", True, True),
    ("$.a.b[2]", False, None), ("$.a.missing", False, None), ("$.n.x", False, None), ("$.a[0]", False, None),
])
def test_json_path_lookup(path, found, value):
    assert lookup(DOC, path) == (found, value)


@pytest.mark.parametrize("path, op, expected, passed", [
    ("$.a.b[0]", "==", 10, True), ("$.a.b[0]", ">", 5, True), ("$.a.b[0]", "<=", 9, False),
    ("$.n", "<", 1, True), ("$.a.b[1].c", "==", "x", True), ("$.a.b[1].c", ">", 1, False),
    ("$.a", "exists", None, True), ("$.zzz", "exists", None, False), ("$.zzz", "absent", None, True),
    ("$.zzz", "==", 1, False), ("$['odd key']", "!=", False, True),
])
def test_json_checks(path, op, expected, passed):
    assert check_json(DOC, path, op, expected)[0] is passed


def test_ordering_comparisons_are_false_for_nan_and_non_numbers():
    assert not compare(float("nan"), "<", 1) and not compare("abc", ">", 1) and not compare(None, ">=", 0)
    assert compare("7", "==", 7.0) and compare(0.06, ">", "0.05")


# --- params -------------------------------------------------------------------------------

PARAMS = runbook_of(params={
    "model": {"type": "string", "from_label": "model", "required": True},
    "url": {"type": "string", "from_annotation": "endpoint_url"},
    "limit": {"type": "float", "default": 0.05},
    "count": {"type": "int", "from_label": "count", "default": 3},
    "dry": {"type": "bool", "default": False},
})


def test_params_come_from_given_then_label_then_annotation_then_default():
    resolved = resolve_params(PARAMS, {"model": "churn", "count": "12"}, {"endpoint_url": "http://m"},
                              {"limit": "0.1", "dry": "yes"})
    assert resolved == {"model": "churn", "url": "http://m", "limit": 0.1, "count": 12, "dry": True}
    assert resolve_params(PARAMS, {"model": "a"}, {}, {"model": "b"})["model"] == "b"
    assert resolve_params(PARAMS, {"model": "a"}, {}, {})["url"] is None


@pytest.mark.parametrize("labels, given, message", [
    ({}, {}, "param 'model' is required \\(from label model, or given\\)"),
    ({"model": "m", "count": "many"}, {}, "param 'count' \\(label count\\): expected int"),
    ({"model": "m"}, {"dry": "maybe"}, "param 'dry' \\(given\\): expected a bool"),
    ({"model": "m"}, {"nope": "1"}, "unknown param\\(s\\) nope"),
])
def test_param_errors(labels, given, message):
    with pytest.raises(RunbookError, match=message):
        resolve_params(PARAMS, labels, {}, given)


# --- templates ----------------------------------------------------------------------------

CONTEXT = {"params": {"n": 3, "s": "x"}, "alert": {"labels": {"model": "churn"}}, "steps": {}}


def test_a_lone_expression_keeps_its_type_and_text_renders_to_a_string():
    assert render_value({"a": "{{ params.n }}", "b": ["n={{ params.n }}"], "c": 4}, CONTEXT) == \
        {"a": 3, "b": ["n=3"], "c": 4}


@pytest.mark.parametrize("template, error", [
    ("{{ ''.__class__.__mro__ }}", "refused by the sandbox.*__class__"),
    ("x {{ ''.__class__.__mro__[1].__subclasses__() }}", "refused by the sandbox"),
    ("{{ lipsum.__globals__ }}", "'lipsum' is undefined"),
    ("{{ range.__globals__ }}", "refused by the sandbox"),
    ("{{ namespace.__init__.__globals__ }}", "refused by the sandbox"),
    ("{{ params.__class__ }}", "refused by the sandbox"),
    ("{% include '/etc/passwd' %}", "no loader"),
    ("{{ params.update({'n': 1}) }}", "refused by the sandbox"),
    ("{{ params.missing }}", "has no attribute 'missing'"),
])
def test_templates_cannot_reach_python_internals_or_files(template, error):
    with pytest.raises(TemplateFailure, match=error):
        render_value(template, CONTEXT)


def test_a_refused_template_errors_its_step_and_the_run_goes_on():
    runbook = runbook_of(steps=[{"name": "evil", "kind": "note", "message": "{{ ''.__class__.__mro__ }}"},
                                {"name": "next", "kind": "note", "message": "still here"}])
    result = run_sync(runbook)
    assert [o.status for o in result.outcomes] == ["error", "passed"]
    assert "unsafe" in result.outcomes[0].output and result.status == "error"


# --- redaction ----------------------------------------------------------------------------

def test_secret_looking_environment_values_and_given_secrets_are_redacted():
    environ = {"SLACK_BOT_TOKEN": "xoxb-123456", "DB_PASSWORD": "hunter22", "API_KEY": "k-9999",
               "HOME": "/root", "SHORT_SECRET": "on"}
    secrets = [*secrets_from_environment(environ), "extra-secret"]
    assert set(secrets) == {"xoxb-123456", "hunter22", "k-9999", "extra-secret"}
    assert redact({"out": ["token xoxb-123456 pw hunter22 /root extra-secret"]}, secrets) == \
        {"out": ["token *** pw *** /root ***"]}


def test_run_outputs_and_values_are_redacted():
    runbook = runbook_of(params={"p": {"default": "pw=hunter22 tok=abc-secret-1"}},
                         steps=[{"name": "n", "kind": "note", "message": "{{ params.p }}"}])
    context = RunContext(clock=lambda: NOW, environ={"DB_PASSWORD": "hunter22"}, secrets=("abc-secret-1",))
    outcome = run_sync(runbook, {"p": "pw=hunter22 tok=abc-secret-1"}, context=context).outcomes[0]
    assert outcome.output == "pw=*** tok=***" and outcome.values == {"message": "pw=*** tok=***"}


# --- selection ----------------------------------------------------------------------------

def test_select_runbook_by_route_name_else_first_fitting_non_production_runbook():
    runbooks = {
        "rollback": runbook_of(name="rollback", changes_production=True, matchers=['model="churn"']),
        "errors": runbook_of(name="errors", matchers=['alertname="ModelErrorRateHigh"']),
        "churn": runbook_of(name="churn", matchers=['model="churn"']),
        "manual": runbook_of(name="manual"),
    }
    labels = {"alertname": "ModelErrorRateHigh", "model": "churn"}
    assert select_runbook(runbooks, "churn", labels).name == "churn"
    assert select_runbook(runbooks, None, labels).name == "errors"
    assert select_runbook(runbooks, None, {"model": "churn"}).name == "churn"
    assert select_runbook(runbooks, "not-shipped", labels).name == "errors"
    assert select_runbook(runbooks, "rollback", labels) is None  # never run automatically
    assert select_runbook(runbooks, None, {"model": "fraud"}) is None  # "manual" is chosen by name only
    assert select_runbook(runbooks, "manual", {}).name == "manual"


# --- runs without outside services --------------------------------------------------------

CHAIN = runbook_of(
    params={"reported": {"default": "7"}},
    steps=[
        {"name": "versions", "kind": "python", "callable": "bot.runbooks.library:compare_versions",
         "args": {"reported": "{{ params.reported }}", "serving": "6", "model": "churn"}},
        {"name": "after", "kind": "note", "message": "serving {{ steps.versions.serving }}"},
        {"name": "stop", "kind": "python", "stop_on_failure": True,
         "callable": "bot.runbooks.library:relative_change", "args": {"current": 3, "baseline": 1, "max_ratio": 2}},
        {"name": "never", "kind": "note", "message": "not reached"},
    ])


def test_failed_steps_are_recorded_the_rest_continue_until_stop_on_failure():
    seen = []

    async def on_step(index, outcome):
        seen.append((index, outcome.name, outcome.status))

    result = run_sync(CHAIN, {"reported": "7"}, on_step=on_step)
    assert seen == [(0, "versions", "failed"), (1, "after", "passed"), (2, "stop", "failed"), (3, "never", "skipped")]
    assert result.outcomes[1].output == "serving 6"
    assert "registry alias serves v6" in result.outcomes[0].output
    assert result.outcomes[3].output == "not run: step 'stop' failed and stops the run"
    assert result.status == "failed" and result.outcomes[0].started_at == NOW


def test_dry_run_renders_every_step_and_runs_none():
    result = run_sync(CHAIN, {"reported": "7"}, dry_run=True)
    assert [o.status for o in result.outcomes] == ["skipped"] * 4 and result.status == "skipped"
    assert result.outcomes[0].output.startswith("would run: call bot.runbooks.library:compare_versions(")
    assert result.outcomes[1].output == "would run: note: serving <steps.versions.serving>"


def test_dry_run_reports_what_cannot_run():
    runbook = runbook_of(steps=[{"name": "q", "kind": "prometheus", "query": "up"},
                                {"name": "p", "kind": "python", "callable": "no_such_module:f"}])
    result = run_sync(runbook, dry_run=True)
    assert [o.status for o in result.outcomes] == ["error", "error"]
    assert "set PROMETHEUS_URL" in result.outcomes[0].output and "cannot import" in result.outcomes[1].output


def test_plugin_callables_come_from_extra_paths_sync_or_async(tmp_path):
    (tmp_path / "team_checks.py").write_text(
        "async def feature_count(expected):\n    return {'passed': expected == 3, 'count': 3}\n"
        "def boom():\n    raise RuntimeError('plugin broke')\n")
    runbook = runbook_of(steps=[
        {"name": "a", "kind": "python", "callable": "team_checks:feature_count", "args": {"expected": 3}},
        {"name": "b", "kind": "python", "callable": "team_checks:boom"}])
    context = RunContext(clock=lambda: NOW, environ={}, plugin_paths=(str(tmp_path),))
    result = run_sync(runbook, context=context)
    assert [o.status for o in result.outcomes] == ["passed", "error"]
    assert result.outcomes[0].values == {"passed": True, "count": 3}
    assert result.outcomes[1].output == "RuntimeError: plugin broke"


def test_the_runbook_timeout_bounds_the_steps(tmp_path):
    (tmp_path / "slow_plugin.py").write_text("import asyncio\nasync def nap():\n    await asyncio.sleep(5)\n")
    runbook = runbook_of(timeout=1, steps=[{"name": "slow", "kind": "python", "callable": "slow_plugin:nap"},
                                           {"name": "after", "kind": "note", "message": "m"}])
    context = RunContext(clock=lambda: NOW, environ={}, plugin_paths=(str(tmp_path),))
    result = run_sync(runbook, context=context)
    assert [o.status for o in result.outcomes] == ["timeout", "skipped"]
    assert "runbook's timeout" in result.outcomes[0].output and result.outcomes[0].duration_s < 2


def test_shipped_runbooks_parse_as_yaml_documents():
    for path in SHIPPED.glob("*.yaml"):
        assert yaml.safe_load(path.read_text())["version"] == 1
