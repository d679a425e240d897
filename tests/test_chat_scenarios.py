"""Slack and Telegram as second screens of a release, end to end: the real app and worker, the real
slack-bolt, slack_sdk and python-telegram-bot, against fake Slack and Telegram APIs that refuse what the
real ones refuse, next to the fake GitHub."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from bot.app import make_app
from bot.config import Settings
from bot.release import State
from chatops.identity import ChatUser
from chatops.view import button_value, render_view
from tests.chat_scenario import (
    ALICE_SLACK,
    ALICE_TG,
    BOB_SLACK,
    BOB_TG,
    CAROL_SLACK,
    CHANNEL,
    GITHUB_CLIENT_ID,
    GITHUB_CLIENT_SECRET,
    GROUP,
    PUBLIC_URL,
    SIGNING_SECRET,
    ChatScenario,
    chat_settings,
    local,
)
from tests.fakes.github import FakeGitHub
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_payloads import sign, slash_command_body
from tests.fakes.telegram import FakeTelegram
from tests.scenario import REPO, Clock, Scenario, labeled, suite_completed

ClientFactory = Callable[[web.Application], Awaitable[TestClient]]
HEAD = "c" * 40
CONFIG = """\
timezone: Europe/Berlin
windows:
  - days: [mon-fri]
    hours: "10:00-16:00"
"""


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as slack:
        slack.add_user(ALICE_SLACK, "alice")
        slack.add_user(BOB_SLACK, "bob")
        slack.add_user(CAROL_SLACK, "carol")
        slack.add_channel(CHANNEL, "releases", members={slack.bot_user_id, ALICE_SLACK, BOB_SLACK, CAROL_SLACK})
        yield slack


@pytest.fixture
async def fake_telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as telegram:
        telegram.add_user(ALICE_TG, "Alice", "alice_tg", started=True)
        telegram.add_user(BOB_TG, "Bob", "bob_tg")
        telegram.add_chat(GROUP, "supergroup", "Releases")
        yield telegram


@pytest.fixture
async def chat(
    aiohttp_client: ClientFactory,
    app_settings: Settings,
    fake_github: FakeGitHub,
    fake_slack: FakeSlack,
    fake_telegram: FakeTelegram,
) -> AsyncIterator[ChatScenario]:
    clock = Clock()
    fake_github.add_pull(REPO, 7, head_sha=HEAD, title="Faster widgets", user_login="alice")
    fake_github.set_permission(REPO, "alice", "write")
    fake_github.set_permission(REPO, "bob", "read")
    fake_github.set_branch_protection(REPO, "main", ["ci/build"])
    fake_github.add_check_run(REPO, HEAD, "ci/build", status="completed", conclusion="success")
    fake_github.set_file(REPO, ".github/release-secretary.yml", CONFIG)
    fake_github.add_oauth_app(GITHUB_CLIENT_ID, GITHUB_CLIENT_SECRET, f"{PUBLIC_URL}/github/oauth/callback")
    settings = chat_settings(app_settings, fake_slack, fake_telegram, fake_github.url).replace(sticky_debounce=2.0)
    client = await aiohttp_client(make_app(settings, clock=clock))
    scenario = ChatScenario(Scenario(client, settings, fake_github, clock), fake_slack, fake_telegram)
    await scenario.start()
    yield scenario
    await scenario.chat.close()


def consent_form(page: str) -> dict[str, str]:
    """The hidden fields of the consent page's form, as the browser would send them."""
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', page))


def link_in(text: str) -> str:
    [url] = re.findall(rf"{re.escape(PUBLIC_URL)}/github/oauth/start\?state=[A-Za-z0-9_%-]+", text)
    return url


async def subscribe_both(chat: ChatScenario) -> None:
    await chat.link("slack", ALICE_SLACK, "alice")
    await chat.link("telegram", ALICE_TG, "alice")
    await chat.slash(f"subscribe {REPO}", user=ALICE_SLACK, command="/release")
    update = chat.telegram.command_update(GROUP, ALICE_TG, f"/release subscribe {REPO}", mention=True)
    assert await chat.telegram_update(update) == 200


