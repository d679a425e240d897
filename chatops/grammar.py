"""The /ship command grammar shared by PR comments, Slack and Telegram: text in, typed commands out."""

from __future__ import annotations

import difflib
import enum
import re
from dataclasses import dataclass
from typing import Final


class Verb(enum.StrEnum):
    SHIP = "ship"
    NOW = "now"
    CANCEL = "cancel"
    STATUS = "status"
    HOLD = "hold"
    UNHOLD = "unhold"
    HELP = "help"
    CALENDAR = "calendar"
    ROLLBACK = "rollback"


@dataclass(frozen=True, slots=True)
class Command:
    """One understood /ship line. `when` is the schedule text as typed (SHIP only; None: next slot)."""

    verb: Verb
    when: str | None
    dry_run: bool
    line: str
    arg: str | None = None  # CALENDAR only: "link" or "unlink"
    force: bool = False  # NOW only: outside the windows, for maintainers and admins


@dataclass(frozen=True, slots=True)
class CommandError:
    """A line addressed to us that we could not read: `message` quotes it and says why."""

    line: str
    message: str
    suggestions: tuple[str, ...]


ParseResult = Command | CommandError

PREFIX: Final = "/ship"
MAX_WHEN: Final = 100
# One comment cannot fan out into a burst of releases, cancels and holds.
MAX_COMMANDS_PER_COMMENT: Final = 5
DRY_RUN_FLAGS: Final = ("--dry-run", "-n")
FORCE_FLAG: Final = "--force"
_FLAGS: Final = (*DRY_RUN_FLAGS, FORCE_FLAG)
CALENDAR_ARGS: Final = ("link", "unlink")
# Verbs other than SHIP that a line can name; SHIP itself is the absence of one.
_NAMED_VERBS: Final = tuple(verb for verb in Verb if verb is not Verb.SHIP)
_DRY_RUN_VERBS: Final = frozenset({Verb.SHIP, Verb.NOW})
_VERB_CUTOFF: Final = 0.75
# Words that begin a time are never read as a misspelt verb, however close they come to one.
_TIME_WORDS: Final = frozenset(
    {
        *("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"),
        *("mon", "tue", "tues", "wed", "weds", "thu", "thur", "thurs", "fri", "sat", "sun"),
        *("today", "tonight", "tomorrow", "tmrw", "next", "this", "in", "at", "on", "noon", "midnight"),
        *("morning", "afternoon", "evening", "asap", "soon", "later", "yesterday"),
        *("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec"),
    }
)
_QUOTE_LIMIT: Final = 120

# A list, not a table: it has to read well in GitHub, Slack and Telegram alike.
HELP_TEXT: Final = """\
**Release Secretary** reads commands at the start of a comment line:
- `/ship`: book the next free release slot
- `/ship WHEN`: book a time, e.g. `/ship friday 14:00`, `/ship tomorrow`, `/ship next tuesday afternoon`, \
`/ship in 2 hours`, `/ship dec 1 2pm`, `/ship 2026-12-01 14:00 Europe/Berlin`
- `/ship now`: release as soon as the checks allow (`/ship now --force`: outside the release windows and \
the config's freezes, for people with maintain or admin access; freeze calendars and other releases still count)
- `/ship cancel`: cancel the booked release
- `/ship status`: show where the release stands
- `/ship hold` and `/ship unhold`: pause the release, and let it go on
- `/ship rollback`: after a release (or a failed deploy), run the repository's rollback workflow
- `/ship calendar`: where releases are booked, with a link to subscribe to the calendar
- `/ship calendar link`: connect your own Google calendar, so releases avoid your busy times; \
`/ship calendar unlink` disconnects it
- `/ship help`: this help

Add `--dry-run` (or `-n`) to `/ship` or `/ship now` to see what would happen without doing it.
"""


def parse_line(line: str) -> ParseResult | None:
    """Read one line; None when it is not addressed to us (it does not start with /ship).

    Only the first line of multi-line text is read; use parse_comment for whole messages.
    """
    text = line.split("\n", 1)[0].split("\r", 1)[0].strip()
    if not text.startswith("/"):
        return None
    head, *tail = text.split(maxsplit=1)
    rest = tail[0] if tail else ""
    if head.lower() != PREFIX:
        if _near_prefix(head.lower()):
            fixed = f"{PREFIX} {rest}".strip()
            return _error(
                text, f"`{_short(head, 30)}` is not a command", (fixed,), hint=f"did you mean `{_short(fixed)}`?"
            )
        return None
    return _parse_args(text, rest)


