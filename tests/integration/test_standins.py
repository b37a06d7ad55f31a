"""The stand-ins in tests/standins, exercised with the bot's real clients.

slack_sdk's AsyncWebClient talks to SlackStandIn over HTTP; pagerduty's
EventsApiV2Client / RestApiV2Client talk to PagerDutyStandIn over HTTPS,
trusting the throw-away CA.  Run: ``.venv/bin/python -m pytest tests/integration``.
"""

import asyncio
import hashlib
import hmac
import json
import ssl
import time
from urllib.parse import parse_qs

import httpx
import pagerduty
import pytest
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from tests.standins.openapi import schema_errors, to_json_schema
from tests.standins.pagerduty import EVENTS_SPEC, REST_OPERATIONS, PagerDutyStandIn
from tests.standins.pd_client import single_attempt
from tests.standins.signing import (
    block_actions_body,
    pagerduty_headers,
    pagerduty_signature,
    pagerduty_webhook,
    slack_headers,
    slash_command_body,
)
from tests.standins.slack import SlackStandIn
from tests.standins.tls import TestCA

ROUTING_KEY = "R" * 32
ALERT_BLOCKS = [
    {"type": "header", "text": {"type": "plain_text", "text": "GPU node down"}},
    {"type": "section", "block_id": "summary",
     "text": {"type": "mrkdwn", "text": "*gpu-7* stopped reporting"}},
    {"type": "actions", "block_id": "act", "elements": [
        {"type": "button", "action_id": "ack", "value": "k1",
         "text": {"type": "plain_text", "text": "Acknowledge"}}]},
]


@pytest.fixture(scope="module")
def ca():
    return TestCA()


@pytest.fixture(scope="module")
def pd_verify(ca, tmp_path_factory):
    """What the pagerduty clients get as ``verify=``: an SSLContext trusting the
    CA bundle file (httpx2 deprecates ``verify=<path>``)."""
    path = ca.ca_bundle_path(tmp_path_factory.mktemp("ca"))
    return ssl.create_default_context(cafile=path)


@pytest.fixture
def pd_client(pd_verify):
    """Factory: a single-attempt pagerduty client aimed at a stand-in, closed after."""
    made = []

    def make(cls, key, standin, **kw):
        url = standin.events_url if cls is pagerduty.EventsApiV2Client else standin.api_url
        made.append(single_attempt(cls(key, base_url=url, verify=pd_verify, **kw)))
        return made[-1]

    yield make
    for client in made:
        client.close()


@pytest.fixture
def slack():
    with SlackStandIn() as standin:
        yield standin


@pytest.fixture
def pd(ca):
    with PagerDutyStandIn(ca) as standin:
        yield standin


def slack_client(slack, **kw):
    return AsyncWebClient(token=slack.token, base_url=slack.base_url, **kw)


# -- Slack ---------------------------------------------------------------------
def test_slack_post_by_name_then_update_by_id_and_thread(slack):
    async def scenario():
        client = slack_client(slack)
        assert (await client.auth_test())["user_id"]
        posted = await client.chat_postMessage(channel="#ml-alerts", text="GPU node down",
                                               blocks=ALERT_BLOCKS)
        channel, ts = posted["channel"], posted["ts"]
        reply = await client.chat_postMessage(channel=channel, thread_ts=ts, text="paging")
        await client.chat_update(channel=channel, ts=ts, text="Resolved", blocks=[])
        with pytest.raises(SlackApiError) as by_name:
            await client.chat_update(channel="#ml-alerts", ts=ts, text="x")
        with pytest.raises(SlackApiError) as bad_thread:
            await client.chat_postMessage(channel=channel, thread_ts="1.000000", text="x")
        link = await client.chat_getPermalink(channel=channel, message_ts=ts)
        eph = await client.chat_postEphemeral(channel=channel, user="U123", text="only you")
        return channel, ts, reply, by_name.value, bad_thread.value, link, eph

    channel, ts, reply, by_name, bad_thread, link, eph = asyncio.run(scenario())
    assert channel == SlackStandIn.channel_id("#ml-alerts") and channel.startswith("C")
    assert float(reply["ts"]) > float(ts)
    assert slack.messages[channel][ts]["text"] == "Resolved"
    assert [m["text"] for m in slack.thread(channel, ts)] == ["paging"]
    assert [m["ts"] for m in slack.top_level_messages()] == [ts]
    assert by_name.response["error"] == "channel_not_found"
    assert bad_thread.response["error"] == "thread_not_found"
    assert link["permalink"].endswith(ts.replace(".", "")) and eph["message_ts"]
    assert [c.body["channel"] for c in slack.calls("chat.postMessage")][0] == "#ml-alerts"
    assert len(slack.violations) == 2  # exactly the two deliberate mistakes


