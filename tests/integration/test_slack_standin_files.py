"""The Slack stand-in's file upload (files.getUploadURLExternal, the upload URL,
files.completeUploadExternal) against slack_sdk's own `files_upload_v2`, which makes the
three calls as Slack documents them, and against a multipart upload."""

from __future__ import annotations

import asyncio

import httpx
from slack_sdk.web.async_client import AsyncWebClient

from tests.standins.slack import BOT_USER_ID, PNG_SIGNATURE, SlackStandIn

PNG = PNG_SIGNATURE + b"\x00" * 200


def test_slack_sdks_own_upload_is_served_and_recorded(slack: SlackStandIn):
    channel = slack.add_channel("#charts", members=(BOT_USER_ID,))

    async def upload() -> dict:
        client = AsyncWebClient(token=slack.token, base_url=slack.base_url)
        response = await client.files_upload_v2(content=PNG, filename="chart.png", title="Chart",
                                                channel=channel, initial_comment="weekly")
        return response.data  # type: ignore[return-value]

    answer = asyncio.run(upload())
    assert answer["ok"] is True
    (shared,) = slack.uploads(channel)
    assert (shared["name"], shared["title"], shared["content"]) == ("chart.png", "Chart", PNG)
    assert shared["initial_comment"] == "weekly"
    (message,) = slack.top_level_messages(channel)
    assert message["files"][0]["mimetype"] == "image/png"
    assert slack.violations == []


def test_multipart_uploads_length_and_membership_are_checked(slack: SlackStandIn):
    auth = {"Authorization": f"Bearer {slack.token}"}
    issued = httpx.post(slack.base_url + "files.getUploadURLExternal", headers=auth,
                        data={"filename": "a.png", "length": str(len(PNG))}).json()
    assert issued["ok"] and issued["file_id"].startswith("F")
    assert httpx.post(issued["upload_url"], files={"file": ("a.png", PNG)}).status_code == 200
    public = slack.add_channel("#elsewhere")
    refused = httpx.post(slack.base_url + "files.completeUploadExternal", headers=auth, data={
        "files": f'[{{"id": "{issued["file_id"]}"}}]', "channel_id": public}).json()
    assert refused == {"ok": False, "error": "not_in_channel"}
    named = httpx.post(slack.base_url + "files.completeUploadExternal", headers=auth, data={
        "files": f'[{{"id": "{issued["file_id"]}"}}]', "channel_id": "#elsewhere"}).json()
    assert named["error"] == "channel_not_found"  # an ID, not a name
    short = httpx.post(slack.base_url + "files.getUploadURLExternal", headers=auth,
                       data={"filename": "b.png", "length": "10"}).json()
    assert httpx.post(short["upload_url"], content=PNG).status_code == 400
    assert len(slack.violations) == 2  # the name for an ID, the length that did not match
    assert slack.uploads() == []
