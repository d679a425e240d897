"""The chat side put together: Slack and Telegram (whichever is configured), the delivery and the
commands, with one entry point for the worker's `chat-*` jobs and one for the web app's routes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Final

from aiohttp import web

from bot.config import Settings
from bot.github import GitHubApp
from bot.service import ReleaseService
from bot.store import Store
from bot.store.base import Job

from .delivery import ChatDelivery, ChatSender
from .identity import CHAT_LINKS, ChatLinks
from .identity import add_routes as add_link_routes
from .ops import ChatOps
from .slack import EVENTS_PATH, SlackChat
from .telegram import WEBHOOK_PATH, TelegramChat

log = logging.getLogger(__name__)

CHAT_JOBS: Final = frozenset({"chat-input", "chat-mirror", "chat-sync", "chat-reply", "chat-direct"})


class Chat:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        clock: Callable[[], datetime],
        service: ReleaseService,
        github: GitHubApp | None,
    ) -> None:
        self.settings = settings
        self.slack = SlackChat(settings, store, clock) if settings.slack_configured else None
        self.telegram = TelegramChat(settings, store, clock) if settings.telegram_configured else None
        senders: dict[str, ChatSender] = {}
        if self.slack is not None:
            senders["slack"] = self.slack
        if self.telegram is not None:
            senders["telegram"] = self.telegram
        self.links = ChatLinks(settings, store, service.vault, clock) if service.vault is not None else None
        self.delivery = ChatDelivery(store, settings, clock, senders, self.links, service.release_for)
        self.ops = ChatOps(store, service, github, self.links, self.delivery, clock)

    def on_input(self, wake: Callable[[], None]) -> None:
        """Wake this process's worker when an input was stored (it would find it at its next poll anyway)."""
        for side in (self.slack, self.telegram):
            if side is not None:
                side.on_input = wake

    async def start(self, *, intake: bool) -> None:
        if self.slack is not None:
            await self.slack.start(intake=intake)
        if self.telegram is not None:
            await self.telegram.start(intake=intake)

    async def close(self) -> None:
        if self.slack is not None:
            await self.slack.close()
        if self.telegram is not None:
            await self.telegram.close()

    async def run_job(self, job: Job) -> None:
        match job.kind:
            case "chat-mirror":
                await self.delivery.mirror(job)
            case "chat-sync":
                await self.delivery.sync(job)
            case "chat-reply":
                await self.delivery.answer(job)
            case "chat-direct":
                await self.delivery.direct(job)
            case "chat-input":
                await self._input(job)
            case _:
                raise ValueError(f"unknown chat job kind {job.kind!r}")

    async def _input(self, job: Job) -> None:
        payload = job.payload
        if payload["kind"] != "press":
            if self.telegram is not None and payload["address"]["platform"] == "telegram":
                # `/ship@name` in groups: the web side may not have known our name yet.
                name = payload.get("bot_username") or await self.telegram.name()
                job = replace(job, payload={**payload, "bot_username": name})
            await self.ops.run_input(job)
            return
        text: str | None = "Something went wrong; try again in a minute."
        try:
            text = await self.ops.run_input(job)
        finally:
            if self.telegram is not None and payload.get("callback_query"):
                # A refusal pops up for the person who pressed; a success is a short toast.
                await self.telegram.acknowledge(payload, text or "OK", alert=text is not None)
        if text and payload["address"]["platform"] == "slack":
            await self.ops.answer(payload["address"], text, key=f"{job.key}:press")

    def add_routes(self, app: web.Application) -> None:
        add_routes(app, self)


CHAT = web.AppKey("chat", Chat)


def add_routes(app: web.Application, chat: Chat | None = None) -> None:
    """The chat endpoints; they answer 404 while their platform is not configured."""
    if chat is not None:
        app[CHAT] = chat
    add_link_routes(app)
    app.router.add_post(EVENTS_PATH, _slack_events)
    app.router.add_post(WEBHOOK_PATH, _telegram_webhook)


async def _slack_events(request: web.Request) -> web.StreamResponse:
    chat = request.app.get(CHAT)
    if chat is None or chat.slack is None:
        return web.json_response({"error": "Slack is not configured on this bot (SLACK_BOT_TOKEN)"}, status=404)
    return await chat.slack.handle(request)


async def _telegram_webhook(request: web.Request) -> web.StreamResponse:
    chat = request.app.get(CHAT)
    if chat is None or chat.telegram is None:
        return web.json_response({"error": "Telegram is not configured on this bot (TELEGRAM_BOT_TOKEN)"}, status=404)
    return await chat.telegram.handle(request)


__all__ = ["CHAT", "CHAT_JOBS", "CHAT_LINKS", "Chat", "ChatLinks", "add_routes"]
