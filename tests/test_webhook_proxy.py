"""WEBHOOK_PROXY_URL: a smee-style channel's deliveries reach the real intake intact, then are verified and deduped."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer, unused_port
from hypothesis import given
from hypothesis import strategies as st

from bot.app import STORE, make_app
from bot.config import Settings
from bot.webhook_proxy import (
    INTAKE_PATH,
    ChannelError,
    MalformedMessage,
    SseEvent,
    SseParser,
    WebhookProxy,
    create_channel,
    local_intake_url,
    parse_message,
    redact_channel,
    upper_case_escapes,
)
from tests.fakes.smee import FakeSmee, stringify
from tests.helpers import SECRET, sign, webhook_body, webhook_headers

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]
APP_ID = 4242  # app_settings' GitHub App


def github_json(value: Any) -> str:
    """JSON the way GitHub serialises a webhook: compact, no trailing newline, non-ASCII as raw UTF-8,
    `/ < > &` as themselves, control characters as \\u00XX in upper-case hex (octokit/webhooks.js#71).
    Written out by hand so it is a model of GitHub, not a copy of the code under test."""
    if isinstance(value, str):
        short = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
        return '"' + "".join(short.get(c) or (f"\\u{ord(c):04X}" if ord(c) < 0x20 else c) for c in value) + '"'
    if isinstance(value, dict):
        return "{" + ",".join(f"{github_json(k)}:{github_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(github_json(v) for v in value) + "]"
    return json.dumps(value)


def as_github_sends(event: str, name: str) -> bytes:
    """A vendored example (pretty-printed for reading) as GitHub's bytes on the wire."""
    return github_json(json.loads(webhook_body(event, name))).encode()


LABELED = as_github_sends("pull_request", "labeled")


def smee_data(body: bytes, headers: dict[str, str], **extra: Any) -> str:
    """What smee.io puts in an event for a request GitHub posted: JSON.stringify({...headers, body, ...})."""
    lowered = {k.lower(): v for k, v in headers.items()}
    return stringify({**lowered, "body": json.loads(body), "query": {}, "timestamp": 1700000000000, **extra})


async def eventually(predicate: Callable[[], Any], timeout: float = 5.0) -> None:
    """Until predicate() (or the awaitable it returns) is truthy."""
    async with asyncio.timeout(timeout):
        while True:
            result = predicate()
            if isinstance(result, Awaitable):
                result = await result
            if result:
                return
            await asyncio.sleep(0.01)


async def post_as_github(channel: str, body: bytes, headers: dict[str, str]) -> int:
    async with aiohttp.ClientSession() as session, session.post(channel, data=body, headers=headers) as response:
        return response.status


def proxy_logs(caplog: pytest.LogCaptureFixture, prefix: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "bot.webhook_proxy" and r.getMessage().startswith(prefix)]


@pytest.fixture(autouse=True)
def _proxy_logs_at_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bot.webhook_proxy")


@pytest.fixture
async def smee() -> AsyncIterator[FakeSmee]:
    async with FakeSmee(ping_interval=0.2) as fake:
        yield fake


@pytest.fixture
async def bot(aiohttp_server: ServerFactory, app_settings: Settings) -> TestServer:
    """The real app on a real port of 127.0.0.1."""
    return await aiohttp_server(make_app(app_settings))


@pytest.fixture
async def channel(smee: FakeSmee) -> str:
    return await create_channel(smee.url)


@asynccontextmanager
async def listening(channel: str, bot: TestServer, **options: Any) -> AsyncIterator[WebhookProxy]:
    options = {"secret": SECRET, "reconnect_delay": 0.01, "post_retry_delay": 0.01, **options}
    async with WebhookProxy(channel, str(bot.make_url(INTAKE_PATH)), **options) as proxy:
        await asyncio.wait_for(proxy.connected.wait(), 5)
        yield proxy


# -- through the real intake ----------------------------------------------------------------------------


async def test_a_signed_webhook_through_the_channel_is_stored_as_if_github_posted_it(
    channel: str, bot: TestServer
) -> None:
    delivery = str(uuid.uuid4())
    headers = webhook_headers("pull_request", LABELED, delivery=delivery)
    store = bot.app[STORE]
    async with listening(channel, bot):
        assert await post_as_github(channel, LABELED, headers) == 200
        await eventually(lambda: store.get_delivery(f"{APP_ID}:{delivery}"))
    stored = await store.get_delivery(f"{APP_ID}:{delivery}")
    assert stored is not None
    # GitHub's bytes, byte for byte: that is why the signature verified.
    assert (stored.event, stored.action, stored.body) == ("pull_request", "labeled", LABELED)
    # The same delivery posted straight to the intake has the same key: a duplicate, not a second delivery.
    async with (
        aiohttp.ClientSession() as session,
        session.post(bot.make_url(INTAKE_PATH), data=LABELED, headers=headers) as direct,
    ):
        assert (direct.status, await direct.json()) == (200, {"status": "duplicate", "delivery": delivery})
    assert sum((await store.count_deliveries()).values()) == 1


async def test_control_characters_and_emoji_survive_the_channel_into_the_intake(channel: str, bot: TestServer) -> None:
    """The case smee-client gets wrong: GitHub escapes control characters in upper-case hex."""
    payload = json.loads(webhook_body("issue_comment", "created"))
    payload["comment"]["body"] = "<!-- bot --> \u001b[32m\u2714 passed\u001b[0m on caf\u00e9 \U0001f680"
    body = github_json(payload).encode()
    assert b"\\u001B[32m" in body
    delivery = str(uuid.uuid4())
    async with listening(channel, bot):
        await post_as_github(channel, body, webhook_headers("issue_comment", body, delivery=delivery))
        await eventually(lambda: bot.app[STORE].get_delivery(f"{APP_ID}:{delivery}"))
    stored = await bot.app[STORE].get_delivery(f"{APP_ID}:{delivery}")
    assert stored is not None and stored.body == body


async def test_the_same_delivery_posted_twice_is_stored_once(
    channel: str, bot: TestServer, caplog: pytest.LogCaptureFixture
) -> None:
    delivery = str(uuid.uuid4())
    headers = webhook_headers("pull_request", LABELED, delivery=delivery)
    async with listening(channel, bot):
        for _ in range(2):
            assert await post_as_github(channel, LABELED, headers) == 200
        await eventually(lambda: len(proxy_logs(caplog, "webhook proxy: delivered")) == 2)
    assert [r.__dict__["status"] for r in proxy_logs(caplog, "webhook proxy: delivered")] == [202, 200]
    assert sum((await bot.app[STORE].count_deliveries()).values()) == 1


async def test_a_bad_signature_is_refused_by_the_intake_and_logged_without_the_signature(
    channel: str, bot: TestServer, caplog: pytest.LogCaptureFixture
) -> None:
    delivery = str(uuid.uuid4())
    forged = webhook_headers("pull_request", LABELED, delivery=delivery, secret="not the secret")
    async with listening(channel, bot):
        assert await post_as_github(channel, LABELED, forged) == 200
        await eventually(lambda: proxy_logs(caplog, "webhook proxy: the intake refused"))
    [refused] = proxy_logs(caplog, "webhook proxy: the intake refused")
    assert refused.levelno == logging.WARNING
    assert (refused.__dict__["status"], refused.__dict__["delivery"]) == (401, delivery)
    assert "signature does not match" in refused.getMessage()
    assert proxy_logs(caplog, "webhook proxy: no reconstruction of the body matches")
    assert any(r.name == "bot.app" and "signature mismatch" in r.getMessage() for r in caplog.records)
    assert await bot.app[STORE].get_delivery(f"{APP_ID}:{delivery}") is None
    signature = forged["X-Hub-Signature-256"]
    for record in caplog.records:
        assert signature not in record.getMessage()
        assert signature.removeprefix("sha256=") not in repr(record.__dict__)


async def test_the_proxy_reconnects_after_the_channel_drops_and_delivers_what_comes_next(
    smee: FakeSmee, channel: str, bot: TestServer
) -> None:
    store = bot.app[STORE]
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    async with listening(channel, bot) as proxy:
        await post_as_github(channel, LABELED, webhook_headers("pull_request", LABELED, delivery=first))
        await eventually(lambda: store.get_delivery(f"{APP_ID}:{first}"))
        seen = proxy.last_event_id
        smee.drop()
        await smee.wait_for_connections(channel, 2)
        await post_as_github(channel, LABELED, webhook_headers("pull_request", LABELED, delivery=second))
        await eventually(lambda: store.get_delivery(f"{APP_ID}:{second}"))
    # The reconnection told the channel where it had got to.
    assert seen is not None
    assert smee.channel(channel).last_event_ids == [None, seen]


async def test_what_was_posted_while_disconnected_is_resumed_from_the_last_event_id(
    bot: TestServer,
) -> None:
    """smee.io itself keeps nothing, so this needs a channel that does (FakeSmee(resume=True))."""
    store = bot.app[STORE]
    missed = str(uuid.uuid4())
    async with FakeSmee(ping_interval=0.2, resume=True) as smee:
        channel = await create_channel(smee.url)
        async with listening(channel, bot):
            smee.refuse()
            smee.drop()
            await post_as_github(channel, LABELED, webhook_headers("pull_request", LABELED, delivery=missed))
            await asyncio.sleep(0.05)  # a few refused reconnections
            smee.accept()
            await eventually(lambda: store.get_delivery(f"{APP_ID}:{missed}"))


async def test_the_channels_retry_sets_the_reconnection_delay(bot: TestServer) -> None:
    async with FakeSmee(ping_interval=0.2, retry_ms=20) as smee:
        channel = await create_channel(smee.url)
        async with listening(channel, bot, reconnect_delay=60.0):
            smee.drop()
            await smee.wait_for_connections(channel, 2, timeout=2)  # not the 30-60 s of reconnect_delay


async def test_a_stream_silent_past_the_idle_timeout_is_reconnected(bot: TestServer) -> None:
    """A laptop that slept, a NAT that forgot the connection: no error, just silence where pings should be."""
    async with FakeSmee(ping_interval=None) as smee:
        channel = await create_channel(smee.url)
        async with listening(channel, bot, idle_timeout=0.2):
            await smee.wait_for_connections(channel, 2, timeout=2)


async def test_pings_keep_a_quiet_stream_alive(bot: TestServer) -> None:
    async with FakeSmee(ping_interval=0.05) as pinging:
        quiet = await create_channel(pinging.url)
        async with listening(quiet, bot, idle_timeout=0.3) as proxy:
            await asyncio.sleep(0.6)
            assert proxy.connected.is_set()
            assert pinging.channel(quiet).connections == 1


async def test_a_url_that_is_not_an_event_stream_is_reported(bot: TestServer, caplog: pytest.LogCaptureFixture) -> None:
    async with WebhookProxy(str(bot.make_url("/")), str(bot.make_url(INTAKE_PATH)), reconnect_delay=0.01):
        await eventually(lambda: proxy_logs(caplog, "webhook proxy: channel"))
    assert "not text/event-stream: is WEBHOOK_PROXY_URL a channel URL?" in caplog.text


async def test_close_is_prompt_while_the_channel_is_down(smee: FakeSmee, channel: str, bot: TestServer) -> None:
    smee.refuse()
    proxy = WebhookProxy(channel, str(bot.make_url(INTAKE_PATH)), reconnect_delay=0.01)
    await proxy.start()
    await asyncio.sleep(0.05)  # a few refused connections
    async with asyncio.timeout(1):
        await proxy.close()
    assert not proxy.connected.is_set()


async def test_close_is_prompt_while_listening(smee: FakeSmee, channel: str, bot: TestServer) -> None:
    async with asyncio.timeout(1), listening(channel, bot) as proxy:
        pass
    assert not proxy.connected.is_set()
    await eventually(lambda: not smee.channel(channel).listeners)


async def test_an_unreachable_intake_is_retried_then_logged(caplog: pytest.LogCaptureFixture) -> None:
    nowhere = f"http://127.0.0.1:{unused_port()}{INTAKE_PATH}"
    data = smee_data(LABELED, webhook_headers("pull_request", LABELED))
    async with aiohttp.ClientSession() as session:
        proxy = WebhookProxy("http://127.0.0.1:1/channel", nowhere, post_attempts=3, post_retry_delay=0.01)
        assert await proxy.replay(data, session) is None
    [failed] = proxy_logs(caplog, "webhook proxy: could not deliver to the intake after 3 attempts")
    assert failed.levelno == logging.ERROR


async def test_a_message_that_is_no_delivery_is_skipped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    async with aiohttp.ClientSession() as session:
        proxy = WebhookProxy("http://127.0.0.1:1/channel", f"http://127.0.0.1:{unused_port()}{INTAKE_PATH}")
        assert await proxy.replay('{"hello": "world"}', session) is None
    [skipped] = proxy_logs(caplog, "webhook proxy: skipped a message that is not a webhook delivery")
    assert "no JSON object under `body`" in skipped.getMessage()


async def test_an_intake_that_fails_then_recovers_gets_the_delivery(
    aiohttp_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    answers = [503, 503, 202]

    async def intake(request: web.Request) -> web.Response:
        return web.json_response({"error": "store down"}, status=answers.pop(0))

    app = web.Application()
    app.router.add_post(INTAKE_PATH, intake)
    server = await aiohttp_server(app)
    data = smee_data(LABELED, webhook_headers("pull_request", LABELED))
    async with aiohttp.ClientSession() as session:
        proxy = WebhookProxy("http://127.0.0.1:1/channel", str(server.make_url(INTAKE_PATH)), post_retry_delay=0.01)
        assert await proxy.replay(data, session) == 202
    assert answers == []


# -- create_channel ---------------------------------------------------------------------------------------


async def test_create_channel_returns_the_channel_the_service_redirects_to(smee: FakeSmee) -> None:
    channel = await create_channel(smee.url)
    name = channel.removeprefix(smee.url + "/")
    assert name != channel and name in smee.channels
    assert await create_channel(smee.url + "/") != channel  # a new one each time


async def test_create_channel_says_why_it_failed(smee: FakeSmee) -> None:
    with pytest.raises(ChannelError, match="answered 404 without a channel"):
        await create_channel(smee.url + "/no/such/service")
    with pytest.raises(ChannelError, match="could not reach"):
        await create_channel(f"http://127.0.0.1:{unused_port()}")


async def test_create_channel_refuses_a_redirect_that_is_no_channel(aiohttp_server: ServerFactory) -> None:
    async def new(request: web.Request) -> web.Response:
        raise web.HTTPFound("ftp://example.com/abc")

    app = web.Application()
    app.router.add_get("/new", new)
    server = await aiohttp_server(app)
    with pytest.raises(ChannelError, match="not a channel URL"):
        await create_channel(str(server.make_url("")))


# -- the signature survives the channel (sans I/O) ------------------------------------------------------


def test_the_replayed_body_is_githubs_bytes_for_every_kind_of_text() -> None:
    payload = {
        "action": "edited",
        "comment": {
            "body": '<!-- template --> caf\u00e9 \U0001f680 a/b & "q" \\ \\u0041 tab\there\n\u001b[31mred\u001b[0m',
            "line": 12,
            "ratio": 0.5,
            "none": None,
            "flags": [True, False],
        },
    }
    github = github_json(payload).encode()
    assert b"\\u001B" in github and "\U0001f680".encode() in github
    headers = webhook_headers("issue_comment", github)
    delivery = parse_message(smee_data(github, headers))
    # smee-client would post JSON.stringify(body): right but for the case of the escape digits.
    assert delivery.bodies[-1] == stringify(payload).encode() != github
    assert delivery.body == github
    assert delivery.body_for(SECRET) == (github, True)


@given(
    st.dictionaries(
        st.text(max_size=8),
        st.recursive(
            st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
            max_leaves=12,
        ),
        max_size=6,
    )
)
def test_any_payload_github_signs_verifies_after_the_channel(payload: dict[str, Any]) -> None:
    github = github_json(payload).encode()
    delivery = parse_message(smee_data(github, {"X-Hub-Signature-256": sign(github)}))
    assert delivery.body == github
    assert delivery.body_for(SECRET) == (github, True)


def test_a_channels_rawdata_is_preferred_when_it_matches() -> None:
    raw = b'{"zen":"Keep it logically awesome.",  "hook_id": 1}'  # spacing no re-serialisation would reproduce
    headers = webhook_headers("ping", raw)
    delivery = parse_message(smee_data(raw, headers, rawdata=raw.decode()))
    assert delivery.body == raw
    assert delivery.body_for(SECRET) == (raw, True)
    assert delivery.body_for("another secret") == (raw, False)
    assert delivery.body_for(None) == (raw, None)


def test_only_githubs_headers_are_forwarded() -> None:
    headers = {
        **webhook_headers("push", LABELED),
        "host": "smee.io",
        "content-length": "999",
        "connection": "close",
        "x-forwarded-for": "140.82.115.1",
        "content-type": "application/x-www-form-urlencoded",
        "X-GitHub-Hook-Installation-Target-ID": "4242",
    }
    delivery = parse_message(smee_data(LABELED, headers))
    assert set(delivery.headers) == {
        "content-type",
        "user-agent",
        "x-github-event",
        "x-github-delivery",
        "x-github-hook-id",
        "x-github-hook-installation-target-id",
        "x-hub-signature-256",
    }
    assert delivery.headers["content-type"] == "application/json"
    assert (delivery.event, delivery.delivery_id) == ("push", headers["X-GitHub-Delivery"])


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ("not json", "not a JSON object"),
        ("[1, 2]", "not a JSON object"),
        ('{"body": {}} trailing', "not a JSON object"),
        ('{"body": {}', "not a JSON object"),
        ('{"x-github-event": "push"}', "no JSON object under `body`"),
        ('{"body": "{}"}', "no JSON object under `body`"),
        ("{}", "no JSON object under `body`"),
    ],
)
def test_a_message_that_is_not_a_delivery_is_malformed(data: str, problem: str) -> None:
    with pytest.raises(MalformedMessage, match=problem):
        parse_message(data)


