"""A stateful fake Slack (Web API, response_url, Socket Mode) that refuses what Slack refuses, for integration tests.

One aiohttp server on 127.0.0.1 serving `POST|GET /api/<method>` as slack.com/api does: form, multipart or
JSON bodies (JSON only where the method takes it), the token as `Authorization: Bearer` or a form `token`,
HTTP 200 with `{"ok": false, "error": ...}` for refusals and HTTP 429 + `Retry-After` when rate limited.
Methods and their arguments come from the vendored description (`slack_spec`, with its errata table); answers
take the shapes of the description's examples. Channels, DMs, users, messages (ts, threads, edits, blocks,
metadata) and ephemerals are held in memory. `response_url()` hands out URLs that behave like Slack's
(ephemeral / in_channel / replace_original / delete_original, five uses), and Socket Mode is `slack_socket`.
Everything Slack would refuse or silently drop is answered as Slack would and recorded in `violations`, so a
test ends with `assert fake.violations == []`; what a test asked for with `fail(...)`/`rate_limit(...)` is not.
The builders of what Slack sends *to* an app (signatures, slash commands, block actions, events) are in
`slack_payloads`, re-exported here.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import itertools
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.server import LocalServer
from tests.fakes.slack_payloads import (
    APP_ID,
    BOT_ID,
    BOT_USER_ID,
    TEAM_DOMAIN,
    TEAM_ID,
    block_actions_body,
    block_actions_payload,
    event_callback,
    event_callback_body,
    sign,
    slash_command_body,
    slash_command_payload,
)
from tests.fakes.slack_socket import SOCKET_PATH, Envelope, SocketMode
from tests.fakes.slack_spec import COMMON_ERRORS, ArgumentError, Method, WebApi, check_arguments, load_web_api

__all__ = [
    "Channel",
    "Envelope",
    "Ephemeral",
    "FakeSlack",
    "Message",
    "ResponsePost",
    "User",
    "block_actions_body",
    "block_actions_payload",
    "event_callback",
    "event_callback_body",
    "sign",
    "slash_command_body",
    "slash_command_payload",
]

JSON = dict[str, Any]
FIRST_TS = 1_700_000_000
MAX_TEXT = 40_000  # characters; Slack refuses longer message text (msg_too_long)
MAX_BLOCKS = 50
RESPONSE_URL_USES = 5  # a response_url takes five posts (within 30 minutes)
HISTORY_DEFAULT_LIMIT = 100
HISTORY_MAX_LIMIT = 999


@dataclass
class Message:
    """A message in a channel, as the fake holds it."""

    ts: str
    text: str
    user: str
    blocks: list[JSON] | None = None
    attachments: list[JSON] | None = None
    thread_ts: str | None = None
    metadata: JSON | None = None
    edits: int = 0
    edited_ts: str | None = None
    reply_broadcast: bool = False
    bot_id: str | None = None

    @property
    def is_reply(self) -> bool:
        return self.thread_ts is not None and self.thread_ts != self.ts


@dataclass
class Ephemeral:
    """A message only `user` saw: chat.postEphemeral, a response_url post or a slash command's ack."""

    channel: str
    user: str
    ts: str
    text: str
    blocks: list[JSON] | None = None
    thread_ts: str | None = None
    source: str = "chat.postEphemeral"


@dataclass
class Channel:
    id: str
    name: str
    members: set[str]
    is_private: bool = False
    is_im: bool = False
    is_mpim: bool = False
    is_archived: bool = False
    user: str | None = None  # the other party of a DM
    messages: list[Message] = field(default_factory=list)


@dataclass
class User:
    id: str
    name: str
    real_name: str
    tz: str = "Europe/London"
    email: str | None = None
    is_bot: bool = False
    deleted: bool = False


@dataclass
class ApiCall:
    """One Web API request: the method, its arguments (token removed), the HTTP status and the answer."""

    method: str
    params: JSON
    status: int = 0
    answer: JSON = field(default_factory=dict)


@dataclass
class ResponseUrl:
    id: int
    channel: str | None
    user: str | None
    message_ts: str | None
    uses: int = 0


