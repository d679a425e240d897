"""The fake Slack is honest both ways: real slack_sdk and slack_bolt clients get Slack's answers and refusals."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, parse_qsl

import aiohttp
import pytest
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from tests.fakes.slack import (
    FakeSlack,
    block_actions_body,
    block_actions_payload,
    event_callback,
    event_callback_body,
    sign,
    slash_command_body,
    slash_command_payload,
)
from tests.fakes.slack_spec import load_web_api

BOT_TOKEN = "xoxb-1-test"
APP_TOKEN = "xapp-1-test"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
CHANNEL = "C0001"


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    """A workspace with alice and bob; #releases holds the bot and alice (bob is outside)."""
    async with FakeSlack(bot_token=BOT_TOKEN, app_token=APP_TOKEN, team_id="T0001", bot_user_id="U0BOT") as server:
        server.add_user("U0001", "alice", real_name="Alice Liddell", email="alice@example.com")
        server.add_user("U0002", "bob")
        server.add_channel(CHANNEL, "releases", members=["U0BOT", "U0001"])
        yield server


def web_client(fake: FakeSlack, token: str | None = BOT_TOKEN, **kwargs: Any) -> AsyncWebClient:
    return AsyncWebClient(token=token, base_url=fake.url + "/api/", **kwargs)


@pytest.fixture
def client(fake: FakeSlack) -> AsyncWebClient:
    return web_client(fake)


async def refused(call: Any) -> SlackApiError:
    with pytest.raises(SlackApiError) as caught:
        await call
    return caught.value


# Refusals.


async def test_unknown_method_is_unknown_method(fake: FakeSlack, client: AsyncWebClient) -> None:
    error = await refused(client.api_call("chat.postMessages", json={"channel": CHANNEL, "text": "hi"}))
    assert error.response.status_code == 200
    assert error.response.data == {
        "ok": False,
        "error": "unknown_method",
        "response_metadata": {"messages": ["[ERROR] no method chat.postMessages in the Web API description"]},
    }
    assert fake.violations == [
        "chat.postMessages: unknown_method ([ERROR] no method chat.postMessages in the Web API description)"
    ]


async def test_missing_required_argument_is_invalid_arguments(fake: FakeSlack, client: AsyncWebClient) -> None:
    error = await refused(client.api_call("chat.update", json={"channel": CHANNEL}))
    assert error.response["error"] == "invalid_arguments"
    assert error.response["response_metadata"] == {"messages": ["[ERROR] missing required field: ts"]}
    # users.info: the description leaves `user` optional; today's docs (the errata) require it.
    error = await refused(client.api_call("users.info", http_verb="GET", params={}))
    assert error.response["error"] == "invalid_arguments"
    assert fake.violations == [
        "chat.update: invalid_arguments ([ERROR] missing required field: ts)",
        "users.info: invalid_arguments ([ERROR] missing required field: user)",
    ]


async def test_post_message_without_text_or_blocks_is_no_text(fake: FakeSlack, client: AsyncWebClient) -> None:
    # slack_sdk itself warns first (a UserWarning, an error under `filterwarnings = error`).
    with pytest.warns(UserWarning, match="top-level `text` argument is missing"):
        error = await refused(client.chat_postMessage(channel=CHANNEL))
    assert error.response["error"] == "no_text"
    assert fake.messages(CHANNEL) == []


@pytest.mark.parametrize(
    ("token", "method", "error"),
    [
        (None, "auth.test", "not_authed"),
        ("xoxb-not-ours", "auth.test", "invalid_auth"),
        (APP_TOKEN, "auth.test", "not_allowed_token_type"),
        (BOT_TOKEN, "apps.connections.open", "not_allowed_token_type"),
    ],
)
async def test_tokens_are_checked(fake: FakeSlack, token: str | None, method: str, error: str) -> None:
    refusal = await refused(web_client(fake, token).api_call(method))
    assert refusal.response["error"] == error
    assert [v.split(" ")[:2] for v in fake.violations] == [[f"{method}:", error]]