def _parse_args(text: str, rest: str) -> ParseResult:
    tokens = rest.split()
    flags = [token for token in tokens if _flag(token) is not None]
    words = [token for token in tokens if _flag(token) is None]
    unknown = [flag for flag in flags if _flag(flag) not in _FLAGS]
    if unknown:
        bad = unknown[0]
        close = difflib.get_close_matches(_flag(bad) or bad, _FLAGS, n=1, cutoff=0.6)
        fixed = [_replace_token(text, bad, match) for match in close] or [_replace_token(text, bad, "")]
        known = ", ".join(f"`{flag}`" for flag in _FLAGS)
        return _error(text, f"`{_short(bad, 30)}` is not an option (the options are {known})", tuple(fixed))
    force = any(_flag(flag) == FORCE_FLAG for flag in flags)
    dry_run = any(_flag(flag) in DRY_RUN_FLAGS for flag in flags)
    first = _verb(words[0]) if words else None
    if force and (first is not Verb.NOW or len(words) > 1):
        return _error(
            text,
            f"`{FORCE_FLAG}` only goes with `{PREFIX} now` (a release outside the windows, for maintainers)",
            (f"{PREFIX} now {FORCE_FLAG}",),
        )

    verb = _verb(words[0]) if words else None
    if verb is Verb.CALENDAR and not dry_run and len(words) == 2 and words[1].lower().rstrip(".!") in CALENDAR_ARGS:
        return Command(verb, None, False, text, arg=words[1].lower().rstrip(".!"))
    if verb is not None:
        if len(words) > 1 and verb is Verb.CALENDAR:
            extra = " ".join(words[1:])
            return _error(
                text,
                f"`{PREFIX} calendar` takes `link`, `unlink` or nothing, but got `{_short(extra, 60)}`",
                tuple(f"{PREFIX} calendar {arg}".strip() for arg in ("", *CALENDAR_ARGS)),
            )
        if len(words) > 1:
            extra = " ".join(words[1:])
            suggestions: list[str] = [_canonical(verb, dry_run and verb in _DRY_RUN_VERBS)]
            if verb is Verb.NOW:  # "/ship now friday": perhaps they meant to book friday
                suggestions.append(f"{PREFIX} {extra}")
            return _error(
                text, f"`{PREFIX} {verb}` takes no argument, but got `{_short(extra, 60)}`", tuple(suggestions)
            )
        if dry_run and verb not in _DRY_RUN_VERBS:
            return _error(
                text,
                f"`--dry-run` only goes with a schedule (`{PREFIX}` or `{PREFIX} now`), not `{PREFIX} {verb}`",
                (_canonical(verb, False),),
            )
        return Command(verb, None, dry_run, text, force=force)

    # A single word close to a verb is a typo ("cancle"), unless it reads as a time ("friday").
    if len(words) == 1 and not _looks_like_time(words[0]):
        close = difflib.get_close_matches(words[0].lower(), _NAMED_VERBS, n=3, cutoff=_VERB_CUTOFF)
        if close:
            fixes = tuple(_canonical(Verb(match), False) for match in close)
            return _error(
                text, f"`{_short(words[0], 30)}` is not a command or a time", fixes, hint=f"did you mean `{fixes[0]}`?"
            )

    when = " ".join(words) if flags else rest
    if len(when) > MAX_WHEN:
        return _error(
            text,
            f"the time is too long ({len(when)} characters, at most {MAX_WHEN})",
            (f"{PREFIX} friday 14:00",),
        )
    return Command(Verb.SHIP, when or None, dry_run, text)


