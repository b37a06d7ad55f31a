"""Local stand-ins for Slack's Web API and PagerDuty's Events v2 / REST v2 APIs.

Each stand-in is a real HTTP(S) server on 127.0.0.1 (random port) that speaks
the vendor's wire format, validates what it receives, records it, and can be
told to fail.  Point the bot's real clients at them:

* Slack: ``AsyncWebClient(token=..., base_url=slack.base_url)``
* PagerDuty: ``EventsApiV2Client(key, base_url=pd.events_url, verify=ca_pem)``
  and ``RestApiV2Client(token, base_url=pd.api_url, verify=ca_pem)`` where
  ``ca_pem = TestCA().ca_bundle_path(tmp_path)``.
"""
