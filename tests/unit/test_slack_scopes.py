"""The Slack app manifest asks for every scope the bot needs: each Web API method called
anywhere in bot/ is in bot/adapters/slack_scopes.py, and the manifest asks for every scope
that table names (issue 14: `app_mention` without `app_mentions:read` made Slack refuse it)."""

import ast
from pathlib import Path

import yaml
from slack_sdk.web.async_base_client import AsyncBaseClient
from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.slack_scopes import EVENT_SCOPES, METHOD_SCOPES, required_scopes

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = yaml.safe_load((ROOT / "slack-app-manifest.yml").read_text())
# Web API methods are AsyncWebClient's own attributes (chat_postMessage), not the base
# client's plumbing (api_call, close).
WEB_API = {name for name in vars(AsyncWebClient) if not name.startswith("_")} - set(dir(AsyncBaseClient))


def methods_called() -> dict[str, list[str]]:
    """Slack method name (chat.postMessage) → where in bot/ it is referenced."""
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / "bot").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr in WEB_API:
                found.setdefault(node.attr.replace("_", "."), []).append(
                    f"{path.relative_to(ROOT)}:{node.lineno}")
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "api_call" and node.args
                    and isinstance(node.args[0], ast.Constant)):
                found.setdefault(str(node.args[0].value), []).append(
                    f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_every_slack_method_the_bot_calls_is_in_the_scope_table():
    called = methods_called()
    assert {"chat.postMessage", "users.info", "conversations.history"} <= set(called)  # the scan works
    missing = {name: where for name, where in called.items() if name not in METHOD_SCOPES}
    assert not missing, f"add these to bot/adapters/slack_scopes.py: {missing}"
    assert set(METHOD_SCOPES) - set(called) == set(), "the table lists methods nothing calls"


def test_the_manifest_asks_for_every_scope_the_table_names():
    asked = set(MANIFEST["oauth_config"]["scopes"]["bot"])
    assert required_scopes() - asked == set()
    assert asked - required_scopes() == set(), "the manifest asks for scopes nothing needs"


def test_every_subscribed_event_has_its_scope():
    events = MANIFEST["settings"]["event_subscriptions"]["bot_events"]
    assert "app_mention" in events
    assert set(events) <= set(EVENT_SCOPES)
    assert "app_mentions:read" in MANIFEST["oauth_config"]["scopes"]["bot"]