def test_spacing_around_the_members_does_not_leak_into_the_body() -> None:
    delivery = parse_message(' { "x-github-event" : "ping" ,\n "body" :  {"a":[1,{}]}  } ')
    assert delivery.body == b'{"a":[1,{}]}'


def test_the_body_is_the_channels_own_text_not_a_python_re_encoding() -> None:
    """JavaScript writes 1.5e-7 where Python writes 1.5e-07: the proxy sends what smee-client would."""
    delivery = parse_message('{"body":{"n":1.5e-7,"m":1e+21,"k":12345678901234567000}}')
    assert delivery.body == b'{"n":1.5e-7,"m":1e+21,"k":12345678901234567000}'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\\u001b", "\\u001B"),
        ("\\\\u001b", "\\\\u001b"),  # the text \u001b, not an escape
        ("\\\\\\u001b", "\\\\\\u001B"),  # a backslash, then an escape
        ("\\ud83d\\ude80", "\\uD83D\\uDE80"),
        ("no escapes", "no escapes"),
    ],
)
def test_upper_case_escapes(text: str, expected: str) -> None:
    assert upper_case_escapes(text) == expected


# -- the event stream (sans I/O) ---------------------------------------------------------------------------

STREAM = (
    b"\xef\xbb\xbf: a comment\n"
    b"retry: 2500\n"
    b"id: 1\nevent: ready\ndata: {}\n\n"
    b'id: 2\r\ndata: {"a":\r\ndata:1}\r\n\r\n'
    b"id: 3\rdata:no space\r\r"
    b"data\n\n"
    b"id: 4\n\n"
    b"event: ping\ndata: {}\n\n"
)
EXPECTED = [
    SseEvent("ready", "{}", "1"),
    SseEvent("message", '{"a":\n1}', "2"),
    SseEvent("message", "no space", "3"),
    SseEvent("message", "", "3"),
    SseEvent("ping", "{}", "4"),
]