async def test_token_may_come_as_a_form_field(fake: FakeSlack) -> None:
    answer = await web_client(fake, None).api_call("auth.test", data={"token": BOT_TOKEN})
    assert answer["user_id"] == "U0BOT"
    async with aiohttp.ClientSession() as session:
        form = aiohttp.FormData({"token": BOT_TOKEN, "channel": CHANNEL, "text": "multipart"})
        form.add_field("file", b"x", filename="x.txt")  # forces multipart/form-data
        async with session.post(fake.url + "/api/chat.postMessage", data=form) as response:
            assert (await response.json())["message"]["text"] == "multipart"
    assert fake.violations == []


async def test_tokens_slack_does_not_read_are_violations(fake: FakeSlack) -> None:
    async with aiohttp.ClientSession() as session:
        url = fake.url + "/api/auth.test"
        async with session.post(url, json={"token": BOT_TOKEN}) as response:
            assert await response.json() == {"ok": False, "error": "not_authed"}
        async with session.get(url, params={"token": BOT_TOKEN}) as response:
            assert (await response.json())["error"] == "not_authed"
    assert fake.violations == [
        "auth.test: token in a JSON body (Slack reads it only from Authorization)",
        "auth.test: not_authed",
        "auth.test: token in the query string (Slack refuses it from apps made since 2021)",
        "auth.test: not_authed",
    ]


