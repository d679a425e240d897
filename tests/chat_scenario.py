"""The chat harness: the real app and worker with Slack and Telegram configured, at the fake Slack Web API
and the fake Telegram Bot API, next to the fake GitHub of the release scenarios."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiohttp.test_utils import TestClient

from bot.config import Settings
from bot.store.base import Installation
from chatops.identity import ChatUser
from chatops.runtime import Chat
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_payloads import block_actions_body, event_callback_body, sign, slash_command_body
from tests.fakes.telegram import FakeTelegram
from tests.scenario import INSTALLATION, REPO, Scenario

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TELEGRAM_SECRET = "tg-secret_0123456789"
PUBLIC_URL = "http://bot.test"
GITHUB_CLIENT_ID = "Iv1.chatclient"
GITHUB_CLIENT_SECRET = "chat-client-secret"
CHANNEL = "C0REL"  # the Slack channel following the repository
GROUP = -1001234567890  # the Telegram group following it
ALICE_SLACK, BOB_SLACK, CAROL_SLACK = "U0ALICE", "U0BOB", "U0CAROL"
ALICE_TG, BOB_TG = 1001, 1002


def chat_settings(base: Settings, slack: FakeSlack, telegram: FakeTelegram, github_url: str) -> Settings:
    return base.replace(
        slack_bot_token=slack.bot_token,
        slack_signing_secret=SIGNING_SECRET,
        slack_api_url=f"{slack.url}/api/",
        telegram_bot_token=telegram.token,
        telegram_webhook_secret=TELEGRAM_SECRET,
        telegram_api_url=telegram.url,
        public_url=PUBLIC_URL,
        github_url=github_url,
        github_client_id=GITHUB_CLIENT_ID,
        github_client_secret=GITHUB_CLIENT_SECRET,
        chat_edit_interval=3.0,
    )


@dataclass
class ChatScenario:
    base: Scenario
    slack: FakeSlack
    telegram: FakeTelegram

    @property
    def client(self) -> TestClient:  # type: ignore[type-arg]
        return self.base.client

    @property
    def chat(self) -> Chat:
        assert self.base.worker.chat is not None
        return self.base.worker.chat

    async def start(self) -> None:
        await self.base.store.save_installation(
            Installation(id=INSTALLATION, account_login=REPO.split("/")[0], repositories=(REPO,))
        )
        await self.chat.start(intake=False)
        assert self.chat.slack is not None
        assert await self.chat.slack.ready()  # the workspace id, as the background start learns it

    async def link(self, platform: str, user_id: str | int, login: str) -> None:
        """Link a chat account as the OAuth flow would (the flow itself has its own test)."""
        assert self.chat.links is not None
        team = self.slack.team_id if platform == "slack" else ""
        await self.chat.links.link(ChatUser(platform, team, str(user_id)), login)

    async def slash(
        self, text: str, *, user: str, command: str = "/ship", channel: str = CHANNEL, settle: bool = True
    ) -> tuple[int, str]:
        """Someone types a slash command in Slack: a signed request to /slack/events."""
        body = slash_command_body(
            command,
            text,
            user_id=user,
            user_name=user.lower(),
            team_id=self.slack.team_id,
            channel_id=channel,
            response_url=self.slack.response_url(channel=channel, user=user),
        )
        status, answer = await self.post_slack(body, content_type="application/x-www-form-urlencoded")
        if settle:
            await self.base.settle()
        return status, answer

    async def click(self, message_ts: str, action: str, value: str, *, user: str, channel: str = CHANNEL) -> int:
        body = block_actions_body(
            f"release_{action}",
            value,
            user,
            self.slack.team_id,
            channel,
            message_ts,
            self.slack.response_url(channel=channel, user=user, message_ts=message_ts),
        )
        status, _ = await self.post_slack(body, content_type="application/x-www-form-urlencoded")
        await self.base.settle()
        return status

    async def post_slack(
        self, body: bytes, *, content_type: str, headers: dict[str, str] | None = None
    ) -> tuple[int, str]:
        signed = headers if headers is not None else sign(SIGNING_SECRET, body)
        response = await self.client.post("/slack/events", data=body, headers={**signed, "Content-Type": content_type})
        return response.status, await response.text()

    async def event(self, event: dict[str, Any], *, event_id: str, retry: int | None = None) -> int:
        body = event_callback_body(event, event_id=event_id, team_id=self.slack.team_id)
        headers = sign(SIGNING_SECRET, body)
        if retry is not None:
            headers |= {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
        status, _ = await self.post_slack(body, content_type="application/json", headers=headers)
        return status

    async def telegram_update(self, update: dict[str, Any], *, secret: str | None = TELEGRAM_SECRET) -> int:
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers["X-Telegram-Bot-Api-Secret-Token"] = secret
        response = await self.client.post("/telegram/webhook", data=json.dumps(update), headers=headers)
        await self.base.settle()
        return response.status

    def responses_to(self, user: str) -> list[str]:
        """What the bot answered `user` privately in Slack (response_url or chat.postEphemeral)."""
        return [e.text for e in self.slack.ephemerals if e.user == user]

    def release_messages(self, channel: str = CHANNEL) -> list[Any]:
        return [m for m in self.slack.messages(channel) if m.thread_ts is None or m.thread_ts == m.ts]

    def telegram_release_messages(self, chat: int = GROUP) -> list[Any]:
        return [m for m in self.telegram.bot_messages(chat) if m.reply_markup is not None or m.reply_to is None]


def local(url: str) -> str:
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == PUBLIC_URL, url
    return f"{parts.path}?{parts.query}"