@pytest.mark.parametrize("blocks", [
    [{"type": "sektion", "text": {"type": "mrkdwn", "text": "x"}}],
    [{"type": "header", "text": {"type": "mrkdwn", "text": "x"}}],
    [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}],
    [{"type": "divider", "block_id": "a"}, {"type": "divider", "block_id": "a"}],
    [{"type": "actions", "elements": [{"type": "button", "action_id": "a" * 256,
                                       "text": {"type": "plain_text", "text": "Ack"}}]}],
    [{"type": "divider"}] * 51,
])
def test_slack_invalid_blocks_rejected_and_recorded(slack, blocks):
    with pytest.raises(SlackApiError) as err:
        asyncio.run(slack_client(slack).chat_postMessage(channel="#ml-alerts", text="x", blocks=blocks))
    assert err.value.response["error"] == "invalid_blocks"
    assert slack.messages == {} and len(slack.violations) == 1


def test_slack_accepts_form_encoded_requests(slack):
    """Slack also takes form bodies (blocks as a JSON string, token in the body)."""
    form = {"token": slack.token, "channel": "ml-alerts", "text": "x",
            "blocks": '[{"type": "divider"}]'}
    body = httpx.post(slack.base_url + "chat.postMessage", data=form).json()
    assert body["ok"] and slack.messages[body["channel"]][body["ts"]]["blocks"] == [
        {"type": "divider"}]
    assert slack.violations == []


def test_slack_auth_is_checked(slack):
    with pytest.raises(SlackApiError) as err:
        asyncio.run(AsyncWebClient(token="xoxb-wrong", base_url=slack.base_url).auth_test())
    assert err.value.response.status_code == 200
    assert err.value.response["error"] == "invalid_auth"


def test_slack_rate_limit_surfaces_with_retry_after(slack):
    slack.fail("chat.postMessage", status=429, retry_after=7)
    with pytest.raises(SlackApiError) as err:
        asyncio.run(slack_client(slack).chat_postMessage(channel="#ml-alerts", text="x"))
    assert err.value.response.status_code == 429
    assert err.value.response.headers["Retry-After"] == "7"
    assert err.value.response["error"] == "ratelimited"
    assert slack.messages == {} and len(slack.failed_requests) == 1
    asyncio.run(slack_client(slack).chat_postMessage(channel="#ml-alerts", text="x"))  # fault used up
    assert len(slack.top_level_messages()) == 1 and slack.violations == []


def test_slack_down_then_up(slack):
    slack.down()
    with pytest.raises(SlackApiError) as err:
        asyncio.run(slack_client(slack).chat_postMessage(channel="#ml-alerts", text="x"))
    assert err.value.response.status_code == 503
    slack.up()
    assert asyncio.run(slack_client(slack).chat_postMessage(channel="#ml-alerts", text="x"))["ok"]


def test_slack_hang_times_out_client_but_message_lands(slack):
    slack.fail("chat.postMessage", hang=1.0)
    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(slack_client(slack, timeout=0.2).chat_postMessage(channel="#ml-alerts", text="x"))
    assert slack.wait_idle()
    assert len(slack.top_level_messages()) == 1  # a client retry would duplicate it


