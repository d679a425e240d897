"""The laptop and operator paths of chat: Slack over Socket Mode, Telegram by long polling, `telegram setup`,
and the delivery's promises (coalesced edits, a message found again by its metadata, "not modified")."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from bot.__main__ import _telegram_setup
from bot.app import STORE, make_app
from bot.config import Settings
from bot.release import State
from bot.store.base import Installation
from chatops.identity import ChatLinks, ChatUser
from chatops.telegram import TelegramChat
from chatops.view import render_view
from tests.chat_scenario import ALICE_SLACK, ALICE_TG, CHANNEL, GROUP, ChatScenario, chat_settings
from tests.fakes.github import FakeGitHub
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_payloads import slash_command_payload
from tests.fakes.telegram import FakeTelegram
from tests.scenario import INSTALLATION, REPO, Clock, Scenario, labeled
from tests.test_chat_scenarios import CONFIG, HEAD, subscribe_both

ClientFactory = Callable[[web.Application], Awaitable[TestClient]]


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as slack:
        slack.add_user(ALICE_SLACK, "alice")
        slack.add_channel(CHANNEL, "releases", members={slack.bot_user_id, ALICE_SLACK})
        yield slack


@pytest.fixture
async def fake_telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as telegram:
        telegram.add_user(ALICE_TG, "Alice", "alice_tg", started=True)
        telegram.add_chat(GROUP, "supergroup", "Releases")
        yield telegram


def _github(fake_github: FakeGitHub) -> None:
    fake_github.add_pull(REPO, 7, head_sha=HEAD, title="Faster widgets", user_login="alice")
    fake_github.set_permission(REPO, "alice", "write")
    fake_github.set_branch_protection(REPO, "main", ["ci/build"])
    fake_github.add_check_run(REPO, HEAD, "ci/build", status="completed", conclusion="success")
    fake_github.set_file(REPO, ".github/release-secretary.yml", CONFIG)


async def _ready(app: web.Application, settings: Settings) -> None:
    store = app[STORE]
    await store.save_installation(Installation(id=INSTALLATION, account_login="octo-org", repositories=(REPO,)))
    from bot.secrets import SecretBox, Vault

    links = ChatLinks(settings, store, Vault(store, SecretBox(settings.secrets_keys)))
    await links.link(ChatUser("slack", "T0001", ALICE_SLACK), "alice")
    await links.link(ChatUser("telegram", "", str(ALICE_TG)), "alice")


async def test_socket_mode_takes_commands_with_no_public_url(
    aiohttp_client: ClientFactory,
    app_settings: Settings,
    fake_github: FakeGitHub,
    fake_slack: FakeSlack,
    fake_telegram: FakeTelegram,
) -> None:
    _github(fake_github)
    settings = chat_settings(app_settings, fake_slack, fake_telegram, fake_github.url).replace(
        slack_signing_secret=None,
        slack_app_token=fake_slack.app_token,
        telegram_bot_token=None,
        telegram_webhook_secret=None,
        public_url=None,
    )
    client = await aiohttp_client(make_app(settings, run_worker=True))
    await _ready(client.server.app, settings)
    await fake_slack.wait_for(lambda: fake_slack.socket_open, what="the bot's socket mode connection")
    payload = slash_command_payload(
        "/ship",
        f"{REPO}#7 friday 3pm",
        user_id=ALICE_SLACK,
        channel_id=CHANNEL,
        response_url=fake_slack.response_url(channel=CHANNEL, user=ALICE_SLACK),
    )
    envelope = await fake_slack.socket_send("slash_commands", payload)
    ack = await fake_slack.socket_ack(envelope)
    assert ack["envelope_id"] == envelope
    store = client.server.app[STORE]
    await fake_slack.wait_for(lambda: any("booked" in e.text for e in fake_slack.ephemerals), what="the answer")
    release = await store.get_active_release(REPO, 7)
    assert release is not None and release.audit[0].source == "slack"
    # Over HTTP, Slack requests are refused while no signing secret can verify them.
    response = await client.post("/slack/events", data=b"command=%2Fship", headers={"X-Slack-Request-Timestamp": "1"})
    assert response.status == 503
    assert fake_slack.violations == []


async def test_telegram_polls_for_updates_when_there_is_no_public_url(
    aiohttp_client: ClientFactory,
    app_settings: Settings,
    fake_github: FakeGitHub,
    fake_slack: FakeSlack,
    fake_telegram: FakeTelegram,
) -> None:
    _github(fake_github)
    # PUBLIC_URL stays (linking needs it); without a webhook secret the bot polls.
    settings = chat_settings(app_settings, fake_slack, fake_telegram, fake_github.url).replace(
        slack_bot_token=None, slack_signing_secret=None, telegram_webhook_secret=None
    )
    client = await aiohttp_client(make_app(settings, run_worker=True))
    await _ready(client.server.app, settings)
    subscribe = fake_telegram.command_update(GROUP, ALICE_TG, f"/release subscribe {REPO}", mention=True)
    fake_telegram.queue_update(subscribe)
    await fake_telegram.wait_for(
        lambda: any("follows releases" in m.text for m in fake_telegram.bot_messages(GROUP)), what="the answer"
    )
    # The webhook is refused while no secret can check it.
    response = await client.post("/telegram/webhook", json={"update_id": 1})
    assert response.status == 503
    assert fake_telegram.violations == []


async def test_telegram_setup_registers_the_webhook_and_the_commands(
    app_settings: Settings, fake_github: FakeGitHub, fake_slack: FakeSlack, fake_telegram: FakeTelegram
) -> None:
    settings = chat_settings(app_settings, fake_slack, fake_telegram, fake_github.url).replace(
        public_url="https://bot.example"
    )
    assert await _telegram_setup(settings) == 0
    assert fake_telegram.webhook is not None
    assert fake_telegram.webhook.url == "https://bot.example/telegram/webhook"
    assert fake_telegram.webhook.secret_token == settings.telegram_webhook_secret
    assert fake_telegram.webhook.allowed_updates == ["message", "callback_query"]
    assert [c["command"] for c in fake_telegram.commands] == ["ship", "release"]
    assert fake_telegram.violations == []


@pytest.fixture
async def chat(
    aiohttp_client: ClientFactory,
    app_settings: Settings,
    fake_github: FakeGitHub,
    fake_slack: FakeSlack,
    fake_telegram: FakeTelegram,
) -> AsyncIterator[ChatScenario]:
    _github(fake_github)
    clock = Clock()
    settings = chat_settings(app_settings, fake_slack, fake_telegram, fake_github.url)
    client = await aiohttp_client(make_app(settings, clock=clock))
    scenario = ChatScenario(Scenario(client, settings, fake_github, clock), fake_slack, fake_telegram)
    await scenario.start()
    yield scenario
    await scenario.chat.close()


async def test_a_burst_of_changes_is_one_edit_and_the_first_goes_at_once(chat: ChatScenario) -> None:
    await subscribe_both(chat)
    await chat.base.deliver("pull_request", labeled(7, HEAD, sender="alice"))
    [message] = chat.release_messages()
    assert message.edits == 0
    # A quiet spell, then three changes within a second: the first goes out at once, the rest wait.
    chat.base.clock.advance(seconds=30)
    await chat.slash(f"{REPO}#7 hold", user=ALICE_SLACK)
    assert chat.release_messages()[0].edits == 1
    await chat.slash(f"{REPO}#7 unhold", user=ALICE_SLACK)
    await chat.slash(f"{REPO}#7 cancel", user=ALICE_SLACK)
    assert chat.release_messages()[0].edits == 1  # coalesced until the interval has passed
    chat.base.clock.advance(seconds=3)
    await chat.base.settle()
    [message] = chat.release_messages()
    assert message.edits == 2 and "Cancelled" in message.text
    [tg] = chat.telegram_release_messages()
    assert tg.edits == 2 and "Cancelled" in tg.text


async def test_a_message_whose_id_the_store_lost_is_found_by_its_metadata(chat: ChatScenario) -> None:
    await subscribe_both(chat)
    await chat.base.deliver("pull_request", labeled(7, HEAD, sender="alice"))
    [message] = chat.release_messages()
    assert message.metadata is not None and message.metadata["event_type"] == "release_secretary_release"
    release = await chat.base.store.get_active_release(REPO, 7)
    assert release is not None
    deleted = await chat.base.store.delete_value(f"chat-msg:slack:T0001:{CHANNEL}|{release.key}")
    assert deleted
    chat.base.clock.advance(seconds=30)
    await chat.slash(f"{REPO}#7 cancel", user=ALICE_SLACK)
    # A sync already due when the id was lost may edit first; the cancel's own edit follows within the interval.
    chat.base.clock.advance(seconds=3)
    await chat.base.settle()
    [again] = chat.release_messages()
    assert again.ts == message.ts and "Cancelled" in again.text
    latest = await chat.base.store.get_latest_release(REPO, 7)
    assert latest is not None and latest.state is State.CANCELLED


async def test_telegram_not_modified_is_success(chat: ChatScenario) -> None:
    await subscribe_both(chat)
    await chat.base.deliver("pull_request", labeled(7, HEAD, sender="alice"))
    release = await chat.base.store.get_active_release(REPO, 7)
    assert release is not None
    telegram = chat.chat.telegram
    assert isinstance(telegram, TelegramChat)
    [tg] = chat.telegram_release_messages()
    view = render_view(release, chat.base.settings.github_url)
    await telegram.edit(str(GROUP), str(tg.message_id), view)  # the same content: Telegram says "not modified"
    assert chat.telegram_release_messages()[0].edits == 0
    assert any("not modified" in v for v in chat.telegram.violations)


async def test_a_deleted_release_message_is_posted_again(chat: ChatScenario) -> None:
    await subscribe_both(chat)
    await chat.base.deliver("pull_request", labeled(7, HEAD, sender="alice"))
    [message] = chat.release_messages()
    [tg] = chat.telegram_release_messages()
    # Someone deletes both messages (the bot can delete its own; in Slack a person with the rights can).
    chat.slack.channels[CHANNEL].messages.remove(message)
    telegram = chat.chat.telegram
    assert telegram is not None
    await telegram.bot.delete_message(GROUP, tg.message_id)
    chat.base.clock.advance(seconds=30)
    await chat.slash(f"{REPO}#7 cancel", user=ALICE_SLACK)
    chat.base.clock.advance(seconds=3)  # an edit the cancel's own may wait behind (one per interval)
    await chat.base.settle()
    [again] = chat.release_messages()
    assert again.ts != message.ts and "Cancelled" in again.text
    [tg_again] = chat.telegram_release_messages()
    assert tg_again.message_id != tg.message_id and "Cancelled" in tg_again.text


async def test_deploy_log_lines_are_batched_into_thread_replies(chat: ChatScenario) -> None:
    from dataclasses import replace

    from bot.service import PullRef, mirror_job

    await subscribe_both(chat)
    await chat.base.deliver("pull_request", labeled(7, HEAD, sender="alice"))
    store = chat.base.store
    ref = PullRef(REPO, 7, INSTALLATION)

    async def log_lines(*lines: str) -> None:
        release = await store.get_active_release(REPO, 7)
        assert release is not None
        kept = (*release.deploy_log, *lines)[-3:]  # the release keeps the last few lines
        total = release.deploy_log_total + len(lines)
        await store.save_release(replace(release, deploy_log=kept, deploy_log_total=total))
        chat.base.clock.advance(seconds=30)
        await chat.base.worker.service.schedule([mirror_job(ref, chat.base.clock())])
        await chat.base.settle()

    await log_lines("step 1: pull image", "step 2: migrate")
    await log_lines("waiting", "waiting")  # the same text again is still a new line
    await log_lines("step 3: roll out", "step 4: smoke test", "step 5: canary", "step 6: done")
    [message] = chat.release_messages()
    replies = [m.text for m in chat.slack.thread(CHANNEL, message.ts) if m.is_reply]
    assert replies == [
        "Deploy log:\nstep 1: pull image\nstep 2: migrate",
        "Deploy log:\nwaiting\nwaiting",
        # Four lines since the last sync, three kept: the one that scrolled out is counted, not silently lost.
        "Deploy log (1 earlier lines not shown):\nstep 4: smoke test\nstep 5: canary\nstep 6: done",
    ]
    [tg] = chat.telegram_release_messages()
    tg_replies = [m.text for m in chat.telegram.bot_messages(GROUP) if m.reply_to == tg.message_id]
    assert tg_replies == replies


async def test_a_chat_outage_delays_messages_and_loses_none(chat: ChatScenario) -> None:
    await subscribe_both(chat)
    # Both services fail for a while, well past the worker's attempts: 12 failures each.
    chat.slack.fail("chat.postMessage", error="fatal_error", status=500, times=12)
    chat.telegram.fail("sendMessage", status=502, times=12)
    await chat.base.deliver("pull_request", labeled(7, HEAD, sender="alice"))
    for _ in range(14):
        chat.base.clock.advance(seconds=31)
        await chat.base.settle()
    assert len(chat.release_messages()) == 1 and len(chat.telegram_release_messages()) == 1
    assert await chat.base.store.list_parked_jobs() == []


async def test_the_bot_starts_while_slack_and_telegram_are_unreachable(
    aiohttp_client: ClientFactory, app_settings: Settings, fake_github: FakeGitHub, unused_tcp_port: int
) -> None:
    nowhere = f"http://127.0.0.1:{unused_tcp_port}"
    settings = app_settings.replace(
        slack_bot_token="xoxb-1",
        slack_signing_secret="s",
        slack_app_token="xapp-1",
        slack_api_url=f"{nowhere}/api/",
        telegram_bot_token="1:x",
        telegram_api_url=nowhere,
    )
    client = await aiohttp_client(make_app(settings, run_worker=True))
    response = await client.get("/healthz")
    assert response.status == 200


async def test_doctor_checks_the_chat_tokens_and_the_telegram_webhook(
    app_settings: Settings, fake_github: FakeGitHub, fake_slack: FakeSlack, fake_telegram: FakeTelegram
) -> None:
    import io

    from bot.doctor import run_doctor

    settings = chat_settings(app_settings, fake_slack, fake_telegram, fake_github.url).replace(
        public_url="https://bot.example"
    )
    out = io.StringIO()
    assert await run_doctor(settings, out) == 1
    text = out.getvalue()
    assert "[ ok ] slack: bot release-secretary in workspace" in text
    assert "webhook is not set, not https://bot.example/telegram/webhook" in text
    assert await _telegram_setup(settings) == 0
    out = io.StringIO()
    await run_doctor(settings, out)
    assert "[ ok ] telegram: @release_secretary_bot, webhook https://bot.example/telegram/webhook" in out.getvalue()
    bad = settings.replace(slack_bot_token="xoxb-wrong")
    out = io.StringIO()
    assert await run_doctor(bad, out) == 1
    assert "slack: auth.test refused SLACK_BOT_TOKEN: invalid_auth" in out.getvalue()
