"""The stand-ins in tests/standins, exercised with the bot's real clients.

slack_sdk's AsyncWebClient talks to SlackStandIn over HTTP; pagerduty's
EventsApiV2Client / RestApiV2Client talk to PagerDutyStandIn over HTTPS,
trusting the throw-away CA.  Run: ``.venv/bin/python -m pytest tests/integration``.
"""

import asyncio
import ssl

import httpx
import pagerduty
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from tests.standins.openapi import schema_errors, to_json_schema
from tests.standins.pagerduty import EVENTS_SPEC, REST_OPERATIONS, PagerDutyStandIn
from tests.standins.pd_client import single_attempt
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