async def test_a_release_is_one_message_per_chat_edited_in_place(chat: ChatScenario) -> None:
    await subscribe_both(chat)
    assert any(f"follows releases of `{REPO}`" in t for t in chat.responses_to(ALICE_SLACK))
    assert any("follows releases" in m.text for m in chat.telegram.bot_messages(GROUP))

    await chat.base.deliver("pull_request", labeled(7, HEAD, sender="alice"))
    [message] = chat.release_messages()
    assert "acme" not in message.text and f"{REPO}#7" in message.text
    [tg] = chat.telegram_release_messages()
    assert f"{REPO}#7" in tg.text and "Scheduled" in tg.text

    # The release moves on (hold, then cancel): the same messages are edited, after the edit interval.
    chat.base.clock.advance(seconds=10)
    await chat.slash(f"{REPO}#7 hold", user=ALICE_SLACK)
    chat.base.clock.advance(seconds=10)
    await chat.base.settle()
    chat.base.clock.advance(seconds=10)
    await chat.slash(f"{REPO}#7 cancel", user=ALICE_SLACK)
    chat.base.clock.advance(seconds=10)
    await chat.base.settle()
    [again] = chat.release_messages()
    assert again.ts == message.ts and again.edits >= 2 and "Cancelled" in again.text
    [tg_again] = chat.telegram_release_messages()
    assert tg_again.message_id == tg.message_id and tg_again.edits >= 2 and "Cancelled" in tg_again.text
    release = await chat.base.store.get_latest_release(REPO, 7)
    assert release is not None and release.state is State.CANCELLED
    assert [t.source for t in release.audit[-2:]] == ["slack", "slack"]
    # The PR's sticky comment says so too.
    assert "Cancelled" in chat.base.sticky(7)["body"]
    assert chat.slack.violations == [] and chat.telegram.violations == [] and chat.base.fake.violations == []


async def test_ship_from_slack_as_a_linked_writer_books_the_slot(chat: ChatScenario) -> None:
    await chat.link("slack", ALICE_SLACK, "alice")
    status, ack = await chat.slash(f"{REPO}#7 friday 3pm", user=ALICE_SLACK)
    assert status == 200 and ack == ""
    release = await chat.base.store.get_active_release(REPO, 7)
    assert release is not None and release.slot is not None
    assert release.slot.start.isoformat() == "2026-11-27T14:00:00+00:00"
    assert release.audit[0].source == "slack" and release.requested_by == "alice"
    [answer] = chat.responses_to(ALICE_SLACK)
    assert "booked" in answer and "Fri 27 Nov 15:00" in answer
    assert "Fri 27 Nov 15:00-15:30 Europe/Berlin" in chat.base.sticky(7)["body"]
    # The answer went to the chat, not as a second comment on the PR.
    assert chat.base.replies(7) == []


async def test_ship_from_a_linked_reader_is_refused(chat: ChatScenario) -> None:
    await chat.link("slack", BOB_SLACK, "bob")
    await chat.slash(f"{REPO}#7 friday 3pm", user=BOB_SLACK)
    assert await chat.base.store.get_active_release(REPO, 7) is None
    [answer] = chat.responses_to(BOB_SLACK)
    assert "*write*" in answer and "*read*" in answer


async def test_an_unlinked_user_is_told_to_link(chat: ChatScenario) -> None:
    await chat.slash(f"{REPO}#7 friday 3pm", user=CAROL_SLACK)
    assert await chat.base.store.get_active_release(REPO, 7) is None
    [answer] = chat.responses_to(CAROL_SLACK)
    assert "/release link" in answer


async def test_unknown_input_gets_the_closest_valid_forms(chat: ChatScenario) -> None:
    await chat.link("slack", ALICE_SLACK, "alice")
    await chat.slash("friday 3pm", user=ALICE_SLACK)
    await chat.slash("subscrib octo-org/widgets", user=ALICE_SLACK, command="/release")
    first, second = chat.responses_to(ALICE_SLACK)
    assert "/ship acme/webshop#42 friday 3pm" in first or "owner/repo#42" in first
    assert f"/release subscribe {REPO}" in second  # with the repository that was typed


