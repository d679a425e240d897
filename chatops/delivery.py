"""Chat delivery: every subscribed chat gets one message per release, edited in place, with milestones
as thread replies, paced per chat and durable through the worker's jobs.

A change to a release queues one `chat-mirror` job for its PR (coalesced), which queues a `chat-sync`
job per chat. A sync brings that chat's message in line with the release: posts it once (its id kept
in the store), edits it when the view changed (at most once per CHAT_EDIT_INTERVAL; the first change
after a quiet spell goes at once), then posts the milestones and deploy log lines not yet posted.
Every send first takes the chat's turn (Slack: one message per second per channel; Telegram: 20 per
minute in a group): a chat that is not due, or that answered 429, puts the job back until it is, so an
outage or a rate limit delays messages and loses none. Progress is saved after each send, so a retry
goes on where the last run stopped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

from bot.config import Settings
from bot.effects import NotYet
from bot.release import Release
from bot.service import NOTIFY_PREFIX
from bot.store import JobSpec, Store
from bot.store.base import Job

from .identity import ChatLinks, ChatUser
from .view import DIRECT, ChatView, button_id, direct_text, milestone_text, milestones, render_view

log = logging.getLogger(__name__)

SUB_PREFIX: Final = "chat-sub:"  # + repo (lower) + "|" + platform:team:chat -> {"by", "at", "name"}
SUBS_OF_PREFIX: Final = "chat-subs-of:"  # + platform:team:chat + "|" + repo -> ""
_MESSAGE: Final = "chat-msg:"  # + platform:team:chat + "|" + release key -> message state
_PACE: Final = "chat-pace:"  # + platform:team:chat -> when its next message may go
BUTTON_PREFIX: Final = "chat-button:"  # + button id -> release key


class RateLimited(Exception):
    """The chat service said 429: wait `seconds` before the next message to that chat."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"rate limited for {seconds:.0f}s")
        self.seconds = seconds


class ChatUnavailable(Exception):
    """The chat service cannot be reached or failed (network, 5xx, a token it refuses): wait and try
    again, for as long as it takes; a chat outage delays messages and loses none."""


# How long a job waits while its chat service is down; a defer, not an attempt, so it is never parked.
OUTAGE_WAIT: Final = 30.0


class ChatGone(Exception):
    """The chat or message cannot be written any more (bot removed, chat deleted): stop trying."""


class MessageGone(Exception):
    """The release's message was deleted (by a person): post it again."""


@dataclass(frozen=True, slots=True)
class Target:
    """A chat that follows a repository: `chat` is an id, or a name the service resolves (#releases)."""

    platform: str
    team: str
    chat: str

    @property
    def key(self) -> str:
        return f"{self.platform}:{self.team}:{self.chat}"

    @classmethod
    def from_key(cls, key: str) -> Target:
        platform, team, chat = key.split(":", 2)
        return cls(platform, team, chat)


class ChatSender(Protocol):
    """One chat platform, as the delivery needs it."""

    platform: str
    team: str

    def pace(self, chat: str) -> float:
        """Seconds between two messages to `chat`."""

    async def ready(self) -> bool:
        """Whether the platform knows who the bot is (Slack: its workspace, which names its chats)."""

    async def post(self, chat: str, view: ChatView) -> tuple[str, str]:
        """Post the release's message; (the chat's id as the service knows it, the message id)."""

    async def edit(self, chat: str, message: str, view: ChatView) -> None: ...

    async def find(self, chat: str, release_key: str) -> str | None:
        """The release's message when the store lost its id (Slack finds it by message metadata)."""

    async def thread_reply(self, chat: str, message: str, text: str) -> None: ...

    async def answer(self, address: dict[str, Any], text: str) -> None:
        """An answer to a command or a button, where it was asked (privately when asked so)."""

    async def direct(self, user: ChatUser, text: str) -> bool:
        """A direct message to a person; False when the platform will not let the bot start one."""


