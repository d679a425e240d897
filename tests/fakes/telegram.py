"""A stateful fake Telegram Bot API that answers as api.telegram.org does, held to the Bot API description.

One aiohttp server on 127.0.0.1 serving `GET|POST /bot<token>/<method>`. Every request is read the
way the real server reads it (query string, JSON, form or multipart body, all flattened to string
arguments) and checked against the vendored description (tests/fixtures/telegram/api.json): an
unknown method is answered 404, a missing required field 400, and the rules the real server
enforces that matter to a bot (chat access, HTML entities, text length, inline keyboards, edits,
callback queries, webhooks, commands, long polling) are answered with the real server's texts,
taken from tdlib/telegram-bot-api and TDLib's HTML parser. Each refusal, and anything a correct bot
would not send even where Telegram lets it pass (an unknown field, an unescaped `&`), is recorded in
`violations`, so a test ends with `assert fake.violations == []`. Every result and update the fake
builds is checked against the description too: a mismatch there is the fake's bug, also recorded.

    fake = FakeTelegram(token=TOKEN, username="release_secretary_bot"); await fake.start()
    fake.add_chat(-1001234567890, type="supergroup", title="Releases")
    fake.add_user(42, "Ada", username="ada", started=True)
    bot = telegram.Bot(TOKEN, base_url=fake.url + "/bot", base_file_url=fake.url + "/file/bot")
    ...  # the bot runs; Telegram's side of the conversation is built with command_update / press
    assert [m.text for m in fake.messages(-1001234567890)] == [...]
    assert fake.violations == []

Knobs: `rate_limit(method, retry_after, times)` (429 with `retry_after`), `fail(method, status, times)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from tests.fakes.server import LocalServer

JSON = dict[str, Any]
API_JSON = Path(__file__).resolve().parent.parent / "fixtures" / "telegram" / "api.json"
DEFAULT_TOKEN = "123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11"

# The real server's texts (tdlib/telegram-bot-api Client.cpp, TDLib, api.telegram.org).
UNAUTHORIZED = "Unauthorized"
NOT_FOUND = "Not Found"
CHAT_NOT_FOUND = "Bad Request: chat not found"
CHAT_ID_EMPTY = "Bad Request: chat_id is empty"
TEXT_EMPTY = "Bad Request: message text is empty"
TEXT_TOO_LONG = "Bad Request: message is too long"
SOURCE_TOO_LONG = "Bad Request: text is too long"
CANT_INITIATE = "Forbidden: bot can't initiate conversation with a user"
BLOCKED = "Forbidden: bot was blocked by the user"
EDIT_NOT_FOUND = "Bad Request: message to edit not found"
DELETE_NOT_FOUND = "Bad Request: message to delete not found"
REPLY_NOT_FOUND = "Bad Request: message to be replied not found"
CANT_EDIT = "Bad Request: message can't be edited"
CANT_DELETE = "Bad Request: message can't be deleted"
NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are exactly the same as "
    "a current content and reply markup of the message"
)
MESSAGE_ID_MISSING = "Bad Request: message identifier is not specified"
QUERY_TOO_OLD = "Bad Request: query is too old and response timeout expired or query ID is invalid"
BUTTON_DATA_INVALID = "Bad Request: BUTTON_DATA_INVALID"
BUTTON_URL_INVALID = "Bad Request: BUTTON_URL_INVALID"
CONFLICT_WEBHOOK = (
    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first"
)
CONFLICT_POLLING = "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"
WEBHOOK_NOT_HTTPS = "Bad Request: bad webhook: An HTTPS URL must be provided for webhook"
WEBHOOK_BAD_PORT = "Bad Request: bad webhook: Webhook can be set up only on ports 80, 88, 443 or 8443"
WEBHOOK_BAD_URL = "Bad Request: invalid webhook URL specified"
SECRET_TOO_LONG = "Bad Request: secret token is too long"
SECRET_BAD_CHARS = "Bad Request: secret token contains unallowed characters"
MAX_TEXT_LENGTH = 4096  # characters (code points) after entities parsing
MAX_SOURCE_BYTES = 1 << 15
MAX_CALLBACK_DATA_BYTES = 64
WEBHOOK_PORTS = (80, 88, 443, 8443)
# Sent unless the bot lists them in allowed_updates (the documentation of getUpdates/setWebhook).
NOT_SENT_BY_DEFAULT = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
# Required fields the real server does not refuse when missing: it reads a missing `url` as
# deleteWebhook and missing `commands` as an empty list. The fake answers the same, and records it.
TOLERATED_MISSING = {("setwebhook", "url"), ("setmycommands", "commands")}
# Fields Bot API 7.0 replaced that the server still reads (sendMessage and its kin).
LEGACY_FIELDS = {
    "reply_to_message_id": "reply_parameters",
    "allow_sending_without_reply": "reply_parameters",
    "disable_web_page_preview": "link_preview_options",
}
MISSING_FIELD_TEXTS = {
    "chat_id": CHAT_ID_EMPTY,
    "text": TEXT_EMPTY,
    "message_id": MESSAGE_ID_MISSING,
    "callback_query_id": QUERY_TOO_OLD,
}
BOT_COMMAND = re.compile(r"[a-z0-9_]{1,32}")
SECRET_TOKEN = re.compile(r"[A-Za-z0-9_-]*")
TOKEN_SHAPE = re.compile(r"[0-9]+:[A-Za-z0-9_-]+")
BOT_PATH = re.compile(r"/bot(?P<token>[^/]*)/(?P<method>[^/]*)")


# The description.


@dataclass(frozen=True)
class ApiField:
    name: str
    types: tuple[str, ...]
    required: bool


@dataclass(frozen=True)
class ApiMethod:
    name: str
    fields: dict[str, ApiField]
    returns: tuple[str, ...]


@dataclass(frozen=True)
class ApiType:
    name: str
    fields: dict[str, ApiField]
    subtypes: tuple[str, ...]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_PRIMITIVES: dict[str, Callable[[Any], bool]] = {
    "Integer": _is_int,
    "Float": lambda v: _is_int(v) or isinstance(v, float),
    "String": lambda v: isinstance(v, str),
    "Boolean": lambda v: isinstance(v, bool),
    "True": lambda v: v is True,
    "InputFile": lambda v: True,
}


@dataclass(frozen=True)
class BotApi:
    """The vendored description: methods by lower-case name (the server's method names are
    case-insensitive) and the types the fake renders."""

    version: str
    methods: dict[str, ApiMethod]
    types: dict[str, ApiType]

    def method(self, name: str) -> ApiMethod | None:
        return self.methods.get(name.lower())

    def problems(self, kind: str, value: Any, where: str = "") -> list[str]:
        """What is wrong with `value` as a `kind` (a type name or "Array of ..."); [] when it fits.
        A type the reduced description dropped is only checked for being an object."""
        here = where or kind
        if kind.startswith("Array of "):
            if not isinstance(value, list):
                return [f"{here}: {value!r} is not an {kind}"]
            found: list[str] = []
            for i, item in enumerate(value):
                found += self.problems(kind.removeprefix("Array of "), item, f"{here}[{i}]")
            return found
        primitive = _PRIMITIVES.get(kind)
        if primitive is not None:
            return [] if primitive(value) else [f"{here}: {value!r} is not {kind}"]
        if not isinstance(value, dict):
            return [f"{here}: {value!r} is not a {kind} object"]
        api_type = self.types.get(kind)
        if api_type is None:
            return []
        if api_type.subtypes:
            tried = [self.problems(sub, value, here) for sub in api_type.subtypes]
            if any(not p for p in tried):
                return []
            return [f"{here}: fits none of {', '.join(api_type.subtypes)}: {min(tried, key=len)}"]
        found = [f"{here}.{name}: not a field of {kind}" for name in value if name not in api_type.fields]
        for f in api_type.fields.values():
            if f.name not in value:
                if f.required:
                    found.append(f"{here}.{f.name}: required by {kind}, missing")
                continue
            tried = [self.problems(t, value[f.name], f"{here}.{f.name}") for t in f.types]
            if all(tried):
                closest: list[str] = min(tried, key=len)
                found += closest
        return found


def _fields(raw: list[JSON]) -> dict[str, ApiField]:
    return {f["name"]: ApiField(f["name"], tuple(f["types"]), bool(f["required"])) for f in raw}


@cache
def load_api(path: Path = API_JSON) -> BotApi:
    raw = json.loads(path.read_text(encoding="utf-8"))
    methods = {
        name.lower(): ApiMethod(name, _fields(m.get("fields", [])), tuple(m["returns"]))
        for name, m in raw["methods"].items()
    }
    types = {
        name: ApiType(name, _fields(t.get("fields", [])), tuple(t.get("subtypes", [])))
        for name, t in raw["types"].items()
    }
    return BotApi(raw["version"], methods, types)


# Errors.


class BotApiError(Exception):
    """An answer other than `ok`: the status, Telegram's description and its `parameters`."""

    def __init__(self, status: int, description: str, *, retry_after: int | None = None, knob: bool = False) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.retry_after = retry_after
        self.knob = knob  # asked for by the test (rate_limit, fail): not a violation

    def body(self) -> JSON:
        out: JSON = {"ok": False, "error_code": self.status, "description": self.description}
        if self.retry_after is not None:
            out["parameters"] = {"retry_after": self.retry_after}
        return out


