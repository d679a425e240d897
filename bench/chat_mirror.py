"""Chat mirror latency: from a GitHub webhook POST to the release's message showing the change in Slack
and in Telegram; and how fast a button press is acknowledged (Slack's HTTP ack, Telegram's
answerCallbackQuery).

The real app and its worker run in this process (`make_app(settings, run_worker=True)`, served over
HTTP on 127.0.0.1, SQLite, a real clock), with the fake GitHub, the fake Slack Web API and the fake
Telegram Bot API of the test suite. The fakes note the moment the bot's post or edit of a release
message reaches them, and the moment a callback query is answered.

Each PR lives in its own repository, followed by its own Slack channel and its own Telegram group (a
chat follows a repository, so a PR per repository is what gives each PR its own chats). The bot paces
each chat (Slack: a message per second per channel; Telegram: one per 3 s in a group): many PRs in one
chat would measure that deliberate queue, not the mirror. For the same reason, changes to one PR are
spaced wider than the edit interval and the pacing, so each is the first change after a quiet spell and
goes out at once.

Rounds, each over every PR at a steady rate: the `Ready for Prod` label (the message is posted,
Scheduled), then `/ship hold` and `/ship unhold` comments in turn (the message is edited: On hold,
Scheduled). Then Slack and Telegram button presses (Cancel, by a linked reader: refused, so nothing
moves) at a steady rate.

    python bench/chat_mirror.py [--prs 100] [--rounds 3] [--rate 10] [--presses 200] [--press-rate 20]
                                [--loop auto|uvloop|asyncio]

Last line: JSON with mirror_ms_p50/p99 (until both chats show the change), slack_ms_p50/p99,
telegram_ms_p50/p99, button_ack_ms_p50/p99 (Slack), telegram_answer_ms_p50/p99, events; `missed` counts
changes no chat showed within a job lease (60 s) plus 5 s, which are left out of the percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.__main__ import new_event_loop  # noqa: E402
from bot.app import STORE, make_app  # noqa: E402
from bot.config import Settings  # noqa: E402
from bot.release import State  # noqa: E402
from bot.render import HEADLINES  # noqa: E402
from bot.secrets import generate_key  # noqa: E402
from bot.store.base import Installation  # noqa: E402
from chatops.identity import ChatUser  # noqa: E402
from chatops.runtime import CHAT  # noqa: E402
from chatops.slack import CHANNEL_PACE  # noqa: E402
from chatops.telegram import GROUP_PACE  # noqa: E402
from tests.chat_scenario import SIGNING_SECRET, TELEGRAM_SECRET, chat_settings  # noqa: E402
from tests.fakes.github import FakeGitHub  # noqa: E402
from tests.fakes.keys import make_app_key  # noqa: E402
from tests.fakes.slack import FakeSlack, block_actions_body, sign, slash_command_body  # noqa: E402
from tests.fakes.telegram import FakeTelegram  # noqa: E402
from tests.helpers import SECRET, webhook_headers  # noqa: E402
from tests.scenario import INSTALLATION, labeled, pr_comment  # noqa: E402

APP_ID = 4242
OWNER = "octo-org"
PR = 1
ALICE_SLACK, BOB_SLACK = "U0ALICE", "U0BOB"
ALICE_TG, BOB_TG = 1001, 1002
# Round by round: what happens to every PR, and the headline its message shows once mirrored.
STEPS = (
    ("label", None, HEADLINES[State.SCHEDULED]),
    ("hold", "/ship hold", HEADLINES[State.HELD]),
    ("unhold", "/ship unhold", HEADLINES[State.SCHEDULED]),
)

Seen = Callable[[str, str, str], None]


class LeanGitHub(FakeGitHub):
    """The fake GitHub, not checking its own answers against the description (the test suite does):
    on a two-core machine that would take much of this process's CPU, slowing the bot for reasons
    that are not the bot's. It still checks every request the bot sends."""

    def _response_problems(self, op: Any, reply: Any) -> str:
        return ""


class TimedSlack(FakeSlack):
    """The fake Slack, telling the bench each time a message is posted or edited (once it shows)."""

    def __init__(self, seen: Seen) -> None:
        super().__init__()
        self.seen = seen

    def _m_chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        answer = super()._m_chat_postMessage(args)
        if not args.get("thread_ts"):
            self.seen("slack", str(answer["channel"]), str(answer["message"]["text"]))
        return answer

    def _m_chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        answer = super()._m_chat_update(args)
        self.seen("slack", str(answer["channel"]), str(answer["text"]))
        return answer


