"""What a command or a button from any surface does: the one dispatch behind PR comments, Slack and Telegram.

`run_command` turns a parsed `/ship` command into the service call, the same for every surface; the
surface only decides where the answer goes. `ChatOps` adds what chat needs around it: who the chat
user is on GitHub (a linked login, or a request to link), which installation serves the named repo,
subscriptions, status, and buttons. Inputs arrive as stored jobs (`chat-input`), answers leave as jobs
(`chat-reply`), so a crash loses neither and a redelivered input acts once (its job key is its id).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

from gidgethub.abc import GitHubAPI

from bot.github import GitHubApp
from bot.release import TERMINAL, Decision, Reply, Source, permission_reaches
from bot.service import PullRef, ReleaseService, mirror_job
from bot.store import JobSpec, Store
from bot.store.base import Job

from .chat_grammar import CHAT_HELP, ChatCommand, ChatVerb, parse_chat
from .delivery import BUTTON_PREFIX, ChatDelivery, Target
from .grammar import HELP_TEXT, Command, CommandError, Verb
from .identity import ChatLinks, ChatUser
from .view import Action, render_view

log = logging.getLogger(__name__)

SUBSCRIBE_PERMISSION: Final = "write"
STALE_BUTTON: Final = (
    "The release changed since that message was shown; it is being brought up to date. Press again if you "
    "still want to."
)
NOT_LINKED: Final = (
    "I don't know who you are on GitHub yet. Send `/release link` (I'll answer privately with a sign-in link), "
    "then try again."
)


async def run_command(
    command: Command,
    gh: GitHubAPI,
    service: ReleaseService,
    ref: PullRef,
    login: str,
    key: str,
    *,
    source: Source,
    reply_to: dict[str, Any] | None = None,
    postpone_from: datetime | None = None,
) -> str | Decision | None:
    """Carry out one `/ship` command as `login`: the text to answer with, or the decision taken (its own
    replies answer it; the progress comment shows it). Permissions are checked by the service, the same
    for every surface."""
    match command.verb:
        case Verb.ROLLBACK:
            return await service.rollback(gh, ref, login, delivery=key, source=source)
        case Verb.CALENDAR:
            return await service.calendar_command(gh, ref, login, command.arg)
        case Verb.HELP:
            return f"@{login}\n\n{HELP_TEXT}"
        case Verb.STATUS:
            return await service.status_text(ref, login)
        case Verb.CANCEL:
            return await service.cancel(gh, ref, login, source=source, delivery=key, reply_to=reply_to)
        case Verb.HOLD:
            return await service.hold(gh, ref, login, source=source, delivery=key, reply_to=reply_to)
        case Verb.UNHOLD:
            return await service.unhold(gh, ref, login, source=source, delivery=key, reply_to=reply_to)
        case Verb.NOW:
            return await service.ship(
                gh,
                ref,
                login,
                source=source,
                delivery=key,
                immediately=True,
                dry_run=command.dry_run,
                force=command.force,
                reply_to=reply_to,
            )
        case Verb.SHIP:
            return await service.ship(
                gh,
                ref,
                login,
                source=source,
                delivery=key,
                when=command.when,
                dry_run=command.dry_run,
                reply_to=reply_to,
                postpone_from=postpone_from,
            )


_BUTTON_COMMANDS: Final = {
    Action.SHIP_NOW: Command(Verb.NOW, None, False, "/ship now"),
    Action.POSTPONE: Command(Verb.SHIP, None, False, "/ship (postpone)"),
    Action.CANCEL: Command(Verb.CANCEL, None, False, "/ship cancel"),
    Action.ROLLBACK: Command(Verb.ROLLBACK, None, False, "/ship rollback"),
}


class ChatOps:
    def __init__(
        self,
        store: Store,
        service: ReleaseService,
        github: GitHubApp | None,
        links: ChatLinks | None,
        delivery: ChatDelivery,
        clock: Callable[[], datetime],
    ) -> None:
        self.store = store
        self.service = service
        self.github = github
        self.links = links
        self.delivery = delivery
        self.clock = clock

    async def run_input(self, job: Job) -> str | None:
        """A stored chat input: a command's text (answered in the chat), or a button press (its answer is
        returned: each platform shows it its own way)."""
        payload = job.payload
        user = ChatUser.from_key(payload["user"])
        user = ChatUser(user.platform, user.team, user.user_id, str(payload.get("name") or ""))
        address = dict(payload["address"])
        if payload["kind"] == "press":
            return await self.press(user, address, payload["action"], payload["button"], job.key)
        await self.command(user, address, payload["text"], job.key, bot_username=payload.get("bot_username"))
        return None

    async def command(
        self, user: ChatUser, address: dict[str, Any], text: str, key: str, *, bot_username: str | None = None
    ) -> None:
        parsed = parse_chat(text, bot_username=bot_username)
        if parsed is None:
            return
        if isinstance(parsed, CommandError):
            tips = "".join(f"\n- `{s}`" for s in parsed.suggestions)
            await self.answer(address, parsed.message + (f"\n\nDid you mean:{tips}" if tips else ""), key=key)
            return
        answer = await self._command(user, address, parsed, key)
        if answer:
            await self.answer(address, answer, key=key)

    async def _command(self, user: ChatUser, address: dict[str, Any], parsed: ChatCommand, key: str) -> str | None:
        if parsed.verb is ChatVerb.HELP:
            return CHAT_HELP
        if parsed.verb is ChatVerb.LINK:
            return await self._link(user, address, key)
        if parsed.verb is ChatVerb.UNLINK:
            if self.links is None:
                return "Linking accounts is not set up on this bot."
            login = await self.links.unlink(user)
            return f"Unlinked from @{login}." if login else "Your chat account was not linked."
        login = await self._login(user)
        if login is None:
            return NOT_LINKED
        target = _target(address)
        if parsed.verb is ChatVerb.STATUS:
            return await self._status(parsed, target, login)
        assert parsed.repo is not None
        installation = await self.installation_for(parsed.repo)
        if installation is None:
            return f"Release Secretary is not installed on `{parsed.repo}` (or cannot see it)."
        gh = self._client(installation)
        if parsed.verb in (ChatVerb.SUBSCRIBE, ChatVerb.UNSUBSCRIBE):
            permission = await self.service.read.permission(gh, parsed.repo, login)
            if not permission_reaches(permission, SUBSCRIBE_PERMISSION):
                return (
                    f"@{login} only people with **{SUBSCRIBE_PERMISSION}** access to `{parsed.repo}` can change "
                    f"which chats follow it; GitHub reports your access as **{permission or 'none'}**."
                )
            if parsed.verb is ChatVerb.SUBSCRIBE:
                fresh = await self.delivery.subscribe(parsed.repo, target, login)
                return (
                    f"This chat now follows releases of `{parsed.repo}`: one message per release, kept up to date."
                    if fresh
                    else f"This chat already follows `{parsed.repo}`."
                )
            gone = await self.delivery.unsubscribe(parsed.repo, target)
            return (
                f"This chat no longer follows `{parsed.repo}`."
                if gone
                else f"This chat did not follow `{parsed.repo}`."
            )
        assert parsed.command is not None and parsed.pr is not None
        refused = await self._cannot_read(gh, parsed.repo, login)
        if refused:
            return refused
        ref = PullRef(parsed.repo, parsed.pr, installation)
        done = await run_command(
            parsed.command, gh, self.service, ref, login, key, source=_source(user), reply_to=_reply_to(address, key)
        )
        return _said(done, ref)

    async def press(self, user: ChatUser, address: dict[str, Any], action: str, button: str, key: str) -> str | None:
        """A button under a release's message: checked and done exactly as the command it stands for."""
        try:
            what = Action(action)
        except ValueError:
            return "That button is not one of mine."
        ref_id, _, shown = button.partition(".")
        release_key = await self.store.get_value(BUTTON_PREFIX + ref_id)
        if release_key is None:
            return "That button is out of date; the release's message has newer ones."
        login = await self._login(user)
        if login is None:
            return NOT_LINKED
        repo, _, rest = release_key.rpartition("#")
        pr = int(rest.split("/", 1)[0])
        release = await self.store.get_latest_release(repo, pr)
        if release is None or release.key != release_key:
            return "That release is over; the buttons of the newest message still work."
        if what is not Action.ROLLBACK and release.state in TERMINAL:
            return f"The release is already {release.state.value}."
        if render_view(release, self.service.settings.github_url).digest[:8] != shown:
            # Pressed on a message that has changed since (a double click, or an edit still on its way).
            await self.service.schedule([mirror_job(PullRef(repo, pr, release.installation_id), self.clock())])
            return STALE_BUTTON
        installation = await self.installation_for(repo)
        if installation is None:
            return f"Release Secretary is no longer installed on `{repo}`."
        postpone_from = release.slot.start if what is Action.POSTPONE and release.slot is not None else None
        ref = PullRef(repo, pr, installation)
        done = await run_command(
            _BUTTON_COMMANDS[what],
            self._client(installation),
            self.service,
            ref,
            login,
            key,
            source=_source(user),
            reply_to={"silent": True},
            postpone_from=postpone_from,
        )
        if isinstance(done, Decision):
            # A button's answer is for the person who pressed it (a Telegram alert, a Slack ephemeral).
            replies = [effect.text for effect in done.effects if isinstance(effect, Reply)]
            if replies:
                return "\n\n".join(replies)
        return _said(done, ref)

    async def answer(self, address: dict[str, Any], text: str, *, key: str) -> None:
        job = JobSpec(f"chat-reply:{key}", "chat-reply", {**address, "text": text}, due_at=self.clock(), once=True)
        await self.service.schedule([job])

    async def _link(self, user: ChatUser, address: dict[str, Any], key: str) -> str | None:
        if self.links is None or self.links.missing():
            missing = ", ".join(self.links.missing()) if self.links else "SECRETS_KEY"
            return f"Linking accounts is not set up on this bot yet (the operator needs to set {missing})."
        url = await self.links.start(user)
        text = (
            f"Open this link within 10 minutes to link your chat account to your GitHub login: {url}\n"
            "It works once. Don't forward it: it is for linking your own account."
        )
        if address.get("private") or address.get("platform") == "slack":
            return text  # Slack answers a command ephemerally: only the asker sees it
        # A Telegram group sees every answer: the link goes to the private chat with the bot.
        private = {**address, "chat": user.user_id, "private": True, "reply_to_message": None}
        await self.answer(private, text, key=f"{key}:private")
        return (
            "I sent you the link in a private chat. (If nothing came, open a chat with me, press Start, and try again.)"
        )

    async def _cannot_read(self, gh: GitHubAPI, repo: str, login: str) -> str | None:
        """Why `login` may not even read about `repo` (a private repository says nothing to outsiders)."""
        permission = await self.service.read.permission(gh, repo, login)
        if permission_reaches(permission, "read"):
            return None
        return f"@{login} has no access to `{repo}` on GitHub, so I can't say anything about it."

    async def _status(self, parsed: ChatCommand, target: Target, login: str) -> str:
        installation: int | None = None
        if parsed.repo is not None:
            installation = await self.installation_for(parsed.repo)
            if installation is None:
                return f"Release Secretary is not installed on `{parsed.repo}` (or cannot see it)."
            refused = await self._cannot_read(self._client(installation), parsed.repo, login)
            if refused:
                return refused
        if parsed.repo is not None and parsed.pr is not None and installation is not None:
            ref = PullRef(parsed.repo, parsed.pr, installation)
            return await self.service.status_text(ref, login)
        repos = [parsed.repo] if parsed.repo else await self.delivery.subscriptions(target)
        if not repos:
            return "This chat follows no repository: `/release subscribe owner/repo`, or ask about one PR."
        lines = []
        for repo in repos[:20]:
            releases = await self.store.find_releases(repo=repo, active_only=True, limit=20)
            for release in sorted(releases, key=lambda r: r.pr):
                when = release.slot.start.strftime("%a %d %b %H:%M UTC") if release.slot else "no slot yet"
                lines.append(f"- `{release.repo}#{release.pr}` **{release.state.value}**, {when}: {release.title}")
        if not lines:
            return f"No release is under way in {', '.join(f'`{r}`' for r in repos[:20])}."
        return "Releases under way:\n" + "\n".join(lines[:50])

    async def _login(self, user: ChatUser) -> str | None:
        return await self.links.login_for(user) if self.links is not None else None

    async def installation_for(self, repo: str) -> int | None:
        return await self.service.installation_for(repo)

    def _client(self, installation: int) -> GitHubAPI:
        if self.github is None:
            raise RuntimeError("the GitHub App is not configured")
        return self.github.installation_client(installation)


def _said(done: str | Decision | None, ref: PullRef) -> str | None:
    """What to answer in chat: the text, or for a decision without a reply of its own, where it stands now
    (a chat has no progress comment next to the command)."""
    if not isinstance(done, Decision):
        return done
    if any(isinstance(effect, Reply) for effect in done.effects) or done.release is None:
        return None
    return f"`{ref.repo}#{ref.pr}` is now **{done.release.state.value}**."


def _source(user: ChatUser) -> Source:
    return Source.SLACK if user.platform == "slack" else Source.TELEGRAM


def _target(address: dict[str, Any]) -> Target:
    return Target(address["platform"], address.get("team", ""), str(address["chat"]))


def _reply_to(address: dict[str, Any], key: str) -> dict[str, Any]:
    """Where the decision's replies go: the chat, answering the input `key`."""
    return {**address, "answers": key}
