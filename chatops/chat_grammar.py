"""The chat form of the grammar: `/ship owner/repo#42 ...` names its PR, `/release ...` manages the chat.

A PR comment knows its PR; a chat message does not, so in Slack and Telegram the first word after
`/ship` names it (`acme/webshop#42`, or the PR's URL), and the rest is read by the same parser as a PR
comment. `/release` covers what only a chat needs: status, subscriptions, linking, help.
"""

from __future__ import annotations

import difflib
import enum
import re
from dataclasses import dataclass
from typing import Final

from .grammar import PREFIX, Command, CommandError, ParseResult, Verb, _near_prefix, parse_line
from .grammar import _short as _grammar_short

RELEASE: Final = "/release"


class ChatVerb(enum.StrEnum):
    SHIP = "ship"  # a /ship command for a named PR: `command` says which
    STATUS = "status"
    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"
    LINK = "link"
    UNLINK = "unlink"
    HELP = "help"


@dataclass(frozen=True, slots=True)
class ChatCommand:
    verb: ChatVerb
    line: str
    repo: str | None = None  # owner/name
    pr: int | None = None
    command: Command | None = None  # SHIP only


ChatParse = ChatCommand | CommandError

_REPO: Final = r"(?P<repo>[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100})"
_TARGET: Final = re.compile(rf"^{_REPO}(?:#(?P<pr>\d{{1,9}}))?$")
# Slack wraps links in <...>, with a label after | when someone typed the link without its scheme.
_PR_URL: Final = re.compile(rf"^<?https?://[^/\s|]+/{_REPO}/pull/(?P<pr>\d{{1,9}})(?:[/?#][^\s>|]*)?(?:\|[^>]*)?>?$")
_RELEASE_VERBS: Final = tuple(v.value for v in ChatVerb if v is not ChatVerb.SHIP)
_EXAMPLE: Final = "acme/webshop#42"
_FALLBACK: Final = (f"{PREFIX} {_EXAMPLE} friday 3pm", f"{RELEASE} help")

CHAT_HELP: Final = f"""\
**Release Secretary** in chat: every command names its pull request.
- `/ship {_EXAMPLE}`: book the next free release slot
- `/ship {_EXAMPLE} friday 3pm`: book a time (`tomorrow`, `next tuesday afternoon`, `dec 1 14:00 Europe/Berlin`)
- `/ship {_EXAMPLE} now`, `cancel`, `hold`, `unhold`, `status`, `rollback`: as on the pull request
- `/release status [owner/repo[#42]]`: where releases stand
- `/release subscribe owner/repo`: follow a repository's releases in this chat (needs write access); \
`/release unsubscribe owner/repo` stops it
- `/release link`: link your chat account to your GitHub login (privately); `/release unlink` undoes it
- `/release help`: this help
You act as your linked GitHub login, with exactly the permissions GitHub gives it on the repository."""


def parse_chat(text: str, *, bot_username: str | None = None) -> ChatParse | None:
    """Read a chat message; None when it is not addressed to us.

    `bot_username` (Telegram) strips `/ship@BotName`; a command addressed to another bot is not ours.
    Every suggestion an error offers is itself a command that reads."""
    parsed = _parse(text, bot_username)
    if isinstance(parsed, CommandError):
        valid = tuple(s for s in parsed.suggestions if isinstance(_parse(s, None), ChatCommand))
        return CommandError(parsed.line, parsed.message, valid or _FALLBACK)
    return parsed


def _parse(text: str, bot_username: str | None) -> ChatParse | None:
    line = text.split("\n", 1)[0].strip()
    if not line.startswith("/"):
        return None
    head, *tail = line.split(maxsplit=1)
    rest = tail[0].strip() if tail else ""
    name, _, addressee = head.partition("@")
    if addressee and (bot_username is None or addressee.lower() != bot_username.lower()):
        return None
    name = name.lower()
    if name == RELEASE:
        return _parse_release(line, rest)
    if name == PREFIX:
        return _parse_ship(line, rest)
    # /shipit, /shp, /relase: a slip of the finger, not another bot's /skip or /shop.
    near = PREFIX if _near_prefix(name) else RELEASE if _near_release(name) else None
    if near is None:
        return None
    fixed = f"{near} {rest}".strip()
    again = _parse(fixed, None)
    suggestions = again.suggestions if isinstance(again, CommandError) else (fixed,)
    return CommandError(line, f"I couldn't read “{_short(line)}”: `{_short(head, 30)}` is not a command", suggestions)