# -- PagerDuty Events v2 -------------------------------------------------------
def test_events_trigger_acknowledge_resolve(pd, pd_client):
    events = pd_client(pagerduty.EventsApiV2Client, ROUTING_KEY, pd)
    key = events.trigger("GPU node down", "gpu-7", dedup_key="alert-1", severity="error")
    assert key == "alert-1" and pd.alert_status("alert-1") == "triggered"
    events.trigger("GPU node down", "gpu-7", dedup_key="alert-1")  # deduplicated
    events.acknowledge("alert-1")
    assert pd.alert_status("alert-1") == "acknowledged"
    events.resolve("alert-1")
    events.resolve("alert-1")  # after resolve: accepted (202) but dropped
    assert pd.alert_status("alert-1") == "resolved"
    assert [e["applied"] for e in pd.events_for("alert-1")] == [True, True, True, True, False]
    generated = events.trigger("disk full", "db-1")  # no dedup_key: server makes a UUID
    assert len(generated) == 36 and len(pd.triggers()) == 3
    assert len(pd.incidents) == 2 and pd.violations == []
    success = to_json_schema(EVENTS_SPEC["components"]["responses"]["Success"])
    for req in pd.requests:
        assert schema_errors(success["content"]["application/json"]["schema"],
                             req.response) == []


def test_events_invalid_event_rejected_and_recorded(pd, pd_client):
    events = pd_client(pagerduty.EventsApiV2Client, ROUTING_KEY, pd)
    with pytest.raises(pagerduty.HttpError) as err:
        events.trigger("x" * 1025, "gpu-7", dedup_key="k")
    assert err.value.response.status_code == 400
    assert err.value.response.json()["status"] == "invalid event"
    with pytest.raises(pagerduty.HttpError):
        events.send_event("trigger", payload={"summary": "s", "source": "x", "severity": "fatal"})
    assert len(pd.violations) == 2 and pd.events == []


@pytest.mark.parametrize("status", [500, 503, 429])
def test_events_error_surfaces_after_exactly_one_attempt(pd, status, pd_client):
    pd.fail("/v2/enqueue", status=status, times=5, retry_after=1)
    events = pd_client(pagerduty.EventsApiV2Client, ROUTING_KEY, pd)
    with pytest.raises(pagerduty.HttpError) as err:
        events.trigger("GPU node down", "gpu-7", dedup_key="alert-1")
    assert err.value.response.status_code == status
    assert len(pd.failed_requests) == 1 and pd.requests == [] and pd.events == []


def test_events_timeout_raises_after_exactly_one_attempt(pd, pd_client):
    pd.fail("/v2/enqueue", hang=1.0)
    events = pd_client(pagerduty.EventsApiV2Client, ROUTING_KEY, pd)
    events.timeout = 0.2
    with pytest.raises(pagerduty.Error):
        events.trigger("GPU node down", "gpu-7", dedup_key="alert-1")
    assert pd.wait_idle()  # the slow request still applies the event
    assert len(pd.requests) == 1 and pd.alert_status("alert-1") == "triggered"


def test_events_rate_limit_per_routing_key(ca, pd_client):
    with PagerDutyStandIn(ca, rate_limit_per_minute=2) as pd:
        events = pd_client(pagerduty.EventsApiV2Client, ROUTING_KEY, pd)
        events.trigger("a", "s", dedup_key="a")
        events.trigger("b", "s", dedup_key="b")
        with pytest.raises(pagerduty.HttpError) as err:
            events.trigger("c", "s", dedup_key="c")
        assert err.value.response.status_code == 429
        other = pd_client(pagerduty.EventsApiV2Client, "S" * 32, pd)
        other.trigger("d", "s", dedup_key="d")
        assert len(pd.triggers()) == 3 and len(pd.failed_requests) == 1


# -- PagerDuty REST v2 ---------------------------------------------------------
ONCALLS = [
    {"user_id": f"PUSER0{i}", "user_name": f"Engineer {i}", "email": f"e{i}@example.com",
     "escalation_policy_id": "PEP0001" if i < 3 else "PEP0002",
     "schedule_id": "PSCHED1", "escalation_level": i,
     "start": "2026-01-01T00:00:00Z", "end": "2026-01-08T00:00:00Z"}
    for i in range(1, 5)
]