# HTML, as TDLib parses it (td/telegram/MessageEntity.cpp, parse_html).


class HtmlError(Exception):
    """TDLib's parse error; the server answers 400 "Bad Request: can't parse entities: <message>"."""


@dataclass
class FormattedText:
    text: str  # what the chat shows: tags removed, entities decoded
    entities: list[JSON]
    sloppy: list[str] = field(default_factory=list)  # accepted by Telegram, but the documentation says escape it


_HTML_TAGS = frozenset(
    {"a", "b", "strong", "i", "em", "s", "strike", "del", "u", "ins", "span", "pre", "code", "blockquote"}
    | {"tg-spoiler", "tg-emoji", "tg-time"}
)
_SIMPLE_ENTITIES = {
    "i": "italic",
    "em": "italic",
    "b": "bold",
    "strong": "bold",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "u": "underline",
    "ins": "underline",
    "tg-spoiler": "spoiler",
}
_SPACE = b" \t\r\n\0\v"


def _decode_html_entity(data: bytes, pos: int) -> tuple[int, int] | None:
    """(code point, position after it) of the entity at data[pos] == '&', or None: TDLib knows
    only &lt; &gt; &amp; &quot; and numeric references, and leaves anything else as text."""
    end = pos + 1
    code = 0
    if end < len(data) and data[end] == ord("#"):
        end += 1
        if end < len(data) and data[end] == ord("x"):
            end += 1
            while end < len(data) and chr(data[end]) in "0123456789abcdefABCDEF":
                code = code * 16 + int(chr(data[end]), 16)
                end += 1
        else:
            while end < len(data) and chr(data[end]).isdigit():
                code = code * 10 + data[end] - ord("0")
                end += 1
        if code == 0 or code >= 0x10FFFF or end - pos >= 10:
            return None
    else:
        while end < len(data) and chr(data[end]).isalpha() and data[end] < 0x80:
            end += 1
        named = {b"lt": "<", b"gt": ">", b"amp": "&", b"quot": '"'}.get(data[pos + 1 : end])
        if named is None:
            return None
        code = ord(named)
    if end < len(data) and data[end] == ord(";"):
        end += 1
    return code, end


def _utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def parse_html(source: str) -> FormattedText:
    """Parse `parse_mode=HTML` text as TDLib does; raise HtmlError with TDLib's message."""
    data = source.encode("utf-8", "surrogatepass")
    n = len(data)

    def at(k: int) -> int:
        return data[k] if k < n else 0

    out = bytearray()
    utf16 = 0
    entities: list[JSON] = []
    sloppy: list[str] = []
    nested: list[tuple[str, str, int, int, int]] = []  # tag, argument, unix time, utf16 offset, byte offset in out
    i = 0
    while i < n:
        c = data[i]
        if c == ord("&"):
            decoded = _decode_html_entity(data, i)
            if decoded is not None:
                code, i = decoded
                utf16 += 2 if code > 0xFFFF else 1
                out += chr(code).encode("utf-8", "surrogatepass")
                continue
            sloppy.append(f"an unescaped '&' at byte offset {i} (write &amp;)")
        if c != ord("<"):
            if c == ord(">"):
                sloppy.append(f"an unescaped '>' at byte offset {i} (write &gt;)")
            if (c & 0xC0) != 0x80:
                utf16 += 2 if c >= 0xF0 else 1
            out.append(c)
            i += 1
            continue
        begin = i
        i += 1
        if at(i) != ord("/"):
            while at(i) not in _SPACE and at(i) != ord(">"):
                i += 1
            if at(i) == 0:
                raise HtmlError(f"Unclosed start tag at byte offset {begin}")
            tag = data[begin + 1 : i].decode("utf-8", "replace").lower()
            if tag not in _HTML_TAGS:
                raise HtmlError(f'Unsupported start tag "{tag}" at byte offset {begin}')
            argument = ""
            date = 0
            while at(i) != ord(">"):
                while at(i) != 0 and at(i) in _SPACE:
                    i += 1
                if at(i) == ord(">"):
                    break
                name_begin = i
                while at(i) not in _SPACE and at(i) not in b"=>/\"'":
                    i += 1
                name = data[name_begin:i].decode("utf-8", "replace")
                if not name:
                    raise HtmlError(f'Empty attribute name in the tag "{tag}" at byte offset {begin}')
                while at(i) != 0 and at(i) in _SPACE:
                    i += 1
                if at(i) != ord("="):
                    if at(i) == 0:
                        raise HtmlError(f'Unclosed start tag "{tag}" at byte offset {begin}')
                    if tag == "blockquote" and name == "expandable":
                        argument = "1"
                    continue
                i += 1
                while at(i) != 0 and at(i) in _SPACE:
                    i += 1
                if at(i) == 0:
                    raise HtmlError(f'Unclosed start tag "{tag}" at byte offset {begin}')
                if at(i) not in b"'\"":
                    token_begin = i
                    while (at(i) < 0x80 and chr(at(i)).isalnum()) or at(i) in b".-":
                        i += 1
                    value = data[token_begin:i].decode().lower()
                    if at(i) not in _SPACE and at(i) != ord(">"):
                        raise HtmlError(f"Unexpected end of name token at byte offset {token_begin}")
                else:
                    quote = at(i)
                    i += 1
                    raw = bytearray()
                    while at(i) != quote and at(i) != 0:
                        if at(i) == ord("&"):
                            decoded = _decode_html_entity(data, i)
                            if decoded is not None:
                                raw += chr(decoded[0]).encode("utf-8", "surrogatepass")
                                i = decoded[1]
                                continue
                        raw.append(at(i))
                        i += 1
                    if at(i) == quote:
                        i += 1
                    value = raw.decode("utf-8", "replace")
                if at(i) == 0:
                    raise HtmlError(f"Unclosed start tag at byte offset {begin}")
                if (
                    (tag == "a" and name == "href")
                    or (tag == "tg-emoji" and name == "emoji-id")
                    or (tag == "tg-time" and name == "format")
                ):
                    argument = value
                elif tag == "code" and name == "class" and value.startswith("language-"):
                    argument = value.removeprefix("language-")
                elif tag == "span" and name == "class" and value.startswith("tg-"):
                    argument = value.removeprefix("tg-")
                elif tag == "blockquote" and name == "expandable":
                    argument = "1"
                elif tag == "tg-time" and name == "unix":
                    date = int(value) if value.isdigit() else 0
            if tag == "span" and argument != "spoiler":
                raise HtmlError(f'Tag "span" must have class "tg-spoiler" at byte offset {begin}')
            nested.append((tag, argument, date, utf16, len(out)))
            i += 1  # past '>'
            continue
        # An end tag.
        if not nested:
            raise HtmlError(f"Unexpected end tag at byte offset {begin}")
        while at(i) not in _SPACE and at(i) != ord(">"):
            i += 1
        end_tag = data[begin + 2 : i].decode("utf-8", "replace").lower()
        while at(i) != 0 and at(i) in _SPACE:
            i += 1
        if at(i) != ord(">"):
            raise HtmlError(f"Unclosed end tag at byte offset {begin}")
        i += 1
        tag, argument, date, offset, out_begin = nested.pop()
        if end_tag and end_tag != tag:
            raise HtmlError(f'Unmatched end tag at byte offset {begin}, expected "</{tag}>", found "</{end_tag}>"')
        if utf16 > offset:
            entity = _html_entity(tag, argument, date, offset, utf16 - offset, bytes(out[out_begin:]), entities)
            if entity is not None:
                entities.append(entity)
    if nested:
        raise HtmlError(f'Can\'t find end tag corresponding to start tag "{nested[-1][0]}"')
    try:
        text = bytes(out).decode("utf-8")
    except UnicodeDecodeError:
        raise HtmlError(
            "Text contains invalid Unicode characters after decoding HTML entities, check for unmatched surrogate "
            "code units"
        ) from None
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return FormattedText(text, entities, sloppy)