class TimedTelegram(FakeTelegram):
    """The fake Telegram, telling the bench of each message sent or edited, and when each callback
    query was answered."""

    def __init__(self, seen: Seen) -> None:
        super().__init__()
        self.seen = seen
        self.answered: dict[str, float] = {}

    async def _m_sendmessage(self, call: Any) -> Any:
        result = await super()._m_sendmessage(call)
        self.seen("telegram", call.text("chat_id"), call.text("text"))
        return result

    async def _m_editmessagetext(self, call: Any) -> Any:
        result = await super()._m_editmessagetext(call)
        self.seen("telegram", call.text("chat_id"), call.text("text"))
        return result

    async def _m_answercallbackquery(self, call: Any) -> Any:
        result = await super()._m_answercallbackquery(call)
        self.answered[call.text("callback_query_id")] = time.perf_counter()
        return result


@dataclass
class Change:
    """One event sent for one PR, and when each chat showed it."""

    step: str
    headline: str
    sent: float
    slack: float | None = None
    telegram: float | None = None

    @property
    def done(self) -> bool:
        return self.slack is not None and self.telegram is not None


class Chats:
    """Which PR each chat shows, and the change each PR is waiting to show."""

    def __init__(self, prs: int) -> None:
        self.channels = [f"C0REL{i:04d}" for i in range(prs)]
        self.groups = [-1_001_000_000_000 - i for i in range(prs)]
        self._index = {("slack", c): i for i, c in enumerate(self.channels)}
        self._index |= {("telegram", str(g)): i for i, g in enumerate(self.groups)}
        self.waiting: dict[int, Change] = {}
        self.changes: list[Change] = []

    def expect(self, i: int, change: Change) -> None:
        self.waiting[i] = change
        self.changes.append(change)

    def seen(self, platform: str, chat: str, text: str) -> None:
        i = self._index.get((platform, chat))
        change = self.waiting.get(i) if i is not None else None
        if change is None or change.headline not in text:
            return
        now = time.perf_counter()
        if platform == "slack" and change.slack is None:
            change.slack = now
        elif platform == "telegram" and change.telegram is None:
            change.telegram = now


def repo_of(i: int) -> str:
    return f"{OWNER}/service-{i:04d}"


def head_of(i: int) -> str:
    return f"{i + 1:040x}"


def far_window() -> str:
    """Every day, two hours that start 7 to 10 hours from now (UTC): no slot comes due while this runs."""
    start = min(21, (datetime.now(UTC).hour + 10) % 24)
    return f'timezone: UTC\nwindows:\n  - days: [mon-sun]\n    hours: "{start:02d}:00-{start + 2:02d}:00"\n'


def arrange(fake: FakeGitHub, slack: FakeSlack, telegram: FakeTelegram, chats: Chats, public_pem: bytes) -> None:
    fake.rate_limit = 1_000_000  # every PR lives under one installation
    fake.add_app(APP_ID, public_pem)
    config = far_window()
    repos = [repo_of(i) for i in range(len(chats.channels))]
    for i, repo in enumerate(repos):
        fake.add_repo(repo)
        fake.add_pull(repo, PR, head_sha=head_of(i), title=f"Change {i}", user_login="alice")
        fake.set_permission(repo, "alice", "write")
        fake.set_permission(repo, "bob", "read")
        fake.set_branch_protection(repo, "main", ["ci/build"])
        fake.add_check_run(repo, head_of(i), "ci/build", status="completed", conclusion="success")
        fake.set_file(repo, ".github/release-secretary.yml", config)
    fake.add_installation(INSTALLATION, OWNER, repos=repos)
    slack.add_user(ALICE_SLACK, "alice")
    slack.add_user(BOB_SLACK, "bob")
    for channel in chats.channels:
        slack.add_channel(channel, channel.lower(), members={slack.bot_user_id, ALICE_SLACK, BOB_SLACK})
    telegram.add_user(ALICE_TG, "Alice", "alice_tg", started=True)
    telegram.add_user(BOB_TG, "Bob", "bob_tg", started=True)
    for group in chats.groups:
        telegram.add_chat(group, "supergroup", f"Releases {group}")