def test_the_parser_reads_every_line_ending_comment_and_field() -> None:
    parser = SseParser()
    assert parser.feed(STREAM) == EXPECTED
    assert (parser.retry, parser.last_event_id) == (2.5, "4")


@given(st.lists(st.integers(0, len(STREAM)), max_size=12))
def test_the_parser_gives_the_same_events_however_the_stream_is_split(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(STREAM)]
    parser = SseParser()
    events = [e for a, b in itertools.pairwise(bounds) for e in parser.feed(STREAM[a:b])]
    assert events == EXPECTED


def test_the_parser_drops_an_oversized_event_and_carries_on() -> None:
    parser = SseParser(max_event_bytes=64)
    events = parser.feed(b"data: " + b"x" * 40 + b"\n")
    events += parser.feed(b"data: " + b"y" * 40)
    events += parser.feed(b"y" * 40 + b"\ndata: more of the same event\n\ndata: next\n\n")
    assert (events, parser.dropped) == ([SseEvent("message", "next", None)], 1)


def test_the_parser_keeps_the_last_event_id_it_was_given_and_ignores_ids_with_nul() -> None:
    parser = SseParser(last_event_id="41")
    assert parser.feed(b"id: a\0b\ndata: x\n\nretry: soon\n\n") == [SseEvent("message", "x", "41")]
    assert parser.retry is None


# -- small pieces ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("0.0.0.0", "http://127.0.0.1:3000/webhooks/github"),
        ("", "http://127.0.0.1:3000/webhooks/github"),
        ("::", "http://[::1]:3000/webhooks/github"),
        ("::1", "http://[::1]:3000/webhooks/github"),
        ("localhost", "http://localhost:3000/webhooks/github"),
    ],
)
def test_local_intake_url(host: str, url: str) -> None:
    assert local_intake_url(host, 3000) == url


def test_a_channel_url_is_logged_only_by_its_start() -> None:
    assert redact_channel("https://smee.io/WcY8yN6rZkSbpGDe") == "https://smee.io/WcY8…"
    assert redact_channel("https://smee.io") == "https://smee.io"