def test_rest_oncalls_filters_pagination_and_spec(pd, pd_client):
    pd.set_oncalls(ONCALLS)
    rest = pd_client(pagerduty.RestApiV2Client, "pd-test-token", pd)
    page = rest.jget("/oncalls", params={"escalation_policy_ids": ["PEP0001"],
                                         "limit": 1, "total": True})
    assert [o["user"]["id"] for o in page["oncalls"]] == ["PUSER01"]
    assert page["more"] is True and page["total"] == 2
    every = list(rest.iter_all("oncalls", params={"schedule_ids": ["PSCHED1"]}))
    assert len(every) == 4
    with_users = rest.jget("/oncalls", params={"include": ["users"],
                                               "escalation_policy_ids": ["PEP0002"]})
    assert [o["user"]["email"] for o in with_users["oncalls"]] == ["e3@example.com",
                                                                   "e4@example.com"]
    for req in pd.requests[:2]:  # without include[]=users: plain references
        schema = to_json_schema(REST_OPERATIONS["listOnCalls"]["responses"]["200"])
        assert schema_errors(schema, req.response) == []
    assert pd.violations == []


def test_rest_auth_is_checked(pd, pd_client):
    rest = pd_client(pagerduty.RestApiV2Client, "wrong", pd)
    with pytest.raises(pagerduty.HttpError) as err:
        rest.jget("/oncalls")
    assert err.value.response.status_code == 401
    assert err.value.response.json() == {"error": {"message": "Unauthorized", "code": 2006}}


def test_rest_incident_lookup_update_and_note(pd, pd_client):
    pd_client(pagerduty.EventsApiV2Client, ROUTING_KEY, pd).trigger(
        "GPU node down", "gpu-7", dedup_key="alert-1")
    rest = pd_client(pagerduty.RestApiV2Client, "pd-test-token", pd,
                     default_from="bot@example.com")
    [incident] = rest.jget("/incidents", params={"incident_key": "alert-1"})["incidents"]
    assert incident["status"] == "triggered" and incident["html_url"]
    updated = rest.rput(f"/incidents/{incident['id']}", json={
        "incident": {"type": "incident_reference", "status": "acknowledged"}})
    assert updated["status"] == "acknowledged" == pd.alert_status("alert-1")
    note = rest.rpost(f"/incidents/{incident['id']}/notes",
                      json={"note": {"content": "Acked from Slack"}})
    assert note["content"] == "Acked from Slack"
    assert pd.notes[0]["incident_id"] == incident["id"]
    with pytest.raises(pagerduty.HttpError) as err:  # status not in the spec's enum
        rest.rput(f"/incidents/{incident['id']}", json={"incident": {"status": "closed"}})
    assert err.value.response.status_code == 400 and len(pd.violations) == 1
    answered = zip(["listIncidents", "updateIncident", "createIncidentNote"], pd.requests[1:4])
    for op, req in answered:  # the stand-in's own answers conform to the spec
        schema = to_json_schema(REST_OPERATIONS[op]["responses"][str(req.status)])
        assert schema_errors(schema, req.response) == [], op


def test_rest_requests_by_operation_and_oncall_emails(pd, pd_client):
    pd.set_oncalls(ONCALLS)
    pd_client(pagerduty.EventsApiV2Client, ROUTING_KEY, pd).trigger(
        "GPU node down", "gpu-7", dedup_key="alert-1")
    rest = pd_client(pagerduty.RestApiV2Client, "pd-test-token", pd)
    rest.jget("/incidents", params={"incident_key": "alert-1"})
    page = rest.jget("/oncalls", params={"include[]": ["users"], "user_ids[]": ["PUSER02"]})
    [oncall] = page["oncalls"]
    assert oncall["user"]["email"] == "e2@example.com" and oncall["user"]["type"] == "user"
    assert [r.query["include[]"] for r in pd.rest_requests("listOnCalls")] == [["users"]]
    assert [r.path for r in pd.rest_requests()] == ["/incidents", "/oncalls"]
    assert pd.rest_requests("/incidents") == pd.rest_requests("listIncidents")
    assert pd.rest_requests("updateIncident") == [] and pd.violations == []


