"""`/ship ...` commands in PR comments: acknowledged with :eyes:, answered, and turned into release events."""

from __future__ import annotations

from gidgethub import routing, sansio
from gidgethub.abc import GitHubAPI

from bot.context import HandlerContext
from bot.release import Source
from bot.service import PullRef
from chatops.grammar import Command, CommandError, parse_comment
from chatops.ops import run_command

from .common import is_bot, pull_ref

router = routing.Router()

UNKNOWN = "@{login} I couldn't follow `{line}`: {message}"


@router.register("issue_comment", action="created")
async def run_ship_commands(event: sansio.Event, gh: GitHubAPI, *, ctx: HandlerContext) -> None:
    data = event.data
    issue, comment = data["issue"], data["comment"]
    if "pull_request" not in issue or is_bot(data.get("sender")) or is_bot(comment.get("user")):
        return
    commands = parse_comment(comment.get("body") or "")
    ref = pull_ref(data, issue["number"])
    if not commands or ref is None:
        return
    service = ctx.releases
    login = comment["user"]["login"]
    await service.react(ref, int(comment["id"]))
    for i, parsed in enumerate(commands):
        # One key per command of this delivery: a redelivered webhook cannot answer twice.
        key = f"{event.delivery_id}:{i}"
        if isinstance(parsed, CommandError):
            suggestions = "".join(f"\n- `{s}`" for s in parsed.suggestions)
            text = UNKNOWN.format(login=login, line=parsed.line.strip(), message=parsed.message)
            await service.reply(ref, text + (f"\n\nDid you mean:{suggestions}" if suggestions else ""), key=key)
            continue
        await _run(parsed, gh, ctx, ref, login, key)


async def _run(command: Command, gh: GitHubAPI, ctx: HandlerContext, ref: PullRef, login: str, key: str) -> None:
    answer = await run_command(command, gh, ctx.releases, ref, login, key, source=Source.COMMENT)
    if isinstance(answer, str) and answer:
        await ctx.releases.reply(ref, answer, key=key)
