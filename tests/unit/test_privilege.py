"""Pure parts of the privilege fixes: when a rollback confirmation holds, where a run's
result is answered, and the per-param `pattern` of runbooks (load-time and run-time)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.domain.confirmations import (
    CONFIRM_WITHIN,
    answer_through_response_url,
    confirmation_refusal,
    not_to_start,
)
from bot.domain.permissions import Act, Guarded, guard_for, may, refusal, who_may
from bot.domain.routing import Permissions
from bot.runbooks import RunbookError, parse_runbook, resolve_params

NOW = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
ADA = "slack:U0ONCALL1"


@pytest.mark.parametrize(("age", "used", "confirmer", "refused"), [
    (timedelta(0), False, ADA, None),
    (CONFIRM_WITHIN - timedelta(seconds=1), False, ADA, None),
    (CONFIRM_WITHIN, False, ADA, "expired"),
    (timedelta(hours=3), False, ADA, "expired"),
    (timedelta(minutes=1), True, ADA, "already confirmed"),
    (timedelta(minutes=1), False, "slack:U0STRANGR", "someone else"),
])
def test_a_confirmation_holds_once_for_its_previewer_within_ten_minutes(
        age, used, confirmer, refused):
    created = NOW - age
    answer = confirmation_refusal(expires_at=created + CONFIRM_WITHIN,
                                  used_at=NOW if used else None, previewed_by=ADA,
                                  confirmed_by=confirmer, now=NOW)
    if refused is None:
        assert answer is None
    else:
        assert refused in answer and "nothing changed" in answer


@pytest.mark.parametrize(("age", "through_url"), [
    (timedelta(seconds=5), True),
    (timedelta(minutes=28), True),
    (timedelta(minutes=29, seconds=30), False),  # too close to Slack's 30 minutes
    (timedelta(hours=2), False),
])
def test_a_result_goes_to_the_response_url_only_while_slack_takes_it(age, through_url):
    assert answer_through_response_url(NOW - age, NOW) is through_url


@pytest.mark.parametrize(("production", "started", "age", "why"), [
    (False, True, timedelta(hours=1), None),  # diagnostics run again after a crash
    (False, False, timedelta(days=1), None),
    (True, False, timedelta(minutes=1), None),  # a fresh confirmation starts
    (True, True, timedelta(minutes=1), "the bot stopped while it ran"),  # never resumed
    (True, False, CONFIRM_WITHIN, "never started"),  # the bot was down past the confirmation
])
def test_a_run_that_changes_production_never_starts_twice_nor_late(production, started, age,
                                                                   why):
    answer = not_to_start(changes_production=production, started=started,
                          requested_at=NOW - age, now=NOW)
    assert answer is None if why is None else why in answer


def test_running_a_runbook_needs_what_resolving_an_l1_needs():
    permissions = Permissions(users=frozenset({"U1"}), groups=frozenset(), on_call=True)
    for user, on_call, allowed in (("U1", False, True), ("U2", True, True), ("U2", False, False)):
        assert may(user, permissions=permissions, groups_of_user=(), on_call=on_call) is allowed
    assert who_may(Guarded.RUN_RUNBOOK, permissions).startswith("You may not run a runbook")


@pytest.mark.parametrize(("act", "tier", "guard"), [
    (Act.RESOLVE, "L1", Guarded.RESOLVE_L1),
    (Act.RESOLVE, "L0", None),  # the bot's own tier: anyone may resolve it
    (Act.RESOLVE, "L2", None),
    (Act.ACKNOWLEDGE, "L1", None),
    (Act.NOTE, "L1", None),
    (Act.DECLARE, None, None),
    (Act.SILENCE, "L0", Guarded.SILENCE),
    (Act.ESCALATE, "L1", Guarded.ESCALATE),
    (Act.ROLLBACK, None, Guarded.ROLLBACK),
    (Act.RUN_RUNBOOK, None, Guarded.RUN_RUNBOOK),
])
def test_each_act_needs_its_one_guard(act, tier, guard):
    assert guard_for(act, tier=tier) is guard


def test_a_refusal_is_none_for_who_may_and_names_who_may_otherwise():
    permissions = Permissions(users=frozenset({"U1"}), groups=frozenset({"S1"}), on_call=False)
    assert refusal("U1", Guarded.RESOLVE_L1, permissions=permissions, groups_of_user=(),
                   on_call=False) is None
    assert refusal("U2", Guarded.RESOLVE_L1, permissions=permissions, groups_of_user={"S1"},
                   on_call=False) is None
    refused = refusal("U2", Guarded.RESOLVE_L1, permissions=permissions, groups_of_user=(),
                      on_call=True)
    assert refused == who_may(Guarded.RESOLVE_L1, permissions)
    assert "<@U1>" in refused and "<!subteam^S1>" in refused


def runbook_with(params: dict) -> object:
    return parse_runbook({"version": 1, "name": "t", "params": params,
                          "steps": [{"name": "n", "kind": "note", "message": "hi"}]}, "t.yaml")


@pytest.mark.parametrize(("spec", "problem"), [
    ({"pattern": "[0-9"}, "params.window.pattern: not a regular expression"),
    ({"pattern": 5}, "params.window.pattern: not a regular expression"),
    ({"pattern": "[0-9]+[smh]", "default": "soon"}, "params.window.default: 'soon' does not "
                                                     "match the pattern '[0-9]+[smh]'"),
])
def test_a_bad_pattern_or_a_default_outside_it_is_a_lint_error_naming_the_key(spec, problem):
    with pytest.raises(RunbookError) as raised:
        runbook_with({"window": spec})
    assert problem in str(raised.value)


WINDOWED = {"window": {"type": "string", "pattern": "[0-9]+[smh]", "default": "5m",
                       "from_annotation": "health_window"},
            "count": {"type": "int", "pattern": "[1-9]"}}


@pytest.mark.parametrize(("given", "annotations", "message"), [
    ({"window": "2m])) * 0 or vector(0) #"}, {}, "param 'window' (given): '2m])) * 0 or "
                                                 "vector(0) #' does not match the pattern"),
    ({"window": "5m\n"}, {}, "does not match the pattern '[0-9]+[smh]'"),  # the whole value
    ({}, {"health_window": "1m] or x"}, "param 'window' (annotation health_window)"),
    ({"count": "12"}, {}, "param 'count' (given): '12' does not match the pattern '[1-9]'"),
    ({"count": "x"}, {}, "does not match the pattern"),
    ({"colour": "red"}, {}, "unknown param(s) colour"),
])
def test_values_outside_the_pattern_or_undeclared_are_refused_naming_param_and_rule(
        given, annotations, message):
    with pytest.raises(RunbookError) as raised:
        resolve_params(runbook_with(WINDOWED), {}, annotations, given)
    assert message in str(raised.value)


def test_values_within_the_pattern_are_coerced_to_their_type():
    resolved = resolve_params(runbook_with(WINDOWED), {}, {"health_window": "30s"}, {"count": "7"})
    assert resolved == {"window": "30s", "count": 7}


def test_a_long_hostile_value_is_cut_short_in_the_refusal():
    with pytest.raises(RunbookError) as raised:
        resolve_params(runbook_with(WINDOWED), {}, {}, {"window": "x" * 100_000})
    assert len(str(raised.value)) < 300