# -- Slack: users, user groups, modals, response_url ------------------------------
def test_slack_users_and_usergroups(slack):
    slack.add_user("U0ADA0001", "ada", "ada@example.com", real_name="Ada Lovelace")
    slack.add_user("U0BOB0002", "bob", "bob@example.com")
    slack.add_usergroup("S0ONCALL1", "ml-oncall", ["U0ADA0001", "U0BOB0002"])

    async def scenario():
        client = slack_client(slack)
        info = await client.users_info(user="U0ADA0001")
        by_email = await client.users_lookupByEmail(email="Ada@Example.com")
        members = await client.usergroups_users_list(usergroup="S0ONCALL1")
        errors = []
        for call in (client.users_info(user="U0NOBODY1"),
                     client.users_lookupByEmail(email="nobody@example.com"),
                     client.usergroups_users_list(usergroup="S0NOGROUP"),
                     client.users_info(user="ada"),  # a name where an ID belongs
                     client.usergroups_users_list(usergroup="ml-oncall")):
            with pytest.raises(SlackApiError) as err:
                await call
            errors.append(err.value.response["error"])
        form = await client.api_call("users.info", data={"user": "U0BOB0002"})  # POST form
        return info, by_email, members, errors, form

    info, by_email, members, errors, form = asyncio.run(scenario())
    user = info["user"]
    assert {k: user[k] for k in ("id", "name", "real_name")} == {
        "id": "U0ADA0001", "name": "ada", "real_name": "Ada Lovelace"}
    assert user["tz"] and user["profile"]["email"] == "ada@example.com"
    assert user["profile"]["display_name"] == "Ada Lovelace"
    assert by_email["user"] == user and members["users"] == ["U0ADA0001", "U0BOB0002"]
    assert form["user"]["name"] == "bob"
    assert errors == ["user_not_found", "users_not_found", "no_such_subteam",
                      "user_not_found", "no_such_subteam"]
    assert len(slack.violations) == 2  # misses are answers; name-for-ID is a bug
    assert [c.http_method for c in slack.calls("users.info")][0] == "GET"
    with pytest.raises(ValueError):
        slack.add_user("ada", "ada", "ada@example.com")


MODAL = {"type": "modal", "callback_id": "page",
         "title": {"type": "plain_text", "text": "Page on-call"},
         "submit": {"type": "plain_text", "text": "Page"},
         "blocks": [{"type": "input", "block_id": "why",
                     "label": {"type": "plain_text", "text": "Why?"},
                     "element": {"type": "plain_text_input", "action_id": "why"}}]}


@pytest.mark.parametrize("view", [
    {**MODAL, "type": "home"},
    {**MODAL, "title": {"type": "plain_text", "text": "x" * 25}},
    {**MODAL, "title": {"type": "mrkdwn", "text": "Page"}},
    {**MODAL, "blocks": [{"type": "divider"}] * 101},
    {k: v for k, v in MODAL.items() if k != "submit"},  # input blocks need submit
])
def test_slack_views_open_rejects_invalid_views(slack, view):
    with pytest.raises(SlackApiError) as err:
        asyncio.run(slack_client(slack).views_open(trigger_id="1.2.abc", view=view))
    assert err.value.response["error"] == "invalid_arguments"
    assert err.value.response["response_metadata"]["messages"][0].startswith("[ERROR]")
    assert slack.views == [] and len(slack.violations) == 1


def test_slack_views_open(slack):
    async def scenario():
        client = slack_client(slack)
        opened = await client.views_open(trigger_id="1.2.abc", view=MODAL)
        big = await client.views_open(trigger_id="1.2.def", view={
            **MODAL, "blocks": [{"type": "divider"}] * 60})  # modals allow 100 blocks
        with pytest.raises(SlackApiError) as reused:
            await client.views_open(trigger_id="1.2.abc", view=MODAL)
        return opened, big, reused.value

    opened, big, reused = asyncio.run(scenario())
    view = opened["view"]
    assert view["id"].startswith("V") and view["id"] != big["view"]["id"]
    assert view["type"] == "modal" and view["callback_id"] == "page"
    assert view["title"]["text"] == "Page on-call" and view["blocks"] == MODAL["blocks"]
    assert [v["trigger_id"] for v in slack.views] == ["1.2.abc", "1.2.def"]
    assert reused.response["error"] == "exchanged_trigger_id" and len(slack.violations) == 1