class ChatDelivery:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        clock: Callable[[], datetime],
        senders: dict[str, ChatSender],
        links: ChatLinks | None,
        release_for: Callable[[str, int, int], Awaitable[Release | None]],
    ) -> None:
        self.release_for = release_for  # the service's: a PR's nth release
        self.store = store
        self.settings = settings
        self.clock = clock
        self.senders = senders
        self.links = links

    # Who follows what ---------------------------------------------------------------------------

    async def subscribe(self, repo: str, target: Target, by: str) -> bool:
        """True when the chat did not follow the repository before."""
        key = f"{SUB_PREFIX}{repo.lower()}|{target.key}"
        fresh = await self.store.get_value(key) is None
        now = self.clock()
        await self.store.set_value(key, json.dumps({"by": by, "at": now.isoformat(), "repo": repo}), now=now)
        await self.store.set_value(f"{SUBS_OF_PREFIX}{target.key}|{repo.lower()}", repo, now=now)
        return fresh

    async def unsubscribe(self, repo: str, target: Target) -> bool:
        await self.store.delete_value(f"{SUBS_OF_PREFIX}{target.key}|{repo.lower()}")
        return await self.store.delete_value(f"{SUB_PREFIX}{repo.lower()}|{target.key}")

    async def subscriptions(self, target: Target) -> list[str]:
        prefix = f"{SUBS_OF_PREFIX}{target.key}|"
        return sorted(value for _, value in await self.store.list_values(prefix, limit=200))

    async def targets(self, repo: str) -> list[Target]:
        """The chats following `repo`: subscriptions, and the config's `notify:` chats."""
        found: dict[str, Target] = {}
        prefix = f"{SUB_PREFIX}{repo.lower()}|"
        for key, _ in await self.store.list_values(prefix, limit=200):
            target = Target.from_key(key[len(prefix) :])
            if target.platform in self.senders:
                found[target.key] = target
        raw = await self.store.get_value(f"{NOTIFY_PREFIX}{repo}")
        notify = json.loads(raw) if raw else {}
        for platform in ("slack", "telegram"):
            chat = notify.get(platform)
            sender = self.senders.get(platform)
            if chat is not None and sender is not None and not await sender.ready():
                log.warning("%s is not reachable yet: the config's notify chat misses this change", platform)
                continue
            if chat is not None and sender is not None:
                target = Target(platform, sender.team, str(chat).lstrip("#") if platform == "slack" else str(chat))
                found.setdefault(target.key, target)
        return list(found.values())

    # Jobs -----------------------------------------------------------------------------------------

    async def mirror(self, job: Job) -> None:
        """Fan a PR's change out to each following chat (and the requester, on a blocker or failure)."""
        repo, pr = job.payload["repo"], int(job.payload["pr"])
        release = await self.store.get_active_release(repo, pr) or await self.store.get_latest_release(repo, pr)
        if release is None:
            return
        now = self.clock()
        await self.store.set_value(f"{BUTTON_PREFIX}{button_id(release.key)}", release.key, now=now)
        # The one before too: cancelled and asked again within one coalesced pass, its message must still
        # say how it ended (a sync that finds nothing changed sends nothing).
        releases = [release]
        if release.number > 1:
            previous = await self.release_for(repo, pr, release.number - 1)
            if previous is not None:
                releases.append(previous)
        jobs: list[JobSpec] = []
        for target in await self.targets(repo):
            for shown in releases:
                state = await self._state(target, shown.key)
                if shown is not release and not state:
                    continue  # never posted here
                due = now
                edited = state.get("edited_at")
                if edited is not None:
                    interval = timedelta(seconds=self.settings.chat_edit_interval)
                    due = max(now, datetime.fromisoformat(edited) + interval)
                payload = {"target": target.key, "repo": repo, "pr": pr, "number": shown.number}
                jobs.append(JobSpec(f"chat-sync:{target.key}|{shown.key}", "chat-sync", payload, due_at=due))
        jobs += await self._direct_jobs(release, now)
        for spec in jobs:
            await self.store.schedule_job(
                spec.key, spec.kind, spec.payload, due_at=spec.due_at, keep_earlier=spec.keep_earlier, once=spec.once
            )

    async def _direct_jobs(self, release: Release, now: datetime) -> list[JobSpec]:
        if self.links is None:
            return []
        jobs = []
        for index, entry in milestones(release):
            if entry.to_state not in DIRECT or now - entry.at > timedelta(hours=1):
                continue
            for user in await self.links.chat_users(release.requested_by):
                if user.platform not in self.senders:
                    continue
                payload = {"user": user.key, "text": direct_text(release, entry, self.settings.github_url)}
                key = f"chat-direct:{user.key}|{release.key}|{index}"
                jobs.append(JobSpec(key, "chat-direct", payload, due_at=now, once=True))
        return jobs

    async def sync(self, job: Job) -> None:
        target = Target.from_key(job.payload["target"])
        sender = self.senders.get(target.platform)
        if sender is None:
            return  # the platform was switched off since
        release = await self.release_for(job.payload["repo"], int(job.payload["pr"]), int(job.payload["number"]))
        if release is None:
            return
        state = await self._state(target, release.key)
        view = render_view(release, self.settings.github_url)
        chat = str(state.get("chat") or target.chat)
        try:
            await self._sync(sender, target, release, view, state, chat)
        except RateLimited as exc:
            await self._pace_for(target, exc.seconds)
            raise NotYet(exc.seconds) from exc
        except ChatUnavailable as exc:
            log.warning("%s is unavailable (%s); the chat's messages wait", target.platform, exc)
            await self._pace_for(target, OUTAGE_WAIT)
            raise NotYet(OUTAGE_WAIT) from exc
        except ChatGone as exc:
            log.warning("chat %s cannot be written any more: %s", target.key, exc)

    async def _sync(
        self, sender: ChatSender, target: Target, release: Release, view: ChatView, state: dict[str, Any], chat: str
    ) -> None:
        message = state.get("message")
        if message is None:
            message = await sender.find(chat, release.key)
            if message is not None:
                state |= {"message": message}
        if message is None:
            await self._turn(sender, target)
            chat, message = await sender.post(chat, view)
            state |= {"chat": chat, "message": message, "digest": view.digest, "edited_at": self._now()}
            await self._save(target, release.key, state)
        elif state.get("digest") != view.digest:
            await self._turn(sender, target)
            try:
                await sender.edit(chat, message, view)
            except MessageGone:
                # Someone deleted it: the release gets a new message (its milestones follow in its thread).
                chat, message = await sender.post(chat, view)
                state = {"chat": chat, "message": message}
            state |= {"digest": view.digest, "edited_at": self._now()}
            await self._save(target, release.key, state)
        posted = int(state.get("milestones", -1))
        for index, entry in milestones(release):
            if index <= posted:
                continue
            await self._turn(sender, target)
            await sender.thread_reply(chat, message, milestone_text(release, entry))
            state |= {"milestones": index}
            await self._save(target, release.key, state)
        await self._post_log(sender, target, release, state, chat, message)

    async def _post_log(
        self, sender: ChatSender, target: Target, release: Release, state: dict[str, Any], chat: str, message: str
    ) -> None:
        """Deploy log lines not yet posted, batched into one thread reply. The release keeps the last lines
        and a count of all of them, so a line's number says whether it was posted; lines that scrolled out
        of the kept tail before a sync are counted, not lost silently."""
        total = release.deploy_log_total
        posted = int(state.get("log_posted", 0))
        if total <= posted:
            return
        kept = list(release.deploy_log)
        first_kept = total - len(kept) + 1  # the number of the oldest line still kept
        new = kept[max(0, posted + 1 - first_kept) :]
        skipped = max(0, first_kept - posted - 1)
        text = "Deploy log:\n" + "\n".join(new)
        if skipped:
            where = f" (the whole log: {release.deploy_url})" if release.deploy_url else ""
            text = f"Deploy log ({skipped} earlier lines not shown{where}):\n" + "\n".join(new)
        await self._turn(sender, target)
        await sender.thread_reply(chat, message, text)
        state |= {"log_posted": total}
        await self._save(target, release.key, state)

    async def direct(self, job: Job) -> None:
        user = ChatUser.from_key(job.payload["user"])
        sender = self.senders.get(user.platform)
        if sender is None:
            return
        try:
            sent = await sender.direct(user, job.payload["text"])
        except RateLimited as exc:
            raise NotYet(exc.seconds) from exc
        except ChatUnavailable as exc:
            raise NotYet(OUTAGE_WAIT) from exc
        if not sent:
            log.info(
                "could not message a linked %s user directly (they never opened a chat with the bot)", user.platform
            )

    async def answer(self, job: Job) -> None:
        sender = self.senders.get(job.payload["platform"])
        if sender is None:
            return
        try:
            await sender.answer(job.payload, job.payload["text"])
        except RateLimited as exc:
            raise NotYet(exc.seconds) from exc
        except ChatUnavailable as exc:
            raise NotYet(OUTAGE_WAIT) from exc
        except ChatGone as exc:  # a private chat the person never started, or a chat the bot has left
            log.info("a %s answer could not be delivered: %s", job.payload["platform"], exc)

    # Pacing and state -----------------------------------------------------------------------------

    async def _turn(self, sender: ChatSender, target: Target) -> None:
        """Take the chat's next turn, or put the job back until it comes."""
        key = f"{_PACE}{target.key}"
        now = self.clock()
        raw = await self.store.get_value(key)
        if raw is not None:
            wait = (datetime.fromisoformat(raw) - now).total_seconds()
            if wait > 0:
                raise NotYet(wait)
        await self.store.set_value(key, (now + timedelta(seconds=sender.pace(target.chat))).isoformat(), now=now)

    async def _pace_for(self, target: Target, seconds: float) -> None:
        now = self.clock()
        await self.store.set_value(f"{_PACE}{target.key}", (now + timedelta(seconds=seconds)).isoformat(), now=now)

    async def _state(self, target: Target, release_key: str) -> dict[str, Any]:
        raw = await self.store.get_value(f"{_MESSAGE}{target.key}|{release_key}")
        return dict(json.loads(raw)) if raw else {}

    async def _save(self, target: Target, release_key: str, state: dict[str, Any]) -> None:
        await self.store.set_value(f"{_MESSAGE}{target.key}|{release_key}", json.dumps(state), now=self.clock())

    async def message_of(self, target: Target, release_key: str) -> dict[str, Any]:
        """Where the release's message is in a chat (for tests and the status command)."""
        return await self._state(target, release_key)

    def _now(self) -> str:
        return self.clock().isoformat()