async def wait_until(done: Callable[[], bool], timeout: float, what: str) -> bool:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            print(f"warning: gave up waiting for {what} after {timeout:.0f}s", file=sys.stderr)
            return False
        await asyncio.sleep(0.01)
    return True


async def steady(count: int, rate: float, send: Callable[[int], Coroutine[Any, Any, None]]) -> None:
    """Open loop: `send(n)` starts on schedule whether or not the earlier ones have finished."""
    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter() + 0.05
    for n in range(count):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(n)))
    await asyncio.gather(*tasks)


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    chats = Chats(args.prs)
    fake = LeanGitHub()
    slack = TimedSlack(chats.seen)
    telegram = TimedTelegram(chats.seen)
    for server in (fake, slack, telegram):
        await server.start()
    key = make_app_key()
    arrange(fake, slack, telegram, chats, key.public_key_pem)

    base = Settings(
        github_app_id=APP_ID,
        github_private_key=key.rsa_private_key_pem.decode(),
        github_webhook_secret=SECRET,
        github_api_url=fake.url,
        data_dir=tmp,
        secrets_keys=(generate_key(),),
        github_write_interval=0.0,
        github_max_retry_wait=5.0,
        worker_poll_interval=0.05,
        worker_retry_base=0.01,
        reconcile_interval=0.0,
        calendar_sweep_interval=0.0,
        redelivery_sweep_interval=0.0,
    )
    # chat_settings keeps the production edit interval (3 s): the rounds are spaced past it, not shortened.
    settings = chat_settings(base, slack, telegram, fake.url)
    app = make_app(settings, run_worker=True)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    url = f"http://{host}:{port}"
    results: dict[str, Any] = {"prs": args.prs}
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:
            await subscribe(app, session, url, slack, telegram, chats)
            results |= await mirror(session, url, fake, chats, args, settings)
            results |= await presses(session, url, slack, telegram, chats, args)
    finally:
        await runner.cleanup()
        for server in (fake, slack, telegram):
            await server.close()
    results["violations"] = len(fake.violations) + len(slack.violations) + len(telegram.violations)
    for name, found in (("github", fake.violations), ("slack", slack.violations), ("telegram", telegram.violations)):
        for problem in found[:5]:
            print(f"{name} violation: {problem}", file=sys.stderr)
    return results


async def subscribe(
    app: web.Application,
    session: aiohttp.ClientSession,
    url: str,
    slack: FakeSlack,
    telegram: TimedTelegram,
    chats: Chats,
) -> None:
    """Alice (a writer) links both chat accounts, then subscribes each PR's channel and group to its repo."""
    await app[STORE].save_installation(
        Installation(
            id=INSTALLATION, account_login=OWNER, repositories=tuple(sorted(map(repo_of, range(len(chats.channels)))))
        )
    )
    links = app[CHAT].links
    assert links is not None
    await links.link(ChatUser("slack", slack.team_id, ALICE_SLACK), "alice")
    await links.link(ChatUser("slack", slack.team_id, BOB_SLACK), "bob")
    await links.link(ChatUser("telegram", "", str(ALICE_TG)), "alice")
    await links.link(ChatUser("telegram", "", str(BOB_TG)), "bob")
    gate = asyncio.Semaphore(16)

    async def one(i: int) -> None:
        channel, repo = chats.channels[i], repo_of(i)
        body = slash_command_body(
            "/release",
            f"subscribe {repo}",
            user_id=ALICE_SLACK,
            user_name="alice",
            team_id=slack.team_id,
            channel_id=channel,
            response_url=slack.response_url(channel=channel, user=ALICE_SLACK),
        )
        update = telegram.command_update(chats.groups[i], ALICE_TG, f"/release subscribe {repo}", mention=True)
        async with gate:
            headers = {**sign(SIGNING_SECRET, body), "Content-Type": "application/x-www-form-urlencoded"}
            async with session.post(f"{url}/slack/events", data=body, headers=headers) as response:
                assert response.status == 200, await response.text()
            async with session.post(f"{url}/telegram/webhook", json=update, headers=telegram_headers()) as response:
                assert response.status == 200, await response.text()

    await asyncio.gather(*(one(i) for i in range(len(chats.channels))))

    def subscribed() -> bool:
        in_slack = sum("follows releases" in e.text for e in slack.ephemerals)
        in_telegram = sum("follows releases" in m.text for g in chats.groups for m in telegram.bot_messages(g))
        return in_slack >= len(chats.channels) and in_telegram >= len(chats.groups)

    if not await wait_until(subscribed, 60, "the subscriptions"):
        raise RuntimeError("the chats did not all subscribe")


