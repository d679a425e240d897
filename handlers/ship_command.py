"""`/ship ...` commands in PR comments: acknowledged with :eyes:, answered, and turned into release events."""

from __future__ import annotations

from gidgethub import routing, sansio
from gidgethub.abc import GitHubAPI

from bot.context import HandlerContext
from bot.release import Source
from bot.service import PullRef
from chatops.grammar import HELP_TEXT, Command, CommandError, Verb, parse_comment

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
    service = ctx.releases
    match command.verb:
        case Verb.ROLLBACK:
            said = await service.rollback(gh, ref, login, delivery=key)
            if said:
                await service.reply(ref, said, key=key)
        case Verb.CALENDAR:
            await service.reply(ref, await service.calendar_command(gh, ref, login, command.arg), key=key)
        case Verb.HELP:
            await service.reply(ref, f"@{login}\n\n{HELP_TEXT}", key=key)
        case Verb.STATUS:
            await service.reply(ref, await service.status_text(ref, login), key=key)
        case Verb.CANCEL:
            await service.cancel(gh, ref, login, source=Source.COMMENT, delivery=key)
        case Verb.HOLD:
            await service.hold(gh, ref, login, source=Source.COMMENT, delivery=key)
        case Verb.UNHOLD:
            await service.unhold(gh, ref, login, source=Source.COMMENT, delivery=key)
        case Verb.NOW:
            await service.ship(
                gh,
                ref,
                login,
                source=Source.COMMENT,
                delivery=key,
                immediately=True,
                dry_run=command.dry_run,
                force=command.force,
            )
        case Verb.SHIP:
            await service.ship(
                gh, ref, login, source=Source.COMMENT, delivery=key, when=command.when, dry_run=command.dry_run
            )