def test_slack_response_url_via_webhook_client(slack):
    async def scenario():
        hook = AsyncWebhookClient(slack.response_url("cmd-1"))
        first = await hook.send(text="Paging Ada…", response_type="ephemeral")
        second = await hook.send(text="Paged", blocks=[{"type": "divider"}],
                                 replace_original=True)
        other = await AsyncWebhookClient(slack.response_url("cmd-2")).send(
            text="Incident opened", response_type="in_channel")
        empty = await hook.send_dict({"response_type": "ephemeral"})
        bad = await hook.send(text="x", blocks=[{"type": "sektion"}])
        return first, second, other, empty, bad

    first, second, other, empty, bad = asyncio.run(scenario())
    assert (first.status_code, first.body) == (200, "ok")
    assert second.status_code == other.status_code == 200
    assert (empty.status_code, empty.body) == (400, "no_text")
    assert (bad.status_code, bad.body) == (400, "invalid_blocks")
    assert [r["text"] for r in slack.responses()] == ["Paging Ada…", "Paged",
                                                      "Incident opened"]
    assert slack.responses("cmd-1")[1]["replace_original"] is True
    assert slack.responses("cmd-2") == [{"text": "Incident opened",
                                         "response_type": "in_channel"}]
    assert len(slack.calls("response_url")) == 5 and len(slack.violations) == 2
    assert slack.messages == {}  # responses are recorded, never posted as messages


def test_slack_response_url_faults_and_channel_posts_still_work(slack):
    slack.fail("response_url", status=503, retry_after=2)
    hook = AsyncWebhookClient(slack.response_url())
    failed = asyncio.run(hook.send(text="x"))
    assert failed.status_code == 503 and failed.headers["Retry-After"] == "2"
    assert slack.responses() == [] and len(slack.failed_requests) == 1
    assert asyncio.run(hook.send(text="x")).body == "ok"
    posted = asyncio.run(slack_client(slack).chat_postMessage(channel="#ml-alerts", text="x"))
    by_id = asyncio.run(slack_client(slack).chat_postMessage(channel=posted["channel"],
                                                             text="y"))
    assert posted["channel"] == by_id["channel"] == SlackStandIn.channel_id("ml-alerts")
    assert len(slack.top_level_messages(posted["channel"])) == 2 and slack.violations == []


# -- signing helpers ----------------------------------------------------------------
def test_slack_headers_pass_slack_sdk_signature_verifier():
    body = slash_command_body("page ml", response_url="http://127.0.0.1:1/response/x")
    headers = slack_headers("s3cret", body)
    verifier = SignatureVerifier("s3cret")
    assert verifier.is_valid(body, headers["X-Slack-Request-Timestamp"],
                             headers["X-Slack-Signature"])
    assert verifier.is_valid_request(body, headers)
    assert not SignatureVerifier("other").is_valid_request(body, headers)
    stale = slack_headers("s3cret", body, timestamp=int(time.time()) - 301)
    assert not verifier.is_valid_request(body, stale)  # outside Bolt's 300 s window
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    fields = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
    assert set(fields) == {"token", "team_id", "team_domain", "channel_id", "channel_name",
                           "user_id", "user_name", "command", "text", "api_app_id",
                           "is_enterprise_install", "response_url", "trigger_id"}
    assert (fields["command"], fields["text"], fields["user_id"]) == ("/oncall", "page ml",
                                                                      "U123")


def test_signed_bodies_route_through_bolt(slack):
    """Bolt verifies the signatures, routes the command to app.command and the
    click to app.action(action_id), and its respond()/views_open reach the stand-in."""
    secret, seen = "s3cret", {}
    app = AsyncApp(signing_secret=secret, process_before_response=True,
                   client=slack_client(slack))

    @app.command("/oncall")
    async def oncall(ack, body, client, respond):
        await ack()
        seen["command"] = body["text"]
        await client.views_open(trigger_id=body["trigger_id"], view=MODAL)
        await respond(text="Opening the paging form")

    @app.action("ack_incident")
    async def acknowledge(ack, action, body, respond, context):
        await ack()
        seen["action"] = (action["value"], action["block_id"], context.user_id,
                          context.channel_id, body["container"]["message_ts"])
        await respond(text="Acknowledged by Ada", replace_original=True)

    async def dispatch(body, headers):
        return await app.async_dispatch(AsyncBoltRequest(body=body.decode(), headers=headers))

    async def scenario():
        cmd = slash_command_body("page ml", response_url=slack.response_url("cmd"))
        click = block_actions_body("ack_incident", "alert-1", "U0ADA0001", "C0ALERTS01",
                                   "1700000000.000100", slack.response_url("click"))
        forged = await dispatch(cmd, slack_headers("wrong", cmd))
        return (forged, await dispatch(cmd, slack_headers(secret, cmd)),
                await dispatch(click, slack_headers(secret, click)))

    forged, cmd, click = asyncio.run(scenario())
    assert forged.status == 401
    assert cmd.status == 200 and click.status == 200
    assert seen["command"] == "page ml"
    assert seen["action"] == ("alert-1", "incident", "U0ADA0001", "C0ALERTS01",
                              "1700000000.000100")
    assert slack.responses("cmd") == [{"text": "Opening the paging form"}]
    assert slack.responses("click")[0]["replace_original"] is True
    assert len(slack.views) == 1 and slack.violations == []