def _html_entity(
    tag: str, argument: str, date: int, offset: int, length: int, inner: bytes, done: list[JSON]
) -> JSON | None:
    entity: JSON = {"offset": offset, "length": length}
    if tag in _SIMPLE_ENTITIES or tag == "span":
        return {"type": _SIMPLE_ENTITIES.get(tag, "spoiler"), **entity}
    if tag == "tg-emoji":
        if not argument.isdigit() or int(argument) == 0:
            raise HtmlError("Invalid custom emoji identifier specified")
        return {"type": "custom_emoji", **entity, "custom_emoji_id": argument}
    if tag == "tg-time":
        if date <= 0:
            return None
        formatting = {"date_time_format": argument} if argument else {}
        return {"type": "date_time", **entity, "unix_time": date, **formatting}
    if tag == "a":
        url = argument or inner.decode("utf-8", "replace")
        if not url.strip():
            return None
        return {"type": "text_link", **entity, "url": url if "://" in url else f"http://{url}"}
    last = done[-1] if done else None
    same_span = last is not None and last["offset"] == offset and last["length"] == length
    if tag == "pre":
        if same_span and last is not None and last["type"] == "code" and last.get("language"):
            done.pop()
            return {"type": "pre", **entity, "language": last["language"]}
        return {"type": "pre", **entity}
    if tag == "code":
        if same_span and last is not None and last["type"] == "pre" and argument:
            done.pop()
            return {"type": "pre", **entity, "language": argument}
        if argument:
            return {"type": "code", **entity, "language": argument}  # dropped below unless a <pre> claims it
        return {"type": "code", **entity}
    return {"type": "expandable_blockquote" if argument else "blockquote", **entity}


# State.


@dataclass
class User:
    user_id: int
    first_name: str
    username: str | None = None
    last_name: str | None = None
    language_code: str | None = None
    started: bool = False  # has opened a private chat with the bot (sent it anything there)
    blocked: bool = False  # has blocked the bot

    def to_json(self) -> JSON:
        out: JSON = {"id": self.user_id, "is_bot": False, "first_name": self.first_name}
        if self.last_name:
            out["last_name"] = self.last_name
        if self.username:
            out["username"] = self.username
        if self.language_code:
            out["language_code"] = self.language_code
        return out


@dataclass
class Chat:
    chat_id: int
    type: str  # private, group, supergroup
    title: str | None = None
    username: str | None = None
    user: User | None = None  # the other side of a private chat
    bot_is_admin: bool = False

    def to_json(self) -> JSON:
        out: JSON = {"id": self.chat_id}
        if self.user is not None:
            out["first_name"] = self.user.first_name
            if self.user.last_name:
                out["last_name"] = self.user.last_name
            if self.user.username:
                out["username"] = self.user.username
        else:
            out["title"] = self.title or ""
            if self.username:
                out["username"] = self.username
        out["type"] = self.type
        return out


@dataclass
class Message:
    """A message in a chat, the bot's or a user's. `text` is what the sender wrote (the HTML source
    when `parse_mode` is HTML); `shown` is what the chat shows, with `entities`."""

    message_id: int
    chat_id: int
    text: str
    parse_mode: str | None = None
    reply_markup: JSON | None = None
    reply_to: int | None = None
    edits: int = 0
    deleted: bool = False
    from_id: int = 0
    date: int = 0
    edit_date: int | None = None
    shown: str = ""
    entities: list[JSON] = field(default_factory=list)
    link_preview_options: JSON | None = None
    disable_notification: bool = False
    history: list[str] = field(default_factory=list)  # the texts before each edit, oldest first


@dataclass
class Webhook:
    url: str
    secret_token: str = ""
    allowed_updates: list[str] | None = None
    max_connections: int = 40
    has_custom_certificate: bool = False
    ip_address: str | None = None
    last_error_date: int | None = None
    last_error_message: str | None = None


@dataclass
class _Knob:
    method: str  # lower case, or "*"
    status: int
    description: str
    retry_after: int | None
    times: int


@dataclass
class _OpenQuery:
    update: JSON
    issued_at: float


@dataclass
class _Call:
    method: ApiMethod
    args: dict[str, str]

    def has(self, name: str) -> bool:
        return bool(self.args.get(name))  # the server reads an empty argument as a missing one

    def text(self, name: str) -> str:
        return self.args.get(name, "")

    def integer(self, name: str, default: int = 0) -> int:
        """td::to_integer: the leading digits, 0 for anything else."""
        match = re.match(r"-?[0-9]+", self.args.get(name, "").strip())
        return int(match.group()) if match else default

    def flag(self, name: str) -> bool:
        return self.args.get(name, "").strip().lower() in ("true", "yes", "1")

    def json(self, name: str, error: str) -> Any:
        raw = self.args.get(name, "")
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise BotApiError(400, error) from None


def _arg_fits(kind: str, raw: str) -> bool:
    if kind == "Integer":
        return re.fullmatch(r"\s*-?[0-9]+\s*", raw) is not None
    if kind == "Float":
        try:
            float(raw)
        except ValueError:
            return False
        return True
    if kind in ("Boolean", "True"):
        return raw.strip().lower() in ("true", "false", "1", "0", "yes", "no")
    if kind in ("String", "InputFile"):
        return True
    try:
        value = json.loads(raw)
    except ValueError:
        return False
    return isinstance(value, list) if kind.startswith("Array of ") else isinstance(value, dict)