async def test_json_without_charset_gets_slacks_warning(fake: FakeSlack) -> None:
    headers = {"Authorization": f"Bearer {BOT_TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        body = {"channel": CHANNEL, "text": "hi"}
        async with session.post(fake.url + "/api/chat.postMessage", json=body) as response:  # no charset
            answer = await response.json()
    assert (answer["ok"], answer["warning"], answer["response_metadata"]) == (
        True,
        "missing_charset",
        {"warnings": ["missing_charset"]},
    )


async def test_json_body_on_a_form_only_method_is_ignored(fake: FakeSlack, client: AsyncWebClient) -> None:
    error = await refused(client.api_call("conversations.history", json={"channel": CHANNEL}))
    assert error.response["error"] == "invalid_arguments"
    assert fake.violations[0] == "conversations.history: JSON body ignored (this method takes form arguments only)"


async def test_channel_must_exist_and_hold_the_bot(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.add_channel("C0002", "general", members=["U0001"])
    assert (await refused(client.chat_postMessage(channel="C0404", text="x"))).response["error"] == "channel_not_found"
    assert (await refused(client.chat_postMessage(channel="C0002", text="x"))).response["error"] == "not_in_channel"
    assert (await refused(client.conversations_history(channel="C0002"))).response["error"] == "not_in_channel"
    assert fake.violations == [
        "chat.postMessage: channel_not_found",
        "chat.postMessage: not_in_channel",
        "conversations.history: not_in_channel",
    ]


async def test_bad_blocks_and_metadata_are_refused(fake: FakeSlack, client: AsyncWebClient) -> None:
    no_type = client.chat_postMessage(channel=CHANNEL, text="x", blocks=[{"text": "no type"}])
    assert (await refused(no_type)).response["error"] == "invalid_blocks"
    bad_metadata = client.chat_postMessage(channel=CHANNEL, text="x", metadata={"event_type": "release"})
    assert (await refused(bad_metadata)).response["error"] == "invalid_metadata_format"
    too_long = client.chat_postMessage(channel=CHANNEL, text="x" * 40_001)
    assert (await refused(too_long)).response["error"] == "msg_too_long"
    assert fake.messages(CHANNEL) == []


# Messages.


async def test_post_then_update_keeps_ts_and_counts_edits(fake: FakeSlack, client: AsyncWebClient) -> None:
    posted = await client.chat_postMessage(channel=CHANNEL, text="Release v1.2: queued")
    first = await client.chat_postMessage(channel=CHANNEL, text="another")
    assert posted["channel"] == CHANNEL
    assert posted["message"] | {"ts": "x"} == {
        "type": "message",
        "user": "U0BOT",
        "bot_id": "B0001",
        "app_id": "A0001",
        "team": "T0001",
        "text": "Release v1.2: queued",
        "ts": "x",
    }
    assert posted["ts"] < first["ts"]
    for state in ("deploying", "done"):
        updated = await client.chat_update(channel=CHANNEL, ts=posted["ts"], text=f"Release v1.2: {state}")
        assert updated["ts"] == posted["ts"]
        assert updated["text"] == updated["message"]["text"] == f"Release v1.2: {state}"
    message = fake.message(CHANNEL, posted["ts"])
    assert (message.text, message.edits, message.user) == ("Release v1.2: done", 2, "U0BOT")
    assert fake.messages(CHANNEL)[1].edits == 0
    missing = await refused(client.chat_update(channel=CHANNEL, ts="1600000000.000100", text="x"))
    assert missing.response["error"] == "message_not_found"
    assert fake.violations == ["chat.update: message_not_found"]


async def test_only_the_bots_messages_can_be_updated_or_deleted(fake: FakeSlack, client: AsyncWebClient) -> None:
    theirs = fake.add_message(CHANNEL, "hello", user="U0001")
    edit = client.chat_update(channel=CHANNEL, ts=theirs.ts, text="x")
    assert (await refused(edit)).response["error"] == "cant_update_message"
    assert (await refused(client.chat_delete(channel=CHANNEL, ts=theirs.ts))).response["error"] == "cant_delete_message"
    ours = await client.chat_postMessage(channel=CHANNEL, text="mine")
    assert (await client.chat_delete(channel=CHANNEL, ts=ours["ts"])).data == {
        "ok": True,
        "channel": CHANNEL,
        "ts": ours["ts"],
    }
    assert [m.text for m in fake.messages(CHANNEL)] == ["hello"]
    assert fake.deleted[0][1].text == "mine"


async def test_thread_replies(fake: FakeSlack, client: AsyncWebClient) -> None:
    parent = await client.chat_postMessage(channel=CHANNEL, text="Release v1.2")
    reply = fake.add_message(CHANNEL, "is it out?", user="U0001", thread_ts=parent["ts"])
    answer = await client.chat_postMessage(channel=CHANNEL, text="yes", thread_ts=parent["ts"])
    assert answer["message"]["thread_ts"] == parent["ts"]
    assert answer["message"]["parent_user_id"] == "U0BOT"
    assert [m.text for m in fake.thread(CHANNEL, parent["ts"])] == ["Release v1.2", "is it out?", "yes"]

    replies = await client.conversations_replies(channel=CHANNEL, ts=parent["ts"])
    assert [m["text"] for m in replies["messages"]] == ["Release v1.2", "is it out?", "yes"]
    head = replies["messages"][0]
    assert (head["reply_count"], head["reply_users"], head["latest_reply"]) == (2, ["U0001", "U0BOT"], answer["ts"])
    history = await client.conversations_history(channel=CHANNEL)
    assert [m["text"] for m in history["messages"]] == ["Release v1.2"]  # replies stay in the thread
    # The ts of a reply finds its whole thread, as on Slack.
    assert len((await client.conversations_replies(channel=CHANNEL, ts=reply.ts))["messages"]) == 3
    unknown = await refused(client.conversations_replies(channel=CHANNEL, ts="1600000000.000100"))
    assert unknown.response["error"] == "thread_not_found"


async def test_metadata_round_trip(fake: FakeSlack, client: AsyncWebClient) -> None:
    metadata = {"event_type": "release_booked", "event_payload": {"release_id": "r-42", "version": "1.2.0"}}
    posted = await client.chat_postMessage(channel=CHANNEL, text="Booked v1.2.0", metadata=metadata)
    assert posted["message"]["metadata"] == metadata
    plain = await client.conversations_history(channel=CHANNEL)
    assert "metadata" not in plain["messages"][0]
    with_metadata = await client.conversations_history(channel=CHANNEL, include_all_metadata=True)
    assert with_metadata["messages"][0]["metadata"] == metadata
    assert fake.message(CHANNEL, posted["ts"]).metadata == metadata
    assert fake.violations == []


async def test_history_newest_first_with_cursor_pagination(fake: FakeSlack, client: AsyncWebClient) -> None:
    for n in range(5):
        await client.chat_postMessage(channel=CHANNEL, text=f"m{n}")
    first = await client.conversations_history(channel=CHANNEL, limit=2)
    assert [m["text"] for m in first["messages"]] == ["m4", "m3"]
    assert first["has_more"] is True
    assert first["response_metadata"]["next_cursor"]
    pages = [[m["text"] for m in page["messages"]] async for page in first]  # slack_sdk follows next_cursor
    assert pages == [["m4", "m3"], ["m2", "m1"], ["m0"]]
    bad = await refused(client.conversations_history(channel=CHANNEL, cursor="not-a-cursor"))
    assert bad.response["error"] == "invalid_cursor"


# Knobs.


async def test_rate_limit_is_429_with_retry_after(fake: FakeSlack) -> None:
    client = web_client(fake, retry_handlers=[])
    fake.rate_limit("chat.postMessage", retry_after=7)
    error = await refused(client.chat_postMessage(channel=CHANNEL, text="x"))
    assert error.response.status_code == 429
    assert error.response.headers["Retry-After"] == "7"
    assert error.response.data == {"ok": False, "error": "ratelimited"}
    assert (await client.chat_postMessage(channel=CHANNEL, text="x"))["ok"] is True
    assert fake.violations == []  # the test asked for it


async def test_fail_answers_the_error_asked_for(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.fail("chat.update", error="fatal_error", times=2)
    posted = await client.chat_postMessage(channel=CHANNEL, text="x")
    for _ in range(2):
        error = await refused(client.chat_update(channel=CHANNEL, ts=posted["ts"], text="y"))
        assert error.response["error"] == "fatal_error"
    assert (await client.chat_update(channel=CHANNEL, ts=posted["ts"], text="y"))["ok"] is True
    assert [method for method, _ in fake.calls] == ["chat.postMessage", *["chat.update"] * 3]
    assert fake.violations == []


def test_knobs_refuse_methods_the_fake_does_not_know(fake: FakeSlack) -> None:
    with pytest.raises(ValueError, match="knows no method"):
        fake.fail("chat.postMesage")


async def test_wait_for_times_out(fake: FakeSlack) -> None:
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="a message"):
        await fake.wait_for(lambda: fake.messages(CHANNEL), timeout=0.1, what="a message")
    assert time.monotonic() - start < 1


# DMs, ephemerals, users.


async def test_conversations_open_gives_a_stable_dm(fake: FakeSlack, client: AsyncWebClient) -> None:
    opened = await client.conversations_open(users="U0002")
    dm = opened["channel"]["id"]
    assert dm.startswith("D")
    again = await client.conversations_open(users="U0002")
    assert (again["channel"]["id"], again["already_open"]) == (dm, True)
    await client.chat_postMessage(channel=dm, text="Your release is out")
    assert [m.text for m in fake.messages(dm)] == ["Your release is out"]
    # Posting to a user id lands in the same DM.
    await client.chat_postMessage(channel="U0002", text="again")
    assert [m.text for m in fake.messages(dm)] == ["Your release is out", "again"]
    unknown = await refused(client.conversations_open(users="U0404"))
    assert unknown.response["error"] == "user_not_found"
    none = await refused(client.api_call("conversations.open", params={}))
    assert none.response["error"] == "users_list_not_supplied"


async def test_ephemeral_messages_are_kept_apart(fake: FakeSlack, client: AsyncWebClient) -> None:
    answer = await client.chat_postEphemeral(channel=CHANNEL, user="U0001", text="only you")
    assert set(answer.data) == {"ok", "message_ts"}
    assert [(e.channel, e.user, e.text, e.ts) for e in fake.ephemerals] == [
        (CHANNEL, "U0001", "only you", answer["message_ts"])
    ]
    assert fake.messages(CHANNEL) == []
    outsider = await refused(client.chat_postEphemeral(channel=CHANNEL, user="U0002", text="x"))
    assert outsider.response["error"] == "user_not_in_channel"
    no_user = await refused(client.api_call("chat.postEphemeral", json={"channel": CHANNEL, "text": "x"}))
    assert no_user.response["error"] == "invalid_arguments"


async def test_users_info(fake: FakeSlack, client: AsyncWebClient) -> None:
    user = (await client.users_info(user="U0001"))["user"]
    assert (user["id"], user["name"], user["real_name"], user["is_bot"]) == ("U0001", "alice", "Alice Liddell", False)
    assert user["profile"]["email"] == "alice@example.com"
    assert (await refused(client.users_info(user="U0404"))).response["error"] == "user_not_found"


async def test_answers_carry_the_documented_fields(fake: FakeSlack, client: AsyncWebClient) -> None:
    """Each success answer has at least the top-level fields of the description's example."""
    posted = await client.chat_postMessage(channel=CHANNEL, text="a")
    await client.chat_postMessage(channel=CHANNEL, text="b", thread_ts=posted["ts"])
    await client.chat_postMessage(channel=CHANNEL, text="c")
    await client.auth_test()
    await client.chat_update(channel=CHANNEL, ts=posted["ts"], text="a2")
    await client.chat_postEphemeral(channel=CHANNEL, user="U0001", text="e")
    await client.conversations_history(channel=CHANNEL, limit=1)
    await client.conversations_replies(channel=CHANNEL, ts=posted["ts"], limit=1)
    await client.conversations_open(users="U0001")
    await client.users_info(user="U0001")
    deleted = await client.chat_postMessage(channel=CHANNEL, text="d")
    await client.chat_delete(channel=CHANNEL, ts=deleted["ts"])
    await web_client(fake, APP_TOKEN).apps_connections_open(app_token=APP_TOKEN)
    web_api = load_web_api()
    seen = set()
    for call in fake.api_calls:
        example = web_api.methods[call.method].example or {}
        missing = set(example) - set(call.answer)
        assert not missing, f"{call.method} answer lacks {missing}"
        seen.add(call.method)
    assert seen == set(web_api.methods)
    assert fake.violations == []


# response_url.


async def test_response_url_posts_are_recorded_and_acted_on(fake: FakeSlack, client: AsyncWebClient) -> None:
    posted = await client.chat_postMessage(channel=CHANNEL, text="Approve v1.2?")
    command_url = fake.response_url(channel=CHANNEL, user="U0001")
    action_url = fake.response_url(channel=CHANNEL, user="U0001", message_ts=posted["ts"])
    assert command_url.startswith(fake.url + "/respond/")

    assert (
        await AsyncWebhookClient(command_url).send(text="Working on it", response_type="ephemeral")
    ).status_code == 200
    await AsyncWebhookClient(command_url).send(text="v1.2 is out", response_type="in_channel")
    await AsyncWebhookClient(action_url).send(text="Approved by alice", replace_original=True)

    assert [(r.text, r.response_type, r.status) for r in fake.responses] == [
        ("Working on it", "ephemeral", 200),
        ("v1.2 is out", "in_channel", 200),
        ("Approved by alice", "ephemeral", 200),
    ]
    assert [(e.user, e.text, e.source) for e in fake.ephemerals] == [("U0001", "Working on it", "response_url")]
    assert [(m.text, m.edits) for m in fake.messages(CHANNEL)] == [("Approved by alice", 1), ("v1.2 is out", 0)]
    assert fake.violations == []


async def test_response_url_refusals(fake: FakeSlack) -> None:
    url = fake.response_url(channel=CHANNEL, user="U0001")
    webhook = AsyncWebhookClient(url)
    assert (await webhook.send(response_type="ephemeral")).status_code == 400  # no text
    for _ in range(4):
        assert (await webhook.send(text="x")).status_code == 200
    spent = await webhook.send(text="sixth")
    assert (spent.status_code, json.loads(spent.body)) == (404, {"ok": False, "error": "used_url"})
    assert [v.split(" ")[1] for v in fake.violations] == ["no_text", "used_url"]


# What Slack sends to the app.


def test_signature_round_trips_through_slack_sdk_verifier() -> None:
    body = slash_command_body(text="v1.2")
    headers = sign(SIGNING_SECRET, body)
    verifier = SignatureVerifier(SIGNING_SECRET)
    assert verifier.is_valid(body, headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"])
    assert not verifier.is_valid(body + b"x", headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"])
    stale = sign(SIGNING_SECRET, body, timestamp=int(time.time()) - 301)  # Slack's window is five minutes
    assert not verifier.is_valid(body, stale["X-Slack-Request-Timestamp"], stale["X-Slack-Signature"])
    fixed = sign("secret", b"body", timestamp=1531420618)
    digest = hmac.new(b"secret", b"v0:1531420618:body", hashlib.sha256).hexdigest()
    assert fixed == {"X-Slack-Request-Timestamp": "1531420618", "X-Slack-Signature": f"v0={digest}"}


def test_slash_command_body_has_slacks_fields_in_order() -> None:
    body = slash_command_body("/ship", "v1.2 to prod", user_id="U0001", response_url="https://x.test/r/1")
    fields = parse_qsl(body.decode(), keep_blank_values=True)
    assert [k for k, _ in fields] == [
        "token",
        "team_id",
        "team_domain",
        "channel_id",
        "channel_name",
        "user_id",
        "user_name",
        "command",
        "text",
        "api_app_id",
        "is_enterprise_install",
        "response_url",
        "trigger_id",
    ]
    assert dict(fields)["text"] == "v1.2 to prod"
    grid = slash_command_payload(enterprise_id="E0001")
    assert list(grid)[3:5] == ["enterprise_id", "enterprise_name"]
    assert grid["is_enterprise_install"] == "true"


def test_block_actions_body_is_a_payload_form_field() -> None:
    body = block_actions_body("approve", "r-42", "U0001", "T0001", CHANNEL, "1700000000.000100", "https://x.test/r")
    (payload_json,) = parse_qs(body.decode())["payload"]
    payload = json.loads(payload_json)
    assert payload["type"] == "block_actions"
    assert payload["user"] == {"id": "U0001", "username": "alice", "name": "alice", "team_id": "T0001"}
    assert payload["container"] == {
        "type": "message",
        "message_ts": "1700000000.000100",
        "channel_id": CHANNEL,
        "is_ephemeral": False,
    }
    (action,) = payload["actions"]
    assert (action["action_id"], action["value"], action["type"]) == ("approve", "r-42", "button")
    assert payload["message"]["blocks"][0]["elements"][0]["action_id"] == "approve"
    assert {"team", "channel", "response_url", "trigger_id", "api_app_id", "token"} <= payload.keys()


def test_event_callback_body_is_a_valid_envelope() -> None:
    event = {"type": "app_mention", "user": "U0001", "text": "<@U0BOT> ship", "ts": "1700000000.000100"}
    envelope = json.loads(event_callback_body(event, event_id="Ev0001", team_id="T0001"))
    assert (envelope["type"], envelope["event_id"], envelope["event"]["event_ts"]) == (
        "event_callback",
        "Ev0001",
        "1700000000.000100",
    )
    assert envelope["authorizations"][0]["user_id"] == "U0BOT"
    with pytest.raises(ValueError, match="'type' is a required property"):
        event_callback({"text": "no type"})


# Socket Mode.


async def test_socket_mode_with_bolt(fake: FakeSlack) -> None:
    app = AsyncApp(client=web_client(fake), signing_secret=SIGNING_SECRET)

    @app.command("/ship")
    async def ship(ack: Any, body: dict[str, Any], say: Any) -> None:
        await ack(f"Queued {body['text']}")
        await say(f"<@{body['user_id']}> shipping {body['text']}")

    @app.action("approve")
    async def approve(ack: Any) -> None:
        await ack()

    @app.event("app_mention")
    async def mention(ack: Any) -> None:
        await ack()

    handler = AsyncSocketModeHandler(app, APP_TOKEN)
    await handler.connect_async()
    try:
        command = slash_command_payload("/ship", "v1.2", response_url=fake.response_url(channel=CHANNEL, user="U0001"))
        envelope_id = await fake.socket_send("slash_commands", command)
        assert await fake.socket_ack(envelope_id) == {"envelope_id": envelope_id, "payload": {"text": "Queued v1.2"}}
        await fake.wait_for(lambda: fake.messages(CHANNEL), what="the say()")
        assert [m.text for m in fake.messages(CHANNEL)] == ["<@U0001> shipping v1.2"]
        assert [(e.user, e.text, e.source) for e in fake.ephemerals] == [("U0001", "Queued v1.2", "socket_ack")]

        action = block_actions_payload("approve", "r-42", message_ts=fake.messages(CHANNEL)[0].ts)
        action_id = await fake.socket_send("interactive", action)
        assert await fake.socket_ack(action_id) == {"envelope_id": action_id}
        mention_event = event_callback({"type": "app_mention", "user": "U0001", "text": "hi", "channel": CHANNEL})
        events_id = await fake.socket_send("events_api", mention_event)
        assert (await fake.socket_ack(events_id))["envelope_id"] == events_id
    finally:
        await handler.close_async()
    assert fake.socket_connections == 1
    assert [m for m, _ in fake.calls] == ["apps.connections.open", "auth.test", "chat.postMessage"]
    assert fake.violations == []


async def test_socket_mode_disconnect_makes_the_client_reconnect(fake: FakeSlack) -> None:
    app = AsyncApp(client=web_client(fake), signing_secret=SIGNING_SECRET)

    @app.command("/ship")
    async def ship(ack: Any) -> None:
        await ack()

    handler = AsyncSocketModeHandler(app, APP_TOKEN)
    await handler.connect_async()
    try:
        await fake.socket_disconnect("refresh_requested")
        await fake.wait_for(lambda: fake.socket_connections == 2 and fake.socket_open == 1, what="a reconnect")
        envelope_id = await fake.socket_send("slash_commands", slash_command_payload())
        assert await fake.socket_ack(envelope_id) == {"envelope_id": envelope_id}
    finally:
        await handler.close_async()
    assert [m for m, _ in fake.calls].count("apps.connections.open") == 2
    assert fake.violations == []


async def test_socket_mode_protocol_refusals(fake: FakeSlack) -> None:
    url = (await web_client(fake, APP_TOKEN).apps_connections_open(app_token=APP_TOKEN))["url"]
    assert url.startswith(fake.url.replace("http://", "ws://") + "/socket-mode?ticket=")
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, autoping=False) as ws:  # as slack_sdk connects
            hello = await ws.receive_json()
            assert (hello["type"], hello["num_connections"], hello["connection_info"]) == (
                "hello",
                1,
                {"app_id": "A0001"},
            )
            envelope_id = await fake.socket_send("slash_commands", slash_command_payload())
            envelope = await ws.receive_json()
            assert envelope == {
                "envelope_id": envelope_id,
                "payload": fake.envelopes[envelope_id].payload,
                "type": "slash_commands",
                "accepts_response_payload": True,
            }
            await ws.ping(b"sdk-ping-pong:1700000000.5")  # slack_sdk's liveness check
            pong = await ws.receive()
            assert (pong.type, pong.data) == (aiohttp.WSMsgType.PONG, b"sdk-ping-pong:1700000000.5")
            await ws.send_json({"envelope_id": "nope"})
            await ws.send_json({"envelope_id": envelope_id})
            await ws.send_json({"envelope_id": envelope_id})
            late_id = await fake.socket_send("events_api", event_callback({"type": "app_mention", "text": "hi"}))
            assert (await ws.receive_json())["retry_attempt"] == 0
            fake.envelopes[late_id].sent_at -= 3.5  # as if the app took 3.5 s
            await ws.send_json({"envelope_id": late_id})
            await fake.wait_for(lambda: len(fake.violations) == 3)
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await session.ws_connect(url)  # a ticket is good for one connection
    assert fake.violations[0].startswith("socket mode: ack for an unknown envelope")
    assert fake.violations[1] == f"socket mode: envelope {envelope_id} acked twice"
    assert fake.violations[2].startswith(f"socket mode: envelope {late_id} acked after 3.5s")
    assert fake.violations[3].startswith("socket mode: connection refused (ticket already used)")
