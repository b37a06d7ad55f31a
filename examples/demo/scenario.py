"""The demo's story on one machine, with real monitoring.

A bad model version is promoted in a real MLflow registry; the model server
(examples/model_server.py) starts failing; a real Prometheus fires ModelErrorRateHigh; a
real Alertmanager posts it to the bot; the bot pages (a PagerDuty stand-in), posts to Slack
(a Slack stand-in) and runs the diagnostics in the thread; the on-call engineer
acknowledges and rolls back with signed Slack button clicks; the rollback moves the alias
back, the errors stop, Alertmanager sends the resolved notification and the incident
closes. Everything listens on 127.0.0.1 on free ports, in a temporary directory.

`Demo` holds the steps; `oncall-bot demo` narrates them (examples/demo/narrate.py) and
tests/integration/test_end_to_end.py asserts on them. Contracts:

- every wait is bounded (each step by its own timeout, all of them by `deadline_seconds`)
  and fails with `DemoError` naming what did not happen and the end of the relevant log;
  a child process that exits early fails the current wait at once;
- `stop()` (also `with Demo(...)`) ends every process it started, by process group
  (SIGTERM, then SIGKILL after 10s), and the stand-ins' threads; safe to call twice.

The stand-ins for Slack and PagerDuty are the test suite's (tests/standins/), which is why
the demo lives here, in the checkout, and not in the installed package; it needs the test
extra (trustme, jsonschema) and mlflow.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml
from sqlalchemy import text

ROOT = Path(__file__).resolve().parents[2]  # the checkout: examples/demo/scenario.py
EXAMPLES = ROOT / "examples"
MLFLOW_VERSION = "3.17.2"
MODEL, ENVIRONMENT, ALIAS = "churn", "production", "champion"
SIGNING_SECRET = "demo-slack-signing-secret"
ROUTING_KEY = "R0UT1NGKEY0123456789DEMODEMODEMO"  # 32 characters, like a real integration key
ON_CALL = {"slack_id": "U0ONCALL1", "name": "ada", "real_name": "Ada Lovelace",
           "email": "ada@example.com", "pagerduty_id": "PADA001"}
TRAFFIC_PER_SECOND = 20
STORY = ("opened", "paged", "diagnostics", "acknowledged", "rollback_started", "rollback", "resolved")


class DemoError(Exception):
    """Something the demo needs is missing or did not happen in time; the message says what."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Service:
    """A child process in its own process group, logging to a file."""

    name: str
    argv: list[str]
    log: Path
    env: dict[str, str] | None = None
    cwd: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                            cwd=self.cwd, start_new_session=True)

    def check(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise DemoError(f"{self.name} exited with {self.process.returncode}; its log ({self.log}):\n"
                            f"{_tail(self.log)}")

    def terminate(self) -> None:
        """SIGTERM to the process group; `stop` waits and escalates."""
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def stop(self, grace: float = 10) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=grace)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait(timeout=5)
        else:  # the leader exited; end anything it left in its group
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def render_prometheus_config(directory: Path, *, model_server: str, alertmanager: str) -> Path:
    """examples/prometheus.yml and its rules, with the given host:ports, written into `directory`."""
    config = yaml.safe_load((EXAMPLES / "prometheus.yml").read_text())
    shutil.copy(EXAMPLES / "alert_rules.yml", directory / "alert_rules.yml")
    config["rule_files"] = [str(directory / "alert_rules.yml")]
    config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [alertmanager]
    config["scrape_configs"][0]["static_configs"][0]["targets"] = [model_server]
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def render_alertmanager_config(directory: Path, *, bot_url: str, token: str) -> Path:
    """examples/alertmanager.yml pointed at `bot_url`, its bearer token in a file beside it."""
    config = yaml.safe_load((EXAMPLES / "alertmanager.yml").read_text())
    token_file = directory / "oncall-bot-token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    webhook = config["receivers"][0]["webhook_configs"][0]
    webhook["url"] = f"{bot_url}/webhooks/alertmanager"
    webhook["http_config"]["authorization"]["credentials_file"] = str(token_file)
    path = directory / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _block_text(blocks: list[dict[str, Any]] | None, fallback: str = "") -> str:
    """The readable text of Block Kit blocks (sections, headers, context), one line each."""
    lines: list[str] = []
    for block in blocks or []:
        if isinstance(block.get("text"), dict):
            lines.append(block["text"].get("text", ""))
        for item in block.get("fields", []) or []:
            lines.append(item.get("text", ""))
        if block.get("type") == "context":
            lines.extend(e.get("text", "") for e in block.get("elements", []) if isinstance(e, dict))
        if block.get("type") == "actions":
            buttons = [e.get("text", {}).get("text", "") for e in block.get("elements", [])]
            lines.append("[" + "] [".join(buttons) + "]")
    return "\n".join(line for line in lines if line) or fallback


