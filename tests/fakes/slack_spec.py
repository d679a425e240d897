"""The Slack Web API methods the fake Slack knows: the vendored 2021 description plus the errata where Slack differs.

`tests/fixtures/slack/web_api_methods.json` (written by `reduce.py` from slackapi/slack-api-specs) gives each
method's parameters, whether it takes a JSON body, its documented errors and its example answer. Slack stopped
updating that description in 2021; where it and Slack's current method pages (docs.slack.dev/reference/methods)
or slack_sdk 3.48 disagree, the tables below say so, one line of why each, and the current docs win.
`check_arguments` then refuses a call the way Slack does: `invalid_arguments` for a missing required argument
(with `response_metadata.messages`, as Slack answers), the method's own error where it has one (`no_text`,
`users_list_not_supplied`), and the method's errors for arguments of the wrong type.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "slack"
METHODS_PATH = FIXTURES / "web_api_methods.json"
EVENT_WRAPPER_SCHEMA_PATH = FIXTURES / "slack_common_event_wrapper_schema.json"

TokenKind = Literal["bot", "app"]

# Parameters current docs list (and slack_sdk sends) that the 2021 description lacks. Slack accepts them.
ADDED_PARAMETERS: dict[str, dict[str, str]] = {
    # Message metadata (2022) and markdown_text (2025); blocks/attachments are there already.
    "chat.postMessage": {"metadata": "object", "markdown_text": "string"},
    "chat.update": {
        "metadata": "object",
        "markdown_text": "string",
        "file_ids": "string",
        "reply_broadcast": "boolean",
    },
    "chat.postEphemeral": {"markdown_text": "string"},
    # Without it, conversations.history/replies leave metadata out of the messages.
    "conversations.history": {"include_all_metadata": "boolean"},
    "conversations.replies": {"include_all_metadata": "boolean"},
    "conversations.open": {"prevent_creation": "boolean"},
}

# Arguments the description leaves optional but current docs mark required (and Slack refuses without).
NOW_REQUIRED: dict[str, tuple[str, ...]] = {
    "chat.delete": ("channel", "ts"),
    "conversations.history": ("channel",),
    "conversations.replies": ("channel", "ts"),
    "users.info": ("user",),
}

# Arguments of which at least one must be given, and the method's own error when none is.
ONE_OF: dict[str, tuple[tuple[str, ...], str]] = {
    "chat.postMessage": (("text", "blocks", "attachments", "markdown_text"), "no_text"),
    "chat.postEphemeral": (("text", "blocks", "attachments", "markdown_text"), "no_text"),
    "chat.update": (("text", "blocks", "attachments", "markdown_text", "metadata", "file_ids"), "no_text"),
    "conversations.open": (("channel", "users"), "users_list_not_supplied"),
}

# Arguments Slack reads as JSON when they come as strings (form bodies); a JSON body may send them as values.
JSON_ARGUMENTS = frozenset({"blocks", "attachments", "metadata"})

# Errors Slack answers on any method, beyond each method's documented list: the generic refusals of today's
# API (invalid_arguments, not_allowed_token_type for an xapp- token on a bot method and back, ratelimited with
# HTTP 429, invalid_cursor for a cursor Slack did not hand out) and the server errors a knob may inject.
COMMON_ERRORS = frozenset(
    {
        "invalid_arguments",
        "not_authed",
        "invalid_auth",
        "not_allowed_token_type",
        "ratelimited",
        "invalid_cursor",
        "invalid_json",
        "json_not_object",
        "invalid_post_type",
        "fatal_error",
        "internal_error",
        "service_unavailable",
        "request_timeout",
        "missing_scope",
    }
)

# Errors current docs list for a method that the description does not.
ADDED_ERRORS: dict[str, frozenset[str]] = {
    "chat.postMessage": frozenset(
        {"invalid_blocks", "invalid_metadata_format", "invalid_metadata_schema", "metadata_too_large"}
    ),
    "chat.update": frozenset({"invalid_blocks", "invalid_metadata_format", "invalid_metadata_schema"}),
    "chat.postEphemeral": frozenset({"invalid_blocks", "not_in_channel", "user_not_found"}),
    "conversations.history": frozenset({"not_in_channel"}),
    "conversations.replies": frozenset({"not_in_channel"}),
}


@dataclass(frozen=True)
class Param:
    name: str
    required: bool
    type: str  # "string" | "boolean" | "integer" | "number" | "object"


@dataclass(frozen=True)
class Method:
    """One Web API method as the fake serves it."""

    name: str
    accepts_json: bool
    params: Mapping[str, Param]
    errors: frozenset[str]
    example: Mapping[str, Any] | None
    token: TokenKind = "bot"
    one_of: tuple[tuple[str, ...], str] | None = None

    @property
    def required(self) -> list[str]:
        return [p.name for p in self.params.values() if p.required]


# Socket Mode (2021) is newer than the description: apps.connections.open takes no argument but the app-level
# token (xapp-, scope connections:write) and answers a single-use WebSocket URL.
ADDED_METHODS: dict[str, Method] = {
    "apps.connections.open": Method(
        name="apps.connections.open",
        accepts_json=False,
        params={},
        errors=frozenset({"not_authed", "invalid_auth", "not_allowed_token_type", "missing_scope"}),
        example={"ok": True, "url": "wss://wss-primary.slack.com/link/?ticket=12348&app_id=A0001"},
        token="app",
    )
}


class ArgumentError(Exception):
    """A call Slack refuses for its arguments: `error` is the answer's error, `messages` its explanation."""

    def __init__(self, error: str, messages: list[str] | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.messages = messages or []


@dataclass(frozen=True)
class WebApi:
    methods: Mapping[str, Method] = field(default_factory=dict)

    def get(self, name: str) -> Method | None:
        return self.methods.get(name)


def _method(name: str, raw: Mapping[str, Any]) -> Method:
    params = {
        p["name"]: Param(p["name"], bool(p["required"]), p["type"])
        for p in raw["parameters"]
        if p["name"] != "token"  # the token travels in the Authorization header; auth is checked on its own
    }
    for extra, kind in ADDED_PARAMETERS.get(name, {}).items():
        params.setdefault(extra, Param(extra, False, kind))
    for needed in NOW_REQUIRED.get(name, ()):
        params[needed] = Param(needed, True, params[needed].type)
    return Method(
        name=name,
        accepts_json=bool(raw["accepts_json"]),
        params=params,
        errors=frozenset(raw["errors"]) | ADDED_ERRORS.get(name, frozenset()),
        example=raw.get("example"),
        one_of=ONE_OF.get(name),
    )


@functools.cache
def load_web_api(path: Path = METHODS_PATH) -> WebApi:
    document = json.loads(path.read_text(encoding="utf-8"))
    methods = {name: _method(name, raw) for name, raw in document["methods"].items()}
    methods.update(ADDED_METHODS)
    return WebApi(methods)


@functools.cache
def load_event_wrapper_schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(EVENT_WRAPPER_SCHEMA_PATH.read_text(encoding="utf-8"))
    return loaded


def _present(value: Any) -> bool:
    return value is not None and value != "" and value != []


_TRUE = {"true", "1"}
_FALSE = {"false", "0"}


def _coerce(param: Param, value: Any) -> Any:
    """A form value (always a string) or a JSON value as the parameter's type; ValueError if it is not one."""
    if param.type == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, int | str) and str(value).lower() in _TRUE | _FALSE:
            return str(value).lower() in _TRUE
        raise ValueError(f"{param.name} must be a boolean")
    if param.type == "integer":
        if isinstance(value, bool):
            raise ValueError(f"{param.name} must be an integer")
        return int(value)
    if param.type == "number":
        float(value)
        return str(value)  # Slack ids and timestamps stay strings ("1700000000.000100")
    if param.name in JSON_ARGUMENTS:
        parsed = json.loads(value) if isinstance(value, str) else value
        return parsed
    return value if isinstance(value, str) else json.dumps(value)


def check_arguments(method: Method, raw: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments as the method reads them (typed); ArgumentError for what Slack refuses."""
    missing = [name for name in method.required if not _present(raw.get(name))]
    if missing:
        raise ArgumentError("invalid_arguments", [f"[ERROR] missing required field: {name}" for name in missing])
    if method.one_of is not None:
        names, error = method.one_of
        if not any(_present(raw.get(name)) for name in names):
            raise ArgumentError(error, [f"[ERROR] one of {', '.join(names)} is required"])
    args: dict[str, Any] = {}
    for name, value in raw.items():
        param = method.params.get(name)
        if param is None:
            args[name] = value  # Slack ignores arguments it does not know
            continue
        try:
            args[name] = _coerce(param, value)
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            error = {"blocks": "invalid_blocks", "metadata": "invalid_metadata_format"}.get(name, "invalid_arguments")
            raise ArgumentError(error, [f"[ERROR] {name}: {exc}"]) from exc
    return args
