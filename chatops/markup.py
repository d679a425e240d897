"""GitHub-flavoured replies re-spelt for chat: Slack mrkdwn and Telegram HTML. Pure text."""

from __future__ import annotations

import html
import re
from typing import Final

# The subset of markdown the bot's own replies use: `code`, **bold**, [text](url), and \-escapes.
_TOKEN: Final = re.compile(
    # Bold and link labels may hold \-escaped text (escape_markdown's output): an escaped * or ] is text.
    r"(?P<code>`[^`\n]+`)|\*\*(?P<bold>(?:\\.|[^\\])+?)\*\*|\[(?P<label>(?:\\.|[^\]\\\n])+)\]"
    r"\((?P<url>https?://[^)\s\x00-\x1f\x7f]+)\)|\\(?P<esc>.)|"
    r"&amp;(?P<amp>)|(?P<zw>@\u200b)"
)


def _pieces(text: str) -> list[tuple[str, str, str]]:
    """(kind, text, url) runs: kind is text, code, bold or link."""
    # A lone surrogate (JSON can carry one) is no character at all: Slack and Telegram refuse it.
    text = text.encode("utf-8", "replace").decode("utf-8")
    out: list[tuple[str, str, str]] = []
    position = 0
    for match in _TOKEN.finditer(text):
        if match.start() > position:
            out.append(("text", text[position : match.start()], ""))
        if match["code"]:
            out.append(("code", match["code"][1:-1], ""))
        elif match["bold"] is not None:
            out.append(("bold", _plain(match["bold"]), ""))
        elif match["label"] is not None:
            out.append(("link", _plain(match["label"]), match["url"]))
        elif match["esc"] is not None:
            out.append(("text", match["esc"], ""))
        elif match["amp"] is not None:
            out.append(("text", "&", ""))
        else:
            out.append(("text", "@", ""))
        position = match.end()
    if position < len(text):
        out.append(("text", text[position:], ""))
    return out


def _plain(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text).replace("&amp;", "&").replace("@\u200b", "@")


def slack_escape(text: str) -> str:
    """Slack's three control characters; nothing else needs escaping in mrkdwn."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_slack(markdown: str) -> str:
    parts = []
    for kind, text, url in _pieces(markdown):
        if kind == "code":
            parts.append(f"`{slack_escape(text)}`")
        elif kind == "bold":
            parts.append(f"*{slack_escape(text)}*")
        elif kind == "link":
            safe = url.replace("|", "%7C").replace("<", "%3C").replace(">", "%3E")
            parts.append(f"<{safe}|{slack_escape(text)}>")
        else:
            # "@alice" must not ping a Slack user (mentions are <@U123>, so plain text is already safe).
            parts.append(slack_escape(text))
    return "".join(parts)


def to_telegram(markdown: str) -> str:
    parts = []
    for kind, text, url in _pieces(markdown):
        if kind == "code":
            parts.append(f"<code>{html.escape(text, quote=False)}</code>")
        elif kind == "bold":
            parts.append(f"<b>{html.escape(text, quote=False)}</b>")
        elif kind == "link":
            parts.append(f'<a href="{html.escape(url)}">{html.escape(text, quote=False)}</a>')
        else:
            parts.append(html.escape(text, quote=False))
    return "".join(parts)
