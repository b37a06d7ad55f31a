"""The runbook engine's pure parts: the format, JSON paths, params, templates, redaction,
selection, runs of steps that need no outside service (note, python), and the guarded
fetcher and hostile-input rules (against servers on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import sys
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import jsonschema
import pytest
import trustme
import yaml

from bot import cli_runbooks
from bot.adapters.http_probe import HostPolicy, HttpProbe, parse_patterns, refused_address, system_resolver
from bot.ports import FetchError, FetchRefused
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
from bot.runbooks.engine import configured, literal_urls, unmet_prerequisites
from bot.runbooks.format import json_schema
from bot.runbooks.outcomes import secrets_from_environment
from bot.runbooks.templates import TemplateFailure, render_value
from tests.standins._server import Reply, StandIn
from tests.standins.canary import CanaryServer

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
    ("version: 1\nname: x\nsteps: [{name: a, kind: [note], message: m}]", "bad.yaml: steps[0].kind: unknown step kind ['note']"),
    ("version: 1\nname: x\nsteps: [{name: w, kind: wait_until}]", "bad.yaml: steps[0].step: required for a wait_until step"),
    ("version: 1\nname: x\nsteps: [{name: w, kind: wait_until, step: {name: i, kind: http}}]",
     "bad.yaml: steps[0].step.url: required for a http step"),
    ("version: 1\nname: x\nsteps: [{name: a, kind: http, url: 'http://x', checks: [{path: $.a}]}]",
     "bad.yaml: steps[0].checks[0].value: required with op '=='"),
    ("version: 1\nname: x\nsteps: [{name: a, kind: http, url: 'http://x', body: {}}]",
     "bad.yaml: steps[0].body: unknown field for a http step (expected checks, extract, headers, json, "),
    ("version: 1\nname: x\nsteps: [{name: a, kind: prometheus, query: up, step: 1m}]",
     "bad.yaml: steps[0].step: only for range queries"),
    ("version: 1\nname: x\nparams: {n: {colour: red}}\nsteps: [{name: a, kind: note, message: m}]",
     "bad.yaml: params.n.colour: unknown key (expected one of default, description, "),
    ("version: 1\nname: x\nparams: {1: {}}\nsteps: [{name: a, kind: note, message: m}]",
     "bad.yaml: params.1: param names are identifiers"),
    ("version: 1\nname: x\nsteps: [3]", "bad.yaml: steps[0]: a step is a mapping"),
    ("version: 1\nname: x", "bad.yaml: steps: required"),
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


# --- hostile input: the guarded fetcher ---------------------------------------------------

@pytest.mark.parametrize("host, port, allowed", [
    ("prometheus.internal", 9090, True),        # PROMETHEUS_URL: that host and port
    ("prometheus.internal", 9091, False),
    ("PROMETHEUS.internal.", 9090, True),       # case and a trailing dot do not matter
    ("mlflow.internal", 443, True),             # https:// default port
    ("churn.models.svc.cluster.local", 8080, True),   # *.models.svc.cluster.local, any port
    ("models.svc.cluster.local", 8080, False),  # the wildcard needs a label before the domain
    ("evilmodels.svc.cluster.local", 8080, False),
    ("fixed.example", 8443, True), ("fixed.example", 80, False),   # fixed.example:8443
    ("127.0.0.1", 5000, True), ("::ffff:127.0.0.1", 5000, True), ("127.0.0.1", 5001, False),
    ("::1", 8000, True), ("169.254.169.254", 80, True),   # allowed by pattern; refused by the fetcher
])
def test_host_policy_allows_service_urls_and_patterns(host, port, allowed):
    policy = HostPolicy.build(["http://prometheus.internal:9090", "https://mlflow.internal", None],
                              "*.models.svc.cluster.local, fixed.example:8443,127.0.0.1:5000,[::1]:8000,"
                              "169.254.169.254")
    assert policy.allows(host, port) is allowed


@pytest.mark.parametrize("pattern", ["*", "*.", "a:b", "http://x", "x:0", "[::1]x", "a*b.com"])
def test_bad_allowlist_patterns_are_refused_naming_the_entry(pattern):
    with pytest.raises(ValueError, match=re.escape(repr(pattern))):
        parse_patterns(pattern)


@pytest.mark.parametrize("address, refused", [
    ("169.254.169.254", True), ("169.254.1.1", True), ("fd00:ec2::254", True), ("fe80::1", True),
    ("::ffff:169.254.169.254", True), ("::ffff:a9fe:a9fe", True), ("::169.254.169.254", True),
    ("64:ff9b::a9fe:a9fe", True), ("100.100.100.200", True),
    ("127.0.0.1", False), ("10.0.0.1", False), ("::1", False), ("fd00:ec2::253", False), ("::", False),
])
def test_link_local_and_metadata_addresses_are_refused_in_every_form(address, refused):
    assert (refused_address(address) is not None) is refused


def fetch_once(url, policy, resolver=system_resolver, **options):
    async def go():
        async with HttpProbe(resolver=resolver, **options) as probe:
            return await probe.within(policy).request("GET", url, timeout=5)
    return asyncio.run(go())


def test_the_connection_goes_to_the_checked_address_not_a_second_dns_answer():
    answers = iter([["127.0.0.1"], ["169.254.169.254"]])  # a rebinding DNS server
    asked = []

    def rebinding(host, port):
        asked.append((host, port))
        return next(answers)

    with CanaryServer() as server:
        port = server.port
        answer = fetch_once(f"http://rebind.example:{port}/health",
                            HostPolicy.build([], f"rebind.example:{port}"), rebinding)
        (request,) = server.requests
    assert answer.status_code == 200 and asked == [("rebind.example", port)]
    assert request.headers["host"] == f"rebind.example:{port}" and request.path == "/health"


@pytest.mark.parametrize("url, names", [
    ("http://169.254.169.254/latest/meta-data/", "never fetched"),
    ("http://[::ffff:169.254.169.254]/latest/meta-data/", "never fetched"),
    ("http://metadata.google.internal/computeMetadata/v1/", "never fetched"),
    ("http://2852039166/latest/meta-data/", "never fetched"),          # 169.254.169.254 as a number
    ("http://resolves-to-metadata.example/", "resolves to 169.254.169.254"),
    ("http://not-listed.example/", "host not allowed: set RUNBOOK_HTTP_ALLOWED_HOSTS"),
    ("file:///etc/passwd", "only http:// and https://"),
])
def test_refused_urls_send_nothing_even_when_a_pattern_allows_the_host(url, names):
    def resolver(host, port):
        return {"resolves-to-metadata.example": ["10.0.0.7", "169.254.169.254"],
                "2852039166": ["169.254.169.254"]}[host]

    policy = HostPolicy.build([], "169.254.169.254,[::ffff:169.254.169.254],metadata.google.internal,"
                                  "2852039166,resolves-to-metadata.example")
    with pytest.raises(FetchRefused, match=re.escape(names)) as refused:
        fetch_once(url, policy, resolver)
    assert "RUNBOOK_HTTP_ALLOWED_HOSTS" in str(refused.value) or url.startswith("file")


def test_an_answer_over_the_cap_is_not_read():
    with CanaryServer() as server:
        with pytest.raises(FetchError, match="larger than 16 bytes"):
            fetch_once(server.url(), HostPolicy.build([server.origin]), max_bytes=16)


class HttpsHello(StandIn):
    scheme = "https"

    def route(self, req):
        return Reply(200, {"hello": req.headers["host"]})


def test_tls_is_checked_against_the_name_while_the_connection_goes_to_the_checked_address():
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("models.example").configure_cert(server_context)  # no IP in the certificate
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with HttpsHello(ssl_context=server_context) as server:
        port = server.port

        def fetch(name):
            return fetch_once(f"https://{name}:{port}/ready", HostPolicy.build([], f"{name}:{port}"),
                              lambda host, _port: ["127.0.0.1"], ssl_context=client_context)

        assert fetch("models.example").json() == {"hello": f"models.example:{port}"}
        with pytest.raises(httpx.ConnectError, match="certificate"):
            fetch("other.example")  # same address, a name the certificate does not cover


def test_a_streamed_answer_is_cut_at_the_cap_without_reading_the_rest():
    sent = []

    class Endless(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):  # noqa: N802 (the stdlib's name)
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for _ in range(10_000):  # 10 MB, no Content-Length
                    self.wfile.write(b"400\r\n" + b"x" * 1024 + b"\r\n")
                    sent.append(1)
            except OSError:
                pass  # the client stopped reading and hung up

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        origin = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(FetchError, match="larger than 4096 bytes"):
            fetch_once(origin + "/", HostPolicy.build([origin]), max_bytes=4096)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert len(sent) < 10_000


def test_a_refused_url_fails_its_step_and_a_refused_poll_stops_waiting():
    runbook = runbook_of(params={"url": {"from_annotation": "endpoint_url"}}, steps=[
        {"name": "health", "kind": "http", "url": "{{ params.url }}"},
        {"name": "poll", "kind": "wait_until", "interval": 1, "timeout": "30s",
         "step": {"name": "again", "kind": "http", "url": "{{ params.url }}"}}])
    result = run_sync(runbook, {"url": "http://10.1.2.3:8080/health"})
    assert [o.status for o in result.outcomes] == ["failed", "failed"]
    assert all("host not allowed: set RUNBOOK_HTTP_ALLOWED_HOSTS" in o.output for o in result.outcomes)
    assert result.outcomes[1].duration_s < 5


def test_literal_hosts_of_a_runbook_are_allowed_templated_ones_are_not():
    runbook = runbook_of(steps=[
        {"name": "a", "kind": "http", "url": "https://models.internal:8443/{{ params.p }}/health"},
        {"name": "b", "kind": "prometheus", "query": "up", "url": "http://thanos.internal:10902"},
        {"name": "c", "kind": "http", "url": "http://{{ params.p }}.internal/"},
        {"name": "d", "kind": "http", "url": "http://x.internal{{ params.p }}/"},
        {"name": "w", "kind": "wait_until", "step": {"name": "i", "kind": "http", "url": "http://poll.internal/"}}],
        params={"p": {"default": "x"}})
    assert literal_urls(runbook) == ["https://models.internal:8443", "http://thanos.internal:10902",
                                     "http://poll.internal/"]


# --- hostile input: PromQL ----------------------------------------------------------------

@pytest.mark.parametrize("value, literal", [
    ("churn", '"churn"'),
    ('churn"} or vector(1) #', '"churn\\"} or vector(1) #"'),
    ("a\\b", '"a\\\\b"'),
    ("line\nbreak\r\t", '"line\\nbreak\\r\\t"'),
    ("bell\x07", '"bell\\u0007"'),
    (7, '"7"'),
])
def test_promql_string_makes_one_string_literal(value, literal):
    assert render_value("{{ v | promql_string }}", {"v": value}) == literal


@pytest.mark.parametrize("value, ok", [
    ("2m", True), ("1h30m", True), ("500ms", True), ("1w", True), ("90s", True), (120, True),
    ("2m])) * 0 or vector(0) #", False), ("", False), ("0s", False), ("5", False), ("m", False),
    ("1m1h", False), ("-5m", False), ("5m ", False), (True, False),
])
def test_promql_duration_lets_through_only_durations(value, ok):
    if ok:
        assert render_value("[{{ v | promql_duration }}]", {"v": value}) in (f"[{value}]", f"[{value}s]")
    else:
        with pytest.raises(TemplateFailure, match="is not a PromQL duration"):
            render_value("[{{ v | promql_duration }}]", {"v": value})


def test_the_health_window_injection_fails_the_health_check_instead_of_passing():
    runbook = load_runbooks(SHIPPED)["rollback-model"]
    hostile = {"health_window": "2m])) * 0 or vector(0) #"}
    params = resolve_params(runbook, {"model": "churn"}, hostile, {})
    result = run_sync(runbook, params, dry_run=True,
                      context=RunContext(clock=lambda: NOW, environ={}, annotations=hostile,
                                         mlflow_uri="http://mlflow.internal", prometheus_url="http://prom.internal"))
    healthy = {o.name: o for o in result.outcomes}["healthy"]
    assert healthy.status == "error" and "is not a PromQL duration" in healthy.output


QUERY_PARAMS = "version: 1\nname: x\nparams: {m: {from_label: model}, w: {from_annotation: w}, n: {default: a}}\n"


@pytest.mark.parametrize("query, flagged", [
    ('up{model="{{ params.m }}"}', "params.m comes from the alert"),
    ('up{model="{{ alert.labels.model }}"}', "alert.labels comes from the alert"),
    ("rate(x[{{ alert.annotations['w'] }}])", "alert.annotations comes from the alert"),
    ("rate(x[{{ params.w }}])", "params.w comes from the alert"),
    ("up{model={{ params.m if true else 'x' | promql_string }}}", "params.m comes from the alert"),
    ("up{model={{ params[params.n] | promql_string }}}", None),
    ('up{model={{ params.m | promql_string }},n="{{ params.n }}"}[{{ params.w | promql_duration }}]', None),
])
def test_lint_flags_alert_values_spliced_into_queries_without_the_filters(tmp_path, query, flagged):
    step = {"name": "q", "kind": "prometheus", "query": query}
    for steps in ([step], [{"name": "w", "kind": "wait_until", "step": step}]):
        text = QUERY_PARAMS + yaml.safe_dump({"steps": steps})
        problems = [p for p in problems_of(tmp_path, text) if "comes from the alert" in p]
        if flagged is None:
            assert problems == []
        else:
            assert len(problems) == 1 and flagged in problems[0] and ".query: " in problems[0], problems


# --- hostile input: command steps and production changes -----------------------------------

@pytest.mark.parametrize("text, expected", [
    ("version: 1\nname: x\nsteps: [{name: a, kind: command, argv: ['{{ alert.labels.tool }}', 'x']}]",
     "bad.yaml: steps[0].argv[0]: the program must be written literally"),
    ("version: 1\nname: x\nsteps: [{name: a, kind: command, argv: [kubectl], allow_options: yes please}]",
     "bad.yaml: steps[0].allow_options: must be true or false"),
    ("version: 1\nname: x\nsteps: [{name: a, kind: mlflow, action: set_alias, model: m, version: '2'}]",
     "bad.yaml: steps[0].action: set_alias changes production: the runbook must declare changes_production: true"),
    ("version: 1\nname: x\nsteps: [{name: w, kind: wait_until, step: {name: a, kind: mlflow, action: set_alias, "
     "model: m, version: '2'}}]",
     "bad.yaml: steps[0].step.action: set_alias changes production"),
])
def test_lint_refuses_templated_programs_and_undeclared_production_changes(tmp_path, text, expected):
    problems = problems_of(tmp_path, text)
    assert any(p == f"{tmp_path}/{expected}" or p.startswith(f"{tmp_path}/{expected}") for p in problems), problems


def test_a_read_only_command_diagnostic_and_a_declared_rollback_lint_clean(tmp_path):
    (tmp_path / "ok.yaml").write_text(
        "version: 1\nname: ok\nchanges_production: true\nparams: {ns: {from_label: namespace}}\nsteps:\n"
        "  - {name: pods, kind: command, argv: [kubectl, get, pods, -n, '{{ params.ns }}', -o, wide]}\n"
        "  - {name: move, kind: mlflow, action: set_alias, model: m, version: '2'}\n")
    assert lint(tmp_path) == []


def test_a_rendered_argument_starting_with_a_dash_is_refused_unless_the_step_allows_options():
    argv = [sys.executable, "-c", "import sys; print(sys.argv[1:])", "{{ alert.labels.ns }}", "--ns={{ alert.labels.ns }}"]
    hostile = {"ns": "--kubeconfig=/tmp/evil"}
    refused = run_sync(runbook_of(steps=[{"name": "c", "kind": "command", "argv": argv}]),
                       context=RunContext(clock=lambda: NOW, environ={}, labels=hostile)).outcomes[0]
    assert refused.status == "error" and "argv[3]" in refused.output and "allow_options: true" in refused.output
    allowed = run_sync(runbook_of(steps=[{"name": "c", "kind": "command", "argv": argv, "allow_options": True}]),
                       context=RunContext(clock=lambda: NOW, environ={}, labels=hostile)).outcomes[0]
    assert allowed.status == "passed" and "'--kubeconfig=/tmp/evil', '--ns=--kubeconfig=/tmp/evil'" in allowed.output
    plain = run_sync(runbook_of(steps=[{"name": "c", "kind": "command", "argv": argv}]),
                     context=RunContext(clock=lambda: NOW, environ={}, labels={"ns": "prod"})).outcomes[0]
    assert plain.status == "passed"


# --- the JSON Schema for editors ----------------------------------------------------------

def test_the_json_schema_is_valid_and_every_shipped_runbook_validates_against_it(capsys):
    assert cli_runbooks.main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    shipped = sorted(SHIPPED.glob("*.yaml"))
    assert len(shipped) == 6
    for path in shipped:
        assert list(validator.iter_errors(yaml.safe_load(path.read_text()))) == [], path.name


@pytest.mark.parametrize("step", [
    {"name": "a", "kind": "shell", "message": "m"},
    {"name": "a", "kind": "note", "message": "m", "colour": "red"},
    {"name": "a", "kind": "note"},
    {"name": "a b", "kind": "note", "message": "m"},
    {"name": "a", "kind": "prometheus", "query": "up", "range": "soon"},
    {"name": "w", "kind": "wait_until", "step": {"name": "i", "kind": "wait_until", "step": {}}},
])
def test_the_json_schema_refuses_what_lint_refuses(tmp_path, step):
    data = {"version": 1, "name": "x", "steps": [step]}
    assert problems_of(tmp_path, yaml.safe_dump(data))
    assert not jsonschema.Draft202012Validator(json_schema()).is_valid(data)


# --- prerequisites ------------------------------------------------------------------------

@pytest.mark.parametrize("step, needs", [
    ({"kind": "prometheus", "query": "up"}, ("PROMETHEUS_URL",)),
    ({"kind": "prometheus", "query": "up", "url": "http://prom.internal:9090"}, ()),
    ({"kind": "mlflow", "action": "get_alias", "model": "churn"}, ("MLFLOW_TRACKING_URI",)),
    ({"kind": "http", "url": "{{ alert.annotations.health_url }}"}, ()),
    ({"kind": "note", "message": "hi"}, ()),
    ({"kind": "wait_until", "step": {"name": "inner", "kind": "prometheus", "query": "up"}}, ("PROMETHEUS_URL",)),
])
def test_each_kind_says_which_variables_its_step_needs(step, needs):
    (loaded,) = runbook_of(steps=[{"name": "s", **step}]).steps
    assert loaded.needs() == needs


def test_at_start_each_runbook_that_cannot_work_is_named_with_what_it_needs():
    needs_both = runbook_of(name="error-rate-high", steps=[
        {"name": "a", "kind": "mlflow", "action": "get_alias", "model": "m"},
        {"name": "b", "kind": "prometheus", "query": "up"}, {"name": "c", "kind": "prometheus", "query": "up"}])
    fine = runbook_of(name="notes-only")
    runbooks = {"error-rate-high": needs_both, "notes-only": fine}
    assert unmet_prerequisites(runbooks, frozenset()) == [
        "runbook error-rate-high needs MLFLOW_TRACKING_URI and PROMETHEUS_URL: until they are set, "
        "its steps that use them are skipped"]
    have = configured(RunContext(prometheus_url="http://p", mlflow_uri="http://m", environ={}))
    assert unmet_prerequisites(runbooks, have) == []


def test_steps_without_their_service_are_skipped_naming_the_variable_and_their_dependants_say_why():
    runbook = runbook_of(steps=[
        {"name": "what_changed", "kind": "mlflow", "action": "what_changed", "model": "churn"},
        {"name": "matches", "kind": "python", "callable": "bot.runbooks.library:compare_versions",
         "args": {"reported": "7", "serving": "{{ steps.what_changed.current_version }}", "model": "churn"}},
        {"name": "rate", "kind": "prometheus", "query": "up"},
        {"name": "summary", "kind": "note", "message": "v{{ steps.what_changed.current_version | default('?') }}"}])
    result = run_sync(runbook)
    assert [(o.status, o.output) for o in result.outcomes] == [
        ("skipped", "skipped: needs MLFLOW_TRACKING_URI, which is not set"),
        ("skipped", "skipped: step what_changed did not run"),
        ("skipped", "skipped: needs PROMETHEUS_URL, which is not set"),
        ("passed", "v?")]
    assert result.outcomes[0].values == {"missing": ["MLFLOW_TRACKING_URI"]}


def test_a_step_reading_a_failed_steps_value_names_that_step_not_an_undefined_value():
    runbook = runbook_of(steps=[
        {"name": "boom", "kind": "python", "callable": "no_such_module:f"},
        {"name": "after", "kind": "note", "message": "got {{ steps.boom.value }}"},
        {"name": "typo", "kind": "note", "message": "got {{ alert.labels.missing }}"}])
    outcomes = run_sync(runbook).outcomes
    assert (outcomes[1].status, outcomes[1].output) == ("skipped", "skipped: step boom failed")
    assert outcomes[2].status == "error" and "missing" in outcomes[2].output  # no earlier step to blame
