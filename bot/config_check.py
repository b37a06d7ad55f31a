"""`oncall-bot config check`: the routing file, the runbooks and the environment, checked
together, as `serve` also does at start. Errors stop the bot; warnings are logged.

Each loader already refuses what is wrong inside its own file; this finds what is wrong
between them (a route naming a runbook that does not exist, a cron APScheduler will
refuse, a route an earlier one hides) and, with `online`, whether the outside services
answer with the credentials given.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
from apscheduler.triggers.cron import CronTrigger

from bot.adapters.tls import client_ssl_context
from bot.domain.matchers import MatchType
from bot.domain.routing import ChannelSchedule, Route, RoutingConfig, RoutingError
from bot.routing_file import load_routing
from bot.runbooks import Runbook, RunbookError, load_runbooks
from bot.settings import Settings, routing_keys


@dataclass(frozen=True, slots=True)
class Problem:
    level: str  # "error", "warning", or "note" (a feature off, as configured)
    where: str  # the file, or "environment"
    key: str  # the key path in it, or the variable
    message: str

    @property
    def text(self) -> str:
        return f"{self.where}: {self.key}: {self.message}"

    def __str__(self) -> str:
        return f"{self.level}: {self.text}"


def _matches_everything(route: Route) -> bool:
    """No matchers, or only `name=~".*"` ones (which hold for a missing label too)."""
    return all(m.type is MatchType.REGEX and m.value in (".*", "(.*)", ".*?")
               for m in route.matchers)


def check_routing(routing: RoutingConfig, runbooks: Mapping[str, Runbook] | None, *,
                  source: str, runbook_dir: Path, environ: Mapping[str, str]) -> list[Problem]:
    """Cross-checks of a loaded routing file; `runbooks` is None when they failed to load
    (their own errors are reported apart)."""
    problems: list[Problem] = []
    catch_all: tuple[int, Route] | None = None
    for index, route in enumerate(routing.routes):
        key = f"routes[{index}]"
        if catch_all is not None:
            problems.append(Problem("error", source, key, (
                f"route {route.name!r} can never be reached: routes[{catch_all[0]}] "
                f"({catch_all[1].name!r}) before it matches every alert")))
        elif _matches_everything(route) and index < len(routing.routes) - 1:
            catch_all = (index, route)
        if route.runbook is not None and runbooks is not None:
            chosen = runbooks.get(route.runbook)
            if chosen is None:
                problems.append(Problem("error", source, f"{key}.runbook", (
                    f"no runbook named {route.runbook!r} in {runbook_dir}"
                    f" (known: {', '.join(sorted(runbooks)) or 'none'})")))
            elif chosen.changes_production:
                problems.append(Problem("warning", source, f"{key}.runbook", (
                    f"{route.runbook!r} changes production, so it never runs by itself: "
                    "no diagnostics run for this route")))
    for name, schedule in (("handoff", routing.handoff), ("weekly_report", routing.weekly_report),
                           ("pulse", routing.pulse)):
        if schedule is not None and (why := _cron_problem(schedule)):
            problems.append(Problem("error", source, f"{name}.cron", why))
    # The same reading create_app pages with, so the warning names exactly what it lacks.
    keys = routing_keys(routing, environ)
    for name, team in routing.teams.items():
        variable = team.pagerduty_routing_key_env
        if variable and variable not in keys:
            fallback = (f"escalation mentions Slack group {team.slack_group} instead"
                        if team.slack_group else "escalation reaches nobody (no slack_group)")
            problems.append(Problem("warning", source, f"teams.{name}.pagerduty_routing_key_env",
                                    f"{variable} is not set: {fallback}"))
    variable = routing.escalation.l1_escalation_service_env
    if variable and variable not in keys:
        problems.append(Problem("warning", source, "escalation.l1_escalation_service_env",
                                f"{variable} is not set: unacknowledged pages are not escalated"))
    return problems


def _cron_problem(schedule: ChannelSchedule) -> str | None:
    try:
        CronTrigger.from_crontab(schedule.cron, timezone=schedule.timezone)
    except ValueError as exc:
        return f"{schedule.cron!r} is not a valid cron expression: {exc}"
    return None


def check(settings: Settings, *, environ: Mapping[str, str] | None = None) -> list[Problem]:
    """Everything `serve` needs from its files and environment, offline."""
    environ = os.environ if environ is None else environ
    source = str(settings.oncall_config)
    problems: list[Problem] = []
    try:
        routing = load_routing(settings.oncall_config)
    except RoutingError as exc:
        routing = None
        message = str(exc).removeprefix(f"{source}: ")
        problems.append(Problem("error", source, "-", message))
    runbooks: dict[str, Runbook] | None = {}
    if settings.oncall_runbooks.is_dir():
        try:
            runbooks = load_runbooks(settings.oncall_runbooks)
        except RunbookError as exc:
            runbooks = None
            problems.extend(Problem("error", str(settings.oncall_runbooks), "-", line)
                            for line in str(exc).splitlines())
    else:
        problems.append(Problem("warning", "environment", "ONCALL_RUNBOOKS",
                                f"no directory {settings.oncall_runbooks}: runbooks are disabled"))
    problems.extend(check_console(settings))
    if routing is not None:
        problems.extend(check_routing(routing, runbooks, source=source,
                                      runbook_dir=settings.oncall_runbooks, environ=environ))
    return problems


def check_console(settings: Settings) -> list[Problem]:
    """The web console is on with CONSOLE_SECRET; its links need PUBLIC_URL."""
    if settings.console_secret is None:
        return [Problem("note", "environment", "CONSOLE_SECRET",
                        "not set: the web console (/console) is off")]
    if settings.public_url is None:
        return [Problem("warning", "environment", "PUBLIC_URL",
                        "not set: /oncall console cannot give sign-in links (the console is on: "
                        "CONSOLE_SECRET is set)")]
    if settings.public_url.startswith("http://"):
        return [Problem("warning", "environment", "PUBLIC_URL",
                        "is http://: the console's session cookie is sent without Secure, and "
                        "sign-in links travel unencrypted")]
    return []


def check_online(settings: Settings) -> list[Problem]:
    """Ask each configured service whether it answers with the credentials given. PagerDuty's
    Events API has no endpoint to check a routing key against: it is not asked."""
    problems: list[Problem] = []
    with httpx.Client(verify=client_ssl_context(settings.oncall_ca_bundle),
                      timeout=settings.delivery_timeout_seconds, follow_redirects=False) as client:
        def ask(variable: str, what: str, request: httpx.Request, ok) -> None:  # type: ignore[no-untyped-def]
            try:
                response = client.send(request)
            except httpx.HTTPError as exc:
                problems.append(Problem("warning", "environment", variable,
                                        f"{what} did not answer: {type(exc).__name__}"))
                return
            why = ok(response)
            if why:
                problems.append(Problem("warning", "environment", variable, f"{what}: {why}"))

        if settings.slack_bot_token is not None:
            ask("SLACK_BOT_TOKEN", "Slack auth.test",
                client.build_request("POST", settings.slack_api_url + "auth.test", headers={
                    "Authorization": f"Bearer {settings.slack_bot_token.get_secret_value()}"}),
                _slack_ok)
        if settings.pagerduty_api_token is not None:
            ask("PAGERDUTY_API_TOKEN", "PagerDuty REST GET /abilities",
                client.build_request("GET", settings.pagerduty_api_url + "/abilities", headers={
                    "Authorization": f"Token token={settings.pagerduty_api_token.get_secret_value()}",
                    "Accept": "application/vnd.pagerduty+json;version=2"}),
                _status_ok)
        if settings.mlflow_tracking_uri:
            ask("MLFLOW_TRACKING_URI", "MLflow",
                client.build_request("GET", settings.mlflow_tracking_uri
                                     + "/api/2.0/mlflow/registered-models/search",
                                     params={"max_results": 1}),
                _status_ok)
        if settings.prometheus_url:
            ask("PROMETHEUS_URL", "Prometheus",
                client.build_request("GET", settings.prometheus_url + "/-/ready"), _status_ok)
    return problems


def _status_ok(response: httpx.Response) -> str | None:
    return None if response.is_success else f"answered HTTP {response.status_code}"


def _slack_ok(response: httpx.Response) -> str | None:
    if not response.is_success:
        return f"answered HTTP {response.status_code}"
    try:
        body = response.json()
    except ValueError:
        return "answered something other than JSON"
    if not isinstance(body, dict) or body.get("ok") is not True:
        error = body.get("error") if isinstance(body, dict) else None
        return f"refused the token ({str(error)[:80] if error else 'no error given'})"
    return None
