"""Slack: slack-bolt's AsyncApp on our aiohttp app (`/slack/events`) or over Socket Mode, and the sender.

Intake is verify, store, acknowledge: bolt checks the v0 signature and the timestamp (over 5 minutes
off: refused), each listener stores the input as a job keyed by Slack's own id (the event id, the
trigger id, the action's timestamp) and only then acks, well within Slack's 3 seconds. A retried event
(`X-Slack-Retry-Num`) finds its job already stored and acts no second time. The worker does the rest
and answers through `response_url` (ephemeral: only the person who asked sees it) or the Web API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Final

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.config import Settings
from bot.store import Store

from .delivery import ChatGone, ChatUnavailable, MessageGone, RateLimited
from .identity import ChatUser
from .markup import slack_escape, to_slack
from .view import ACTION_LABELS, Action, ChatView, button_value

log = logging.getLogger(__name__)

EVENTS_PATH: Final = "/slack/events"
METADATA_TYPE: Final = "release_secretary_release"
COMMANDS: Final = ("/ship", "/release")  # as slack-manifest.yml declares them
EVENTS: Final = ("app_mention", "message.im")
CHANNEL_PACE: Final = 1.0  # Slack allows about one message per second per channel
_ACTION_ID: Final = re.compile(r"^release_(?P<action>[a-z])$")
_MENTION: Final = re.compile(r"^\s*<@[A-Z0-9]+>\s*")
_GONE: Final = frozenset({"channel_not_found", "not_in_channel", "is_archived"})
# The bot's token is refused: an operator must act; messages wait for them instead of being dropped.
_AUTH: Final = frozenset({"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired"})

Store_input = Callable[[str, dict[str, Any]], Awaitable[None]]


class SlackChat:
    """The Slack side: the bolt app for intake and the sender for the delivery."""

    platform = "slack"

    def __init__(self, settings: Settings, store: Store, clock: Callable[[], datetime]) -> None:
        assert settings.slack_bot_token is not None
        self.settings = settings
        self.store = store
        self.clock = clock
        self.client = AsyncWebClient(token=settings.slack_bot_token, base_url=settings.slack_api_url)
        self.team = ""  # the workspace id, from auth.test at start
        self.bot_user: str | None = None
        self.on_input: Callable[[], None] = lambda: None  # wakes the worker of this process
        self._socket: AsyncSocketModeHandler | None = None
        self._starting: asyncio.Task[None] | None = None
        self.app = AsyncApp(
            client=self.client,
            signing_secret=settings.slack_signing_secret or "",
            request_verification_enabled=settings.slack_signing_secret is not None,
            process_before_response=True,  # the listeners only store the input and ack: no 10 ms ack polling
        )
        self._listen(self.app)

    async def learn_team(self) -> bool:
        """Who we are: the workspace id names our chats in the store. False while Slack cannot say."""
        try:
            answer = await self.client.auth_test()
        except SlackApiError as exc:
            log.error("slack auth.test failed: %s (check SLACK_BOT_TOKEN)", exc.response.get("error"))
            return False
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("slack cannot be reached (%s); trying again", type(exc).__name__)
            return False
        self.team, self.bot_user = str(answer.get("team_id") or ""), answer.get("user_id")
        return True

    async def start(self, *, intake: bool) -> None:
        """Learn who we are, and with `intake` and an app token, connect Socket Mode (no public URL needed).
        In the background, retried until Slack answers: an unreachable Slack never stops the bot starting."""
        self._starting = asyncio.create_task(self._connect(intake=intake))

    async def _connect(self, *, intake: bool) -> None:
        delay = 1.0
        while not await self.learn_team():
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)
        if not (intake and self.settings.slack_app_token):
            return
        while True:
            try:
                self._socket = AsyncSocketModeHandler(self.app, self.settings.slack_app_token)
                await self._socket.connect_async()  # type: ignore[no-untyped-call]
                log.info("slack socket mode connected")
                return
            except Exception as exc:  # noqa: BLE001 - any failure to connect is retried; the web side runs on
                log.warning("slack socket mode failed to connect (%s); trying again in %.0fs", exc, delay)
                await self._close_socket()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)

    async def close(self) -> None:
        if self._starting is not None:
            self._starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._starting
            self._starting = None
        await self._close_socket()

    async def _close_socket(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(Exception):
                await self._socket.close_async()  # type: ignore[no-untyped-call]
            self._socket = None

    # Intake -------------------------------------------------------------------------------------

    def _listen(self, app: AsyncApp) -> None:
        @app.command(re.compile(f"^({'|'.join(map(re.escape, COMMANDS))})$"))
        async def command(ack: Callable[..., Awaitable[None]], command: dict[str, Any]) -> None:
            text = f"{command['command']} {command.get('text', '')}".strip()
            channel = str(command.get("channel_id", ""))
            address = self._address(command["team_id"], channel, command["user_id"], command.get("response_url"))
            await self._store(f"slack:{command['team_id']}:command:{command['trigger_id']}", command, address, text)
            await ack()

        @app.action(_ACTION_ID)
        async def press(ack: Callable[..., Awaitable[None]], body: dict[str, Any], action: dict[str, Any]) -> None:
            team = str((body.get("team") or {}).get("id") or body["user"].get("team_id", ""))
            channel = str((body.get("channel") or {}).get("id", ""))
            user = body["user"]
            address = self._address(team, channel, user["id"], body.get("response_url"))
            match = _ACTION_ID.match(action["action_id"])
            assert match is not None
            payload = {
                "kind": "press",
                "user": ChatUser("slack", team, user["id"]).key,
                "name": user.get("username") or user.get("name") or "",
                "address": address,
                "action": match["action"],
                "button": str(action.get("value", "")),
            }
            key = f"slack:{team}:press:{action.get('action_ts')}:{user['id']}"
            await self._schedule(key, payload)
            await ack()

        @app.event("app_mention")
        async def mention(ack: Callable[..., Awaitable[None]], body: dict[str, Any], event: dict[str, Any]) -> None:
            await self._event(body, event)
            await ack()

        @app.event("message")
        async def direct_message(
            ack: Callable[..., Awaitable[None]], body: dict[str, Any], event: dict[str, Any]
        ) -> None:
            if event.get("channel_type") == "im" and not event.get("bot_id") and not event.get("subtype"):
                await self._event(body, event)
            await ack()

    async def _event(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        text = _MENTION.sub("", str(event.get("text") or ""))
        team = str(body.get("team_id") or event.get("team") or "")
        address = self._address(team, str(event["channel"]), str(event["user"]), None)
        if event.get("channel_type") != "im":
            address["thread_ts"] = event.get("thread_ts") or event.get("ts")
        await self._store(f"slack:{team}:event:{body['event_id']}", event, address, text)

    def _address(self, team: str, channel: str, user: str, response_url: str | None) -> dict[str, Any]:
        return {
            "platform": "slack",
            "team": team,
            "chat": channel,
            "user": user,
            "private": channel.startswith("D"),
            "response_url": response_url,
        }

    async def _store(self, key: str, raw: dict[str, Any], address: dict[str, Any], text: str) -> None:
        user = ChatUser("slack", address["team"], address["user"])
        payload = {
            "kind": "command",
            "user": user.key,
            "name": raw.get("user_name") or "",
            "address": address,
            "text": text,
        }
        await self._schedule(key, payload)

    async def _schedule(self, key: str, payload: dict[str, Any]) -> None:
        # `once`: Slack's retry of the same event (or a double click's same action) is stored once, acted once.
        await self.store.schedule_job(key, "chat-input", payload, due_at=self.clock(), once=True)
        self.on_input()

    async def handle(self, request: web.Request) -> web.Response:
        if self.settings.slack_signing_secret is None:
            return web.json_response(
                {"error": "Slack requests over HTTP are refused until SLACK_SIGNING_SECRET is set (Socket Mode is on)"},
                status=503,
            )
        return await to_aiohttp_response(await self.app.async_dispatch(await to_bolt_request(request)))

    # Sending ------------------------------------------------------------------------------------

    def pace(self, chat: str) -> float:
        return CHANNEL_PACE

    async def ready(self) -> bool:
        return bool(self.team) or await self.learn_team()

    async def post(self, chat: str, view: ChatView) -> tuple[str, str]:
        answer = await self._call(
            self.client.chat_postMessage,
            channel=chat,
            text=view.headline,
            blocks=blocks(view),
            metadata={"event_type": METADATA_TYPE, "event_payload": {"release": view.release_key}},
            unfurl_links=False,
            unfurl_media=False,
        )
        return str(answer["channel"]), str(answer["ts"])

    async def edit(self, chat: str, message: str, view: ChatView) -> None:
        try:
            await self._call(
                self.client.chat_update,
                channel=chat,
                ts=message,
                text=view.headline,
                blocks=blocks(view),
                metadata={"event_type": METADATA_TYPE, "event_payload": {"release": view.release_key}},
            )
        except SlackApiError as exc:
            if exc.response.get("error") == "message_not_found":
                raise MessageGone(message) from exc
            raise

    async def find(self, chat: str, release_key: str) -> str | None:
        """The release's message in the channel's recent history, by its metadata (the store lost the ts)."""
        if not chat[:1].isupper():
            return None  # a #name: no history to read until a post tells us the channel id
        try:
            answer = await self._call(
                self.client.conversations_history, channel=chat, limit=200, include_all_metadata=True
            )
        except ChatGone:
            return None
        for message in answer.get("messages") or ():
            metadata = message.get("metadata") or {}
            payload = metadata.get("event_payload") or {}
            if metadata.get("event_type") == METADATA_TYPE and payload.get("release") == release_key:
                return str(message["ts"])
        return None

    async def thread_reply(self, chat: str, message: str, text: str) -> None:
        await self._call(self.client.chat_postMessage, channel=chat, thread_ts=message, text=to_slack_plain(text))

    async def answer(self, address: dict[str, Any], text: str) -> None:
        mrkdwn = to_slack(text)
        response_url = address.get("response_url")
        if response_url:
            webhook = AsyncWebhookClient(response_url)
            try:
                response = await webhook.send(text=mrkdwn, response_type="ephemeral", replace_original=False)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise ChatUnavailable(type(exc).__name__) from exc
            if response.status_code == 429:
                raise RateLimited(_retry_after(response.headers))
            if response.status_code >= 500:
                raise ChatUnavailable(f"response_url answered {response.status_code}")
            if response.status_code < 300:
                return
            log.info("slack response_url answered %s; answering through the Web API", response.status_code)
        if address.get("private"):
            await self._call(self.client.chat_postMessage, channel=address["chat"], text=mrkdwn)
            return
        thread = address.get("thread_ts")
        await self._call(
            self.client.chat_postEphemeral,
            channel=address["chat"],
            user=address["user"],
            text=mrkdwn,
            **({"thread_ts": thread} if thread else {}),
        )

    async def direct(self, user: ChatUser, text: str) -> bool:
        try:
            opened = await self._call(self.client.conversations_open, users=user.user_id)
            await self._call(self.client.chat_postMessage, channel=opened["channel"]["id"], text=to_slack_plain(text))
        except ChatGone:
            return False
        return True

    async def _call(self, method: Callable[..., Awaitable[Any]], **kwargs: Any) -> Any:
        try:
            return await method(**kwargs)
        except SlackApiError as exc:
            response = exc.response
            if response.status_code == 429:
                raise RateLimited(_retry_after(response.headers)) from exc
            error = str(response.get("error") or "")
            if error in _GONE:
                raise ChatGone(error) from exc
            if error in _AUTH:
                log.error("slack refuses the bot's token (%s): check SLACK_BOT_TOKEN; messages wait", error)
                raise ChatUnavailable(error) from exc
            if response.status_code >= 500 or error in ("fatal_error", "internal_error", "service_unavailable"):
                raise ChatUnavailable(f"HTTP {response.status_code} {error}") from exc
            raise
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ChatUnavailable(type(exc).__name__) from exc


def _retry_after(headers: Any) -> float:
    """Slack's Retry-After, however the client hands the headers over (a value or a list of them)."""
    value = headers.get("Retry-After") or headers.get("retry-after") or "1"
    if isinstance(value, list | tuple):
        value = value[0] if value else "1"
    try:
        return max(1.0, float(value))
    except ValueError:
        return 1.0