@dataclass
class ResponsePost:
    """One post to a response_url: its JSON body and what the fake answered."""

    url: str
    body: JSON
    status: int
    channel: str | None
    user: str | None

    @property
    def text(self) -> str | None:
        return self.body.get("text")

    @property
    def response_type(self) -> str:
        return str(self.body.get("response_type", "ephemeral"))


class SlackError(Exception):
    def __init__(self, error: str, *messages: str) -> None:
        super().__init__(error)
        self.error = error
        self.messages = list(messages)


def _ts_key(ts: str) -> tuple[int, int]:
    seconds, _, micros = ts.partition(".")
    return int(seconds), int(micros.ljust(6, "0")[:6])


def _encode_cursor(ts: str) -> str:
    return base64.b64encode(f"next_ts:{ts.replace('.', '')}".encode()).decode()


def _decode_cursor(cursor: str) -> tuple[int, int]:
    try:
        text = base64.b64decode(cursor, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise SlackError("invalid_cursor", f"[ERROR] cursor is not one Slack handed out: {cursor!r}") from exc
    prefix, _, digits = text.partition(":")
    if prefix != "next_ts" or not digits.isdigit() or len(digits) <= 6:
        raise SlackError("invalid_cursor", f"[ERROR] cursor is not one Slack handed out: {cursor!r}")
    return int(digits[:-6]), int(digits[-6:])


class FakeSlack(LocalServer, SocketMode):
    """The fake Slack. `await start()`, arrange state, point the app at `url + "/api/"`, assert on state.

        fake = FakeSlack(bot_token="xoxb-1", app_token="xapp-1", team_id="T0001", bot_user_id="U0BOT")
        fake.add_user("U0001", "alice")
        fake.add_channel("C0001", "releases", members=["U0BOT", "U0001"])
        ...  # the app runs against AsyncWebClient(token="xoxb-1", base_url=fake.url + "/api/")
        assert [m.text for m in fake.messages("C0001")] == ["Shipping v1.2"]
        assert fake.violations == []

    Knobs: `rate_limit(method, retry_after, times)`, `fail(method, error, times, status)`. Introspection:
    `messages(channel)`, `thread(channel, ts)`, `ephemerals`, `responses`, `calls`, `api_calls`, `violations`,
    `await wait_for(predicate)`. Socket Mode: `socket_send`, `socket_ack`, `socket_disconnect` (`slack_socket`).
    """

    def __init__(
        self,
        *,
        bot_token: str = "xoxb-fake-bot-token",
        app_token: str = "xapp-fake-app-token",
        team_id: str = TEAM_ID,
        team_name: str = "Fake Workspace",
        team_domain: str = TEAM_DOMAIN,
        bot_user_id: str = BOT_USER_ID,
        bot_id: str = BOT_ID,
        bot_name: str = "release-secretary",
        app_id: str = APP_ID,
        web_api: WebApi | None = None,
    ) -> None:
        self.web_api = web_api or load_web_api()
        for name in self.web_api.methods:
            if not hasattr(self, "_m_" + name.replace(".", "_")):
                raise NotImplementedError(f"fake Slack has no handler for {name}")
        self.bot_token, self.app_token = bot_token, app_token
        self.team_id, self.team_name, self.team_domain = team_id, team_name, team_domain
        self.bot_user_id, self.bot_id, self.app_id = bot_user_id, bot_id, app_id
        self.violations: list[str] = []
        self.api_calls: list[ApiCall] = []
        self.ephemerals: list[Ephemeral] = []
        self.responses: list[ResponsePost] = []
        self.deleted: list[tuple[str, Message]] = []
        self.channels: dict[str, Channel] = {}
        self.users: dict[str, User] = {}
        self._rate_limits: dict[str, list[int]] = {}
        self._failures: dict[str, list[tuple[str, int]]] = {}
        self._response_urls: dict[int, ResponseUrl] = {}
        self._response_ids = itertools.count(1)
        self._block_ids = itertools.count(1)
        self._clock = FIRST_TS * 1_000_000
        self._change = asyncio.Event()
        self._init_socket_mode()
        self.add_user(bot_user_id, bot_name, is_bot=True)

    # Arranging state.

    def add_user(
        self,
        user_id: str,
        name: str,
        *,
        real_name: str | None = None,
        tz: str = "Europe/London",
        email: str | None = None,
        is_bot: bool = False,
        deleted: bool = False,
    ) -> User:
        user = User(user_id, name, real_name or name.title(), tz=tz, email=email, is_bot=is_bot, deleted=deleted)
        self.users[user_id] = user
        return user

    def add_channel(
        self,
        channel_id: str,
        name: str,
        *,
        members: Iterable[str] | None = None,
        is_private: bool = False,
        is_archived: bool = False,
    ) -> Channel:
        """A channel; `members` defaults to the bot alone (pass a list without it for `not_in_channel`)."""
        channel = Channel(
            channel_id,
            name,
            set(members) if members is not None else {self.bot_user_id},
            is_private=is_private,
            is_archived=is_archived,
        )
        self.channels[channel_id] = channel
        return channel

    def add_message(
        self, channel: str, text: str, *, user: str, thread_ts: str | None = None, metadata: JSON | None = None
    ) -> Message:
        """A message someone (not the bot's API calls) posted, with the next ts."""
        message = Message(self._next_ts(), text, user, thread_ts=thread_ts, metadata=metadata)
        self.channels[channel].messages.append(message)
        self._changed()
        return message

    # Knobs.

    def rate_limit(self, method: str, retry_after: int = 1, times: int = 1) -> None:
        """The next `times` calls of `method` get HTTP 429, `Retry-After: retry_after`, error `ratelimited`."""
        self._known(method)
        self._rate_limits.setdefault(method, []).extend([retry_after] * times)

    def fail(self, method: str, error: str = "fatal_error", times: int = 1, status: int = 200) -> None:
        """The next `times` calls of `method` (authenticated) are answered `{"ok": false, "error": error}`."""
        self._known(method)
        self._failures.setdefault(method, []).extend([(error, status)] * times)

    def _known(self, method: str) -> None:
        if self.web_api.get(method) is None:  # a typo would make the knob silently never fire
            raise ValueError(f"fake Slack knows no method {method!r}")

    def response_url(
        self, *, channel: str | None = None, user: str | None = None, message_ts: str | None = None
    ) -> str:
        """A response_url on the fake; with `channel`/`user` it can post (in_channel) or whisper (ephemeral),
        with `message_ts` (an interaction's message) `replace_original`/`delete_original` act on that message."""
        url_id = next(self._response_ids)
        self._response_urls[url_id] = ResponseUrl(url_id, channel, user, message_ts)
        return f"{self.url}/respond/{url_id}"

    # Introspection.

    @property
    def calls(self) -> list[tuple[str, JSON]]:
        return [(call.method, call.params) for call in self.api_calls]

    def calls_to(self, method: str) -> list[JSON]:
        return [call.params for call in self.api_calls if call.method == method]

    def messages(self, channel: str) -> list[Message]:
        """Every message in the channel, thread replies included, oldest first."""
        return list(self.channels[channel].messages)

    def thread(self, channel: str, ts: str) -> list[Message]:
        """The thread's parent and its replies, oldest first."""
        return [m for m in self.channels[channel].messages if m.ts == ts or m.thread_ts == ts]

    def message(self, channel: str, ts: str) -> Message:
        found = self._find(self.channels[channel], ts)
        if found is None:
            raise KeyError(f"no message {ts} in {channel}")
        return found

    def message_json(self, channel: str, ts: str, *, include_metadata: bool = True) -> JSON:
        """The message as Slack's API renders it (for a block_actions payload's `message`)."""
        return self._message_json(self.channels[channel], self.message(channel, ts), include_metadata)

    async def wait_for(self, predicate: Callable[[], object], timeout: float = 5.0, what: str = "") -> None:
        """Return once `predicate()` is true (checked on every change the fake sees, and every 20 ms)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"fake Slack: still waiting after {timeout}s for {what or predicate}")
            self._change.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._change.wait(), min(remaining, 0.02))

    def _changed(self) -> None:
        self._change.set()

    def _next_ts(self) -> str:
        self._clock += 100
        return f"{self._clock // 1_000_000}.{self._clock % 1_000_000:06d}"

    # Server.

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/api/{method}", self._api)  # Slack takes GET and POST, nothing else
        app.router.add_post("/api/{method}", self._api)
        app.router.add_post("/respond/{id}", self._respond)
        app.router.add_get(SOCKET_PATH, self._socket)

    async def close(self) -> None:
        await self._close_sockets()
        await super().close()

    async def _api(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["method"]
        method = self.web_api.get(name)
        call = ApiCall(name, {})
        self.api_calls.append(call)
        try:
            args, token, warnings = await self._read_arguments(request, method)
            call.params = dict(args)
            if method is None:
                raise SlackError("unknown_method", f"[ERROR] no method {name} in the Web API description")
            if self._rate_limits.get(name):
                retry_after = self._rate_limits[name].pop(0)
                return self._answer(call, {"ok": False, "error": "ratelimited"}, 429, {"Retry-After": str(retry_after)})
            self._authenticate(method, token)
            if self._failures.get(name):
                error, status = self._failures[name].pop(0)
                return self._answer(call, {"ok": False, "error": error}, status)
            typed = check_arguments(method, args)
            answer = getattr(self, "_m_" + name.replace(".", "_"))(typed)
        except ArgumentError as exc:
            answer = self._refusal(method, name, SlackError(exc.error, *exc.messages))
        except SlackError as exc:
            answer = self._refusal(method, name, exc)
        else:
            answer = {"ok": True, **answer}
            if warnings:
                answer["warning"] = ",".join(warnings)
                answer.setdefault("response_metadata", {})["warnings"] = warnings
        self._changed()
        return self._answer(call, answer, 200)

    def _refusal(self, method: Method | None, name: str, exc: SlackError) -> JSON:
        why = f" ({'; '.join(exc.messages)})" if exc.messages else ""
        self.violations.append(f"{name}: {exc.error}{why}")
        if method is not None and exc.error not in method.errors | COMMON_ERRORS:
            self.violations.append(f"fake Slack bug: {name} answered {exc.error}, which its docs do not list")
        answer: JSON = {"ok": False, "error": exc.error}
        if exc.messages:
            answer["response_metadata"] = {"messages": exc.messages}
        return answer

    def _answer(self, call: ApiCall, answer: JSON, status: int, headers: dict[str, str] | None = None) -> web.Response:
        call.status, call.answer = status, answer
        return web.json_response(answer, status=status, headers=headers)

    async def _read_arguments(self, request: web.Request, method: Method | None) -> tuple[JSON, str | None, list[str]]:
        """The call's arguments (query and body), its token and the warnings Slack would add."""
        args: JSON = dict(request.query)
        warnings: list[str] = []
        name = request.match_info["method"]
        if args.pop("token", None) is not None:
            self.violations.append(f"{name}: token in the query string (Slack refuses it from apps made since 2021)")
        token: str | None = None
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            token = auth.removeprefix("Bearer ").strip()
        if request.method != "POST" or not request.can_read_body:
            return args, token, warnings
        ctype = request.content_type
        if ctype == "application/json":
            if method is not None and not method.accepts_json:
                self.violations.append(f"{name}: JSON body ignored (this method takes form arguments only)")
                await request.read()
                return args, token, warnings
            if request.charset is None:
                warnings.append("missing_charset")
            try:
                body = json.loads(await request.read())
            except ValueError as exc:
                raise SlackError("invalid_json", f"[ERROR] {exc}") from exc
            if not isinstance(body, dict):
                raise SlackError("json_not_object")
            if body.pop("token", None) is not None:
                self.violations.append(f"{name}: token in a JSON body (Slack reads it only from Authorization)")
            args.update(body)
        elif ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.post()
            for key, value in form.items():
                args[key] = value if isinstance(value, str) else getattr(value, "filename", "")
            form_token = args.pop("token", None)
            token = token or form_token
        else:
            raise SlackError("invalid_post_type", f"[ERROR] unsupported Content-Type {ctype}")
        return args, token, warnings

    def _authenticate(self, method: Method, token: str | None) -> None:
        if not token:
            raise SlackError("not_authed")
        kind = {self.bot_token: "bot", self.app_token: "app"}.get(token)
        if kind is None:
            raise SlackError("invalid_auth")
        if kind != method.token:
            raise SlackError("not_allowed_token_type", f"[ERROR] {method.name} takes a {method.token} token")

    # State helpers.

    def _channel(self, channel_id: str, *, member: bool = True) -> Channel:
        channel = self.channels.get(channel_id)
        if channel is None and channel_id.startswith("#"):  # Slack still resolves "#name"
            channel = next((c for c in self.channels.values() if c.name == channel_id[1:]), None)
        if channel is None:
            raise SlackError("channel_not_found")
        if member and self.bot_user_id not in channel.members:
            raise SlackError("not_in_channel")
        return channel

    @staticmethod
    def _find(channel: Channel, ts: str) -> Message | None:
        return next((m for m in channel.messages if m.ts == ts), None)

    def _check_content(self, args: JSON) -> None:
        if len(args.get("text") or "") > MAX_TEXT:
            raise SlackError("msg_too_long")
        blocks = args.get("blocks")
        if blocks is not None and (
            not isinstance(blocks, list)
            or len(blocks) > MAX_BLOCKS
            or not all(isinstance(b, dict) and isinstance(b.get("type"), str) for b in blocks)
        ):
            raise SlackError("invalid_blocks", "[ERROR] blocks must be a list of at most 50 objects with a type")
        metadata = args.get("metadata")
        if metadata is not None and (
            not isinstance(metadata, dict)
            or not isinstance(metadata.get("event_type"), str)
            or not isinstance(metadata.get("event_payload"), dict)
        ):
            raise SlackError("invalid_metadata_format", "[ERROR] metadata needs event_type and event_payload")

    def _with_block_ids(self, blocks: list[JSON] | None) -> list[JSON] | None:
        """Slack gives every block without a block_id one of its own."""
        if blocks is None:
            return None
        return [b if "block_id" in b else {**b, "block_id": f"fk{next(self._block_ids):03d}"} for b in blocks]

    def _post(self, channel: Channel, args: JSON) -> Message:
        thread_ts = args.get("thread_ts")
        if thread_ts:
            parent = self._find(channel, thread_ts)
            if parent is None:  # Slack answers ok, and the reply hangs off a thread nobody can open
                self.violations.append(f"chat.postMessage: thread_ts {thread_ts} is no message in {channel.id}")
            else:
                thread_ts = parent.thread_ts or parent.ts  # a reply to a reply joins the same thread
        message = Message(
            ts=self._next_ts(),
            text=args.get("text") or args.get("markdown_text") or "",
            user=self.bot_user_id,
            blocks=self._with_block_ids(args.get("blocks")),
            attachments=args.get("attachments"),
            thread_ts=thread_ts or None,
            metadata=args.get("metadata"),
            reply_broadcast=bool(args.get("reply_broadcast")) and bool(thread_ts),
            bot_id=self.bot_id,
        )
        channel.messages.append(message)
        return message

    def _message_json(self, channel: Channel, m: Message, include_metadata: bool) -> JSON:
        out: JSON = {"type": "message", "user": m.user, "text": m.text, "ts": m.ts, "team": self.team_id}
        if m.bot_id is not None:
            out |= {"bot_id": m.bot_id, "app_id": self.app_id}
        if m.blocks is not None:
            out["blocks"] = m.blocks
        if m.attachments:
            out["attachments"] = m.attachments
        if m.thread_ts is not None:
            out["thread_ts"] = m.thread_ts
        if m.is_reply:
            parent = self._find(channel, m.thread_ts or "")
            out["parent_user_id"] = parent.user if parent is not None else m.user
        replies = [r for r in channel.messages if r.thread_ts == m.ts and r.is_reply]
        if replies:
            users = list(dict.fromkeys(r.user for r in replies))
            out |= {
                "thread_ts": m.ts,
                "reply_count": len(replies),
                "reply_users_count": len(users),
                "latest_reply": replies[-1].ts,
                "reply_users": users,
                "is_locked": False,
                "subscribed": False,
            }
        if m.edits:
            out["edited"] = {"user": m.user, "ts": m.edited_ts}
        if include_metadata and m.metadata is not None:
            out["metadata"] = m.metadata
        return out

    def _page(self, messages: list[Message], args: JSON, newest_first: bool) -> tuple[list[Message], str | None]:
        """One page of `messages` (already filtered and ordered) from the cursor on; the next cursor if any."""
        limit = min(max(args.get("limit") or HISTORY_DEFAULT_LIMIT, 1), HISTORY_MAX_LIMIT)
        if args.get("cursor"):
            at = _decode_cursor(args["cursor"])
            messages = [m for m in messages if (_ts_key(m.ts) <= at if newest_first else _ts_key(m.ts) >= at)]
        page, rest = messages[:limit], messages[limit:]
        return page, (_encode_cursor(rest[0].ts) if rest else None)

    # Web API methods: each takes the checked arguments and answers the fields after "ok": true.

    def _m_auth_test(self, args: JSON) -> JSON:
        return {
            "url": f"https://{self.team_domain}.slack.com/",
            "team": self.team_name,
            "user": self.users[self.bot_user_id].name,
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _m_apps_connections_open(self, args: JSON) -> JSON:
        return {"url": self._issue_socket_url()}

    def _m_chat_postMessage(self, args: JSON) -> JSON:
        target = args["channel"]
        if target[:1] in ("U", "W") and target in self.users:  # a user id posts to the app's DM with them
            target = self._open_dm(target).id
        channel = self._channel(target)
        if channel.is_archived:
            raise SlackError("is_archived")
        self._check_content(args)
        message = self._post(channel, args)
        return {"channel": channel.id, "ts": message.ts, "message": self._message_json(channel, message, True)}

    def _m_chat_update(self, args: JSON) -> JSON:
        channel = self._channel(args["channel"])
        message = self._find(channel, args["ts"])
        if message is None:
            raise SlackError("message_not_found")
        if message.user != self.bot_user_id:
            raise SlackError("cant_update_message")
        self._check_content(args)
        # Fields left out keep their value; an empty list removes blocks or attachments (chat.update docs).
        if "text" in args or "markdown_text" in args:
            message.text = args.get("text") or args.get("markdown_text") or ""
        if "blocks" in args:
            message.blocks = self._with_block_ids(args["blocks"]) or None
        if "attachments" in args:
            message.attachments = args["attachments"] or None
        if "metadata" in args:
            message.metadata = args["metadata"]
        message.edits += 1
        message.edited_ts = self._next_ts()
        rendered = self._message_json(channel, message, True)
        return {"channel": channel.id, "ts": message.ts, "text": message.text, "message": rendered}

    def _m_chat_postEphemeral(self, args: JSON) -> JSON:
        channel = self._channel(args["channel"])
        if args["user"] not in channel.members:
            raise SlackError("user_not_in_channel")
        self._check_content(args)
        ephemeral = Ephemeral(
            channel.id,
            args["user"],
            self._next_ts(),
            args.get("text") or args.get("markdown_text") or "",
            self._with_block_ids(args.get("blocks")),
            args.get("thread_ts"),
        )
        self.ephemerals.append(ephemeral)
        return {"message_ts": ephemeral.ts}

    def _m_chat_delete(self, args: JSON) -> JSON:
        channel = self._channel(args["channel"])
        message = self._find(channel, args["ts"])
        if message is None:
            raise SlackError("message_not_found")
        if message.user != self.bot_user_id:
            raise SlackError("cant_delete_message")
        channel.messages.remove(message)
        self.deleted.append((channel.id, message))
        return {"channel": channel.id, "ts": message.ts}

    def _m_conversations_history(self, args: JSON) -> JSON:
        channel = self._channel(args["channel"])
        oldest = _ts_key(args.get("oldest") or "0")
        latest = _ts_key(args["latest"]) if args.get("latest") else None
        inclusive = bool(args.get("inclusive"))

        def in_range(m: Message) -> bool:
            key = _ts_key(m.ts)
            above = key >= oldest if inclusive else key > oldest
            below = latest is None or (key <= latest if inclusive else key < latest)
            return above and below

        top = [m for m in channel.messages if (not m.is_reply or m.reply_broadcast) and in_range(m)]
        top.sort(key=lambda m: _ts_key(m.ts), reverse=True)
        page, next_cursor = self._page(top, args, newest_first=True)
        metadata = bool(args.get("include_all_metadata"))
        answer: JSON = {
            "messages": [self._message_json(channel, m, metadata) for m in page],
            "has_more": next_cursor is not None,
            "pin_count": 0,
            "channel_actions_ts": None,
            "channel_actions_count": 0,
        }
        if next_cursor is not None:
            answer["response_metadata"] = {"next_cursor": next_cursor}
        return answer

    def _m_conversations_replies(self, args: JSON) -> JSON:
        channel = self._channel(args["channel"])
        message = self._find(channel, args["ts"])
        if message is None:
            raise SlackError("thread_not_found")
        root = message.thread_ts or message.ts
        thread = sorted(
            (m for m in channel.messages if m.ts == root or m.thread_ts == root), key=lambda m: _ts_key(m.ts)
        )
        page, next_cursor = self._page(thread, args, newest_first=False)
        metadata = bool(args.get("include_all_metadata"))
        answer: JSON = {"messages": [self._message_json(channel, m, metadata) for m in page]}
        answer["has_more"] = next_cursor is not None
        if next_cursor is not None:
            answer["response_metadata"] = {"next_cursor": next_cursor}
        return answer

    def _open_dm(self, user_id: str) -> Channel:
        dm_id = "D" + user_id[1:]  # stable per user, as Slack's is
        if dm_id not in self.channels:
            self.channels[dm_id] = Channel(dm_id, dm_id, {self.bot_user_id, user_id}, is_im=True, user=user_id)
        return self.channels[dm_id]

    def _m_conversations_open(self, args: JSON) -> JSON:
        if args.get("channel"):
            channel = self.channels.get(args["channel"])
            if channel is None or not (channel.is_im or channel.is_mpim):
                raise SlackError("channel_not_found")
            return {"channel": {"id": channel.id}, "no_op": True, "already_open": True}
        users = [u.strip() for u in args["users"].split(",") if u.strip()]
        for user_id in users:
            if user_id not in self.users:
                raise SlackError("user_not_found", f"[ERROR] no user {user_id}")
        if len(users) > 8:
            raise SlackError("too_many_users")
        if len(users) == 1:
            existed = "D" + users[0][1:] in self.channels
            channel = self._open_dm(users[0])
        else:
            mpim_id = "G" + "".join(sorted(u[1:] for u in users))[:12]
            existed = mpim_id in self.channels
            members = {self.bot_user_id, *users}
            channel = self.channels.setdefault(mpim_id, Channel(mpim_id, f"mpdm-{mpim_id}", members, is_mpim=True))
        body: JSON = {"id": channel.id}
        if args.get("return_im"):
            body |= {"created": FIRST_TS, "is_im": channel.is_im, "is_org_shared": False, "is_open": True}
            if channel.user:
                body |= {"user": channel.user, "is_user_deleted": False, "priority": 0}
        answer: JSON = {"channel": body}
        if existed:
            answer |= {"no_op": True, "already_open": True}
        return answer

    def _m_users_info(self, args: JSON) -> JSON:
        user = self.users.get(args["user"])
        if user is None:
            raise SlackError("user_not_found")
        profile: JSON = {
            "real_name": user.real_name,
            "real_name_normalized": user.real_name,
            "display_name": user.name,
            "display_name_normalized": user.name,
            "team": self.team_id,
            "avatar_hash": "g000000000000",
            "image_48": f"https://secure.gravatar.com/avatar/{user.id}.jpg?s=48",
        }
        if user.email is not None:
            profile["email"] = user.email
        if user.is_bot:
            profile |= {"bot_id": self.bot_id, "api_app_id": self.app_id, "always_active": False}
        return {
            "user": {
                "id": user.id,
                "team_id": self.team_id,
                "name": user.name,
                "deleted": user.deleted,
                "color": "9f69e7",
                "real_name": user.real_name,
                "tz": user.tz,
                "tz_label": user.tz,
                "tz_offset": 0,
                "profile": profile,
                "is_admin": False,
                "is_owner": False,
                "is_primary_owner": False,
                "is_restricted": False,
                "is_ultra_restricted": False,
                "is_bot": user.is_bot,
                "is_app_user": False,
                "updated": FIRST_TS,
            }
        }

    # response_url and the answer in a slash command's ack: the same rules (Slack's "Handling user interaction").

    async def _respond(self, request: web.Request) -> web.Response:
        url = str(request.url)
        target = self._response_urls.get(int(request.match_info["id"]) if request.match_info["id"].isdigit() else 0)
        body: JSON = {}
        status, error = 200, None
        if target is None:
            status, error = 404, "invalid_url"
        elif target.uses >= RESPONSE_URL_USES:
            status, error = 404, "used_url"
        elif request.content_type != "application/json":
            status, error = 400, "invalid_payload"
        else:
            try:
                parsed = json.loads(await request.read())
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict):
                status, error = 400, "invalid_payload"
            else:
                body = parsed
                target.uses += 1
                error = self._deliver(target.channel, target.user, target.message_ts, body, "response_url")
                status = 400 if error else 200
        channel, user = (target.channel, target.user) if target is not None else (None, None)
        self.responses.append(ResponsePost(url, body, status, channel, user))
        if error:
            self.violations.append(f"response_url: {error} ({url})")
        self._changed()
        return web.json_response({"ok": False, "error": error} if error else {"ok": True}, status=status)

    def _slash_command_answer(self, command: JSON, answer: JSON, source: str) -> None:
        error = self._deliver(command.get("channel_id"), command.get("user_id"), None, answer, source)
        if error:
            self.violations.append(f"{source}: {error} (answer to {command.get('command')})")

    def _deliver(
        self, channel_id: str | None, user: str | None, message_ts: str | None, body: JSON, source: str
    ) -> str | None:
        """Act on a response body; the error Slack would answer, if any."""
        channel = self.channels.get(channel_id or "")
        original = self._find(channel, message_ts) if channel is not None and message_ts else None
        if body.get("delete_original"):
            if channel is None or original is None:
                return "message_not_found"
            channel.messages.remove(original)
            self.deleted.append((channel.id, original))
            return None
        if not (body.get("text") or body.get("blocks") or body.get("attachments")):
            return "no_text"
        response_type = body.get("response_type", "ephemeral")
        if response_type not in ("ephemeral", "in_channel"):  # Slack shows it as ephemeral: surely a typo
            self.violations.append(f"{source}: response_type {response_type!r} is neither ephemeral nor in_channel")
        text, blocks = str(body.get("text") or ""), self._with_block_ids(body.get("blocks"))
        if body.get("replace_original") and original is not None:
            original.text, original.blocks = text, blocks
            original.edits += 1
            original.edited_ts = self._next_ts()
            return None
        if response_type == "in_channel":
            if channel is None:
                return "channel_not_found"
            posted = Message(
                self._next_ts(),
                text,
                self.bot_user_id,
                blocks,
                attachments=body.get("attachments"),
                thread_ts=body.get("thread_ts"),
                metadata=body.get("metadata"),
                bot_id=self.bot_id,
            )
            channel.messages.append(posted)
            return None
        self.ephemerals.append(Ephemeral(channel_id or "", user or "", self._next_ts(), text, blocks, source=source))
        return None
