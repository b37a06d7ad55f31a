"""Build inbound requests exactly as Slack and PagerDuty sign theirs.

Slack (REFERENCE.md §4; slack_sdk ``signature/``): ``X-Slack-Signature`` is
``v0=`` + hex HMAC-SHA256(signing_secret, ``v0:{timestamp}:{raw body}``) and
``X-Slack-Request-Timestamp`` the Unix time; Bolt rejects timestamps more than
300 s from now.  Slash commands are form-encoded fields; interactivity
payloads are a single form field ``payload=<JSON>``.  The bodies built here
mirror the shapes in slack_bolt's own tests (``tests/adapter_tests_async/``,
``tests/scenario_tests_async/test_block_actions.py``) so Bolt routes them to
``app.command(...)`` / ``app.action(action_id)``.

PagerDuty Webhooks v3 (REFERENCE.md §2; developer-docs ``webhooks/01-Overview.md``,
``02-Behavior.md``, ``04-Signatures.md``): ``X-PagerDuty-Signature`` is
``v1=<hex HMAC-SHA256(secret, raw body)>``, comma-joined when several secrets
are active (rotation); no timestamp is signed.  Sign the exact bytes you send::

    body = json.dumps(pagerduty_webhook("incident.acknowledged", "alert-1",
                                        "acknowledged")).encode()
    headers = pagerduty_headers("whsec", body)

Every ``*_body`` helper returns ``bytes``: sign and send those same bytes.
"""

import hashlib
import hmac
import itertools
import json
import secrets
import time
import uuid
from datetime import UTC, datetime
from urllib.parse import urlencode

SLACK_TEAM_ID = "T0STANDIN"  # matches SlackStandIn's auth.test
SLACK_TEAM_DOMAIN = "standin"
SLACK_APP_ID = "A0STANDAPP"
SLACK_VERIFICATION_TOKEN = "verification-token"  # deprecated field Slack still sends
DEFAULT_RESPONSE_URL = "https://hooks.slack.com/commands/T0STANDIN/1000000001/abcdefABCDEF"
DEFAULT_ACTION_RESPONSE_URL = "https://hooks.slack.com/actions/T0STANDIN/1000000002/abcdefABCDEF"

PD_WEB = "https://standin.pagerduty.com"
PD_API = "https://api.pagerduty.com"

_counter = itertools.count(1)


# -- Slack -----------------------------------------------------------------------
def slack_signature(signing_secret: str, body: bytes, timestamp: int) -> str:
    """``v0=`` + hex HMAC-SHA256(secret, ``v0:{timestamp}:{body}``)."""
    base = b"v0:" + str(int(timestamp)).encode() + b":" + body
    return "v0=" + hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()


def slack_headers(signing_secret: str, body: bytes, timestamp: int | None = None,
                  content_type: str = "application/x-www-form-urlencoded") -> dict:
    """Headers Slack sends with a slash command / interaction (``body`` as sent).

    ``timestamp`` defaults to now; pass an old one to test replay rejection
    (Bolt allows 300 s of skew).  Use ``content_type="application/json"`` for
    Events API bodies.
    """
    if isinstance(body, str):
        body = body.encode()
    ts = int(time.time()) if timestamp is None else int(timestamp)
    return {"Content-Type": content_type,
            "X-Slack-Request-Timestamp": str(ts),
            "X-Slack-Signature": slack_signature(signing_secret, body, ts)}


def new_trigger_id() -> str:
    """A fresh trigger_id shaped like Slack's (``<digits>.<digits>.<hex>``)."""
    n = next(_counter)
    return f"{1000000000 + n}.{2000000000 + n}.{secrets.token_hex(16)}"