async def test_link_flow_end_to_end(chat: ChatScenario) -> None:
    await chat.slash("link", user=CAROL_SLACK, command="/release")
    [answer] = chat.responses_to(CAROL_SLACK)
    url = link_in(answer)
    opened = await chat.client.get(local(url), allow_redirects=False)
    assert opened.status == 302
    github_url = opened.headers["Location"]
    assert github_url.startswith(f"{chat.base.fake.url}/login/oauth/authorize?")
    query = {k: v[0] for k, v in parse_qs(urlsplit(github_url).query).items()}
    assert query["client_id"] == GITHUB_CLIENT_ID and query["code_challenge_method"] == "S256"
    chat.base.fake.signed_in_as = "alice"
    async with aiohttp.ClientSession() as browser, browser.get(github_url, allow_redirects=False) as back:
        assert back.status == 302
        callback = back.headers["Location"]
    consent = await chat.client.get(local(callback), allow_redirects=False)
    page = await consent.text()
    # Nothing is linked until the person GitHub confirmed says yes, told which chat account asks.
    assert consent.status == 200 and "@alice" in page and "carol" in page and "Slack" in page
    assert await chat.chat.links.linked_login(ChatUser("slack", chat.slack.team_id, CAROL_SLACK)) is None  # type: ignore[union-attr]
    # GitHub's answer cannot be replayed.
    again = await chat.client.get(local(callback), allow_redirects=False)
    assert again.status == 400
    done = await chat.client.post("/github/oauth/confirm", data={**consent_form(page), "answer": "allow"})
    assert done.status == 200 and "@alice" in await done.text()
    # The link works once.
    twice = await chat.client.post("/github/oauth/confirm", data={**consent_form(page), "answer": "allow"})
    assert twice.status == 400
    # Carol's Slack account now acts as alice (a writer).
    await chat.slash(f"{REPO}#7 friday 3pm", user=CAROL_SLACK)
    release = await chat.base.store.get_active_release(REPO, 7)
    assert release is not None and release.requested_by == "alice"


async def test_a_forwarded_link_cannot_take_someone_elses_identity(chat: ChatScenario) -> None:
    # Mallory (carol's Slack account here) asks for a link and sends it to alice: "open this to see the release".
    await chat.slash("link", user=CAROL_SLACK, command="/release")
    url = link_in(chat.responses_to(CAROL_SLACK)[0])
    github_url = (await chat.client.get(local(url), allow_redirects=False)).headers["Location"]
    chat.base.fake.signed_in_as = "alice"  # GitHub signs alice in (and skips its screen: she authorized the App)
    async with aiohttp.ClientSession() as browser, browser.get(github_url, allow_redirects=False) as back:
        callback = back.headers["Location"]
    page = await (await chat.client.get(local(callback), allow_redirects=False)).text()
    assert "Only go on if that is <b>your own</b> chat account" in page
    declined = await chat.client.post("/github/oauth/confirm", data={**consent_form(page), "answer": "deny"})
    assert declined.status == 200 and "Nothing was linked" in await declined.text()
    await chat.slash(f"{REPO}#7 friday 3pm", user=CAROL_SLACK)
    assert await chat.base.store.get_active_release(REPO, 7) is None
    assert "/release link" in chat.responses_to(CAROL_SLACK)[-1]
    # A consent POST without the browser's cookie (another site's form) is refused, and links nothing.
    await chat.slash("link", user=CAROL_SLACK, command="/release")
    url = link_in(chat.responses_to(CAROL_SLACK)[-1])
    github_url = (await chat.client.get(local(url), allow_redirects=False)).headers["Location"]
    async with aiohttp.ClientSession() as browser, browser.get(github_url, allow_redirects=False) as back:
        callback = back.headers["Location"]
    page = await (await chat.client.get(local(callback), allow_redirects=False)).text()
    chat.client.session.cookie_jar.clear()
    forged = await chat.client.post("/github/oauth/confirm", data={**consent_form(page), "answer": "allow"})
    assert forged.status == 403