def _parse_ship(line: str, rest: str) -> ChatParse:
    target, *more = rest.split(maxsplit=1) if rest else ("",)
    tail = more[0] if more else ""
    found = _target(target)
    if found is None:
        what = f"`{_short(target, 60)}` is not a pull request" if target else "it does not name a pull request"
        example = f"{PREFIX} {_EXAMPLE} {rest}".strip() if target and _TARGET.match(target) is None else ""
        suggestions = tuple(s for s in (example, f"{PREFIX} {_EXAMPLE}", f"{PREFIX} {_EXAMPLE} friday 3pm") if s)
        return CommandError(
            line,
            f"I couldn't read “{_short(line)}”: {what}. In chat, name it first: `{PREFIX} owner/repo#42 ...`",
            suggestions[:3],
        )
    repo, pr = found
    if pr is None:
        return CommandError(
            line,
            f"I couldn't read “{_short(line)}”: `{repo}` names a repository but not a pull request; add its number",
            (f"{PREFIX} {repo}#42 {tail}".strip(),),
        )
    parsed: ParseResult | None = parse_line(f"{PREFIX} {tail}".strip())
    if parsed is None:  # cannot happen: the line starts with /ship
        parsed = Command(Verb.SHIP, None, False, line)
    if isinstance(parsed, CommandError):
        # Say it the way a chat needs it: quoting the whole line, the commands with the PR named.
        named = f"{repo}#{pr}"
        inner = f"“{_grammar_short(f'{PREFIX} {tail}'.strip())}”"
        message = parsed.message.replace(inner, f"“{_short(line)}”", 1)
        message = re.sub(rf"`{re.escape(PREFIX)}(?=[ `])", f"`{PREFIX} {named}", message)
        suggestions = tuple(_with_target(s, named) for s in parsed.suggestions)
        return CommandError(line, message, suggestions)
    return ChatCommand(ChatVerb.SHIP, line, repo=repo, pr=pr, command=parsed)


def _parse_release(line: str, rest: str) -> ChatParse:
    words = rest.split()
    if not words:
        return ChatCommand(ChatVerb.HELP, line)
    word = words[0].lower().rstrip(".!")
    if word not in _RELEASE_VERBS:
        close = difflib.get_close_matches(word, _RELEASE_VERBS, n=3, cutoff=0.6)
        options = close or ["help", "status", "subscribe"]
        typed = next((w for w in words[1:] if _target(w) is not None), None)
        suggestions = tuple(_release_form(ChatVerb(c), typed) for c in options)
        return CommandError(
            line,
            f"I couldn't read “{_short(line)}”: `{_short(words[0], 30)}` is not a `{RELEASE}` command; "
            f"try `{suggestions[0]}`",
            suggestions,
        )
    verb = ChatVerb(word)
    args = words[1:]
    if verb in (ChatVerb.LINK, ChatVerb.UNLINK, ChatVerb.HELP):
        if args:
            return CommandError(
                line,
                f"I couldn't read “{_short(line)}”: `{RELEASE} {verb}` takes nothing after it",
                (f"{RELEASE} {verb}",),
            )
        return ChatCommand(verb, line)
    if verb is ChatVerb.STATUS and not args:
        return ChatCommand(verb, line)
    found = _target(args[0]) if len(args) == 1 else None
    if found is None:
        example = "acme/webshop" if verb is not ChatVerb.STATUS else _EXAMPLE
        got = f"`{_short(' '.join(args), 60)}` is not " if args else "it needs "
        return CommandError(
            line,
            f"I couldn't read “{_short(line)}”: {got}a repository like `acme/webshop`",
            (f"{RELEASE} {verb} {example}",),
        )
    repo, pr = found
    if pr is not None and verb is not ChatVerb.STATUS:
        return CommandError(
            line,
            f"I couldn't read “{_short(line)}”: a chat follows a whole repository, not one pull request",
            (f"{RELEASE} {verb} {repo}",),
        )
    return ChatCommand(verb, line, repo=repo, pr=pr)


def _release_form(verb: ChatVerb, typed: str | None) -> str:
    """`/release <verb>` with what it needs: the repository typed, else an example."""
    if verb in (ChatVerb.SUBSCRIBE, ChatVerb.UNSUBSCRIBE):
        found = _target(typed) if typed else None
        return f"{RELEASE} {verb} {found[0] if found else 'acme/webshop'}"
    if verb is ChatVerb.STATUS and typed:
        return f"{RELEASE} {verb} {typed}"
    return f"{RELEASE} {verb}"


def _near_release(word: str) -> bool:
    return word != RELEASE and len(word) >= 6 and difflib.SequenceMatcher(None, word, RELEASE).ratio() >= 0.85


def _target(word: str) -> tuple[str, int | None] | None:
    """`owner/repo`, `owner/repo#42` or the PR's URL (Slack wraps links in <...>)."""
    match = _TARGET.match(word) or _PR_URL.match(word)
    if match is None:
        return None
    pr = match["pr"]
    return match["repo"], int(pr) if pr is not None else None


def _with_target(suggestion: str, target: str) -> str:
    if suggestion.startswith(PREFIX):
        return f"{PREFIX} {target}{suggestion[len(PREFIX) :]}"
    return suggestion


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"