def slash_command_body(text: str, user_id: str = "U123", command: str = "/oncall",
                       channel_id: str = "C0ALERTS01",
                       response_url: str = DEFAULT_RESPONSE_URL,
                       trigger_id: str | None = None, *, user_name: str = "ada",
                       channel_name: str = "ml-alerts",
                       team_id: str = SLACK_TEAM_ID) -> bytes:
    """The form body Slack POSTs for a slash command (all the fields it sends).

    ``enterprise_id``/``enterprise_name`` are only sent on Enterprise Grid and
    are left out.  ``trigger_id`` defaults to a fresh one (see :func:`new_trigger_id`).
    """
    fields = {
        "token": SLACK_VERIFICATION_TOKEN,
        "team_id": team_id,
        "team_domain": SLACK_TEAM_DOMAIN,
        "channel_id": channel_id,
        "channel_name": channel_name,
        "user_id": user_id,
        "user_name": user_name,
        "command": command,
        "text": text,
        "api_app_id": SLACK_APP_ID,
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": trigger_id or new_trigger_id(),
    }
    return urlencode(fields).encode()


def block_actions_payload(action_id: str, value: str, user_id: str, channel_id: str,
                          message_ts: str, response_url: str = DEFAULT_ACTION_RESPONSE_URL,
                          block_id: str = "incident", *, user_name: str = "ada",
                          channel_name: str = "ml-alerts", button_text: str | None = None,
                          message_text: str = "", message_blocks: list | None = None,
                          trigger_id: str | None = None) -> dict:
    """The ``block_actions`` interaction payload for a button click on a message."""
    now = f"{time.time():.6f}"
    return {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_name, "name": user_name,
                 "team_id": SLACK_TEAM_ID},
        "api_app_id": SLACK_APP_ID,
        "token": SLACK_VERIFICATION_TOKEN,
        "container": {"type": "message", "message_ts": message_ts,
                      "channel_id": channel_id, "is_ephemeral": False},
        "trigger_id": trigger_id or new_trigger_id(),
        "team": {"id": SLACK_TEAM_ID, "domain": SLACK_TEAM_DOMAIN},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel_id, "name": channel_name},
        "message": {"type": "message", "ts": message_ts, "text": message_text,
                    "blocks": list(message_blocks or [])},
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [{
            "action_id": action_id,
            "block_id": block_id,
            "value": value,
            "type": "button",
            "action_ts": now,
            "text": {"type": "plain_text", "text": button_text or action_id.title(),
                     "emoji": True},
        }],
    }


def block_actions_body(action_id: str, value: str, user_id: str, channel_id: str,
                       message_ts: str, response_url: str = DEFAULT_ACTION_RESPONSE_URL,
                       block_id: str = "incident", **kw) -> bytes:
    """Form body ``payload=<JSON>`` of a button click (see :func:`block_actions_payload`)."""
    payload = block_actions_payload(action_id, value, user_id, channel_id, message_ts,
                                    response_url, block_id, **kw)
    return urlencode({"payload": json.dumps(payload)}).encode()