def telegram_headers() -> dict[str, str]:
    return {"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET}


async def mirror(
    session: aiohttp.ClientSession,
    url: str,
    fake: FakeGitHub,
    chats: Chats,
    args: argparse.Namespace,
    settings: Settings,
) -> dict[str, Any]:
    # A PR's next change comes after its chats' turns and its edit interval are past: at once, not queued.
    quiet = max(settings.chat_edit_interval, GROUP_PACE, CHANNEL_PACE) + 1.0
    # Longer than a job's lease: a job the worker lost is claimed again once its lease lapses, and its
    # change then counts, late, in the figures instead of dropping out of them.
    patience = settings.worker_lease_seconds + 5.0
    missed = 0
    started = -quiet
    for r in range(args.rounds):
        step, text, headline = STEPS[0] if r == 0 else STEPS[1 + (r - 1) % 2]
        await asyncio.sleep(max(0.0, started + quiet - time.perf_counter()))
        started = time.perf_counter()

        async def send(i: int, step: str = step, text: str | None = text, headline: str = headline) -> None:
            repo = repo_of(i)
            if text is None:
                event, data = "pull_request", labeled(PR, head_of(i), sender="alice", repo=repo)
            else:
                comment_id = fake.add_comment(repo, PR, text, user_login="alice")
                event, data = "issue_comment", pr_comment(PR, text, sender="alice", comment_id=comment_id, repo=repo)
            body = json.dumps(data).encode()
            headers = webhook_headers(event, body, delivery=str(uuid.uuid4()))
            chats.expect(i, Change(step, headline, time.perf_counter()))
            async with session.post(f"{url}/webhooks/github", data=body, headers=headers) as response:
                assert response.status == 202, await response.text()

        await steady(args.prs, args.rate, send)
        this_round = chats.changes[-args.prs :]

        def shown(changes: list[Change] = this_round) -> bool:
            return all(c.done for c in changes)

        await wait_until(shown, patience, f"round {r + 1} ({step}) to show in chat")
        missed += sum(not c.done for c in this_round)

    done = [c for c in chats.changes if c.done]
    both = [(max(c.slack or 0, c.telegram or 0) - c.sent) * 1000 for c in done]
    in_slack = [((c.slack or 0) - c.sent) * 1000 for c in done]
    in_telegram = [((c.telegram or 0) - c.sent) * 1000 for c in done]
    posts = [ms for c, ms in zip(done, both, strict=True) if c.step == "label"]
    edits = [ms for c, ms in zip(done, both, strict=True) if c.step != "label"]
    return {
        "events": len(chats.changes),
        "rate_per_s": args.rate,
        "missed": missed,
        "mirror_ms_p50": pct(both, 0.50),
        "mirror_ms_p99": pct(both, 0.99),
        "mirror_ms_max": pct(both, 1.0),
        "mirror_over_1s": sum(ms > 1000 for ms in both),
        "slack_ms_p50": pct(in_slack, 0.50),
        "slack_ms_p99": pct(in_slack, 0.99),
        "telegram_ms_p50": pct(in_telegram, 0.50),
        "telegram_ms_p99": pct(in_telegram, 0.99),
        "post_ms_p50": pct(posts, 0.50),
        "post_ms_p99": pct(posts, 0.99),
        "edit_ms_p50": pct(edits, 0.50),
        "edit_ms_p99": pct(edits, 0.99),
    }


async def presses(
    session: aiohttp.ClientSession,
    url: str,
    slack: FakeSlack,
    telegram: TimedTelegram,
    chats: Chats,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Bob (linked, but only a reader) presses Cancel under each PR's message in turn, in Slack and in
    Telegram: refused, so no release moves and no message is edited while this runs."""
    slack_buttons = []
    for channel in chats.channels:
        [message] = [m for m in slack.messages(channel) if m.thread_ts is None and m.bot_id and m.blocks]
        [value] = [
            e["value"]
            for b in message.blocks or ()
            if b["type"] == "actions"
            for e in b["elements"]
            if e["action_id"] == "release_c"
        ]
        slack_buttons.append((channel, message.ts, value))
    telegram_buttons = []
    for group in chats.groups:
        [tg_message] = [m for m in telegram.bot_messages(group) if m.reply_markup]
        rows = (tg_message.reply_markup or {})["inline_keyboard"]
        [data] = [b["callback_data"] for row in rows for b in row if b.get("callback_data", "").startswith("rs1|c|")]
        telegram_buttons.append((group, tg_message.message_id, data))

    slack_acks: list[float] = []
    telegram_sent: dict[str, float] = {}
    telegram_acks: list[float] = []

    async def press(n: int) -> None:
        channel, ts, value = slack_buttons[n % len(slack_buttons)]
        body = block_actions_body(
            "release_c",
            value,
            BOB_SLACK,
            slack.team_id,
            channel,
            ts,
            slack.response_url(channel=channel, user=BOB_SLACK, message_ts=ts),
            user_name="bob",
            message=slack.message_json(channel, ts),
        )
        group, message_id, data = telegram_buttons[n % len(telegram_buttons)]
        update = telegram.press(group, BOB_TG, message_id, data)
        await asyncio.gather(click(body), callback(update))

    async def click(body: bytes) -> None:
        headers = {**sign(SIGNING_SECRET, body), "Content-Type": "application/x-www-form-urlencoded"}
        sent = time.perf_counter()
        async with session.post(f"{url}/slack/events", data=body, headers=headers) as response:
            await response.read()
            assert response.status == 200, response.status
        slack_acks.append((time.perf_counter() - sent) * 1000)

    async def callback(update: dict[str, Any]) -> None:
        telegram_sent[update["callback_query"]["id"]] = sent = time.perf_counter()
        async with session.post(f"{url}/telegram/webhook", json=update, headers=telegram_headers()) as response:
            await response.read()
            assert response.status == 200, response.status
        telegram_acks.append((time.perf_counter() - sent) * 1000)

    await steady(args.presses, args.press_rate, press)
    await wait_until(lambda: telegram_sent.keys() <= telegram.answered.keys(), 20, "the callback answers")
    answers = [(telegram.answered[q] - sent) * 1000 for q, sent in telegram_sent.items() if q in telegram.answered]
    return {
        "presses": args.presses,
        "press_rate_per_s": args.press_rate,
        "button_ack_ms_p50": pct(slack_acks, 0.50),
        "button_ack_ms_p99": pct(slack_acks, 0.99),
        "telegram_answer_ms_p50": pct(answers, 0.50),
        "telegram_answer_ms_p99": pct(answers, 0.99),
        "telegram_webhook_ack_ms_p99": pct(telegram_acks, 0.99),
        "unanswered": len(telegram_sent) - len(answers),
    }


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1) if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prs", type=int, default=100, help="PRs, each in its own repository and chats")
    parser.add_argument("--rounds", type=int, default=3, help="label, then /ship hold and /ship unhold in turn")
    parser.add_argument("--rate", type=float, default=10.0, help="webhooks per second within a round")
    parser.add_argument("--presses", type=int, default=200, help="button presses on each platform")
    parser.add_argument("--press-rate", type=float, default=20.0, help="presses per second on each platform")
    parser.add_argument(
        "--loop",
        choices=["auto", "uvloop", "asyncio"],
        default="auto",
        help="event loop, chosen as `python -m bot serve` chooses it (auto: uvloop when installed)",
    )
    args = parser.parse_args()
    loop = new_event_loop(args.loop)
    try:
        with tempfile.TemporaryDirectory(prefix="rs-bench-chat-") as tmp:
            results = loop.run_until_complete(run(args, Path(tmp)))
    finally:
        loop.close()
    print(
        f"{results['events']} changes over {results['prs']} PRs at {args.rate:g}/s: both chats p50 "
        f"{results['mirror_ms_p50']} ms, p99 {results['mirror_ms_p99']} ms (Slack p99 {results['slack_ms_p99']} ms, "
        f"Telegram p99 {results['telegram_ms_p99']} ms; posts p50 {results['post_ms_p50']} ms, edits p50 "
        f"{results['edit_ms_p50']} ms); max {results['mirror_ms_max']} ms, {results['mirror_over_1s']} over 1 s, "
        f"missed {results['missed']}"
    )
    print(
        f"{args.presses} presses each at {args.press_rate:g}/s: Slack ack p50 {results['button_ack_ms_p50']} ms, "
        f"p99 {results['button_ack_ms_p99']} ms; Telegram answerCallbackQuery p50 "
        f"{results['telegram_answer_ms_p50']} ms, p99 {results['telegram_answer_ms_p99']} ms"
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
