"""The Slack stand-in's conversations.* methods behave as Slack documents them: the
bot's recovery of lost posts is only as good as the history it is tested against."""

from __future__ import annotations

import httpx

from tests.standins.slack import SlackStandIn


def _call(slack: SlackStandIn, method: str, **args) -> dict:
    response = httpx.post(f"{slack.base_url}{method}", json=args,
                          headers={"Authorization": f"Bearer {slack.token}"})
    assert response.status_code == 200
    return response.json()


def _get(slack: SlackStandIn, method: str, **params) -> dict:
    response = httpx.get(f"{slack.base_url}{method}", params=params,
                         headers={"Authorization": f"Bearer {slack.token}"})
    assert response.status_code == 200
    return response.json()


def test_history_pages_newest_first_with_metadata_only_when_asked():
    with SlackStandIn() as slack:
        channel = slack.add_channel("#ml-alerts")
        posted = [_call(slack, "chat.postMessage", channel="#ml-alerts", text=f"m{i}",
                        metadata={"event_type": "oncall_incident",
                                  "event_payload": {"incident_id": i}})["ts"]
                  for i in range(5)]
        assert _get(slack, "conversations.history", channel=channel) == {
            "ok": False, "error": "not_in_channel"}  # chat:write.public posts; reading needs joining
        assert _call(slack, "conversations.join", channel=channel)["ok"]
        assert _call(slack, "conversations.join", channel=channel)["warning"] == "already_in_channel"

        seen, cursor = [], None
        while True:
            page = _get(slack, "conversations.history", channel=channel, limit=2,
                        include_all_metadata="true", **({"cursor": cursor} if cursor else {}))
            seen += page["messages"]
            cursor = page["response_metadata"]["next_cursor"]
            assert page["has_more"] is bool(cursor)
            if not cursor:
                break
        assert [m["ts"] for m in seen] == posted[::-1]
        assert seen[0]["metadata"] == {"event_type": "oncall_incident",
                                       "event_payload": {"incident_id": 4}}
        plain = _get(slack, "conversations.history", channel=channel)["messages"]
        assert all("metadata" not in m for m in plain)
        newer = _get(slack, "conversations.history", channel=channel, oldest=posted[2])
        assert [m["ts"] for m in newer["messages"]] == posted[:2:-1]  # oldest is exclusive
        older = _get(slack, "conversations.history", channel=channel, latest=posted[1],
                     inclusive="true")
        assert [m["ts"] for m in older["messages"]] == posted[1::-1]
        assert _get(slack, "conversations.history", channel="#ml-alerts")["error"] == (
            "channel_not_found")  # history takes IDs, not names


def test_replies_list_the_parent_then_the_thread_oldest_first():
    with SlackStandIn() as slack:
        channel = slack.add_channel("#ml-alerts")
        _call(slack, "conversations.join", channel=channel)
        parent = _call(slack, "chat.postMessage", channel=channel, text="incident")["ts"]
        replies = [_call(slack, "chat.postMessage", channel=channel, text=f"r{i}",
                         thread_ts=parent, metadata={"event_type": "oncall_reply",
                                                     "event_payload": {"delivery_id": i}})["ts"]
                   for i in range(3)]
        thread = _get(slack, "conversations.replies", channel=channel, ts=parent,
                      include_all_metadata="1")["messages"]
        assert [m["ts"] for m in thread] == [parent, *replies]
        assert thread[1]["metadata"]["event_payload"] == {"delivery_id": 0}
        assert _get(slack, "conversations.history", channel=channel)["messages"][0]["ts"] == (
            parent)  # replies are not in the channel's history
        assert slack.violations == []


def test_private_channels_need_an_invite_and_scopes_are_checked():
    with SlackStandIn() as slack:
        private = slack.add_channel("#secret", private=True)
        assert _call(slack, "chat.postMessage", channel="#secret", text="x")["error"] == (
            "channel_not_found")
        assert _call(slack, "conversations.join", channel=private)["error"] == (
            "channel_not_found")
        invited = slack.add_channel("#invited", private=True, members=("U0STANDBOT",))
        assert _call(slack, "conversations.join", channel=invited)["error"] == (
            "method_not_supported_for_channel_type")
        assert _get(slack, "conversations.history", channel=invited)["ok"]
        slack.scopes.discard("groups:history")
        refused = _get(slack, "conversations.history", channel=invited)
        assert refused["error"] == "missing_scope" and refused["needed"] == "groups:history"
        listed = _get(slack, "conversations.list", types="public_channel,private_channel")
        assert [c["name"] for c in listed["channels"]] == ["invited"]
        assert _call(slack, "chat.postMessage", channel="#x", text="x",
                     metadata={"event_type": "t"})["error"] == "invalid_metadata_format"
