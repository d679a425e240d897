"""What Slack sends to an app, built for tests: v0 request signatures, slash commands, block actions, events.

Shapes follow Slack's docs: "Verifying requests from Slack" (v0 HMAC-SHA256 of `v0:{timestamp}:{body}`),
"Implementing slash commands" (a form body, every value a string), "Handling user interaction" (a form body
whose one field `payload` holds the JSON of a `block_actions` payload) and "Events API" (a JSON envelope,
checked against the vendored `slack_common_event_wrapper_schema.json`). Each builder comes in two forms: a
dict (what Socket Mode puts in an envelope's `payload`) and `*_body` bytes (what an HTTP request carries).
Defaults match FakeSlack's defaults, so a payload from here points at the fake's team, app and bot.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from typing import Any
from urllib.parse import urlencode

from jsonschema import Draft7Validator

from tests.fakes.slack_spec import load_event_wrapper_schema

TEAM_ID = "T0001"
TEAM_DOMAIN = "fake-workspace"
APP_ID = "A0001"
BOT_USER_ID = "U0BOT"
BOT_ID = "B0001"
USER_ID = "U0001"
USER_NAME = "alice"
CHANNEL_ID = "C0001"
CHANNEL_NAME = "releases"
# The deprecated verification token: Slack still sends it in every payload; apps should verify signatures.
VERIFICATION_TOKEN = "fake-verification-token"
RESPONSE_URL = "https://hooks.slack.com/commands/T0001/1/fake"

_counter = itertools.count(1)


def sign(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The headers Slack signs a request with: `v0=` + hex HMAC-SHA256 of `v0:{timestamp}:{body}`."""
    ts = int(time.time()) if timestamp is None else timestamp
    base = b"v0:" + str(ts).encode() + b":" + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": f"v0={digest}"}


def new_trigger_id() -> str:
    """A trigger id in Slack's shape (`<digits>.<digits>.<hex>`); each is new."""
    n = next(_counter)
    return f"{1700000000 + n}.{738474920 + n}.{hashlib.sha256(str(n).encode()).hexdigest()[:32]}"


def new_action_ts() -> str:
    return f"{1700000000 + next(_counter)}.{next(_counter):06d}"


def slash_command_payload(
    command: str = "/ship",
    text: str = "",
    *,
    user_id: str = USER_ID,
    user_name: str = USER_NAME,
    team_id: str = TEAM_ID,
    team_domain: str = TEAM_DOMAIN,
    channel_id: str = CHANNEL_ID,
    channel_name: str = CHANNEL_NAME,
    response_url: str = RESPONSE_URL,
    trigger_id: str | None = None,
    api_app_id: str = APP_ID,
    token: str = VERIFICATION_TOKEN,
    enterprise_id: str | None = None,
    enterprise_name: str | None = None,
) -> dict[str, str]:
    """A slash command's fields in the order Slack sends them; enterprise fields only on Enterprise Grid."""
    fields = {"token": token, "team_id": team_id, "team_domain": team_domain}
    if enterprise_id is not None:
        fields["enterprise_id"] = enterprise_id
        fields["enterprise_name"] = enterprise_name or "Fake Enterprise"
    fields |= {
        "channel_id": channel_id,
        "channel_name": channel_name,
        "user_id": user_id,
        "user_name": user_name,
        "command": command,
        "text": text,
        "api_app_id": api_app_id,
        "is_enterprise_install": "true" if enterprise_id is not None else "false",
        "response_url": response_url,
        "trigger_id": trigger_id or new_trigger_id(),
    }
    return fields


def slash_command_body(command: str = "/ship", text: str = "", **fields: Any) -> bytes:
    """The form-encoded body of a slash command request (`application/x-www-form-urlencoded`)."""
    return urlencode(slash_command_payload(command, text, **fields)).encode()


def block_actions_payload(
    action_id: str,
    value: str,
    user_id: str = USER_ID,
    team_id: str = TEAM_ID,
    channel_id: str = CHANNEL_ID,
    message_ts: str = "1700000000.000100",
    response_url: str = RESPONSE_URL,
    *,
    block_id: str = "actions",
    user_name: str = USER_NAME,
    team_domain: str = TEAM_DOMAIN,
    channel_name: str = CHANNEL_NAME,
    message: dict[str, Any] | None = None,
    button_text: str = "Button",
    api_app_id: str = APP_ID,
    token: str = VERIFICATION_TOKEN,
) -> dict[str, Any]:
    """A `block_actions` payload for a button press on a message; `message` defaults to a bot message holding
    just that button (pass `fake.message_json(channel, ts)` for the message as the fake holds it)."""
    action = {
        "action_id": action_id,
        "block_id": block_id,
        "text": {"type": "plain_text", "text": button_text, "emoji": True},
        "value": value,
        "type": "button",
        "action_ts": new_action_ts(),
    }
    if message is None:
        button = {k: v for k, v in action.items() if k not in {"block_id", "action_ts"}}
        message = {
            "type": "message",
            "user": BOT_USER_ID,
            "bot_id": BOT_ID,
            "app_id": api_app_id,
            "team": team_id,
            "text": "",
            "ts": message_ts,
            "blocks": [{"type": "actions", "block_id": block_id, "elements": [button]}],
        }
    return {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": team_id},
        "api_app_id": api_app_id,
        "token": token,
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel_id, "is_ephemeral": False},
        "trigger_id": new_trigger_id(),
        "team": {"id": team_id, "domain": team_domain},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel_id, "name": channel_name},
        "message": message,
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [action],
    }


def block_actions_body(action_id: str, value: str, *args: Any, **kwargs: Any) -> bytes:
    """The form body Slack posts for an interaction: one field, `payload`, holding the JSON."""
    payload = block_actions_payload(action_id, value, *args, **kwargs)
    return urlencode({"payload": json.dumps(payload, separators=(",", ":"))}).encode()


def event_callback(
    event: dict[str, Any],
    event_id: str | None = None,
    team_id: str = TEAM_ID,
    *,
    api_app_id: str = APP_ID,
    event_time: int | None = None,
    bot_user_id: str = BOT_USER_ID,
    token: str = VERIFICATION_TOKEN,
) -> dict[str, Any]:
    """The Events API envelope around `event` (an `event_ts` is added if the event has none), validated
    against the vendored wrapper schema. `authed_users` is deprecated but still sent (the schema requires
    it); `authorizations` is what current docs tell apps to read."""
    n = next(_counter)
    event = dict(event)
    event.setdefault("event_ts", event.get("ts") or new_action_ts())
    envelope = {
        "token": token,
        "team_id": team_id,
        "api_app_id": api_app_id,
        "event": event,
        "type": "event_callback",
        "event_id": event_id or f"Ev{n:08d}",
        "event_time": event_time if event_time is not None else int(float(event["event_ts"])),
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": team_id,
                "user_id": bot_user_id,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
        "event_context": f"4-fake-{n}",
        "authed_users": [bot_user_id],
    }
    errors = sorted(Draft7Validator(load_event_wrapper_schema()).iter_errors(envelope), key=str)
    if errors:
        raise ValueError(f"not an Events API envelope: {errors[0].message}")
    return envelope


def event_callback_body(event: dict[str, Any], event_id: str | None = None, team_id: str = TEAM_ID, **kw: Any) -> bytes:
    """The JSON body of an Events API request (`application/json`)."""
    return json.dumps(event_callback(event, event_id, team_id, **kw), separators=(",", ":")).encode()
