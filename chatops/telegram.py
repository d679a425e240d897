"""Telegram: python-telegram-bot's `Bot` for every call, updates by webhook (`/telegram/webhook`, its secret
token checked in constant time) or by long polling when the bot has no public URL (a laptop).

Updates are stored as jobs keyed by their `update_id` before they are acknowledged, so a repeated update
acts once and a crash loses none. Buttons carry `rs1|<action>|<release ref>` (well under Telegram's 64
bytes); the data only says which button was pressed: who pressed it and whether they may is decided
here, from the linked GitHub login. Every callback query is answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import warnings
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Final

import orjson
from aiohttp import web
from telegram import (
    Bot,
    BotCommand,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    LinkPreviewOptions,
    ReplyParameters,
)
from telegram.error import (
    BadRequest,
    Conflict,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)

from bot.config import Settings
from bot.store import Store

from .chat_grammar import RELEASE
from .delivery import ChatGone, ChatUnavailable, MessageGone, RateLimited
from .grammar import PREFIX
from .identity import ChatUser
from .markup import to_telegram
from .view import ACTION_LABELS, ChatView, button_value

log = logging.getLogger(__name__)

WEBHOOK_PATH: Final = "/telegram/webhook"
SECRET_HEADER: Final = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 - a header name
ALLOWED_UPDATES: Final = ("message", "callback_query")
GROUP_PACE: Final = 3.0  # Telegram: at most 20 messages per minute in a group
PRIVATE_PACE: Final = 1.0  # and about one per second in a private chat
CALLBACK_PREFIX: Final = "rs1"
POLL_TIMEOUT: Final = 25  # seconds a getUpdates call waits for news
_OFFSET_KEY: Final = "telegram:offset"
_NOT_MODIFIED: Final = "message is not modified"
COMMANDS: Final = (
    (PREFIX[1:], "Book or change a release: /ship owner/repo#42 friday 3pm"),
    (RELEASE[1:], "Status, subscribe, link your GitHub login, help"),
)


class TelegramChat:
    platform = "telegram"
    team = ""

    def __init__(self, settings: Settings, store: Store, clock: Callable[[], datetime]) -> None:
        assert settings.telegram_bot_token is not None
        self.settings = settings
        self.store = store
        self.clock = clock
        api = settings.telegram_api_url.rstrip("/")
        self.bot = Bot(settings.telegram_bot_token, base_url=f"{api}/bot", base_file_url=f"{api}/file/bot")
        self.on_input: Callable[[], None] = lambda: None
        self.username: str | None = None
        self._polling: asyncio.Task[None] | None = None

    @property
    def bot_id(self) -> str:
        return (self.settings.telegram_bot_token or "").split(":", 1)[0]

    @property
    def polling(self) -> bool:
        """Webhook mode needs its secret (and PUBLIC_URL, where `telegram setup` points Telegram); without
        the secret the bot fetches updates itself: a laptop needs no public URL."""
        return self.settings.telegram_webhook_secret is None

    async def start(self, *, intake: bool) -> None:
        """getMe (who we are: `/ship@name` in groups), and with `intake` in polling mode, the poll loop; in
        the background, retried until Telegram answers: an unreachable Telegram never stops the bot."""
        self._polling = asyncio.create_task(self._run(intake=intake))

    async def name(self) -> str | None:
        """The bot's username (getMe, once it answers); None while Telegram cannot be reached."""
        if self.username is None:
            try:
                await self.bot.initialize()
                self.username = self.bot.username
            except TelegramError as exc:
                log.warning("telegram getMe failed: %s (check TELEGRAM_BOT_TOKEN)", type(exc).__name__)
        return self.username

    async def _run(self, *, intake: bool) -> None:
        delay = 1.0
        while await self.name() is None:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)
        if intake and self.polling:
            log.info("telegram polling for updates (no TELEGRAM_WEBHOOK_SECRET: no webhook)")
            await self._poll()

    async def close(self) -> None:
        if self._polling is not None:
            self._polling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._polling
            self._polling = None
        with contextlib.suppress(TelegramError, RuntimeError):
            await self.bot.shutdown()

    # Intake -------------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        secret = self.settings.telegram_webhook_secret
        if secret is None:
            return web.json_response({"error": "set TELEGRAM_WEBHOOK_SECRET to accept Telegram updates"}, status=503)
        given = request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), secret.encode()):
            return web.json_response({"error": "wrong or missing secret token"}, status=401 if not given else 403)
        try:
            update = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return web.json_response({"error": "the body is not JSON"}, status=400)
        if not isinstance(update, dict) or not isinstance(update.get("update_id"), int):
            return web.json_response({"error": "not a Telegram Update: update_id is missing"}, status=400)
        await self.store_update(update)
        return web.json_response({})

    async def store_update(self, update: dict[str, Any]) -> None:
        payload = self.input_of(update)
        if payload is None:
            return
        key = f"telegram:{self.bot_id}:update:{update['update_id']}"
        await self.store.schedule_job(key, "chat-input", payload, due_at=self.clock(), once=True)
        self.on_input()

    def input_of(self, update: dict[str, Any]) -> dict[str, Any] | None:
        """What the worker needs from an update; None for updates that are not for us."""
        if "callback_query" in update:
            query = update["callback_query"]
            message = query.get("message") or {}
            chat = message.get("chat") or {}
            parts = str(query.get("data") or "").split("|")
            user = query["from"]
            return {
                "kind": "press",
                "user": ChatUser("telegram", "", str(user["id"])).key,
                "name": user.get("username") or user.get("first_name") or "",
                "address": self._address(chat, user, message.get("message_id")),
                "action": parts[1] if len(parts) == 3 and parts[0] == CALLBACK_PREFIX else "",
                "button": parts[2] if len(parts) == 3 else "",
                "callback_query": str(query["id"]),
            }
        message = update.get("message")
        if not isinstance(message, dict) or not str(message.get("text") or "").startswith("/"):
            return None
        user = message.get("from") or {}
        if user.get("is_bot") or "id" not in user:
            return None
        return {
            "kind": "command",
            "user": ChatUser("telegram", "", str(user["id"])).key,
            "name": user.get("username") or user.get("first_name") or "",
            "address": self._address(message["chat"], user, message.get("message_id")),
            "text": message["text"],
            "bot_username": self.username,
        }

    def _address(self, chat: dict[str, Any], user: dict[str, Any], message_id: int | None) -> dict[str, Any]:
        return {
            "platform": "telegram",
            "team": "",
            "chat": str(chat.get("id", "")),
            "user": str(user["id"]),
            "private": chat.get("type") == "private",
            "reply_to_message": message_id,
        }

    async def _poll(self) -> None:
        raw = await self.store.get_value(_OFFSET_KEY)
        offset = int(raw) if raw else None
        delay = 1.0
        while True:
            try:
                updates = await self.bot.get_updates(
                    offset=offset, timeout=POLL_TIMEOUT, allowed_updates=list(ALLOWED_UPDATES)
                )
            except asyncio.CancelledError:
                raise
            except RetryAfter as exc:
                await asyncio.sleep(_seconds(exc))
                continue
            except Conflict:
                log.warning(
                    "telegram has a webhook set, so getUpdates is refused: run `python -m bot telegram setup` "
                    "(it removes the webhook when TELEGRAM_WEBHOOK_SECRET is unset)"
                )
                await asyncio.sleep(60.0)
                continue
            except TelegramError as exc:
                log.warning("telegram getUpdates failed (%s); trying again in %.0fs", type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)
                continue
            try:
                for update in updates:
                    await self.store_update(update.to_dict())
                    offset = update.update_id + 1
                if updates:
                    await self.store.set_value(_OFFSET_KEY, str(offset), now=self.clock())
            except Exception:  # the store went away for a moment: fetch the same updates again
                log.exception("storing telegram updates failed; trying again")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)
                continue
            delay = 1.0

    async def acknowledge(self, payload: dict[str, Any], text: str | None, *, alert: bool) -> None:
        """Answer a button's callback query (always: the client shows a spinner until then)."""
        query = payload.get("callback_query")
        if not query:
            return
        try:
            await self.bot.answer_callback_query(query, text=(text or "")[:200] or None, show_alert=alert)
        except TelegramError as exc:  # too old, already answered by a run that died, or Telegram is down
            log.info("telegram callback query not answered: %s", exc.message)

    async def setup(self) -> list[str]:
        """`python -m bot telegram setup`: the webhook (with its secret) and the command menu; what was done."""
        done = []
        await self.bot.initialize()
        if self.settings.public_url and not self.polling:
            url = f"{self.settings.public_url.rstrip('/')}{WEBHOOK_PATH}"
            await self.bot.set_webhook(
                url, secret_token=self.settings.telegram_webhook_secret, allowed_updates=list(ALLOWED_UPDATES)
            )
            done.append(f"webhook set to {url}")
        else:
            await self.bot.delete_webhook()
            done.append("no webhook (it needs PUBLIC_URL and TELEGRAM_WEBHOOK_SECRET): removed; the bot polls")
        await self.bot.set_my_commands([BotCommand(name, text) for name, text in COMMANDS])
        done.append("commands /ship and /release registered")
        return done

    # Sending ------------------------------------------------------------------------------------

    async def ready(self) -> bool:
        return True

    def pace(self, chat: str) -> float:
        return GROUP_PACE if chat.startswith(("-", "@")) else PRIVATE_PACE

    async def post(self, chat: str, view: ChatView) -> tuple[str, str]:
        message = await self._call(
            self.bot.send_message,
            chat_id=chat,
            text=render_html(view),
            parse_mode="HTML",
            reply_markup=keyboard(view),
            link_preview_options=LinkPreviewOptions(is_disabled=True),
        )
        return str(message.chat.id), str(message.message_id)

    async def edit(self, chat: str, message: str, view: ChatView) -> None:
        try:
            await self._call(
                self.bot.edit_message_text,
                chat_id=chat,
                message_id=int(message),
                text=render_html(view),
                parse_mode="HTML",
                reply_markup=keyboard(view),
                link_preview_options=LinkPreviewOptions(is_disabled=True),
            )
        except BadRequest as exc:
            if "message to edit not found" in exc.message.lower():
                raise MessageGone(message) from exc
            if _NOT_MODIFIED not in exc.message.lower():
                raise

    async def find(self, chat: str, release_key: str) -> str | None:
        return None  # the Bot API cannot read a chat's history: the store is the only record

    async def thread_reply(self, chat: str, message: str, text: str) -> None:
        await self._call(
            self.bot.send_message,
            chat_id=chat,
            text=_escape(_cut(text, 4000)),
            parse_mode="HTML",
            reply_parameters=ReplyParameters(int(message), allow_sending_without_reply=True),
            link_preview_options=LinkPreviewOptions(is_disabled=True),
        )

    async def answer(self, address: dict[str, Any], text: str) -> None:
        reply_to = address.get("reply_to_message")
        await self._call(
            self.bot.send_message,
            chat_id=address["chat"],
            text=to_telegram(_cut(text, 3500)),
            parse_mode="HTML",
            reply_parameters=ReplyParameters(int(reply_to), allow_sending_without_reply=True) if reply_to else None,
            link_preview_options=LinkPreviewOptions(is_disabled=True),
        )

    async def direct(self, user: ChatUser, text: str) -> bool:
        try:
            await self._call(
                self.bot.send_message, chat_id=user.user_id, text=_escape(_cut(text, 4000)), parse_mode="HTML"
            )
        except ChatGone:
            return False  # they never pressed Start in a private chat with the bot
        return True

    async def _call(self, method: Callable[..., Any], **kwargs: Any) -> Any:
        try:
            return await method(**kwargs)
        except RetryAfter as exc:
            raise RateLimited(_seconds(exc)) from exc
        except Forbidden as exc:
            raise ChatGone(exc.message) from exc
        except BadRequest as exc:  # a NetworkError subclass in PTB: caught before it
            if "chat not found" in exc.message.lower():
                raise ChatGone(exc.message) from exc
            raise
        except InvalidToken as exc:
            log.error("telegram refuses the bot's token: check TELEGRAM_BOT_TOKEN; messages wait")
            raise ChatUnavailable("token refused") from exc
        except NetworkError as exc:  # timeouts, unreachable, 5xx
            raise ChatUnavailable(exc.message) from exc


def _seconds(exc: RetryAfter) -> float:
    with warnings.catch_warnings():  # PTB warns that the int form is deprecated; either form works here
        warnings.simplefilter("ignore")
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render_html(view: ChatView) -> str:
    """Telegram counts the 4096 characters of a message after parsing: the parts are cut, never the HTML."""
    title = _escape(_cut(view.title or view.url, 300))
    lines = [f"<b>{_escape(view.headline)}</b>", f'<a href="{_escape(view.url)}">{title}</a>']
    lines += [f"<b>{_escape(k)}</b>: {_escape(_cut(v, 500))}" for k, v in view.facts]
    if view.note:
        lines.append(f"<i>{_escape(_cut(view.note, 1000))}</i>")
    return "\n".join(lines)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def keyboard(view: ChatView) -> InlineKeyboardMarkup | None:
    if not view.actions:
        return None
    ref = button_value(view)
    buttons = [
        InlineKeyboardButton(ACTION_LABELS[a], callback_data=f"{CALLBACK_PREFIX}|{a.value}|{ref}") for a in view.actions
    ]
    return InlineKeyboardMarkup([buttons[i : i + 2] for i in range(0, len(buttons), 2)])