async def test_a_revoked_authorization_ends_the_link_at_refresh(chat: ChatScenario) -> None:
    await chat.slash("link", user=CAROL_SLACK, command="/release")
    url = link_in(chat.responses_to(CAROL_SLACK)[0])
    github_url = (await chat.client.get(local(url), allow_redirects=False)).headers["Location"]
    chat.base.fake.signed_in_as = "alice"
    async with aiohttp.ClientSession() as browser, browser.get(github_url, allow_redirects=False) as back:
        callback = back.headers["Location"]
    page = await (await chat.client.get(local(callback), allow_redirects=False)).text()
    assert (
        await chat.client.post("/github/oauth/confirm", data={**consent_form(page), "answer": "allow"})
    ).status == 200
    # Nine hours later the user token has expired: it is refreshed before acting.
    chat.base.clock.advance(hours=9)
    await chat.slash(f"{REPO}#7 status", user=CAROL_SLACK)
    assert chat.base.fake.refreshes == 1
    # Then alice revokes the App: the next refresh is refused and the link ends.
    chat.base.fake.revoke_authorization("alice")
    chat.base.clock.advance(hours=9)
    await chat.slash(f"{REPO}#7 friday 3pm", user=CAROL_SLACK)
    assert await chat.base.store.get_active_release(REPO, 7) is None
    assert "/release link" in chat.responses_to(CAROL_SLACK)[-1]


async def test_a_telegram_cancel_button_cancels_everywhere(chat: ChatScenario) -> None:
    await subscribe_both(chat)
    await chat.base.deliver("pull_request", labeled(7, HEAD, sender="alice"))
    [tg] = chat.telegram_release_messages()
    release = await chat.base.store.get_active_release(REPO, 7)
    assert release is not None
    data = f"rs1|c|{button_value(render_view(release, chat.base.settings.github_url))}"
    assert len(data.encode()) <= 64
    chat.base.clock.advance(seconds=10)
    assert await chat.telegram_update(chat.telegram.press(GROUP, ALICE_TG, tg.message_id, data)) == 200
    chat.base.clock.advance(seconds=10)
    await chat.base.settle()
    release = await chat.base.store.get_latest_release(REPO, 7)
    assert release is not None and release.state is State.CANCELLED and release.audit[-1].source == "telegram"
    assert [a["callback_query_id"] for a in chat.telegram.callback_answers] != []
    [slack_message] = chat.release_messages()
    assert "Cancelled" in slack_message.text
    assert "Cancelled" in chat.telegram_release_messages()[0].text
    assert "Cancelled" in chat.base.sticky(7)["body"]


async def test_a_button_from_an_unlinked_telegram_user_is_refused_in_an_alert(chat: ChatScenario) -> None:
    await subscribe_both(chat)
    await chat.base.deliver("pull_request", labeled(7, HEAD, sender="alice"))
    [tg] = chat.telegram_release_messages()
    release = await chat.base.store.get_active_release(REPO, 7)
    assert release is not None
    await chat.telegram_update(
        chat.telegram.press(
            GROUP, BOB_TG, tg.message_id, f"rs1|c|{button_value(render_view(release, chat.base.settings.github_url))}"
        )
    )
    release = await chat.base.store.get_active_release(REPO, 7)
    assert release is not None and release.state is not State.CANCELLED
    [answer] = chat.telegram.callback_answers
    assert answer.get("show_alert") in (True, "true") and "/release link" in str(answer.get("text"))