class Demo:
    """The pieces of the story and its steps; see the module docstring for the contracts.

    `say(source, text)`, when given, is told what the on-call engineer would see as it
    happens (Slack messages and replies, ephemeral answers, PagerDuty events).
    """

    def __init__(self, workdir: Path, *, say: Callable[[str, str], None] | None = None,
                 deadline_seconds: float = 360) -> None:
        self.workdir = Path(workdir)
        self.say = say
        self.deadline = time.monotonic() + deadline_seconds
        self.token = secrets.token_hex(16)
        self.services: list[Service] = []
        self.slack: Any = None
        self.pagerduty: Any = None
        self.db: Any = None
        self.http = httpx.Client(timeout=15)
        self.ports = {name: free_port() for name in
                      ("mlflow", "model", "prometheus", "alertmanager", "bot")}
        self.url = {name: f"http://127.0.0.1:{port}" for name, port in self.ports.items()}
        self.good = self.bad = ""
        self.incident_id: int | None = None
        self._watcher: threading.Thread | None = None
        self._stop_watching = threading.Event()
        self._report_lock = threading.Lock()
        self._seen: dict[tuple[str, str], str] = {}
        self._responses = self._events = 0

    # --- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> Demo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Everything up, and Prometheus holding a healthy error ratio for v1 (the good version)."""
        prometheus, alertmanager = self._binaries()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._start_standins()
        python = sys.executable
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        mlflow_dir = self.workdir / "mlflow"
        mlflow_dir.mkdir(exist_ok=True)
        mlflow = self._spawn("mlflow", [
            python, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{mlflow_dir}/mlflow.db",
            "--default-artifact-root", str(mlflow_dir / "artifacts"), "--host", "127.0.0.1",
            "--port", str(self.ports["mlflow"]), "--workers", "1"], cwd=mlflow_dir)
        prom_dir, am_dir = self.workdir / "prometheus", self.workdir / "alertmanager"
        prom_dir.mkdir(exist_ok=True)
        am_dir.mkdir(exist_ok=True)
        prom_config = render_prometheus_config(
            prom_dir, model_server=f"127.0.0.1:{self.ports['model']}",
            alertmanager=f"127.0.0.1:{self.ports['alertmanager']}")
        am_config = render_alertmanager_config(am_dir, bot_url=self.url["bot"], token=self.token)
        self._spawn("prometheus", [
            prometheus, f"--config.file={prom_config}", f"--storage.tsdb.path={prom_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.ports['prometheus']}", "--log.level=warn"], cwd=prom_dir)
        self._spawn("alertmanager", [
            alertmanager, f"--config.file={am_config}", f"--storage.path={am_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.ports['alertmanager']}", "--cluster.listen-address=",
            "--log.level=warn"], cwd=am_dir)
        self.bot = self._spawn("bot", [python, "-m", "bot", "serve", "--host", "127.0.0.1", "--port",
                                       str(self.ports["bot"])], env=self._bot_env(env), cwd=self.workdir)
        self._spawn("model server", [
            python, str(EXAMPLES / "model_server.py"), "--port", str(self.ports["model"]),
            "--mlflow", self.url["mlflow"], "--model", MODEL, "--environment", ENVIRONMENT,
            "--alias", ALIAS], env=env)
        # Traffic from the start: until MLflow names a version the server answers 503 and counts nothing.
        self._spawn("traffic", [python, str(EXAMPLES / "traffic.py"), "--url", self.url["model"],
                                "--rate", str(TRAFFIC_PER_SECOND), "--duration", "900"])

        self._until(lambda: self._ok(f"{self.url['mlflow']}/health"), 120, "MLflow to answer", mlflow)
        self.good, self.bad = self._register(promote_bad=False)
        self._until(lambda: self.serving() == self.good, 20, f"the model server to serve v{self.good}")
        for name in ("prometheus", "alertmanager"):
            self._until(lambda n=name: self._ok(f"{self.url[n]}/-/ready"), 30, f"{name} to be ready")
        self._until(lambda: self._ok(f"{self.url['bot']}/healthz"), 30, "the bot to be ready", self.bot)
        from bot.db import Database  # the bot's own engines: SQLite WAL readers beside its writer

        self.db = Database(self._bot_db_url)
        self._until(lambda: (r := self.error_ratio(self.good)) is not None and r < 0.05, 60,
                    f"Prometheus to see a healthy error ratio for v{self.good}")
        self._watch()

    def stop(self) -> None:
        self._stop_watching.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        for service in self.services:  # all at once, then wait for each (10s in all)
            service.terminate()
        give_up = time.monotonic() + 10
        for service in reversed(self.services):
            service.stop(grace=max(0.1, give_up - time.monotonic()))
        for standin in (self.slack, self.pagerduty):
            if standin is not None:
                standin.stop()
        self.slack = self.pagerduty = None
        if self.db is not None:
            self.db.dispose()
            self.db = None
        self.http.close()

    # --- the story -----------------------------------------------------------------------

    def promote_bad_version(self) -> None:
        """champion → the bad version, with the bot's registry client (as a deploy would)."""
        self._register(promote_bad=True)
        self._until(lambda: self.serving() == self.bad, 20, f"the model server to serve v{self.bad}")

    def wait_for_incident(self, timeout: float = 60) -> Any:
        found = self._until(lambda: self.rows("SELECT * FROM incident WHERE model = :m", m=MODEL), timeout,
                            "Prometheus → Alertmanager → bot: an incident for the failing model", self.bot)
        self.incident_id = found[0].id
        return found[0]

    def wait_for_page(self, timeout: float = 30) -> dict[str, Any]:
        key = self.incident().key
        (trigger,) = self._until(
            lambda: [e for e in self.pagerduty.events_for(key) if e["event"]["event_action"] == "trigger"],
            timeout, "the PagerDuty page", self.bot)
        return trigger

    def wait_for_diagnostics(self, timeout: float = 90) -> str:
        """The diagnostics reply in the incident's Slack thread, once the run finished."""
        self._until(lambda: self.kinds().count("diagnostics"), timeout, "the diagnostics run", self.bot)

        def reply() -> str | None:
            incident = self.incident()
            if not incident.slack_ts or self.rows("SELECT id FROM delivery WHERE state = 'pending'"):
                return None
            for message in self.slack.thread(incident.slack_channel_id, incident.slack_ts):
                shown = _block_text(message.get("blocks"), message.get("text", ""))
                if "Diagnostics" in shown or "Diagnostics" in json.dumps(message.get("blocks")):
                    return json.dumps(message.get("blocks")) + "\n" + shown
            return None

        return self._until(reply, 30, "the diagnostics reply in the Slack thread", self.bot)

    def acknowledge(self, timeout: float = 30) -> None:
        """A signed click on Acknowledge by the on-call engineer."""
        self.press("incident_ack", str(self.incident_id))
        self._until(lambda: self.incident().state == "acknowledged", timeout, "the acknowledgement", self.bot)
        key = self.incident().key
        self._until(lambda: self.pagerduty.alert_status(key) == "acknowledged", timeout,
                    "PagerDuty to receive the acknowledgement", self.bot)

    def roll_back(self, timeout: float = 30) -> tuple[dict[str, Any], dict[str, Any]]:
        """Roll back → the ephemeral preview → Confirm (signed clicks); (preview, answer)."""
        asked = self.press("incident_rollback", str(self.incident_id))
        (preview,) = self._until(lambda: self.slack.responses(asked), timeout, "the rollback preview", self.bot)
        confirm = next((e for b in preview.get("blocks", []) if b.get("type") == "actions"
                        for e in b["elements"] if e.get("action_id") == "rollback_confirm"), None)
        if confirm is None:
            raise DemoError(f"the rollback preview offers no Confirm button: {preview.get('text')}")
        confirmed = self.press("rollback_confirm", confirm["value"])
        (answer,) = self._until(lambda: self.slack.responses(confirmed), timeout, "the rollback to start",
                                self.bot)
        return preview, answer

    def wait_for_rollback(self, timeout: float = 200) -> str:
        """The rollback run's timeline entry: after the alias moved and its health check ran."""
        (entry,) = self._until(lambda: self.rows(
            "SELECT detail FROM timelineentry WHERE incident_id = :i AND kind = 'rollback'", i=self.incident_id),
            timeout, "the rollback runbook (set_alias, then its health check)", self.bot)
        return entry.detail

    def wait_for_resolved(self, timeout: float = 120) -> Any:
        self._until(lambda: self.incident().state == "resolved", timeout,
                    "Alertmanager's resolved notification to close the incident", self.bot)
        key = self.incident().key
        self._until(lambda: self.pagerduty.alert_status(key) == "resolved", 30, "the page to resolve", self.bot)
        return self.incident()

    def record(self) -> dict[str, Any]:
        """The incident, its timeline (oldest first) and MTTA/MTTR in seconds."""
        incident = self.incident()
        timeline = self.rows("SELECT at, actor, kind, detail FROM timelineentry WHERE incident_id = :i "
                             "ORDER BY at, id", i=self.incident_id)

        def seconds(end: datetime | None) -> float | None:
            return None if end is None else (_aware(end) - _aware(incident.triggered_at)).total_seconds()

        return {"incident": incident, "timeline": timeline, "mtta": seconds(incident.acknowledged_at),
                "mttr": seconds(incident.resolved_at)}

    # --- looking at things ---------------------------------------------------------------

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.db.reader.connect() as connection:
            return list(connection.execute(text(sql), params))

    def incident(self) -> Any:
        (row,) = self.rows("SELECT * FROM incident WHERE id = :i", i=self.incident_id)
        return row

    def kinds(self) -> list[str]:
        return [r.kind for r in self.rows("SELECT kind FROM timelineentry WHERE incident_id = :i ORDER BY at, id",
                                          i=self.incident_id)]

    def serving(self) -> str | None:
        """The version the model server serves now (its /healthz)."""
        try:
            return self.http.get(f"{self.url['model']}/healthz").json().get("model_version")
        except (httpx.HTTPError, ValueError):
            return None

    def champion(self) -> str:
        reply = self.http.get(f"{self.url['mlflow']}/api/2.0/mlflow/registered-models/alias",
                              params={"name": MODEL, "alias": ALIAS})
        reply.raise_for_status()
        return reply.json()["model_version"]["version"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The result vector; empty while Prometheus is still starting (it answers 503)."""
        reply = self.http.get(f"{self.url['prometheus']}/api/v1/query", params={"query": promql})
        if reply.status_code != 200:
            return []
        return reply.json()["data"]["result"]

    def error_ratio(self, version: str | None = None, window: str = "30s") -> float | None:
        """Failed / all predictions of the model over `window` (of one version, if given)."""
        selector = f'model="{MODEL}",environment="{ENVIRONMENT}"' + (
            f',model_version="{version}"' if version else "")
        result = self.query(f"sum(rate(model_prediction_errors_total{{{selector}}}[{window}]))"
                            f" / sum(rate(model_predictions_total{{{selector}}}[{window}]))")
        if not result or result[0]["value"][1] in ("NaN", "+Inf"):
            return None
        return float(result[0]["value"][1])

    def firing(self) -> list[dict[str, Any]]:
        """Alerts Alertmanager holds now."""
        return self.http.get(f"{self.url['alertmanager']}/api/v2/alerts").json()

    def press(self, action: str, value: str) -> str:
        """A button click on the incident's message, signed as Slack signs it, by the on-call
        engineer; returns the name of its response_url (see SlackStandIn.responses)."""
        from tests.standins.signing import block_actions_body, slack_headers

        incident = self.incident()
        name = f"{action}-{time.monotonic_ns()}"
        body = block_actions_body(action, value, ON_CALL["slack_id"], incident.slack_channel_id,
                                  incident.slack_ts, response_url=self.slack.response_url(name),
                                  user_name=ON_CALL["name"])
        if self.say:
            self.report()
            self.say("you", f"click [{action}] as <@{ON_CALL['slack_id']}> ({ON_CALL['real_name']}), signed")
        reply = self.http.post(f"{self.url['bot']}/slack/events", content=body,
                               headers=slack_headers(SIGNING_SECRET, body))
        if reply.status_code != 200:
            raise DemoError(f"the bot refused the signed {action} click: {reply.status_code} {reply.text}")
        return name

    # --- internals -----------------------------------------------------------------------

    @staticmethod
    def _binaries() -> tuple[str, str]:
        import importlib.util

        prometheus = shutil.which("prometheus")
        alertmanager = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
        missing = [name for name, path in (("prometheus", prometheus),
                                           ("prometheus-alertmanager", alertmanager)) if path is None]
        if missing:
            raise DemoError(f"{' and '.join(missing)} not found on PATH; on Debian or Ubuntu: "
                            "sudo apt-get install prometheus prometheus-alertmanager")
        if importlib.util.find_spec("mlflow") is None:
            raise DemoError(f"MLflow is not installed: {sys.executable} -m pip install mlflow=={MLFLOW_VERSION}")
        for module, package in (("trustme", "trustme"), ("jsonschema", "jsonschema")):
            if importlib.util.find_spec(module) is None:
                raise DemoError(f"the Slack and PagerDuty stand-ins need {package}: "
                                f"{sys.executable} -m pip install -e '{ROOT}[test]'")
        if not (ROOT / "tests" / "standins").is_dir():
            raise DemoError(f"the demo runs from a checkout: no {ROOT / 'tests' / 'standins'}")
        return prometheus, alertmanager  # type: ignore[return-value]

    def _start_standins(self) -> None:
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        from tests.standins.pagerduty import PagerDutyStandIn
        from tests.standins.slack import SlackStandIn
        from tests.standins.tls import TestCA

        ca = TestCA()
        self.ca_bundle = ca.ca_bundle_path(self.workdir)
        self.slack = SlackStandIn()
        self.slack.start()
        self.pagerduty = PagerDutyStandIn(ca)
        self.pagerduty.start()
        self.slack.add_user(ON_CALL["slack_id"], ON_CALL["name"], ON_CALL["email"],
                            real_name=ON_CALL["real_name"])
        self.pagerduty.set_oncalls([{"user_id": ON_CALL["pagerduty_id"], "user_name": ON_CALL["real_name"],
                                     "email": ON_CALL["email"], "escalation_policy_id": "PEP0001",
                                     "schedule_id": "PSCHED1", "escalation_level": 1}])

    @property
    def _bot_db_url(self) -> str:
        return f"sqlite:///{self.workdir / 'oncall.db'}"

    def _bot_env(self, base: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in base.items() if not k.startswith(("SLACK_", "PAGERDUTY_", "ALERT_", "ONCALL_"))}
        env.update({
            "DATABASE_URL": self._bot_db_url,
            "SLACK_BOT_TOKEN": self.slack.token, "SLACK_API_URL": self.slack.base_url,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_ALERT_CHANNEL": "#ml-alerts",
            "PAGERDUTY_ROUTING_KEY": ROUTING_KEY, "PAGERDUTY_EVENTS_URL": self.pagerduty.events_url,
            "PAGERDUTY_API_URL": self.pagerduty.api_url, "PAGERDUTY_API_TOKEN": self.pagerduty.api_token,
            "PAGERDUTY_FROM_EMAIL": "oncall-bot@example.com", "ONCALL_CA_BUNDLE": self.ca_bundle,
            "ALERT_WEBHOOK_TOKEN": self.token, "ONCALL_CONFIG": str(EXAMPLES / "routing.yaml"),
            "ONCALL_RUNBOOKS": str(ROOT / "runbooks"), "PROMETHEUS_URL": self.url["prometheus"],
            "MLFLOW_TRACKING_URI": self.url["mlflow"],
            "OUTBOX_POLL_SECONDS": "0.2", "OUTBOX_BACKOFF_BASE_SECONDS": "0.2",
            "OUTBOX_BACKOFF_MAX_SECONDS": "2", "DELIVERY_TIMEOUT_SECONDS": "5", "LOG_LEVEL": "INFO",
        })
        return env

    def _spawn(self, name: str, argv: list[str], *, env: dict[str, str] | None = None,
               cwd: Path | None = None) -> Service:
        service = Service(name, argv, self.workdir / f"{name.replace(' ', '-')}.log", env=env, cwd=cwd)
        self.services.append(service)
        service.start()
        return service

    def _register(self, *, promote_bad: bool) -> tuple[str, str]:
        argv = [sys.executable, str(EXAMPLES / "register_models.py"), "--tracking-uri", self.url["mlflow"],
                "--model", MODEL] + (["--promote-bad"] if promote_bad else [])
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT)
        except subprocess.TimeoutExpired:
            raise DemoError("examples/register_models.py took over 60s") from None
        if done.returncode != 0:
            raise DemoError(f"examples/register_models.py failed:\n{done.stdout}{done.stderr}")
        if self.say:
            self.say("mlflow", done.stdout.strip())
        found = httpx.get(f"{self.url['mlflow']}/api/2.0/mlflow/model-versions/search",
                          params={"filter": f"name='{MODEL}'"}, timeout=10).json()["model_versions"]
        quality = {v["version"]: {t["key"]: t["value"] for t in v.get("tags", [])}.get("quality") for v in found}
        return (min((v for v, q in quality.items() if q == "good"), key=int),
                min((v for v, q in quality.items() if q == "bad"), key=int))

    def _ok(self, url: str) -> bool:
        try:
            return self.http.get(url, timeout=3).status_code == 200
        except httpx.HTTPError:
            return False

    def _until(self, condition: Callable[[], Any], timeout: float, what: str,
               service: Service | None = None) -> Any:
        """Poll `condition` (every 0.25s) until truthy; bounded by `timeout` and the demo's deadline."""
        give_up = min(time.monotonic() + timeout, self.deadline)
        while True:
            for each in self.services:
                each.check()
            value = condition()
            if value:
                return value
            if time.monotonic() > give_up:
                why = "the demo's deadline passed" if give_up == self.deadline else f"{timeout:g}s passed"
                log = f"\n--- {service.name} log ({service.log}) ---\n{_tail(service.log)}" if service else ""
                raise DemoError(f"gave up waiting for {what}: {why}{log}")
            time.sleep(0.25)

    def _watch(self) -> None:
        if self.say is None:
            return
        self._watcher = threading.Thread(target=self._narrate, name="demo-narrator", daemon=True)
        self._watcher.start()

    def _narrate(self) -> None:
        while not self._stop_watching.wait(0.5):
            self.report()

    def report(self) -> None:
        """Tells `say` what appeared since the last call: new Slack messages (edits: only
        their new lines), thread replies, ephemeral answers and PagerDuty events."""
        say, slack, pagerduty = self.say, self.slack, self.pagerduty
        if say is None or slack is None or pagerduty is None:
            return
        with self._report_lock:
            with slack.lock:
                messages = [dict(m) for msgs in slack.messages.values() for m in msgs.values()]
            for message in sorted(messages, key=lambda m: float(m["ts"])):
                shown = _block_text(message.get("blocks"), message.get("text", ""))
                key = (message["channel"], message["ts"])
                before = self._seen.get(key)
                if before == shown:
                    continue
                self._seen[key] = shown
                where = "slack thread" if message.get("thread_ts") else "slack #ml-alerts"
                if before is None:
                    say(where, shown)
                else:
                    old = set(before.splitlines())
                    changed = [line for line in shown.splitlines() if line not in old]
                    say(f"{where}, edited", "\n".join(changed) or "(reordered)")
            answers = slack.responses()
            for answer in answers[self._responses:]:
                say("slack, only you see this", _block_text(answer.get("blocks"), answer.get("text", "")))
            self._responses = len(answers)
            with pagerduty.lock:
                new = list(pagerduty.events[self._events:])
            for event in new:
                body = event["event"]
                summary = body.get("payload", {}).get("summary", "")
                say("pagerduty", f"{body['event_action']} dedup_key={event['dedup_key']} {summary}".strip())
            self._events += len(new)


def _aware(moment: datetime) -> datetime:
    from datetime import UTC

    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
