"""What can be checked of the deploy files without a Docker engine, a registry or a
cluster (issue 14 items 4 and 7): they parse, every variable they set is a setting, every
command they run exists, the probes hit real endpoints, the alert rules pass promtool and
name real metrics, and the install declares what the code imports."""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
import yaml

from bot.metrics import Metrics, RecordSnapshot
from bot.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
# Read by the command line (serve's --host/--port defaults), not by Settings.
CLI_VARIABLES = {"HOST", "PORT"}
SETTINGS = {name.upper() for name in Settings.model_fields} | CLI_VARIABLES


def documents() -> list[dict]:
    return [d for path in MANIFESTS for d in yaml.safe_load_all(path.read_text()) if d]


def containers() -> list[dict]:
    found = []
    for document in documents():
        spec = document.get("spec", {}).get("template", {}).get("spec", {})
        found += spec.get("initContainers", []) + spec.get("containers", [])
    return found


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1])
            for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_every_manifest_parses_and_the_expected_kinds_are_there():
    kinds = {d["kind"] for d in documents()}
    assert {"Deployment", "Secret", "Service", "ServiceMonitor", "ConfigMap"} <= kinds
    assert yaml.safe_load((DEPLOY / "prometheus-rules.yml").read_text())["groups"]


def test_every_variable_set_is_a_setting():
    names: set[str] = set()
    for container in containers():
        names |= {e["name"] for e in container.get("env", [])}
    for document in documents():
        if document["kind"] == "Secret":
            names |= set(document["stringData"])
    for instruction, arguments in dockerfile():
        if instruction == "ENV":
            names |= {pair.split("=", 1)[0] for pair in shlex.split(arguments)
                      if not pair.startswith(("PYTHON", "PIP_"))}
    assert names, "no variables found"
    assert names - SETTINGS == set(), f"not settings: {names - SETTINGS}"


def test_every_command_exists_in_the_cli():
    commands = [c["command"] for c in containers() if "command" in c]
    commands += [yaml.safe_load(args) for instruction, args in dockerfile() if instruction == "CMD"]
    commands += [shlex.split(line.split(":", 1)[1].split("#")[0])
                 for line in (ROOT / "Procfile").read_text().splitlines() if line.strip()]
    assert len(commands) >= 4
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for command in commands:
        assert command[0] == "oncall-bot", command
        words = [w for w in command[1:] if not w.startswith(("-", "$")) and not w.isdigit()
                 and w not in ("0.0.0.0",)]
        helped = subprocess.run([sys.executable, "-m", "bot", *words, "--help"], env=env,
                                capture_output=True, text=True, timeout=60)
        assert helped.returncode == 0, (command, helped.stderr)


def test_probes_point_at_the_bots_endpoints_on_its_port(tmp_path):
    from bot.main import create_app  # builds the app; nothing connects until it starts

    app = create_app(Settings(database_url=f"sqlite:///{tmp_path}/probe.db"))
    paths = {getattr(route, "path", None) for route in app.routes}
    (server,) = [c for c in containers() if c["name"] == "oncall-bot"]
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    assert server["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert server["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in (server["livenessProbe"], server["readinessProbe"]):
        assert probe["httpGet"]["path"] in paths
        assert ports[probe["httpGet"]["port"]] == 8080
    env = {e["name"]: e["value"] for e in server["env"] if "value" in e}
    assert env["PORT"] == "8080" and env["HOST"] == "0.0.0.0"
    assert ("EXPOSE", "8080") in dockerfile()


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_alert_rules_pass_promtool_and_name_real_metrics():
    checked = subprocess.run(["promtool", "check", "rules", str(DEPLOY / "prometheus-rules.yml")],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    served = set(re.findall(r"^# TYPE (\w+)", Metrics(RecordSnapshot).exposition().decode(), re.M))
    served |= {f"{name}_total" for name in served}
    rules = [rule for group in yaml.safe_load((DEPLOY / "prometheus-rules.yml").read_text())["groups"]
             for rule in group["rules"]]
    named = {name for rule in rules for name in re.findall(r"\boncall_\w+", rule["expr"])}
    assert {"oncall_pages_undelivered", "oncall_delivery_oldest_pending_seconds",
            "oncall_http_responses_total", "oncall_timer_leader"} <= named
    assert named - served == set()


def _imported_packages() -> set[str]:
    names = set()
    for path in (ROOT / "bot").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"bot", "examples"}


def _requirement_name(spec: str) -> str:
    return re.split(r"[\[<>=!~; ]", spec, maxsplit=1)[0].lower().replace("_", "-")


def test_every_package_imported_is_declared_and_locked():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_requirement_name(r) for r in project["dependencies"]}
    optional = {_requirement_name(r) for r in project["optional-dependencies"]["charts"]}
    distributions = packages_distributions()
    for module in _imported_packages():
        names = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
        assert names & (declared | optional), f"{module} is imported but not declared"
    locked = {_requirement_name(line) for line in (ROOT / "requirements.lock").read_text().splitlines()
              if line and not line.startswith((" ", "#", "-"))}
    assert declared <= locked, declared - locked
    assert "matplotlib" not in locked  # the charts extra, not the default install
    assert any(r.startswith("sqlmodel") and "<" in r for r in project["dependencies"])
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]


def test_a_markdown_report_without_matplotlib_names_the_extra(tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None\n"  # as if the charts extra were absent
            "from bot.cli import main; sys.exit(main(['report', '--format', 'markdown']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT), "LOG_LEVEL": "WARNING",
                                               "DATABASE_URL": f"sqlite:///{tmp_path}/r.db"})
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert "oncall-bot[charts]" in line and "Traceback" not in result.stderr