def view_submission_body(view: dict, values: dict, user_id: str, *,
                         user_name: str = "ada") -> bytes:
    """Form body ``payload=<JSON>`` of a modal's submission: ``view`` as views.open
    returned it (its ``callback_id`` and ``private_metadata`` come back to the app), and
    ``values`` as ``state.values`` (``{block_id: {action_id: {"type", "value"}}}``)."""
    payload = {
        "type": "view_submission",
        "team": {"id": SLACK_TEAM_ID, "domain": SLACK_TEAM_DOMAIN},
        "user": {"id": user_id, "username": user_name, "name": user_name,
                 "team_id": SLACK_TEAM_ID},
        "api_app_id": SLACK_APP_ID,
        "token": SLACK_VERIFICATION_TOKEN,
        "trigger_id": new_trigger_id(),
        "view": {**view, "state": {"values": values}},
        "response_urls": [],
        "is_enterprise_install": False,
        "enterprise": None,
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


# -- PagerDuty Webhooks v3 ----------------------------------------------------------
def pagerduty_signature(secret: str, body: bytes, extra_secrets=()) -> str:
    """``X-PagerDuty-Signature``: ``v1=<hex>`` per secret, comma-joined (rotation)."""
    if isinstance(body, str):
        body = body.encode()
    return ",".join("v1=" + hmac.new(s.encode(), body, hashlib.sha256).hexdigest()
                    for s in (secret, *extra_secrets))


def pagerduty_headers(secret: str, body: bytes, webhook_id: str | None = None,
                      extra_secrets=()) -> dict:
    """Headers of a v3 webhook delivery.  ``X-Webhook-Id`` is unique per webhook
    and repeated on each retry (dedupe on it); pass the same id to simulate a
    redelivery."""
    return {"Content-Type": "application/json",
            "X-PagerDuty-Signature": pagerduty_signature(secret, body, extra_secrets),
            "X-Webhook-Id": webhook_id or str(uuid.uuid4())}


def _pd_id(seed: str) -> str:
    """A PagerDuty-style 7-char ID derived from ``seed`` (stable across calls)."""
    return "P" + hashlib.sha1(seed.encode()).hexdigest()[:6].upper()


def _pd_ref(kind: str, id_: str, summary: str, path: str) -> dict:
    return {"html_url": f"{PD_WEB}/{path}/{id_}", "id": id_,
            "self": f"{PD_API}/{path}/{id_}", "summary": summary,
            "type": f"{kind}_reference"}


def _iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def pagerduty_webhook(event_type: str, incident_key: str, status: str,
                      agent_name: str | None = "Ada Lovelace", agent_email: str | None = None,
                      event_id: str | None = None, incident_id: str = "PABC123", *,
                      title: str = "GPU node down", number: int = 1,
                      service_name: str = "ML platform", occurred_at: str | None = None,
                      created_at: str | None = None, assignees: list | None = None,
                      urgency: str = "high") -> dict:
    """A v3 webhook body for an incident event, shaped like PagerDuty's documented
    ``incident.priority_updated`` example (developer-docs webhooks/01-Overview.md).

    ``agent`` is a ``user_reference`` to ``agent_name``, or null when
    ``agent_name`` is None (system-initiated events).  PagerDuty's v3 agent
    reference carries **no email**: ``agent_email`` only seeds the agent's
    stable user ID (it never appears in the payload), so a consumer wanting
    the email must look the user up via REST ``GET /users/{id}``.

    ``assignees`` (list of ``(id, name)``) defaults to the agent while the
    incident is open and to none once resolved.  Statuses: ``triggered``,
    ``acknowledged``, ``resolved``.
    """
    if status not in ("triggered", "acknowledged", "resolved"):
        raise ValueError(f"incident status must be triggered/acknowledged/resolved, "
                         f"not {status!r}")
    now = _iso_now()
    agent = None
    if agent_name is not None:
        agent = _pd_ref("user", _pd_id(agent_email or agent_name), agent_name, "users")
    if assignees is None:
        assignees = ([] if status == "resolved" or agent is None
                     else [(agent["id"], agent_name)])
    service_id = _pd_id("service:" + service_name)
    return {"event": {
        "id": event_id or str(uuid.uuid4()),
        "event_type": event_type,
        "resource_type": "incident",
        "occurred_at": occurred_at or now,
        "agent": agent,
        "client": None,
        "data": {
            "id": incident_id,
            "type": "incident",
            "self": f"{PD_API}/incidents/{incident_id}",
            "html_url": f"{PD_WEB}/incidents/{incident_id}",
            "number": number,
            "status": status,
            "incident_key": incident_key,
            "created_at": created_at or now.split(".")[0] + "Z",
            "title": title,
            "service": _pd_ref("service", service_id, service_name, "services"),
            "assignees": [_pd_ref("user", uid, name, "users") for uid, name in assignees],
            "escalation_policy": _pd_ref("escalation_policy", _pd_id("ep:" + service_name),
                                         "Default", "escalation_policies"),
            "teams": [],
            "priority": None,
            "urgency": urgency,
            "conference_bridge": None,
            "resolve_reason": None,
        },
    }}