def parse_comment(body: str) -> list[ParseResult]:
    """Every command in a comment's top-level lines, at most MAX_COMMANDS_PER_COMMENT.

    Quoted replies, code (fenced or indented) and HTML comments are not commands: people quote and
    document /ship lines all the time, and the bot's own sticky comment carries a hidden marker.
    """
    results: list[ParseResult] = []
    fence: str | None = None
    in_html_comment = False
    for raw_line in body.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if fence is not None:
            if _closes_fence(raw_line, fence):
                fence = None
            continue
        line, in_html_comment = _strip_html_comments(raw_line, in_html_comment)
        if not line.strip():
            continue
        opened = _FENCE_OPEN.match(line)
        if opened is not None:
            fence = opened["fence"]
            continue
        if line.startswith(("    ", "\t")) or _QUOTE.match(line):
            continue
        result = parse_line(line)
        if result is None:
            continue
        results.append(result)
        if len(results) == MAX_COMMANDS_PER_COMMENT:
            break
    return results


_FENCE_OPEN = re.compile(r" {0,3}(?P<fence>`{3,}(?=[^`]*$)|~{3,})")
_QUOTE = re.compile(r" {0,3}>")
_HTML_OPEN: Final = "<!--"
_HTML_CLOSE: Final = "-->"


def _closes_fence(line: str, fence: str) -> bool:
    match = re.fullmatch(r" {0,3}(?P<close>`{3,}|~{3,})\s*", line)
    return match is not None and match["close"][0] == fence[0] and len(match["close"]) >= len(fence)


def _strip_html_comments(line: str, inside: bool) -> tuple[str, bool]:
    """The line with HTML comments removed, and whether a comment is still open at its end."""
    kept: list[str] = []
    position = 0
    while position <= len(line):
        if inside:
            end = line.find(_HTML_CLOSE, position)
            if end < 0:
                return "".join(kept), True
            position, inside = end + len(_HTML_CLOSE), False
        else:
            start = line.find(_HTML_OPEN, position)
            if start < 0:
                kept.append(line[position:])
                break
            kept.append(line[position:start])
            position, inside = start + len(_HTML_OPEN), True
    return "".join(kept), inside


def _near_prefix(word: str) -> bool:
    """/shipit, /shp, /sihp: one letter off /ship, but not a different word like /skip or /shop."""
    if not word.startswith("/") or word == PREFIX:
        return False
    name, target = word[1:], PREFIX[1:]
    if name.startswith(target):  # /shipit, /ship-it, /ships
        return len(name) <= len(target) + 3
    if len(name) == len(target) - 1:  # a letter dropped: /shp, /sip
        return any(target[:i] + target[i + 1 :] == name for i in range(len(target)))
    if len(name) == len(target):  # two letters swapped: /sihp, /hsip
        return any(target[:i] + target[i + 1] + target[i] + target[i + 2 :] == name for i in range(len(target) - 1))
    return False


def _flag(token: str) -> str | None:
    """The option a token names ("--dry-run", "-n"), lower-cased; None when it is not an option."""
    # Chat apps and phones turn "--" into a dash ("—dry-run"); read it as the "--" it was.
    token = re.sub(r"^[\u2012-\u2015\u2212]", "--", token).lower()
    if len(token) > 1 and token[0] == "-" and (token[1].isalpha() or (token[1] == "-" and len(token) > 2)):
        return token
    return None


def _verb(word: str) -> Verb | None:
    # "cancel." and "status!" are still the verb; people punctuate.
    word = word.lower().rstrip(".!")
    return Verb(word) if word in _NAMED_VERBS else None


def _looks_like_time(word: str) -> bool:
    lowered = word.lower()
    return lowered in _TIME_WORDS or any(char.isdigit() for char in lowered)


def _canonical(verb: Verb, dry_run: bool) -> str:
    command = PREFIX if verb is Verb.SHIP else f"{PREFIX} {verb}"
    return f"{command} --dry-run" if dry_run else command


def _replace_token(text: str, old: str, new: str) -> str:
    return " ".join(new if token == old else token for token in text.split() if new or token != old)


def _short(text: str, limit: int = _QUOTE_LIMIT) -> str:
    """Messages quote what was typed, but a pasted essay should not be echoed back whole."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _quote(text: str) -> str:
    return f"\u201c{_short(text)}\u201d"


def _error(text: str, why: str, suggestions: tuple[str, ...], *, hint: str = "") -> CommandError:
    tail = f"; {hint}" if hint else ""
    if not hint and suggestions:
        tail = f"; try `{_short(suggestions[0])}`"
    return CommandError(text, f"I couldn't read {_quote(text)}: {why}{tail}", suggestions)