async def test_a_slack_button_acts_as_the_linked_user(chat: ChatScenario) -> None:
    await subscribe_both(chat)
    await chat.link("slack", BOB_SLACK, "bob")
    await chat.base.deliver("pull_request", labeled(7, HEAD, sender="alice"))
    [message] = chat.release_messages()
    release = await chat.base.store.get_active_release(REPO, 7)
    assert release is not None
    started = time.perf_counter()
    assert (
        await chat.click(
            message.ts, "c", button_value(render_view(release, chat.base.settings.github_url)), user=BOB_SLACK
        )
        == 200
    )
    assert time.perf_counter() - started < 3.0
    release = await chat.base.store.get_active_release(REPO, 7)
    assert release is not None and release.state is not State.CANCELLED  # bob reads only
    assert any("can cancel" in t and "*read*" in t for t in chat.responses_to(BOB_SLACK))
    await chat.click(
        message.ts, "c", button_value(render_view(release, chat.base.settings.github_url)), user=ALICE_SLACK
    )
    release = await chat.base.store.get_latest_release(REPO, 7)
    assert release is not None and release.state is State.CANCELLED


async def test_forged_and_stale_slack_requests_and_a_wrong_telegram_secret_do_nothing(chat: ChatScenario) -> None:
    await chat.link("slack", ALICE_SLACK, "alice")
    body = slash_command_body("/ship", f"{REPO}#7 friday 3pm", user_id=ALICE_SLACK, team_id=chat.slack.team_id)
    forged = sign("not-the-secret", body)
    status, _ = await chat.post_slack(body, content_type="application/x-www-form-urlencoded", headers=forged)
    assert status == 401
    stale = sign(SIGNING_SECRET, body, timestamp=int(time.time()) - 6 * 60)
    status, _ = await chat.post_slack(body, content_type="application/x-www-form-urlencoded", headers=stale)
    assert status == 401
    await chat.link("telegram", ALICE_TG, "alice")
    update = chat.telegram.command_update(GROUP, ALICE_TG, f"/ship {REPO}#7 friday 3pm", mention=True)
    assert await chat.telegram_update(update, secret="wrong") == 403
    assert await chat.telegram_update(update, secret=None) == 401
    await chat.base.settle()
    assert await chat.base.store.get_active_release(REPO, 7) is None
    assert chat.responses_to(ALICE_SLACK) == [] and chat.telegram.bot_messages(GROUP) == []


async def test_a_slack_retry_and_a_repeated_telegram_update_act_once(chat: ChatScenario) -> None:
    await chat.link("slack", ALICE_SLACK, "alice")
    await chat.link("telegram", ALICE_TG, "alice")
    mention = {
        "type": "app_mention",
        "user": ALICE_SLACK,
        "text": f"<@{chat.slack.bot_user_id}> /ship {REPO}#7 friday 3pm",
        "ts": "1700000100.000100",
        "channel": CHANNEL,
        "event_ts": "1700000100.000100",
    }
    assert await chat.event(mention, event_id="Ev0001") == 200
    assert await chat.event(mention, event_id="Ev0001", retry=1) == 200
    await chat.base.settle()
    release = await chat.base.store.get_active_release(REPO, 7)
    assert release is not None and len(release.audit) == len([t for t in release.audit])
    assert {t.delivery for t in release.audit if t.source == "slack"} == {"slack:T0001:event:Ev0001"}
    assert len([e for e in chat.slack.ephemerals if e.user == ALICE_SLACK]) == 1

    update = chat.telegram.command_update(GROUP, ALICE_TG, f"/ship@{chat.telegram.username} {REPO}#7 cancel")
    assert await chat.telegram_update(update) == 200
    assert await chat.telegram_update(update) == 200
    release = await chat.base.store.get_latest_release(REPO, 7)
    assert release is not None and release.state is State.CANCELLED
    assert len([t for t in release.audit if t.source == "telegram"]) == 1  # one cancel
    answers = [m for m in chat.telegram.bot_messages(GROUP) if m.reply_to is not None]
    assert len(answers) == 1


