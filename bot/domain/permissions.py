"""Who may do what: the one place that decides, given facts gathered by the caller.

Resolving an L1 incident, silencing, escalating to a model's owners, rolling back a
model and running a runbook on demand are restricted to configured Slack users and
user groups and to whoever is on call now. Acknowledging, noting, listing and
declaring are open to everyone. `guard_for` says which guard an act needs, `refusal`
whether the person passes it; the lookups (their groups, whether they are on call)
are the caller's (bot/permissions.py).
"""

from __future__ import annotations

from collections.abc import Collection
from enum import StrEnum

from bot.domain.messages import Mrkdwn, group_mention, md, md_join, mention
from bot.domain.routing import Permissions, Tier


class Act(StrEnum):
    """What people do to incidents and models, from any edge."""

    ACKNOWLEDGE = "acknowledge"
    RESOLVE = "resolve"
    NOTE = "note"
    DECLARE = "declare"
    ESCALATE = "escalate"
    SILENCE = "silence"
    ROLLBACK = "rollback"
    RUN_RUNBOOK = "run_runbook"


class Guarded(StrEnum):
    RESOLVE_L1 = "resolve an L1 incident"
    SILENCE = "silence alerts"
    ESCALATE = "escalate to a model's owners"
    ROLLBACK = "roll back a model"
    RUN_RUNBOOK = "run a runbook"


_GUARDS = {Act.SILENCE: Guarded.SILENCE, Act.ESCALATE: Guarded.ESCALATE,
           Act.ROLLBACK: Guarded.ROLLBACK, Act.RUN_RUNBOOK: Guarded.RUN_RUNBOOK}


def guard_for(act: Act, *, tier: str | None = None) -> Guarded | None:
    """The guard `act` needs, None when it is open to everyone. Resolving is guarded
    only for an L1 (`tier` is the incident's)."""
    if act is Act.RESOLVE:
        return Guarded.RESOLVE_L1 if tier == Tier.L1.value else None
    return _GUARDS.get(act)


def refusal(user_id: str, guarded: Guarded, *, permissions: Permissions,
            groups_of_user: Collection[str], on_call: bool) -> Mrkdwn | None:
    """None when the user may; otherwise the refusal naming who may."""
    if may(user_id, permissions=permissions, groups_of_user=groups_of_user, on_call=on_call):
        return None
    return who_may(guarded, permissions)


def may(user_id: str, *, permissions: Permissions, groups_of_user: Collection[str],
        on_call: bool) -> bool:
    if user_id in permissions.users:
        return True
    if permissions.groups.intersection(groups_of_user):
        return True
    return permissions.on_call and on_call


def who_may(action: Guarded, permissions: Permissions) -> Mrkdwn:
    """The refusal text: names everyone who may, so the person knows whom to ask."""
    who = [mention(u) for u in sorted(permissions.users)]
    who += [group_mention(g) for g in sorted(permissions.groups)]
    if permissions.on_call:
        who.append(Mrkdwn("whoever is on call now"))
    listed = md_join(who, ", ") if who else "nobody (no users, groups or on-call configured)"
    return md("You may not {}. Allowed: {}.", action.value, listed)
