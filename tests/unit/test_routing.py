"""Routing file validation and first-match routing, table-driven."""

from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from bot.domain.matchers import Matcher, MatcherError, MatchType
from bot.domain.routing import ChannelSchedule, RoutingError, Tier, parse_routing
from bot.routing_file import load_routing
from bot.settings import DEFAULT_ROUTING_FILE, routing_keys


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ('severity="critical"', {"severity": "critical"}, True),
        ("severity=critical", {"severity": "warning"}, False),
        ('severity=~"critical|page"', {"severity": "page"}, True),
        ('severity=~"crit"', {"severity": "critical"}, False),  # anchored like Alertmanager
        ('model!="churn"', {"model": "fraud"}, True),
        ('model!~"ch.*"', {"model": "churn"}, False),
        ('team=""', {}, True),  # a missing label is the empty string
    ],
)
def test_matcher_semantics(text, labels, expected):
    assert Matcher.parse(text).matches(labels) is expected


@pytest.mark.parametrize("text", ["severity", "=x", "a b=c", 'a=~"("', "1abc=x"])
def test_malformed_matchers_are_refused_naming_the_text(text):
    with pytest.raises(MatcherError, match="matcher"):
        Matcher.parse(text)


def test_matcher_round_trips_through_its_text():
    matcher = Matcher.parse('env=~"prod|staging"')
    assert matcher.type is MatchType.REGEX
    assert Matcher.parse(str(matcher)) == matcher


def test_shipped_default_routes_by_severity():
    routing = load_routing(DEFAULT_ROUTING_FILE)
    cases = {"critical": Tier.L1, "page": Tier.L1, "warning": Tier.L0, "info": Tier.RECORD,
             "": Tier.L0, "error": Tier.L0}
    for severity, tier in cases.items():
        assert routing.route({"severity": severity}).tier is tier, severity
    assert routing.reopen_window == timedelta(hours=1)
    assert routing.route({}).group_by == ("alertname", "model", "environment")


def _doc(**overrides):
    doc = {"version": 1, "teams": {"ds-churn": {"slack_group": "S0CHURN"}}, "routes": [
        {"name": "churn", "matchers": ['model="churn"'], "tier": "L1", "team": "ds-churn",
         "runbook": "error-rate", "channel": "#churn", "group_by": ["alertname"]},
        {"name": "default", "tier": "L0"},
    ]}
    doc.update(overrides)
    return doc


def test_first_match_wins_and_carries_its_fields():
    routing = parse_routing(_doc())
    route = routing.route({"model": "churn", "severity": "info"})
    assert (route.name, route.tier, route.team, route.runbook, route.channel, route.group_by) == (
        "churn", Tier.L1, "ds-churn", "error-rate", "#churn", ("alertname",))
    assert routing.route({"model": "fraud"}).name == "default"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (_doc(version=2), "version"),
        (_doc(routes=[]), "routes"),
        (_doc(routes=[{"name": "a", "tier": "L3"}]), "routes.0.tier"),
        (_doc(routes=[{"name": "a", "tier": "L0", "colour": "red"}]), "routes.0.colour"),
        (_doc(routes=[{"name": "a", "tier": "L0", "matchers": ["bad"]}]), "routes.0.matchers"),
        (_doc(routes=[{"name": "a", "tier": "L0", "matchers": ['x="1"']}]), "last route"),
        (_doc(routes=[{"name": "a", "tier": "L0"}, {"name": "a", "tier": "L1"}]), "used twice"),
        (_doc(defaults={"reopen_window": "soon"}), "defaults.reopen_window"),
        (_doc(teams={}), r"routes\[0\].team: 'ds-churn' is not defined"),
        (_doc(teams={"ds-churn": {"slack_group": "#churn"}}), "teams.ds-churn.slack_group"),
        (_doc(permissions={"users": ["U1"], "admins": []}), "permissions.admins"),
        (_doc(pulse={"cron": "0 10 1 *"}), "pulse.cron: .*five fields"),
        (_doc(pulse={"cron": "0 10 1 * *", "timezone": "Mars/Olympus"}), "pulse.timezone"),
        (_doc(pulse={"cron": "0 10 1 * *", "chanel": "#x"}), "pulse.chanel"),
        ("just text", "routing file"),
    ],
)
def test_invalid_routing_files_name_the_bad_key(doc, message):
    with pytest.raises(RoutingError, match=message):
        parse_routing(doc)


def test_load_routing_reports_yaml_errors_with_the_path(tmp_path: Path):
    path = tmp_path / "routes.yaml"
    path.write_text("version: [1\n")
    with pytest.raises(RoutingError, match=str(path)):
        load_routing(path)
    path.write_text(yaml.safe_dump(_doc()))
    assert load_routing(path).routes[0].name == "churn"


def test_teams_and_permissions_are_read():
    routing = parse_routing(_doc(
        teams={"ds-churn": {"slack_group": "S0CHURN", "pagerduty_routing_key_env": "CHURN_KEY"}},
        permissions={"users": ["U1"], "groups": ["S0PLAT"], "on_call": False}))
    team = routing.teams["ds-churn"]
    assert (team.slack_group, team.pagerduty_routing_key_env) == ("S0CHURN", "CHURN_KEY")
    assert routing.permissions.users == {"U1"} and routing.permissions.groups == {"S0PLAT"}
    assert routing.permissions.on_call is False


def test_routing_keys_are_those_of_the_named_variables_that_hold_a_value():
    routing = parse_routing(_doc(
        teams={"ds-churn": {"pagerduty_routing_key_env": "CHURN_KEY"},
               "ds-fraud": {"pagerduty_routing_key_env": "FRAUD_KEY"},
               "ds-ads": {"slack_group": "S0ADS"},
               "ds-search": {"pagerduty_routing_key_env": "CHURN_KEY"}},
        escalation={"l1_escalation_service_env": "ESCALATION_KEY"}))
    assert routing.routing_key_variables() == ["CHURN_KEY", "FRAUD_KEY", "ESCALATION_KEY"]
    keys = routing_keys(routing, {"CHURN_KEY": "c" * 32, "FRAUD_KEY": "", "OTHER_KEY": "o" * 32})
    assert {name: key.get_secret_value() for name, key in keys.items()} == {"CHURN_KEY": "c" * 32}


def test_the_pulse_schedule_is_read():
    config = parse_routing(_doc(pulse={"cron": "0 10 1 * *", "timezone": "Europe/Berlin",
                                       "channel": "#ml-pulse"}))
    assert config.pulse == ChannelSchedule("0 10 1 * *", "Europe/Berlin", "#ml-pulse")
    assert parse_routing(_doc()).pulse is None