def to_slack_plain(text: str) -> str:
    return slack_escape(text)


def fit(text: str, limit: int) -> str:
    """`text` escaped for Slack in at most `limit` characters, cut between characters (never inside an
    escape), with an ellipsis when cut."""
    escaped = slack_escape(text)
    if len(escaped) <= limit:
        return escaped
    out, size = [], 0
    for char in text:
        piece = slack_escape(char)
        if size + len(piece) > limit - 1:
            break
        out.append(piece)
        size += len(piece)
    return "".join(out) + "\u2026"


def blocks(view: ChatView) -> list[dict[str, Any]]:
    # Block Kit: 3000 characters per section text and context element, 2000 per field, 10 fields.
    title = fit(view.title or view.url, 2500 - len(view.url))
    head = f"*{fit(view.headline, 300)}*\n<{view.url}|{title}>"
    fields = [{"type": "mrkdwn", "text": f"*{fit(k, 100)}*\n{fit(v, 1800)}"} for k, v in view.facts[:10]]
    out: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": head}},
        {"type": "section", "fields": fields},
    ]
    if view.note:
        out.append({"type": "context", "elements": [{"type": "mrkdwn", "text": fit(view.note, 3000)}]})
    if view.actions:
        out.append({"type": "actions", "block_id": "release", "elements": [_button(a, view) for a in view.actions]})
    return out


def _button(action: Action, view: ChatView) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "action_id": f"release_{action.value}",
        "text": {"type": "plain_text", "text": ACTION_LABELS[action], "emoji": True},
        "value": button_value(view),
    }
    if action is Action.SHIP_NOW:
        button["style"] = "primary"
    if action in (Action.CANCEL, Action.ROLLBACK):
        button["style"] = "danger"
        verb = "Cancel" if action is Action.CANCEL else "Roll back"
        button["confirm"] = {
            "title": {"type": "plain_text", "text": f"{verb} this release?"},
            "text": {"type": "plain_text", "text": view.headline[:300]},
            "confirm": {"type": "plain_text", "text": verb},
            "deny": {"type": "plain_text", "text": "Keep it"},
        }
    return button
