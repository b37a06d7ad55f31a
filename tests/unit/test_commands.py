"""`/oncall` parsing and the permission decision, table-driven."""

from datetime import timedelta

import pytest

from bot.domain.commands import CommandError, parse_command
from bot.domain.permissions import Guarded, may, who_may
from bot.domain.routing import Permissions


@pytest.mark.parametrize(
    ("text", "name", "fields"),
    [
        ("", "help", {}),
        ("who", "who", {}),
        ("list", "list", {"filters": {}}),
        ("list model=churn tier=L1 state=acknowledged", "list",
         {"filters": {"model": "churn", "tier": "L1", "state": "acknowledged"}}),
        ("show 12", "show", {"incident_id": 12}),
        ("ack #7", "ack", {"incident_id": 7}),
        ("resolve 7 rolled back to v6", "resolve", {"incident_id": 7, "text": "rolled back to v6"}),
        ("resolve 7", "resolve", {"incident_id": 7, "text": ""}),
        ("note 7 pod restarted", "note", {"incident_id": 7, "text": "pod restarted"}),
        ('declare "Scores look off" model=churn tier=L0 severity=warning', "declare",
         {"text": "Scores look off", "filters": {"model": "churn", "tier": "L0",
                                                 "severity": "warning"}}),
        ('silence model="churn" env=~"prod.*" for=90m retraining tonight', "silence",
         {"matchers": ('model="churn"', 'env=~"prod.*"'), "duration": timedelta(minutes=90),
          "text": "retraining tonight"}),
        ("silences", "silences", {}),
        ("unsilence 3", "unsilence", {"incident_id": 3}),
        ("ACK 7", "ack", {"incident_id": 7}),
    ],
)
def test_commands_parse(text, name, fields):
    command = parse_command(text)
    assert command.name == name
    for key, value in fields.items():
        assert getattr(command, key) == value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("frobnicate", "Unknown subcommand"),
        ("who me", "takes no arguments"),
        ("ack", "Which incident"),
        ("ack seven", "not an incident number"),
        ("show 1 2", "Too many arguments"),
        ("note 4", "The note is empty"),
        ("list colour=red", "colour=red"),
        ("list tier=L3", "tier must be one of"),
        ("list state=open", "state must be one of"),
        ("declare model=churn", "title in quotes"),
        ('declare "x" tier=record', "L0 or L1"),
        ("silence for=2h", "at least one matcher"),
        ('silence model="churn"', "for=2h"),
        ('silence model="churn" for=soon', "duration"),
        ('silence model=~"(" for=1h', "invalid regex"),
        ('declare "unclosed', "Could not read"),
    ],
)
def test_malformed_commands_answer_with_usage(text, message):
    with pytest.raises(CommandError, match=message) as raised:
        parse_command(text)
    assert "Usage" in str(raised.value) or "/oncall help" in str(raised.value)


PERMS = Permissions(users=frozenset({"U1"}), groups=frozenset({"S1"}), on_call=True)


@pytest.mark.parametrize(
    ("user", "groups", "on_call", "permissions", "allowed"),
    [
        ("U1", set(), False, PERMS, True),
        ("U2", {"S1"}, False, PERMS, True),
        ("U2", {"S9"}, False, PERMS, False),
        ("U2", set(), True, PERMS, True),
        ("U2", set(), True, Permissions(on_call=False), False),
        ("U2", set(), False, Permissions(), False),
    ],
)
def test_who_may(user, groups, on_call, permissions, allowed):
    assert may(user, permissions=permissions, groups_of_user=groups, on_call=on_call) is allowed


def test_refusal_names_who_may():
    text = who_may(Guarded.SILENCE, PERMS)
    assert text.startswith("You may not silence alerts.")
    assert "<@U1>" in text and "<!subteam^S1>" in text and "on call" in text
    assert "nobody" in who_may(Guarded.ESCALATE, Permissions(on_call=False))
