"""Runbook steps against real services on 127.0.0.1: an MLflow tracking server, a
Prometheus scraping a model's metrics, a model's HTTP endpoint, real subprocesses,
and the shipped runbooks end to end."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from bot.runbooks import RunContext, load_runbooks, parse_runbook, resolve_params, run
from bot.runbooks.registry import ModelRegistry, tag_keys
from tests.services import ModelHealth, mlflow_server, model_endpoint, prometheus_server  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = load_runbooks(ROOT / "runbooks")


def runbook_of(*steps, **fields):
    return parse_runbook({"version": 1, "name": "t", "steps": list(steps), **fields}, "t.yaml")


def run_sync(runbook, params=None, **context_fields):
    seen = []

    async def on_step(index, outcome):
        seen.append(index)

    context_fields.setdefault("environ", {"PATH": os.environ["PATH"]})
    result = asyncio.run(run(runbook, params or {}, context=RunContext(**context_fields), on_step=on_step))
    assert seen == list(range(len(runbook.steps)))
    return result


def by_name(result):
    return {o.name: o for o in result.outcomes}


# --- MLflow -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def churn(mlflow_server):  # noqa: F811
    """Model `churn` with v1 (auc 0.91), v2 (auc 0.93), v3 (auc 0.88, tagged); champion moved
    v1 → v2 by the bot, so v1 is its recorded previous version."""
    mlflow_server.create_model("churn")
    for auc in (0.91, 0.93, 0.88):
        tags = {"git_sha": "abc123"} if auc == 0.88 else {}
        mlflow_server.create_version("churn", run_id=mlflow_server.create_run({"auc": auc}), tags=tags)

    async def moves():
        async with httpx.AsyncClient() as client:
            registry = ModelRegistry(client, mlflow_server.url, clock=lambda: datetime.now(UTC))
            assert await registry.set_alias("churn", "champion", "1") is None
            assert await registry.set_alias("churn", "champion", "2") == "1"

    asyncio.run(moves())
    return "churn"


def mlflow_step(action, **fields):
    return {"name": action, "kind": "mlflow", "action": action, **fields}


def test_get_alias_and_list_versions_with_run_metrics(mlflow_server, churn):  # noqa: F811
    result = run_sync(runbook_of(mlflow_step("get_alias", model=churn), mlflow_step("list_versions", model=churn),
                                 mlflow_step("get_alias", model=churn, alias="challenger", name="missing")),
                      mlflow_uri=mlflow_server.url)
    got, listed, missing = result.outcomes
    assert got.status == "passed" and got.values["version"] == "2" and got.values["source"].startswith("runs:/")
    assert got.values["aliases"] == ["champion"] and got.values["created_at"]
    assert [v["version"] for v in listed.values["versions"]] == ["3", "2", "1"]
    assert [v["metrics"] for v in listed.values["versions"]] == [{"auc": 0.88}, {"auc": 0.93}, {"auc": 0.91}]
    assert listed.values["versions"][0]["tags"] == {"git_sha": "abc123"}
    assert missing.status == "failed" and "no alias 'challenger'" in missing.output


def test_what_changed_uses_the_bots_record_then_falls_back_when_moved_elsewhere(mlflow_server):  # noqa: F811
    mlflow_server.create_model("fraud")
    for _ in range(4):
        mlflow_server.create_version("fraud")
    steps = (mlflow_step("set_alias", model="fraud", version="1"), mlflow_step("set_alias", model="fraud", version="3",
                                                                                  name="again"),
             mlflow_step("what_changed", model="fraud"))
    result = run_sync(runbook_of(*steps, changes_production=True), mlflow_uri=mlflow_server.url)
    changed = by_name(result)["what_changed"]
    assert changed.values["current_version"] == "3" and changed.values["previous_version"] == "1"
    assert changed.values["moved_by_bot"] and changed.values["moved_at"]
    assert "serves v3" in changed.output and "previous version: v1 (recorded" in changed.output

    mlflow_server.set_alias_outside_bot("fraud", "champion", "4")  # e.g. from the MLflow UI
    changed = run_sync(runbook_of(mlflow_step("what_changed", model="fraud")), mlflow_uri=mlflow_server.url).outcomes[0]
    assert changed.values["current_version"] == "4" and changed.values["previous_version"] == "3"
    assert changed.values["moved_at"] is None and not changed.values["moved_by_bot"]
    assert "highest version below" in changed.output and "MLflow keeps no alias history" in changed.output
    model = mlflow_server.call("GET", "registered-models/get", params={"name": "fraud"})["registered_model"]
    assert {t["key"] for t in model["tags"]} == set(tag_keys("champion"))


def test_what_changed_on_a_model_without_the_alias_is_an_error(mlflow_server):  # noqa: F811
    mlflow_server.create_model("noalias")
    outcome = run_sync(runbook_of(mlflow_step("what_changed", model="noalias")), mlflow_uri=mlflow_server.url).outcomes[0]
    assert outcome.status == "error" and "has no alias 'champion'" in outcome.output


def test_set_alias_to_a_missing_version_moves_nothing(mlflow_server, churn):  # noqa: F811
    outcome = run_sync(runbook_of(mlflow_step("set_alias", model=churn, version="99"), changes_production=True),
                       mlflow_uri=mlflow_server.url).outcomes[0]
    assert outcome.status == "error" and "RESOURCE_DOES_NOT_EXIST" in outcome.output
    assert mlflow_server.alias(churn, "champion") == "2"


# --- Prometheus ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def metrics(prometheus_server):  # noqa: F811
    models = prometheus_server.metrics.models
    models[("churn", "production")] = ModelHealth(error_ratio=0.06, latency_seconds=0.4, version="2",
                                                  drift={"tenure": 0.35, "plan": 0.05},
                                                  feature_age_seconds={"billing": 7200, "usage": 60})
    models[("churn", "staging")] = ModelHealth(error_ratio=0.001)
    models[("churn-rollback", "staging")] = ModelHealth(error_ratio=0.001)
    deadline = time.monotonic() + 30
    while not prometheus_server.query('count_over_time(model_predictions_total{model="churn"}[1m]) > 2'):
        assert time.monotonic() < deadline, "Prometheus has no model samples"
        time.sleep(0.5)
    return prometheus_server


def test_prometheus_thresholds_range_queries_and_exposed_values(metrics):
    ratio = ('sum(rate(model_prediction_errors_total{{environment="{env}"}}[1m])) '
             '/ sum(rate(model_predictions_total{{environment="{env}"}}[1m]))')
    result = run_sync(runbook_of(
        {"name": "prod", "kind": "prometheus", "query": ratio.format(env="production"),
         "threshold": {"op": "<", "value": 0.05}},
        {"name": "staging", "kind": "prometheus", "query": ratio.format(env="staging"),
         "threshold": {"op": "<", "value": "{{ steps.prod.value }}"}},
        {"name": "range", "kind": "prometheus", "query": "model_prediction_drift_score", "range": "2m", "step": "5s"},
        {"name": "nothing", "kind": "prometheus", "query": 'up{job="absent"}', "threshold": {"op": ">", "value": 0}},
        {"name": "bad", "kind": "prometheus", "query": "sum(("},
        {"name": "say", "kind": "note", "message": "prod {{ '%.2f' | format(steps.prod.value) }}"},
    ), prometheus_url=metrics.url)
    out = by_name(result)
    assert out["prod"].status == "failed" and out["prod"].values["value"] == pytest.approx(0.06, rel=0.01)
    assert "threshold: max < 0.05 → failed" in out["prod"].output
    assert out["staging"].status == "passed" and out["staging"].values["value"] < 0.01
    assert out["range"].status == "passed" and out["range"].values == {"value": 0.35, "series": 2}
    assert out["nothing"].status == "failed" and "no samples" in out["nothing"].output
    assert out["bad"].status == "error" and "bad_data" in out["bad"].output
    assert out["say"].output == "prod 0.06"


def test_prometheus_step_url_overrides_and_unreachable_is_an_error(metrics):
    result = run_sync(runbook_of({"name": "q", "kind": "prometheus", "query": "vector(1)", "url": metrics.url},
                                 {"name": "down", "kind": "prometheus", "query": "vector(1)",
                                  "url": "http://127.0.0.1:9", "timeout": "5s"}))
    assert [o.status for o in result.outcomes] == ["passed", "error"]
    assert "ConnectError" in result.outcomes[1].output


# --- http and wait_until ------------------------------------------------------------------

def test_http_checks_and_extracted_values(model_endpoint):  # noqa: F811
    model_endpoint.body = {"ready": True, "model": {"name": "churn", "versions": ["7"]}, "load": 0.4}
    result = run_sync(runbook_of(
        {"name": "ok", "kind": "http", "url": model_endpoint.url + "/v2/models/churn",
         "checks": [{"path": "$.ready", "op": "==", "value": True}, {"path": "$.model.versions[0]", "value": "7"},
                    {"path": "$.load", "op": "<", "value": 0.5}, {"path": "$.error", "op": "absent"}],
         "extract": {"version": "$.model.versions[0]"}},
        {"name": "wrong", "kind": "http", "url": model_endpoint.url, "status": 204,
         "checks": [{"path": "$.load", "op": ">", "value": "{{ steps.ok.version }}"}]},
    ))
    ok, wrong = result.outcomes
    assert ok.status == "passed" and ok.values == {"status": 200, "version": "7"}, ok.output
    assert wrong.status == "failed" and "→ 200 (expected 204)" in wrong.output and "FAIL $.load" in wrong.output


def test_wait_until_polls_until_the_step_passes_or_times_out(model_endpoint):  # noqa: F811
    model_endpoint.unhealthy_for = 2
    poll = {"name": "health", "kind": "http", "url": model_endpoint.url}
    result = run_sync(runbook_of(
        {"name": "recovers", "kind": "wait_until", "interval": 1, "timeout": "20s", "step": poll},
        {"name": "never", "kind": "wait_until", "interval": 1, "timeout": "2s",
         "step": {**poll, "url": "http://127.0.0.1:9/"}}))
    recovers, never = result.outcomes
    assert recovers.status == "passed" and "passed on attempt 3" in recovers.output
    assert never.status == "timeout" and "still not passing" in never.output and never.duration_s < 4


# --- command ------------------------------------------------------------------------------

def command(*argv, **fields):
    return {"name": fields.pop("name", "cmd"), "kind": "command", "argv": list(argv), **fields}


def test_command_timeout_kills_the_process(tmp_path):
    pid_file = tmp_path / "pid"
    script = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    outcome = run_sync(runbook_of(command(sys.executable, "-c", script, timeout=1))).outcomes[0]
    assert outcome.status == "timeout" and outcome.duration_s < 5
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_command_environment_is_path_plus_the_allowlist_and_secrets_are_redacted():
    environ = {"PATH": os.environ["PATH"], "MODEL_API_TOKEN": "tok-abcdef123", "AWS_SECRET_ACCESS_KEY": "aws-xyz-987",
               "REGION": "eu-west-1"}
    outcome = run_sync(runbook_of(command("env", env_allow=["MODEL_API_TOKEN", "REGION"])),
                       environ=environ).outcomes[0]
    assert outcome.status == "passed"
    assert sorted(line.split("=")[0] for line in outcome.output.splitlines()[1:]) == ["MODEL_API_TOKEN", "PATH", "REGION"]
    assert "MODEL_API_TOKEN=***" in outcome.output
    assert "tok-abcdef123" not in outcome.output and "***" in outcome.output
    assert "tok-abcdef123" not in str(outcome.values)


def test_command_output_is_capped_and_a_failing_exit_is_failed():
    outcome = run_sync(runbook_of(command(sys.executable, "-c", "print('x' * 100000); raise SystemExit(3)"))).outcomes[0]
    assert outcome.status == "failed" and outcome.values["exit_code"] == 3
    assert len(outcome.output) < 4300 and "more bytes of output cut" in outcome.output


def test_a_rendered_value_is_one_argv_item_and_never_reaches_a_shell(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("still here")
    hostile = f"churn; rm -rf {victim} && echo pwned $(id)"
    outcome = run_sync(runbook_of(command(sys.executable, "-c", "import sys; print(repr(sys.argv[1:]))",
                                          "{{ alert.labels.model }}", "--model={{ alert.labels.model }}")),
                       labels={"model": hostile}).outcomes[0]
    assert outcome.output.splitlines()[1] == repr([hostile, f"--model={hostile}"])
    assert victim.read_text() == "still here"


# --- the shipped runbooks -----------------------------------------------------------------

ALERT_LABELS = {"model": "churn", "model_version": "2", "environment": "production"}


def run_shipped(name, mlflow_server, metrics, labels=ALERT_LABELS, annotations=None, given=None,  # noqa: F811
                allowed_hosts=""):
    runbook = SHIPPED[name]
    params = resolve_params(runbook, labels, annotations or {}, given or {})
    return run_sync(runbook, params, labels=labels, annotations=annotations or {},
                    prometheus_url=metrics.url, mlflow_uri=mlflow_server.url, allowed_hosts=allowed_hosts)


def assert_what_changed_first(result):
    first = result.outcomes[0]
    assert (first.name, first.status) == ("what_changed", "passed"), first.output
    assert first.values["current_version"] == "2" and first.values["previous_version"] == "1"
    assert by_name(result)["version_matches"].status == "passed"


def test_error_rate_high_runbook(mlflow_server, churn, metrics):  # noqa: F811
    result = run_shipped("error-rate-high", mlflow_server, metrics)
    assert_what_changed_first(result)
    out = by_name(result)
    assert out["error_rate_now"].status == "failed" and out["error_rate_30m"].status == "passed"
    assert out["versions"].status == "passed"
    assert "serves v2 (previous v1)" in out["summary"].output and "rollback-model" in out["summary"].output
    assert result.status == "failed"


def test_error_rate_high_reports_a_version_the_registry_does_not_serve(mlflow_server, churn, metrics):  # noqa: F811
    result = run_shipped("error-rate-high", mlflow_server, metrics, labels={**ALERT_LABELS, "model_version": "3"})
    mismatch = by_name(result)["version_matches"]
    assert mismatch.status == "failed" and "alert comes from v3 but the registry alias serves v2" in mismatch.output


def test_latency_regression_runbook(mlflow_server, churn, metrics):  # noqa: F811
    result = run_shipped("latency-regression", mlflow_server, metrics)
    assert_what_changed_first(result)
    out = by_name(result)
    assert out["p95_now"].status == "passed" and 0.25 < out["p95_now"].values["value"] <= 0.5
    assert out["p95_last_week"].values["value"] is None  # no history a week back
    assert out["regression"].status == "passed" and "no data to compare" in out["regression"].output
    tight = run_shipped("latency-regression", mlflow_server, metrics, given={"max_p95_seconds": "0.2"})
    assert by_name(tight)["p95_now"].status == "failed"


def test_prediction_drift_runbook(mlflow_server, churn, metrics):  # noqa: F811
    result = run_shipped("prediction-drift", mlflow_server, metrics)
    assert_what_changed_first(result)
    drift = by_name(result)["drift"]
    assert drift.status == "failed" and drift.values == {"value": 0.35, "series": 2}
    assert 'feature="tenure"' in drift.output.splitlines()[1]


def test_stale_features_runbook(mlflow_server, churn, metrics):  # noqa: F811
    result = run_shipped("stale-features", mlflow_server, metrics)
    assert_what_changed_first(result)
    age = by_name(result)["feature_age"]
    assert age.status == "failed" and 7150 < age.values["value"] < 7300
    assert "the stalest feature set is 72" in by_name(result)["summary"].output


def test_model_endpoint_down_runbook(mlflow_server, churn, metrics, model_endpoint):  # noqa: F811
    annotations = {"endpoint_url": model_endpoint.url + "/v2/health/ready"}
    allowed = model_endpoint.url.removeprefix("http://")  # 127.0.0.1:<port>
    result = run_shipped("model-endpoint-down", mlflow_server, metrics, annotations=annotations,
                         allowed_hosts=allowed)
    assert_what_changed_first(result)
    out = by_name(result)
    assert out["endpoint_health"].status == "passed" and out["traffic"].status == "passed"
    assert result.status == "passed"
    model_endpoint.status = 500
    down = run_shipped("model-endpoint-down", mlflow_server, metrics, annotations=annotations,
                       allowed_hosts=allowed)
    assert by_name(down)["endpoint_health"].status == "failed"
    before = model_endpoint.requests
    refused = by_name(run_shipped("model-endpoint-down", mlflow_server, metrics,
                                  annotations=annotations))["endpoint_health"]
    assert refused.status == "failed" and "host not allowed: set RUNBOOK_HTTP_ALLOWED_HOSTS" in refused.output
    assert model_endpoint.requests == before


@pytest.mark.parametrize("hostile", [
    {"environment": 'nowhere",environment=~".+'},            # widen the selector to every environment
    {"model": 'nobody"} or vector(0) #'},                     # end the query early and make it healthy
    {"environment": 'a\\"} or vector(0) #\nb'},               # a backslash and a newline to break the escaping
])
def test_promql_injection_from_labels_stays_inside_the_string(mlflow_server, churn, metrics, hostile):  # noqa: F811
    labels = {**ALERT_LABELS, **hostile}
    now = by_name(run_shipped("error-rate-high", mlflow_server, metrics, labels=labels))["error_rate_now"]
    # Prometheus parsed the query (no bad_data) and matched no series: the value stayed one label value.
    assert now.status == "failed" and "no samples" in now.output, now.output


def test_rollback_runbook_moves_the_alias_back_to_the_previous_version(mlflow_server, metrics):  # noqa: F811
    mlflow_server.create_model("churn-rollback")
    for _ in range(3):
        mlflow_server.create_version("churn-rollback")
    mlflow_server.set_alias_outside_bot("churn-rollback", "champion", "3")  # a deploy through MLflow itself
    labels = {"model": "churn-rollback", "environment": "staging"}
    given = {"max_error_rate": "0.5"}
    runbook = SHIPPED["rollback-model"]
    assert runbook.changes_production
    result = run_sync(runbook, resolve_params(runbook, labels, {}, given), labels=labels,
                      prometheus_url=metrics.url, mlflow_uri=mlflow_server.url)
    assert [o.status for o in result.outcomes] == ["passed"] * 4, [o.output for o in result.outcomes]
    assert mlflow_server.alias("churn-rollback", "champion") == "2"
    assert "Rolled churn-rollback@champion back from v3 to v2" in result.outcomes[-1].output
    after = run_sync(runbook_of(mlflow_step("what_changed", model="churn-rollback")), mlflow_uri=mlflow_server.url)
    assert after.outcomes[0].values["previous_version"] == "3" and after.outcomes[0].values["moved_by_bot"]

    explicit = run_sync(runbook, resolve_params(runbook, labels, {}, {**given, "target_version": "1"}), labels=labels,
                        prometheus_url=metrics.url, mlflow_uri=mlflow_server.url)
    assert explicit.status == "passed" and mlflow_server.alias("churn-rollback", "champion") == "1"


def test_rollback_stops_when_there_is_no_alias_to_roll_back(mlflow_server, metrics):  # noqa: F811
    mlflow_server.create_model("never-served")
    labels = {"model": "never-served"}
    runbook = SHIPPED["rollback-model"]
    result = run_sync(runbook, resolve_params(runbook, labels, {}, {}), labels=labels,
                      prometheus_url=metrics.url, mlflow_uri=mlflow_server.url)
    assert [o.status for o in result.outcomes] == ["error", "skipped", "skipped", "skipped"]


# --- the CLI ------------------------------------------------------------------------------

def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "bot.cli_runbooks", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, env={**os.environ, **(env or {})})


def test_cli_lint_passes_on_the_shipped_runbooks_and_names_problems(tmp_path):
    done = cli("lint", "--dir", "runbooks")
    assert done.returncode == 0 and "6 runbook(s) in runbooks: no problems" in done.stdout
    (tmp_path / "broken.yaml").write_text("version: 1\nname: broken\nsteps: [{name: a, kind: shell}]\n")
    done = cli("lint", "--dir", str(tmp_path))
    assert done.returncode == 1 and f"{tmp_path / 'broken.yaml'}: steps[0].kind: unknown step kind 'shell'" in done.stdout


def test_cli_run_prints_each_step_and_refuses_production_changes_without_yes(mlflow_server, churn, metrics):  # noqa: F811
    env = {"MLFLOW_TRACKING_URI": mlflow_server.url, "PROMETHEUS_URL": metrics.url}
    done = cli("run", "stale-features", "--label", "model=churn", "--label", "model_version=2", env=env)
    assert done.returncode == 1, done.stderr
    assert "[1] what_changed (mlflow): passed" in done.stdout and "[3] feature_age (prometheus): failed" in done.stdout
    assert done.stdout.strip().endswith("stale-features: failed")
    refused = cli("run", "rollback-model", "--param", "model=churn", env=env)
    assert refused.returncode == 2 and "pass --yes" in refused.stderr
    dry = cli("run", "rollback-model", "--param", "model=churn", "--dry-run", env=env)
    assert dry.returncode == 0 and "set_alias churn@champion to version <steps.what_changed.previous_version>" in dry.stdout
    assert mlflow_server.alias("churn", "champion") == "2"
    bad = cli("run", "stale-features", "--param", "max_age_seconds=soon", "--label", "model=churn", env=env)
    assert bad.returncode == 2 and "max_age_seconds" in bad.stderr