async def test_rate_limits_mid_release_delay_messages_and_lose_none(chat: ChatScenario) -> None:
    await subscribe_both(chat)
    chat.slack.rate_limit("chat.postMessage", retry_after=2, times=1)
    chat.telegram.rate_limit("sendMessage", retry_after=2, times=1)
    await chat.base.deliver("pull_request", labeled(7, HEAD, sender="alice"))
    assert chat.release_messages() == [] and chat.telegram_release_messages() == []
    chat.base.clock.advance(seconds=3)
    await chat.base.settle()
    assert len(chat.release_messages()) == 1 and len(chat.telegram_release_messages()) == 1
    # Mid-release the edits are limited too: they arrive after the wait, once.
    chat.slack.rate_limit("chat.update", retry_after=2, times=1)
    chat.telegram.rate_limit("editMessageText", retry_after=2, times=1)
    chat.base.clock.advance(seconds=10)
    await chat.slash(f"{REPO}#7 hold", user=ALICE_SLACK)
    chat.base.clock.advance(seconds=10)
    await chat.base.settle()
    chat.base.clock.advance(seconds=3)
    await chat.base.settle()
    [message] = chat.release_messages()
    [tg] = chat.telegram_release_messages()
    assert "On hold" in message.text and "On hold" in tg.text
    assert chat.slack.violations == [] and chat.telegram.violations == []


async def test_milestones_are_thread_replies_and_the_requester_hears_of_a_block(chat: ChatScenario) -> None:
    await subscribe_both(chat)
    chat.base.fake.add_check_run(REPO, HEAD, "ci/build", status="completed", conclusion="failure")
    await chat.base.deliver("pull_request", labeled(7, HEAD, sender="alice"))
    chat.base.clock.advance(seconds=10)
    await chat.base.deliver("check_suite", suite_completed(HEAD, conclusion="failure"))
    chat.base.clock.advance(seconds=10)
    await chat.base.settle()
    release = await chat.base.store.get_active_release(REPO, 7)
    assert release is not None
    [message] = chat.release_messages()
    replies = [m for m in chat.slack.thread(CHANNEL, message.ts) if m.is_reply]
    assert release.state is State.BLOCKED
    assert [r.text.split(" ")[1] for r in replies] == ["Blocked"]
    # Alice asked for the release and linked both accounts: she hears of the block directly, once each.
    dms = [m for ch in chat.slack.channels.values() if ch.is_im for m in ch.messages]
    assert [m.text.split(":")[0] for m in dms] == [f"Your release {REPO}#7 (Faster widgets)"]
    assert len([m for m in chat.telegram.bot_messages(ALICE_TG) if "Blocked" in m.text]) == 1


