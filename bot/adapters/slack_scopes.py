"""The Slack scopes the bot needs, and why: each Web API method it calls, each event it
subscribes to and each feature it uses, with the bot-token scopes Slack requires for it.

slack-app-manifest.yml must ask for every scope named here (tests/unit/test_slack_scopes.py
checks that, and that every method called in bot/ is listed): Slack refuses to create an
app whose manifest subscribes to an event without its scope, and answers `missing_scope`
to a call the token was not granted.
"""

from __future__ import annotations

METHOD_SCOPES: dict[str, tuple[str, ...]] = {
    # chat:write.public: post to an alert channel without being invited first.
    "chat.postMessage": ("chat:write", "chat:write.public"),
    "chat.update": ("chat:write",),
    "chat.postEphemeral": ("chat:write",),
    # Public channels, and the private ones the bot was invited to.
    "conversations.history": ("channels:history", "groups:history"),
    "conversations.replies": ("channels:history", "groups:history"),
    "conversations.join": ("channels:join",),
    "conversations.list": ("channels:read", "groups:read"),
    "auth.test": (),
    # The email matches a Slack user to PagerDuty's on-call engineer.
    "users.info": ("users:read", "users:read.email"),
    "usergroups.users.list": ("usergroups:read",),
    # The scorecard's chart, shared in Slack (the upload URL itself needs no scope).
    "files.getUploadURLExternal": ("files:write",),
    "files.completeUploadExternal": ("files:write",),
    # The pulse's comment modal (a trigger_id from the click is all it needs).
    "views.open": (),
}

EVENT_SCOPES: dict[str, tuple[str, ...]] = {
    "app_mention": ("app_mentions:read",),
}

FEATURE_SCOPES: dict[str, tuple[str, ...]] = {
    "slash command /oncall": ("commands",),
}


def required_scopes() -> frozenset[str]:
    return frozenset(scope for table in (METHOD_SCOPES, EVENT_SCOPES, FEATURE_SCOPES)
                     for scopes in table.values() for scope in scopes)