def _decode_arg(api_field: ApiField | None, raw: str) -> Any:
    """An argument as the bot meant it, for `calls`: numbers, booleans and JSON decoded by the field's type."""
    if api_field is None:
        return raw
    for kind in api_field.types:
        if kind == "Integer" and re.fullmatch(r"-?[0-9]+", raw):
            return int(raw)
        if kind in ("Boolean", "True") and raw.lower() in ("true", "false"):
            return raw.lower() == "true"
        if kind == "Float":
            try:
                return float(raw)
            except ValueError:
                continue
        if kind not in _PRIMITIVES:
            try:
                return json.loads(raw)
            except ValueError:
                continue
    return raw


def _update_kind(update: JSON) -> str:
    return next((k for k in update if k != "update_id"), "")


class FakeTelegram(LocalServer):
    """The fake Bot API for one bot. Arrange chats and users with `add_chat`/`add_user`, point
    `telegram.Bot` at `url + "/bot"`, build what users do with `command_update`/`press`, hand it to
    the bot with `queue_update` (getUpdates) or `deliver` (webhook), then assert on `messages(...)`,
    `callback_answers`, `webhook`, `commands`, `calls` and `violations == []`."""

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        username: str = "release_secretary_bot",
        *,
        first_name: str = "Release Secretary",
        clock: Callable[[], float] = time.time,
        api: BotApi | None = None,
    ) -> None:
        self.api = api or load_api()
        self.token = token
        self.username = username
        self.first_name = first_name
        self.bot_id = int(token.split(":", 1)[0])
        self.clock = clock
        self.callback_query_ttl = 15.0  # seconds a callback query can be answered (monotonic clock)
        self.violations: list[str] = []
        self.calls: list[tuple[str, JSON]] = []
        self.callback_answers: list[JSON] = []
        self.deliveries: list[tuple[int, int]] = []  # (update_id, status) of each `deliver`
        self.webhook: Webhook | None = None
        self.users: dict[int, User] = {}
        self.chats: dict[int, Chat] = {}
        self._messages: dict[int, dict[int, Message]] = {}
        self._next_message_id: dict[int, int] = {}
        self._commands: dict[tuple[str, str], list[JSON]] = {}
        self._queue: list[JSON] = []
        self._allowed_updates: list[str] | None = None
        self._update_ids = itertools.count(721_340_001)
        self._query_ids = itertools.count(1_204_173_050_963_262_401)
        self._open_queries: dict[str, _OpenQuery] = {}
        self._knobs: list[_Knob] = []
        self._polls = itertools.count(1)
        self._current_poll = 0
        self._closing = False
        self._wakeup = asyncio.Event()
        self._handlers: dict[str, Callable[[_Call], Awaitable[Any]]] = {
            name.removeprefix("_m_"): getattr(self, name) for name in dir(self) if name.startswith("_m_")
        }
        unknown = [name for name in self._handlers if name not in self.api.methods]
        if unknown:
            raise NotImplementedError(f"fake Telegram handles methods the Bot API does not have: {unknown}")

    # Life cycle.

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self._handle)

    async def start(self) -> str:
        self._closing = False
        return await super().start()

    async def close(self) -> None:
        self._closing = True  # a getUpdates long poll answers now instead of holding the shutdown
        self._wake()
        await super().close()

    # Arranging state.

    def add_user(
        self,
        user_id: int,
        first_name: str,
        username: str | None = None,
        *,
        started: bool = False,
        last_name: str | None = None,
        language_code: str | None = None,
    ) -> User:
        """A person; their private chat with the bot has id `user_id`. Until they have `started`
        the bot, it cannot write to them there."""
        if user_id <= 0:
            raise ValueError("user ids are positive")
        user = User(user_id, first_name, username, last_name, language_code, started)
        self.users[user_id] = user
        self.chats[user_id] = Chat(user_id, "private", user=user)
        return user

    def add_chat(
        self,
        chat_id: int,
        type: str = "supergroup",
        title: str | None = None,
        username: str | None = None,
        *,
        bot_is_admin: bool = False,
    ) -> Chat:
        """A group or supergroup the bot is a member of (a private chat comes with `add_user`;
        channels, where posts have no `from`, are not modelled)."""
        if type == "private":
            raise ValueError("a private chat is a user's: use add_user(user_id, ...)")
        if type not in ("group", "supergroup"):
            raise ValueError(f"the fake models group and supergroup chats, not {type!r}")
        # Telegram's id ranges: a basic group is -1 .. -999999999999, a supergroup -100xxxxxxxxxx.
        if type == "supergroup" and chat_id >= -1_000_000_000_000:
            raise ValueError(f"a supergroup id looks like -1001234567890, not {chat_id}")
        if type == "group" and not -1_000_000_000_000 < chat_id < 0:
            raise ValueError(f"a basic group id is negative and above -1000000000000, not {chat_id}")
        chat = Chat(chat_id, type, title=title or f"Chat {chat_id}", username=username, bot_is_admin=bot_is_admin)
        self.chats[chat_id] = chat
        return chat

    def rate_limit(self, method: str, retry_after: int = 1, times: int = 1) -> None:
        """The next `times` calls of `method` ("*": any) get 429 Too Many Requests with `retry_after`."""
        description = f"Too Many Requests: retry after {retry_after}"
        self._knobs.append(_Knob(method.lower(), 429, description, retry_after, times))

    def fail(self, method: str, status: int = 500, times: int = 1, description: str | None = None) -> None:
        """The next `times` calls of `method` ("*": any) get `status` instead of being served."""
        texts = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
        text = description or texts.get(status, f"Error {status}")
        self._knobs.append(_Knob(method.lower(), status, text, None, times))

    # Reading state back.

    def messages(self, chat_id: int) -> list[Message]:
        """Every message of the chat, oldest first, deleted ones included (`deleted`)."""
        return list(self._messages.get(chat_id, {}).values())

    def bot_messages(self, chat_id: int) -> list[Message]:
        """The bot's messages in the chat that are not deleted, oldest first."""
        return [m for m in self.messages(chat_id) if m.from_id == self.bot_id and not m.deleted]

    def calls_to(self, method: str) -> list[JSON]:
        """The params of each call of `method`, refused ones included."""
        return [params for name, params in self.calls if name.lower() == method.lower()]

    @property
    def commands(self) -> list[JSON]:
        """The bot's commands for the default scope and every language."""
        return self.commands_for()

    def commands_for(self, scope: JSON | None = None, language_code: str = "") -> list[JSON]:
        return list(self._commands.get((self._scope_key(scope or {"type": "default"}), language_code), []))

    @property
    def pending_updates(self) -> list[JSON]:
        return list(self._queue)

    async def wait_for(self, predicate: Callable[[], object], timeout: float = 5.0, what: str = "") -> None:
        """Return once `predicate()` is true (checked after every request the fake serves)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"fake Telegram: timed out after {timeout}s waiting for {what or predicate}")
            event = self._wakeup
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(remaining, 0.05))

    # What Telegram sends to the bot.

    def message_update(self, chat_id: int, user_id: int, text: str, *, reply_to: int | None = None) -> JSON:
        """An Update with a `message` a user wrote in a chat (stored there, so the bot can reply to
        it). Bot commands in it get `bot_command` entities, as Telegram adds them."""
        chat = self._arranged_chat(chat_id)
        user = self.users.get(user_id)
        if user is None:
            raise ValueError(f"no user {user_id}: add_user(...) first")
        if chat.type == "private" and chat.chat_id != user_id:
            raise ValueError(f"chat {chat_id} is the private chat of another user")
        if chat.type == "private":  # writing to the bot opens (or reopens) the private chat
            user.started, user.blocked = True, False
        if reply_to is not None and self._live_message(chat_id, reply_to) is None:
            raise ValueError(f"no message {reply_to} in chat {chat_id} to reply to")
        entities = [
            {"type": "bot_command", "offset": _utf16_units(text[: m.start()]), "length": _utf16_units(m.group())}
            for m in re.finditer(r"(?<![\w/<>])/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?(?![\w/<>])", text)
        ]
        message = self._store(chat_id, user_id, text, shown=text, entities=entities, reply_to=reply_to)
        return self._new_update("message", self._message_json(message))

    def command_update(
        self, chat_id: int, user_id: int, text: str, *, mention: bool = False, reply_to: int | None = None
    ) -> JSON:
        """An Update with a user's `/command ...` message; `mention=True` writes it as groups do,
        `/ship@<bot username> ...`."""
        if not text.startswith("/"):
            raise ValueError(f"a command starts with '/': {text!r}")
        if mention:
            command, sep, rest = text.partition(" ")
            text = f"{command}@{self.username}{sep}{rest}"
        return self.message_update(chat_id, user_id, text, reply_to=reply_to)

    def press(self, chat_id: int, user_id: int, message_id: int, data: str) -> JSON:
        """An Update with the `callback_query` Telegram sends when a user presses the inline button
        with `data` under the bot's message; its id can be answered once with answerCallbackQuery."""
        message = self._live_message(chat_id, message_id)
        if message is None or message.from_id != self.bot_id:
            raise ValueError(f"no message {message_id} of the bot in chat {chat_id}")
        user = self.users.get(user_id)
        if user is None:
            raise ValueError(f"no user {user_id}: add_user(...) first")
        rows = (message.reply_markup or {}).get("inline_keyboard", [])
        offered = [b.get("callback_data") for row in rows for b in row if "callback_data" in b]
        if data not in offered:
            raise ValueError(f"message {message_id} has no button with callback_data {data!r} (it has {offered})")
        query_id = str(next(self._query_ids))
        instance = int.from_bytes(hashlib.sha256(f"{self.bot_id}:{chat_id}".encode()).digest()[:8], "big") >> 1
        query = {
            "id": query_id,
            "from": user.to_json(),
            "message": self._message_json(message),
            "chat_instance": str(instance),
            "data": data,
        }
        update = self._new_update("callback_query", query)
        self._open_queries[query_id] = _OpenQuery(update, time.monotonic())
        return update

    def queue_update(self, update: JSON) -> None:
        """Hold `update` for the bot's getUpdates (a long poll in progress answers at once)."""
        self._check_update(update)
        self._queue.append(update)
        self._wake()

    async def deliver(self, webhook_url: str, update: JSON, secret: str | None = None) -> int:
        """POST `update` to the bot's webhook as Telegram does; return the HTTP status. The secret
        header carries `secret`, or (None) the secret_token set with setWebhook; "" sends none."""
        self._check_update(update)
        token = secret if secret is not None else (self.webhook.secret_token if self.webhook else "")
        headers = {"Content-Type": "application/json"}
        if token:
            headers["X-Telegram-Bot-Api-Secret-Token"] = token
        async with (
            aiohttp.ClientSession() as session,
            session.post(webhook_url, data=json.dumps(update, ensure_ascii=False).encode(), headers=headers) as resp,
        ):
            await resp.read()
            status, reason = resp.status, resp.reason
        self.deliveries.append((update["update_id"], status))
        if self.webhook is not None and not 200 <= status < 300:
            self.webhook.last_error_date = int(self.clock())
            self.webhook.last_error_message = f"Wrong response from the webhook: {status} {reason}"
        return status

    # Serving.

    async def _handle(self, request: web.Request) -> web.Response:
        try:
            return await self._serve(request)
        finally:
            self._wake()

    async def _serve(self, request: web.Request) -> web.Response:
        path = BOT_PATH.fullmatch(request.path)
        if path is None:
            what = "file downloads are not modelled" if request.path.startswith("/file/") else "not a Bot API path"
            self.violations.append(f"{request.method} {request.path}: 404 ({what})")
            return self._reply(BotApiError(404, NOT_FOUND).body(), 404)
        if path["token"] != self.token:
            # api.telegram.org: 404 for what cannot be a token, 401 for a token it does not know.
            status, text = (401, UNAUTHORIZED) if TOKEN_SHAPE.fullmatch(path["token"]) else (404, NOT_FOUND)
            self.violations.append(f"{path['method']}: {status} {text} (wrong bot token)")
            return self._reply(BotApiError(status, text).body(), status)
        method = self.api.method(path["method"])
        if method is None:
            self.violations.append(f"{path['method']}: 404 Not Found (no such method in {self.api.version})")
            return self._reply(BotApiError(404, NOT_FOUND).body(), 404)
        try:
            args = await self._read_args(request, method)
        except BotApiError as error:
            self.calls.append((method.name, {}))
            self.violations.append(f"{method.name}: {error.status} {error.description}")
            return self._reply(error.body(), error.status)
        self.calls.append((method.name, {k: _decode_arg(method.fields.get(k), v) for k, v in args.items()}))
        call = _Call(method, args)
        try:
            self._take_knob(method)
            self._check_fields(call)
            handler = self._handlers.get(method.name.lower())
            if handler is None:
                why = f"{method.name}: the fake does not implement this method"
                self.violations.append(why)
                return self._reply(BotApiError(500, f"Internal Server Error: {why}").body(), 500)
            result = await handler(call)
        except BotApiError as error:
            if not error.knob:
                self.violations.append(f"{method.name}: {error.status} {error.description}")
            return self._reply(error.body(), error.status)
        description = None
        if isinstance(result, tuple):
            result, description = result
        tried = [self.api.problems(kind, result, "result") for kind in method.returns]
        if all(tried):
            wrong = min(tried, key=len)
            self.violations.append(f"{method.name}: fake Telegram bug, the result breaks the description: {wrong}")
        body: JSON = {"ok": True, "result": result}
        if description:
            body["description"] = description
        return self._reply(body, 200)

    @staticmethod
    def _reply(body: JSON, status: int) -> web.Response:
        return web.Response(
            status=status, body=json.dumps(body, ensure_ascii=False).encode(), content_type="application/json"
        )

    async def _read_args(self, request: web.Request, method: ApiMethod) -> dict[str, str]:
        """The arguments as the real server sees them: strings, from the query string and then the
        body; in a JSON body a non-string value is kept as its JSON text."""
        args: dict[str, str] = {}
        for key, value in request.query.items():
            args.setdefault(key, value)
        if not request.body_exists:
            return args
        kind = request.content_type
        if kind == "application/json":
            raw = await request.read()
            if not raw.strip():
                return args
            try:
                body = json.loads(raw)
            except ValueError as exc:
                raise BotApiError(400, f"Bad Request: can't parse parameter value: {exc}") from None
            if not isinstance(body, dict):
                raise BotApiError(400, "Bad Request: JSON object expected")
            for key, value in body.items():
                args.setdefault(key, value if isinstance(value, str) else json.dumps(value, separators=(",", ":")))
        elif kind in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.post()
            for key, part in form.items():
                if isinstance(part, str):
                    args.setdefault(key, part)
                else:  # an uploaded file: the server refers to it by its part name
                    args.setdefault(key, f"attach://{key}")
        else:
            await request.read()
            self.violations.append(f"{method.name}: body with content type {kind!r} ignored (Telegram reads none)")
        return args

    def _take_knob(self, method: ApiMethod) -> None:
        for knob in self._knobs:
            if knob.method in ("*", method.name.lower()):
                knob.times -= 1
                if knob.times <= 0:
                    self._knobs.remove(knob)
                raise BotApiError(knob.status, knob.description, retry_after=knob.retry_after, knob=True)

    def _check_fields(self, call: _Call) -> None:
        method = call.method
        for name, raw in call.args.items():
            api_field = method.fields.get(name)
            if api_field is None and name in LEGACY_FIELDS and method.name.lower() == "sendmessage":
                self.violations.append(f"{method.name}: {name!r} is gone from the Bot API, use {LEGACY_FIELDS[name]}")
            elif api_field is None:
                # Telegram ignores it, and so does the fake; but a typo is a bot bug worth seeing.
                self.violations.append(f"{method.name}: unknown field {name!r} (ignored by Telegram)")
            elif raw and not any(_arg_fits(kind, raw) for kind in api_field.types):
                self.violations.append(f"{method.name}: {name}={raw!r} is not {' or '.join(api_field.types)}")
        for api_field in method.fields.values():
            if not api_field.required or call.has(api_field.name):
                continue
            if (method.name.lower(), api_field.name) in TOLERATED_MISSING:
                self.violations.append(f"{method.name}: required field {api_field.name!r} missing (Telegram lets it)")
                continue
            raise BotApiError(400, MISSING_FIELD_TEXTS.get(api_field.name, f"Bad Request: {api_field.name} is empty"))

    # Helpers for the methods.

    def _wake(self) -> None:
        self._wakeup.set()
        self._wakeup = asyncio.Event()

    def _bot_json(self, full: bool = False) -> JSON:
        out: JSON = {"id": self.bot_id, "is_bot": True, "first_name": self.first_name, "username": self.username}
        if full:
            out |= {
                "can_join_groups": True,
                "can_read_all_group_messages": False,
                "supports_inline_queries": False,
                "can_connect_to_business": False,
                "has_main_web_app": False,
            }
        return out

    def _arranged_chat(self, chat_id: int) -> Chat:
        chat = self.chats.get(chat_id)
        if chat is None:
            raise ValueError(f"no chat {chat_id}: add_chat(...) or add_user(...) first")
        return chat

    def _chat(self, call: _Call, name: str = "chat_id") -> Chat:
        raw = call.text(name).strip()
        if not raw:
            raise BotApiError(400, CHAT_ID_EMPTY)
        if raw.startswith("@"):
            wanted = raw[1:].lower()
            found = [c for c in self.chats.values() if c.type != "private" and (c.username or "").lower() == wanted]
            if not found:
                raise BotApiError(400, CHAT_NOT_FOUND)
            return found[0]
        chat = self.chats.get(call.integer(name))
        if chat is None:
            raise BotApiError(400, CHAT_NOT_FOUND)
        return chat

    def _writable_chat(self, call: _Call) -> Chat:
        chat = self._chat(call)
        if chat.user is not None:
            if chat.user.blocked:
                raise BotApiError(403, BLOCKED)
            if not chat.user.started:
                raise BotApiError(403, CANT_INITIATE)
        return chat

    def _formatted(self, call: _Call) -> tuple[FormattedText, str | None]:
        """The text and parse mode, as get_input_message_text reads them."""
        source = call.text("text")
        if not source:
            raise BotApiError(400, TEXT_EMPTY)
        if len(source.encode("utf-8", "surrogatepass")) > MAX_SOURCE_BYTES:
            raise BotApiError(400, SOURCE_TOO_LONG)
        mode = call.text("parse_mode") or None
        lowered = (mode or "").lower()
        if lowered in ("", "none"):
            entities = call.json("entities", "Bad Request: can't parse entities JSON object") or []
            formatted = FormattedText(source, entities if isinstance(entities, list) else [])
        elif lowered == "html":
            try:
                formatted = parse_html(source)
            except HtmlError as error:
                raise BotApiError(400, f"Bad Request: can't parse entities: {error}") from None
            for note in formatted.sloppy:
                self.violations.append(f"{call.method.name}: HTML text has {note}; Telegram lets it pass")
            for entity in formatted.entities:
                if entity["type"] == "code":
                    entity.pop("language", None)
        elif lowered in ("markdown", "markdownv2"):
            self.violations.append(f"{call.method.name}: parse_mode {mode} is not checked by the fake (use HTML)")
            formatted = FormattedText(source, [])
        else:
            raise BotApiError(400, "Bad Request: unsupported parse_mode")
        if not formatted.text.strip():
            raise BotApiError(400, TEXT_EMPTY)
        return formatted, mode

    def _reply_markup(self, call: _Call) -> JSON | None:
        """get_reply_markup: the JSON checks the server does; the button checks come at sending
        (`_check_buttons`), as Telegram makes them."""
        markup = call.json("reply_markup", "Bad Request: can't parse reply keyboard markup JSON object")
        if markup is None:
            return None
        if not isinstance(markup, dict):
            raise BotApiError(400, "Bad Request: object expected as reply markup")
        rows = markup.get("inline_keyboard")
        if rows is None:
            return markup
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            raise BotApiError(
                400, 'Bad Request: field "inline_keyboard" of the InlineKeyboardMarkup must be an Array of Arrays'
            )
        prefix = "Bad Request: can't parse inline keyboard button: "
        for row in rows:
            for button in row:
                if not isinstance(button, dict):
                    raise BotApiError(400, prefix + "InlineKeyboardButton must be an Object")
                if not isinstance(button.get("text"), str):
                    why = 'Field "text" must be of type String' if "text" in button else 'Can\'t find field "text"'
                    raise BotApiError(400, prefix + why)
                # The button's kind: a non-empty url or callback_data, or any other kind's field.
                kinds = set(button) - {"text", "icon_custom_emoji_id", "style"}
                if not (button.get("url") or button.get("callback_data") or kinds - {"url", "callback_data"}):
                    raise BotApiError(400, prefix + "Text buttons are unallowed in the inline keyboard")
        return markup

    @staticmethod
    def _check_buttons(markup: JSON | None) -> None:
        for row in (markup or {}).get("inline_keyboard", []):
            for button in row:
                data = button.get("callback_data")
                if isinstance(data, str) and data and len(data.encode()) > MAX_CALLBACK_DATA_BYTES:
                    raise BotApiError(400, BUTTON_DATA_INVALID)
                url = button.get("url")
                if isinstance(url, str) and url and urlsplit(url).scheme not in ("http", "https", "tg"):
                    raise BotApiError(400, BUTTON_URL_INVALID)

    def _check_text_length(self, formatted: FormattedText) -> None:
        if len(formatted.text) > MAX_TEXT_LENGTH:
            raise BotApiError(400, TEXT_TOO_LONG)

    def _live_message(self, chat_id: int, message_id: int) -> Message | None:
        message = self._messages.get(chat_id, {}).get(message_id)
        return None if message is None or message.deleted else message

    def _store(
        self,
        chat_id: int,
        from_id: int,
        text: str,
        *,
        shown: str,
        entities: list[JSON],
        parse_mode: str | None = None,
        reply_markup: JSON | None = None,
        reply_to: int | None = None,
        link_preview_options: JSON | None = None,
        disable_notification: bool = False,
    ) -> Message:
        message_id = self._next_message_id.get(chat_id, 1)
        self._next_message_id[chat_id] = message_id + 1
        message = Message(
            message_id,
            chat_id,
            text,
            parse_mode,
            reply_markup,
            reply_to,
            from_id=from_id,
            date=int(self.clock()),
            shown=shown,
            entities=entities,
            link_preview_options=link_preview_options,
            disable_notification=disable_notification,
        )
        self._messages.setdefault(chat_id, {})[message_id] = message
        return message

    def _message_json(self, message: Message, *, with_reply: bool = True) -> JSON:
        chat = self.chats[message.chat_id]
        sender = self._bot_json() if message.from_id == self.bot_id else self.users[message.from_id].to_json()
        out: JSON = {"message_id": message.message_id, "from": sender, "chat": chat.to_json(), "date": message.date}
        if message.edit_date is not None:
            out["edit_date"] = message.edit_date
        replied = self._live_message(message.chat_id, message.reply_to) if message.reply_to else None
        if with_reply and replied is not None:
            out["reply_to_message"] = self._message_json(replied, with_reply=False)
        out["text"] = message.shown
        if message.entities:
            out["entities"] = message.entities
        if message.link_preview_options:
            out["link_preview_options"] = message.link_preview_options
        if message.reply_markup and "inline_keyboard" in message.reply_markup:
            out["reply_markup"] = {"inline_keyboard": message.reply_markup["inline_keyboard"]}
        return out

    def _new_update(self, kind: str, payload: JSON) -> JSON:
        update = {"update_id": next(self._update_ids), kind: payload}
        self._check_update(update)
        return update

    def _check_update(self, update: JSON) -> None:
        problems = self.api.problems("Update", update, "update")
        if problems:
            self.violations.append(f"an update breaks the description: {problems}")

    def _editable(self, call: _Call) -> Message:
        if not call.has("chat_id") and call.integer("message_id") <= 0:
            if call.has("inline_message_id"):
                raise BotApiError(500, "Internal Server Error: the fake does not model inline messages")
            raise BotApiError(400, MESSAGE_ID_MISSING)
        chat = self._chat(call)
        message = self._live_message(chat.chat_id, call.integer("message_id"))
        if message is None:
            raise BotApiError(400, EDIT_NOT_FOUND)
        if message.from_id != self.bot_id:
            raise BotApiError(400, CANT_EDIT)
        return message

    @staticmethod
    def _same_markup(a: JSON | None, b: JSON | None) -> bool:
        def rows(markup: JSON | None) -> Any:
            return (markup or {}).get("inline_keyboard") or None

        return bool(rows(a) == rows(b))

    def _scope_key(self, scope: JSON) -> str:
        return json.dumps(scope, sort_keys=True, separators=(",", ":"))

    def _scope(self, call: _Call) -> str:
        scope = call.json("scope", "Bad Request: can't parse BotCommandScope JSON object")
        if scope is None:
            return self._scope_key({"type": "default"})
        if not isinstance(scope, dict) or not isinstance(scope.get("type"), str):
            raise BotApiError(400, "Bad Request: can't parse BotCommandScope JSON object")
        kinds = {"default", "all_private_chats", "all_group_chats", "all_chat_administrators"}
        if scope["type"] in kinds:
            return self._scope_key({"type": scope["type"]})
        if scope["type"] not in ("chat", "chat_administrators", "chat_member"):
            raise BotApiError(400, "Bad Request: unsupported bot command scope specified")
        chat = self._chat(_Call(call.method, {"chat_id": str(scope.get("chat_id", ""))}))
        key: JSON = {"type": scope["type"], "chat_id": chat.chat_id}
        if scope["type"] == "chat_member":
            key["user_id"] = int(scope.get("user_id", 0))
        return self._scope_key(key)

    # The methods: `_m_<lower-case name>`, each answering a result (or (result, description)).

    async def _m_getme(self, call: _Call) -> Any:
        return self._bot_json(full=True)

    async def _m_sendmessage(self, call: _Call) -> Any:
        formatted, mode = self._formatted(call)
        reply = call.json("reply_parameters", "Bad Request: can't parse reply parameters JSON object")
        if reply is not None and (not isinstance(reply, dict) or not _is_int(reply.get("message_id"))):
            raise BotApiError(400, "Bad Request: can't parse reply parameters JSON object")
        markup = self._reply_markup(call)
        preview = call.json("link_preview_options", "Bad Request: can't parse link preview options JSON object")
        if preview is None and call.flag("disable_web_page_preview"):
            preview = {"is_disabled": True}
        chat = self._writable_chat(call)
        reply_to: int | None = None
        allow_without = call.flag("allow_sending_without_reply")
        if reply is not None:
            reply_to = reply["message_id"]
            allow_without = bool(reply.get("allow_sending_without_reply"))
            if reply.get("chat_id") not in (None, chat.chat_id):
                self.violations.append("sendMessage: replies to another chat are not modelled")
        elif call.has("reply_to_message_id"):  # the pre-7.0 field: the server still reads it
            reply_to = call.integer("reply_to_message_id")
        if reply_to is not None and self._live_message(chat.chat_id, reply_to) is None:
            if not allow_without:
                raise BotApiError(400, REPLY_NOT_FOUND)
            reply_to = None
        self._check_text_length(formatted)
        self._check_buttons(markup)
        message = self._store(
            chat.chat_id,
            self.bot_id,
            call.text("text"),
            shown=formatted.text,
            entities=formatted.entities,
            parse_mode=mode,
            reply_markup=markup,
            reply_to=reply_to,
            link_preview_options=preview if isinstance(preview, dict) else None,
            disable_notification=call.flag("disable_notification"),
        )
        return self._message_json(message)

    async def _m_editmessagetext(self, call: _Call) -> Any:
        formatted, mode = self._formatted(call)
        markup = self._reply_markup(call)
        preview = call.json("link_preview_options", "Bad Request: can't parse link preview options JSON object")
        message = self._editable(call)
        self._check_text_length(formatted)
        self._check_buttons(markup)
        if (
            formatted.text == message.shown
            and formatted.entities == message.entities
            and self._same_markup(markup, message.reply_markup)
        ):
            raise BotApiError(400, NOT_MODIFIED)
        message.history.append(message.text)
        message.text, message.parse_mode, message.shown = call.text("text"), mode, formatted.text
        message.entities = formatted.entities
        message.reply_markup = markup  # no reply_markup: the keyboard goes, as in Telegram
        if isinstance(preview, dict):
            message.link_preview_options = preview
        message.edits += 1
        message.edit_date = int(self.clock())
        return self._message_json(message)

    async def _m_editmessagereplymarkup(self, call: _Call) -> Any:
        markup = self._reply_markup(call)
        message = self._editable(call)
        self._check_buttons(markup)
        if self._same_markup(markup, message.reply_markup):
            raise BotApiError(400, NOT_MODIFIED)
        message.reply_markup = markup
        message.edits += 1
        message.edit_date = int(self.clock())
        return self._message_json(message)

    async def _m_deletemessage(self, call: _Call) -> Any:
        if call.integer("message_id") <= 0:
            raise BotApiError(400, MESSAGE_ID_MISSING)
        chat = self._chat(call)
        message = self._live_message(chat.chat_id, call.integer("message_id"))
        if message is None:
            raise BotApiError(400, DELETE_NOT_FOUND)
        if message.from_id != self.bot_id and chat.type != "private" and not chat.bot_is_admin:
            raise BotApiError(400, CANT_DELETE)
        message.deleted = True
        return True

    async def _m_answercallbackquery(self, call: _Call) -> Any:
        query = self._open_queries.pop(call.text("callback_query_id"), None)
        if query is None or time.monotonic() - query.issued_at > self.callback_query_ttl:
            raise BotApiError(400, QUERY_TOO_OLD)
        if len(call.text("text")) > 200:
            self.violations.append("answerCallbackQuery: text over 200 characters (Telegram cuts it)")
        pressed = query.update["callback_query"]
        self.callback_answers.append(
            {
                "callback_query_id": call.text("callback_query_id"),
                "text": call.text("text") or None,
                "show_alert": call.flag("show_alert"),
                "url": call.text("url") or None,
                "cache_time": call.integer("cache_time"),
                "data": pressed.get("data"),
                "user_id": pressed["from"]["id"],
                "chat_id": pressed["message"]["chat"]["id"],
                "message_id": pressed["message"]["message_id"],
            }
        )
        return True

    async def _m_setwebhook(self, call: _Call) -> Any:
        if call.flag("drop_pending_updates"):
            self._queue.clear()
        url = call.text("url")
        if not url:
            return await self._m_deletewebhook(call)
        try:
            parts = urlsplit(url if "://" in url else f"https://{url}")
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise BotApiError(400, WEBHOOK_BAD_URL) from None
        if not parts.hostname:
            raise BotApiError(400, WEBHOOK_BAD_URL)
        if parts.scheme != "https":
            raise BotApiError(400, WEBHOOK_NOT_HTTPS)
        if port not in WEBHOOK_PORTS:
            raise BotApiError(400, WEBHOOK_BAD_PORT)
        secret = call.text("secret_token")
        if len(secret) > 256:
            raise BotApiError(400, SECRET_TOO_LONG)
        if not SECRET_TOKEN.fullmatch(secret):
            raise BotApiError(400, SECRET_BAD_CHARS)
        allowed = call.json("allowed_updates", "Bad Request: can't parse allowed updates JSON object")
        if allowed is not None and not (isinstance(allowed, list) and all(isinstance(a, str) for a in allowed)):
            raise BotApiError(400, "Bad Request: can't parse allowed updates JSON object")
        webhook = Webhook(
            url,
            secret,
            allowed,
            max(1, min(call.integer("max_connections", 40), 100)),
            call.has("certificate"),
            call.text("ip_address") or None,
        )
        already = self.webhook is not None and (self.webhook.url, self.webhook.secret_token) == (url, secret)
        self.webhook = webhook
        self._wake()  # a getUpdates long poll in progress gets its Conflict
        return True, "Webhook is already set" if already else "Webhook was set"

    async def _m_deletewebhook(self, call: _Call) -> Any:
        if call.flag("drop_pending_updates"):
            self._queue.clear()
        was_set = self.webhook is not None
        self.webhook = None
        return True, "Webhook was deleted" if was_set else "Webhook is already deleted"

    async def _m_getwebhookinfo(self, call: _Call) -> Any:
        hook = self.webhook
        info: JSON = {
            "url": hook.url if hook else "",
            "has_custom_certificate": bool(hook and hook.has_custom_certificate),
            "pending_update_count": len(self._queue),
        }
        if hook is not None:
            if hook.ip_address:
                info["ip_address"] = hook.ip_address
            if hook.last_error_date is not None:
                info["last_error_date"] = hook.last_error_date
                info["last_error_message"] = hook.last_error_message
            info["max_connections"] = hook.max_connections
            if hook.allowed_updates is not None:
                info["allowed_updates"] = hook.allowed_updates
        return info

    async def _m_setmycommands(self, call: _Call) -> Any:
        raw = call.json("commands", "Bad Request: can't parse commands JSON object")
        if raw is not None and not isinstance(raw, list):
            raise BotApiError(400, "Bad Request: expected an Array of BotCommand")
        commands: list[JSON] = []
        for item in raw or []:
            if not isinstance(item, dict):
                raise BotApiError(400, "Bad Request: can't parse BotCommand: expected an Object")
            for name in ("command", "description"):
                if not isinstance(item.get(name), str):
                    raise BotApiError(400, f"Bad Request: can't parse BotCommand: Can't find field \"{name}\"")
            commands.append(item)
        scope = self._scope(call)
        if len(commands) > 100:
            raise BotApiError(400, "Bad Request: BOT_COMMANDS_TOO_MUCH")
        kept: list[JSON] = []
        for item in commands:
            command = item["command"].strip().removeprefix("/")  # TDLib trims and drops one leading '/'
            description = item["description"].strip()
            if not command:
                raise BotApiError(400, "Bad Request: command must be non-empty")
            if len(command) > 32:
                raise BotApiError(400, "Bad Request: command length must not exceed 32")
            if not description:
                raise BotApiError(400, "Bad Request: command description must be non-empty")
            if len(description) > 256:
                raise BotApiError(400, "Bad Request: command description length must not exceed 256")
            if not BOT_COMMAND.fullmatch(command):
                raise BotApiError(400, "Bad Request: BOT_COMMAND_INVALID")
            if item["command"] != command:
                self.violations.append(f"setMyCommands: command {item['command']!r} stored as {command!r}")
            kept.append({"command": command, "description": description})
        language = call.text("language_code")
        if language and not re.fullmatch(r"[a-z]{2}", language):
            raise BotApiError(400, "Bad Request: invalid language code specified")
        self._commands[(scope, language)] = kept
        return True

    async def _m_getmycommands(self, call: _Call) -> Any:
        return list(self._commands.get((self._scope(call), call.text("language_code")), []))

    async def _m_deletemycommands(self, call: _Call) -> Any:
        self._commands.pop((self._scope(call), call.text("language_code")), None)
        return True

    async def _m_getchat(self, call: _Call) -> Any:
        chat = self._chat(call)
        info = chat.to_json() | {
            "accent_color_id": 0,
            "max_reaction_count": 11,
            "accepted_gift_types": {
                "unlimited_gifts": False,
                "limited_gifts": False,
                "unique_gifts": False,
                "premium_subscription": False,
                "gifts_from_channels": False,
            },
        }
        if chat.user is not None and chat.user.username:
            info["active_usernames"] = [chat.user.username]
        return info

    async def _m_getupdates(self, call: _Call) -> Any:
        if self.webhook is not None:
            raise BotApiError(409, CONFLICT_WEBHOOK)
        poll = next(self._polls)
        self._current_poll = poll
        self._wake()  # an older long poll still waiting is terminated by this one
        if call.has("allowed_updates"):
            allowed = call.json("allowed_updates", "Bad Request: can't parse allowed updates JSON object")
            self._allowed_updates = allowed if isinstance(allowed, list) else None
        offset = call.integer("offset")
        if offset > 0:
            self._queue = [u for u in self._queue if u["update_id"] >= offset]
        elif offset < 0:
            self._queue = self._queue[offset:]
        limit = call.integer("limit", 100)
        limit = limit if 1 <= limit <= 100 else 100
        deadline = time.monotonic() + max(call.integer("timeout"), 0)
        while True:
            self._queue = [u for u in self._queue if self._wanted(u)]
            if self._queue or self._closing:
                return self._queue[:limit]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            event = self._wakeup
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)
            if self._current_poll != poll:
                raise BotApiError(409, CONFLICT_POLLING)
            if self.webhook is not None:
                raise BotApiError(409, CONFLICT_WEBHOOK)

    def _wanted(self, update: JSON) -> bool:
        # Stricter than Telegram in one way: a change of allowed_updates also drops queued updates
        # (Telegram may still send those created before the change).
        kind = _update_kind(update)
        if self._allowed_updates:
            return kind in self._allowed_updates
        return kind not in NOT_SENT_BY_DEFAULT
