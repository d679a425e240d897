"""`python -m bot doctor`: check settings, store and the GitHub App, and say precisely what is wrong."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import aiohttp
import gidgethub
import yaml

from handlers.routes import ALWAYS_DELIVERED, compose, handled_events

from .config import Settings
from .credentials import load_registered_app
from .github import GitHubApp
from .store import DeliveryStatus, make_store


@dataclass
class Report:
    out: TextIO = sys.stdout
    failures: int = 0
    warnings: int = 0
    lines: list[str] = field(default_factory=list)

    def _say(self, mark: str, text: str) -> None:
        line = f"[{mark}] {text}"
        self.lines.append(line)
        print(line, file=self.out)

    def ok(self, text: str) -> None:
        self._say(" ok ", text)

    def warn(self, text: str) -> None:
        self.warnings += 1
        self._say("warn", text)

    def fail(self, text: str) -> None:
        self.failures += 1
        self._say("FAIL", text)


async def check_store(settings: Settings, report: Report) -> None:
    where = (settings.mongodb_uri and "MongoDB") or f"SQLite at {settings.sqlite_path}"
    store = make_store(settings)
    try:
        await asyncio.wait_for(store.open(), timeout=10)
        await store.ping()
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        report.fail(f"store: cannot open {where}: {type(exc).__name__}: {exc}")
        return
    try:
        counts = await store.count_deliveries()
        summary = ", ".join(f"{n} {s.value}" for s, n in counts.items())
        report.ok(f"store: {where} ({summary})")
        parked = await store.list_deliveries(DeliveryStatus.PARKED, limit=10)
        if parked:
            report.warn(
                f"{counts[DeliveryStatus.PARKED]} webhook deliveries are parked after repeated "
                "failures; retry them with `python -m bot requeue --all-parked` once fixed:"
            )
            for d in parked:
                report.lines.append(f"       {d.key} {d.event}: {d.last_error}")
                print(f"       {d.key} {d.event}: {d.last_error}", file=report.out)
        jobs = await store.list_parked_jobs(limit=10)
        if jobs:
            report.warn(f"{len(jobs)} GitHub writes were given up (parked); the next change of their PR retries them:")
            for job in jobs:
                line = f"       {job.key}: {job.last_error}"
                report.lines.append(line)
                print(line, file=report.out)
    finally:
        await store.close()


async def load_registered(settings: Settings, report: Report) -> None:
    """The App registered on the start page, when the environment names none (the bot would use it)."""
    credentials = settings.credentials
    if credentials.from_environment or not settings.secrets_keys or credentials.registered is not None:
        return
    store = make_store(settings)
    try:
        await store.open()
        await load_registered_app(credentials, store, settings.secrets_keys)
    except Exception:  # noqa: BLE001, S110 - the store check already says what is wrong with it
        pass
    finally:
        await store.close()
    if credentials.problem:
        report.fail(f"github: {credentials.problem} (is SECRETS_KEY the one the bot ran with?)")


async def check_github(settings: Settings, report: Report) -> None:
    await load_registered(settings, report)
    credentials = settings.credentials
    missing = settings.missing_for_github()
    if not credentials.configured:
        report.fail(f"github: no App configured; set {', '.join(missing)}, or register one on the start page")
        return
    if credentials.webhook_secret is None:
        report.fail("github: no webhook secret (GITHUB_WEBHOOK_SECRET is not set): webhooks are refused")
    elif credentials.from_environment:
        report.ok("github: webhook secret is set")
    else:
        report.ok("github: the App registered on the start page is stored encrypted, with its webhook secret")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        github = GitHubApp(settings.replace(github_max_retry_wait=5.0), session)
        try:
            app = await github.app_client().getitem("/app")
        except gidgethub.HTTPException as exc:
            if exc.status_code == 401:
                report.fail(
                    f"github: {settings.github_api_url} rejected the App's JWT (401): "
                    f"GITHUB_APP_ID={credentials.app_id} and the private key do not belong "
                    "together, the key was revoked, or this machine's clock is off"
                )
            elif exc.status_code == 404:
                report.fail(
                    f"github: GET /app answered 404: no App {credentials.app_id} at "
                    f"{settings.github_api_url} (GitHub Enterprise Server wants https://HOST/api/v3)"
                )
            else:
                report.fail(f"github: GET /app answered {exc.status_code}: {exc}")
            return
        except (aiohttp.ClientError, TimeoutError) as exc:
            report.fail(f"github: cannot reach GITHUB_API_URL={settings.github_api_url}: {type(exc).__name__}: {exc}")
            return
    report.ok(
        f"github: App {app.get('slug') or app.get('name')!r} (id {app.get('id')}) owned by "
        f"{(app.get('owner') or {}).get('login')}, {app.get('installations_count', '?')} installation(s)"
    )
    subscribed = set(app.get("events") or ())
    wanted = handled_events(compose()) - ALWAYS_DELIVERED
    if wanted - subscribed:
        report.warn(
            "github: the App does not subscribe to events the bot handles: "
            + ", ".join(sorted(wanted - subscribed))
            + " (edit the App's permissions & events to match app.yml)"
        )


def check_local(settings: Settings, report: Report) -> None:
    if settings.secrets_keys:
        report.ok(f"secrets: {len(settings.secrets_keys)} key(s) in SECRETS_KEY")
    elif settings.store_kind == "sqlite" and (settings.data_dir / "secrets.key").exists():
        report.ok(f"secrets: local key {settings.data_dir / 'secrets.key'}")
    else:
        report.warn("secrets: SECRETS_KEY is not set; stored credentials cannot be encrypted")
    if settings.public_url is None:
        report.warn("PUBLIC_URL is not set: links and the webhook URL cannot be built")
    manifest = Path("app.yml")
    if manifest.exists():
        events = set((yaml.safe_load(manifest.read_text()) or {}).get("default_events") or ())
        if events != set(handled_events(compose()) - ALWAYS_DELIVERED):
            report.warn("app.yml's default_events differ from the events the bot handles")


async def check_calendar(settings: Settings, report: Report) -> None:
    """Which calendar releases are booked in, and whether the Google credentials work."""
    key_json, source = settings.google_service_account, "GOOGLE_SERVICE_ACCOUNT_*"
    if key_json is None and settings.secrets_keys:
        from .calendar.planner import SERVICE_ACCOUNT_SECRET
        from .secrets import SecretBox, SecretUnreadable, Vault

        store = make_store(settings)
        try:
            await store.open()
            key_json = await Vault(store, SecretBox(settings.secrets_keys)).get(SERVICE_ACCOUNT_SECRET)
            source = "the stored key"
        except SecretUnreadable:
            report.fail("calendar: the stored Google service account key cannot be decrypted with SECRETS_KEY")
        except Exception:  # noqa: BLE001, S110 - the store check above already says what is wrong with it
            pass
        finally:
            await store.close()
    if key_json is None:
        where = f"{settings.public_url}/calendar.ics" if settings.public_url else "/calendar.ics (set PUBLIC_URL)"
        report.ok(f"calendar: built-in (no Google service account); subscribers use {where}")
    else:
        from google.auth.exceptions import GoogleAuthError, TransportError

        from .calendar.google import GoogleCalendar, service_account_credentials

        calendar = GoogleCalendar(
            service_account_credentials(key_json), "google:service", api_url=settings.google_calendar_api_url
        )
        try:
            await calendar.sign_in()
        except TransportError as exc:
            report.fail(f"calendar: cannot reach Google's token endpoint: {type(exc).__name__}")
        except GoogleAuthError as exc:
            report.fail(
                f"calendar: the service account {calendar.email} ({source}) cannot sign in ({_first_line(exc)}): "
                "make a new key in Google Cloud and set GOOGLE_SERVICE_ACCOUNT_FILE "
                "(or store it with `python -m bot google-service-account KEY.json`)"
            )
        else:
            report.ok(
                f"calendar: Google service account {calendar.email} ({source}) signs in; share each "
                "repository's calendar.id with it (Make changes to events) and its freeze calendars "
                "(See all event details)"
            )
    if settings.google_client_id is None:
        report.ok("calendar: people cannot link their own Google calendars (GOOGLE_CLIENT_ID is not set)")
    elif settings.public_url is None:
        report.warn("calendar: GOOGLE_CLIENT_ID is set but PUBLIC_URL is not: the link's callback needs it")
    elif settings.credentials.client_id is None:
        report.warn(
            "calendar: GOOGLE_CLIENT_ID is set but GITHUB_CLIENT_ID/GITHUB_CLIENT_SECRET are not: calendar "
            "links need the App's OAuth client to confirm who opens them, so linking is off"
        )
    else:
        report.ok(
            "calendar: people can link their calendars; register these callback URLs: "
            f"{settings.public_url}/oauth/google/callback (Google OAuth client) and "
            f"{settings.public_url}/oauth/google/github (the GitHub App)"
        )


async def check_chat(settings: Settings, report: Report) -> None:
    """Slack's auth.test and Telegram's getMe and webhook, against what the settings say."""
    if settings.slack_bot_token is not None:
        from slack_sdk.errors import SlackApiError
        from slack_sdk.web.async_client import AsyncWebClient

        client = AsyncWebClient(token=settings.slack_bot_token, base_url=settings.slack_api_url)
        try:
            answer = await client.auth_test()
            mode = "Socket Mode" if settings.slack_app_token else "events at PUBLIC_URL/slack/events"
            report.ok(f"slack: bot {answer.get('user')} in workspace {answer.get('team')} ({mode})")
        except SlackApiError as exc:
            report.fail(f"slack: auth.test refused SLACK_BOT_TOKEN: {exc.response.get('error')}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            report.fail(f"slack: {settings.slack_api_url} cannot be reached: {type(exc).__name__}")
    if settings.telegram_bot_token is not None:
        from telegram import Bot
        from telegram.error import TelegramError

        api = settings.telegram_api_url.rstrip("/")
        bot = Bot(settings.telegram_bot_token, base_url=f"{api}/bot", base_file_url=f"{api}/file/bot")
        try:
            async with bot:  # getMe, and the client closed after
                me = bot.bot
                info = await bot.get_webhook_info()
        except TelegramError as exc:
            report.fail(f"telegram: getMe failed ({type(exc).__name__}): check TELEGRAM_BOT_TOKEN")
            return
        want = f"{(settings.public_url or '').rstrip('/')}/telegram/webhook"
        if settings.telegram_webhook_secret is None:
            if info.url:
                report.fail(
                    f"telegram: @{me.username} has a webhook ({info.url}) but no TELEGRAM_WEBHOOK_SECRET is set, "
                    "so the bot polls and Telegram refuses it: run `python -m bot telegram setup`"
                )
            else:
                report.ok(f"telegram: @{me.username}, polling for updates")
        elif info.url != want:
            report.fail(
                f"telegram: @{me.username}'s webhook is {info.url or 'not set'}, not {want}: "
                "run `python -m bot telegram setup`"
            )
        else:
            report.ok(f"telegram: @{me.username}, webhook {want}")


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


async def run_doctor(settings: Settings, out: TextIO = sys.stdout) -> int:
    report = Report(out=out)
    report.ok(f"settings: valid (store={settings.store_kind}, api={settings.github_api_url})")
    check_local(settings, report)
    await check_store(settings, report)
    await check_github(settings, report)
    await check_calendar(settings, report)
    await check_chat(settings, report)
    verdict = "all good" if not report.failures else f"{report.failures} problem(s)"
    print(f"doctor: {verdict}, {report.warnings} warning(s)", file=out)
    return 1 if report.failures else 0