def test_block_actions_payload_shape():
    body = block_actions_body("ack_incident", "alert-1", "U0ADA0001", "C0ALERTS01",
                              "1700000000.000100", "https://hooks.slack.com/actions/x")
    payload = json.loads(parse_qs(body.decode())["payload"][0])
    assert payload["type"] == "block_actions"
    assert set(payload["user"]) == {"id", "username", "name", "team_id"}
    assert payload["container"] == {"type": "message", "message_ts": "1700000000.000100",
                                     "channel_id": "C0ALERTS01", "is_ephemeral": False}
    assert payload["channel"]["id"] == "C0ALERTS01" and payload["message"]["blocks"] == []
    [action] = payload["actions"]
    assert {k: action[k] for k in ("action_id", "block_id", "value", "type")} == {
        "action_id": "ack_incident", "block_id": "incident", "value": "alert-1",
        "type": "button"}
    assert action["text"]["type"] == "plain_text" and action["action_ts"]


def test_pagerduty_signature_and_webhook_body():
    event = pagerduty_webhook("incident.acknowledged", "alert-1", "acknowledged",
                              agent_email="ada@example.com", event_id="evt-1")
    body = json.dumps(event).encode()
    expected = hmac.new(b"whsec", body, hashlib.sha256).hexdigest()
    assert pagerduty_signature("whsec", body) == f"v1={expected}"
    rotated = pagerduty_signature("new", body, extra_secrets=["whsec"])
    assert rotated.split(",")[1] == f"v1={expected}" and rotated.count("v1=") == 2
    headers = pagerduty_headers("whsec", body, webhook_id="wh-1")
    assert headers["X-PagerDuty-Signature"] == f"v1={expected}"
    assert headers["X-Webhook-Id"] == "wh-1"
    assert headers["Content-Type"] == "application/json"

    e = event["event"]
    assert set(e) == {"id", "event_type", "resource_type", "occurred_at", "agent",
                      "client", "data"}
    assert (e["id"], e["event_type"], e["resource_type"]) == (
        "evt-1", "incident.acknowledged", "incident")
    assert e["agent"]["type"] == "user_reference" and e["agent"]["summary"] == "Ada Lovelace"
    assert set(e["agent"]) == {"html_url", "id", "self", "summary", "type"}
    assert e["client"] is None
    data = e["data"]
    assert set(data) >= {"id", "type", "self", "html_url", "number", "status",
                         "incident_key", "created_at", "title", "service", "assignees",
                         "escalation_policy", "teams", "priority", "urgency",
                         "conference_bridge", "resolve_reason"}
    assert (data["id"], data["type"], data["status"], data["incident_key"]) == (
        "PABC123", "incident", "acknowledged", "alert-1")
    assert data["service"]["type"] == "service_reference"
    assert data["escalation_policy"]["type"] == "escalation_policy_reference"
    assert [a["id"] for a in data["assignees"]] == [e["agent"]["id"]]
    resolved = pagerduty_webhook("incident.resolved", "alert-1", "resolved", agent_name=None)
    assert resolved["event"]["agent"] is None and resolved["event"]["data"]["assignees"] == []
    assert resolved["event"]["id"] != e["id"]  # fresh event IDs by default
    with pytest.raises(ValueError):
        pagerduty_webhook("incident.triggered", "k", "open")