async def test_settings_refuse_unsigned_chat_intake() -> None:
    from bot.config import SettingsError

    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"SLACK_BOT_TOKEN": "xoxb-1"})
    assert "SLACK_SIGNING_SECRET is required" in str(caught.value)
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"TELEGRAM_BOT_TOKEN": "1:x", "TELEGRAM_WEBHOOK_SECRET": "s"})
    assert "PUBLIC_URL is not" in str(caught.value)
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(
            {"TELEGRAM_BOT_TOKEN": "1:x", "PUBLIC_URL": "https://x.example", "TELEGRAM_WEBHOOK_SECRET": "a b"}
        )
    assert "TELEGRAM_WEBHOOK_SECRET must be" in str(caught.value)
    # A laptop: PUBLIC_URL for linking, no webhook secret: Telegram is polled.
    laptop = Settings.from_env({"TELEGRAM_BOT_TOKEN": "1:x", "PUBLIC_URL": "http://localhost:3000"})
    assert laptop.telegram_configured and laptop.telegram_webhook_secret is None
    ok = Settings.from_env({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-1"})
    assert ok.slack_configured and ok.slack_signing_secret is None


async def test_postpone_moves_to_the_next_window_and_a_double_click_acts_once(chat: ChatScenario) -> None:
    await subscribe_both(chat)
    await chat.base.deliver("pull_request", labeled(7, HEAD, sender="alice"))
    release = await chat.base.store.get_active_release(REPO, 7)
    assert release is not None and release.slot is not None
    assert release.slot.start.isoformat() == "2026-11-25T09:30:00+00:00"  # Wed 10:30 Berlin
    [tg] = chat.telegram_release_messages()
    data = f"rs1|p|{button_value(render_view(release, chat.base.settings.github_url))}"
    first = chat.telegram.press(GROUP, ALICE_TG, tg.message_id, data)
    second = chat.telegram.press(GROUP, ALICE_TG, tg.message_id, data)
    await chat.telegram_update(first)
    await chat.telegram_update(second)
    release = await chat.base.store.get_active_release(REPO, 7)
    assert release is not None and release.slot is not None
    # The window Wed 10:00-16:00 Berlin is over for this release: Thursday's opens at 10:00 Berlin.
    assert release.slot.start.isoformat() == "2026-11-26T09:00:00+00:00"
    assert release.audit[-1].source == "telegram"
    answers = [a.get("text") for a in chat.telegram.callback_answers]
    assert len(answers) == 2 and "changed since" in str(answers[1])


async def test_a_refused_telegram_press_is_told_to_the_presser_only(chat: ChatScenario) -> None:
    await subscribe_both(chat)
    await chat.link("telegram", BOB_TG, "bob")  # bob reads only
    await chat.base.deliver("pull_request", labeled(7, HEAD, sender="alice"))
    before = len(chat.telegram.bot_messages(GROUP))
    [tg] = chat.telegram_release_messages()
    release = await chat.base.store.get_active_release(REPO, 7)
    assert release is not None
    data = f"rs1|c|{button_value(render_view(release, chat.base.settings.github_url))}"
    await chat.telegram_update(chat.telegram.press(GROUP, BOB_TG, tg.message_id, data))
    [answer] = chat.telegram.callback_answers
    assert answer.get("show_alert") in (True, "true") and "triage" in str(answer.get("text"))
    assert len(chat.telegram.bot_messages(GROUP)) == before  # nothing said in the group
    release = await chat.base.store.get_active_release(REPO, 7)
    assert release is not None and release.state is not State.CANCELLED


async def test_someone_without_access_learns_nothing_about_the_repository(chat: ChatScenario) -> None:
    await chat.link("slack", ALICE_SLACK, "alice")
    await chat.slash(f"{REPO}#7 friday 3pm", user=ALICE_SLACK)
    # A GitHub account with no access (as to a private repository; on a public one everybody may read).
    chat.base.fake.set_permission(REPO, "eve", "none")
    await chat.link("slack", CAROL_SLACK, "eve")
    await chat.slash(f"status {REPO}", user=CAROL_SLACK, command="/release")
    await chat.slash(f"{REPO}#7 status", user=CAROL_SLACK)
    await chat.slash(f"{REPO}#7 calendar", user=CAROL_SLACK)
    answers = chat.responses_to(CAROL_SLACK)
    assert len(answers) == 3
    assert all("has no access" in a for a in answers), answers
    assert not any("Faster widgets" in a or "calendar.ics" in a or "friday" in a.lower() for a in answers)


async def test_two_refreshes_at_once_refresh_once_and_keep_the_link(chat: ChatScenario) -> None:
    import asyncio

    await chat.slash("link", user=CAROL_SLACK, command="/release")
    url = link_in(chat.responses_to(CAROL_SLACK)[0])
    github_url = (await chat.client.get(local(url), allow_redirects=False)).headers["Location"]
    chat.base.fake.signed_in_as = "alice"
    async with aiohttp.ClientSession() as browser, browser.get(github_url, allow_redirects=False) as back:
        callback = back.headers["Location"]
    page = await (await chat.client.get(local(callback), allow_redirects=False)).text()
    await chat.client.post("/github/oauth/confirm", data={**consent_form(page), "answer": "allow"})
    chat.base.clock.advance(hours=9)
    links = chat.chat.links
    assert links is not None
    carol = ChatUser("slack", chat.slack.team_id, CAROL_SLACK)
    assert await asyncio.gather(links.login_for(carol), links.login_for(carol)) == ["alice", "alice"]
    assert chat.base.fake.refreshes == 1
    assert await links.linked_login(carol) == "alice"
