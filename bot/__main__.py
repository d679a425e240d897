"""Command line: `python -m bot serve|web|worker|doctor|deliveries|requeue|keygen`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import sys
from collections.abc import Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from .config import Settings, SettingsError
from .secrets import generate_key, load_or_create_local_key

log = logging.getLogger("bot")


def read_environment(dotenv_path: Path = Path(".env")) -> dict[str, str]:
    """The process environment over an optional .env file: real environment variables win."""
    values = {k: v for k, v in dotenv_values(dotenv_path).items() if v is not None}
    return {**values, **os.environ}


def load_settings(env: Mapping[str, str], *, create_local_key: bool) -> Settings:
    settings = Settings.from_env(env)
    from .logs import setup_logging

    setup_logging(settings.log_level, settings.log_format)
    if not settings.secrets_keys and settings.store_kind == "sqlite" and create_local_key:
        key, created = load_or_create_local_key(settings.data_dir)
        if created:
            log.warning(
                "SECRETS_KEY is not set: created %s (mode 0600) to encrypt stored secrets. "
                "Back it up with the database, or set SECRETS_KEY.",
                settings.data_dir / "secrets.key",
            )
        settings = settings.replace(secrets_keys=(key,))
    return settings


async def _with_stored_chat(settings: Settings) -> Settings:
    """The chat tokens stored on the setup page, where the environment sets none (read once, at start)."""
    from .store import make_store
    from .web.integrations import load_stored_chat

    if not settings.secrets_keys:
        return settings
    store = make_store(settings)
    await store.open()
    try:
        return await load_stored_chat(settings, store)
    finally:
        await store.close()


def new_event_loop(choice: str) -> asyncio.AbstractEventLoop:
    """uvloop when asked for or available ("auto"): it roughly halves the event loop's own cost."""
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise SystemExit("EVENT_LOOP=uvloop but uvloop is not installed") from None
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def _run(settings: Settings, main: Coroutine[Any, Any, int | None]) -> int | None:
    loop = new_event_loop(settings.event_loop)
    try:
        return loop.run_until_complete(main)
    finally:
        loop.close()


def _serve(settings: Settings, *, run_worker: bool) -> None:
    from aiohttp import web

    from .app import make_app

    app = make_app(settings, run_worker=run_worker)

    async def settle_heap(app: web.Application) -> None:
        # Everything built at start lives as long as the process: out of the collector's way, so a full
        # collection (tens of milliseconds with ~140k such objects) no longer stalls answers under load.
        gc.freeze()

    app.on_startup.append(settle_heap)
    log.info(
        "listening on http://%s:%d (%s, store=%s)",
        settings.host,
        settings.port,
        "web + worker" if run_worker else "web",
        settings.store_kind,
    )
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        print=None,
        access_log=None,
        loop=new_event_loop(settings.event_loop),
    )


async def _run_worker(settings: Settings) -> None:
    import aiohttp

    from handlers.routes import compose

    from .credentials import load_registered_app
    from .github import GitHubApp
    from .store import make_store
    from .worker import Worker

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    store = make_store(settings)
    await store.open()
    try:
        # An App registered on the setup page (by the web process) is read now, and again when work needs it.
        await load_registered_app(settings.credentials, store, settings.secrets_keys)
        if settings.secrets_keys:  # the chat tokens stored on the setup page (it sends chat messages)
            from .web.integrations import load_stored_chat

            settings = await load_stored_chat(settings, store)
        async with aiohttp.ClientSession() as session:
            worker = Worker(store, settings, compose(), GitHubApp(settings, session))
            await worker.run(stop)
    finally:
        await store.close()


async def _deliveries(settings: Settings, status: str | None, limit: int) -> int:
    from .store import DeliveryStatus, make_store

    store = make_store(settings)
    await store.open()
    try:
        counts = await store.count_deliveries()
        print("  ".join(f"{s.value}={n}" for s, n in counts.items()))
        rows = await store.list_deliveries(DeliveryStatus(status) if status else None, limit=limit)
        for d in rows:
            line = (
                f"{d.received_at:%Y-%m-%d %H:%M:%S}  {d.status.value:<10} {d.key}  "
                f"{d.event}{'.' + d.action if d.action else ''}  attempts={d.attempts}"
            )
            print(line)
            if d.last_error:
                print(f"    error: {d.last_error}")
    finally:
        await store.close()
    return 0


async def _requeue(settings: Settings, keys: Sequence[str], all_parked: bool) -> int:
    from .context import utcnow
    from .store import DeliveryStatus, make_store

    store = make_store(settings)
    await store.open()
    try:
        if all_parked:
            keys = [d.key for d in await store.list_deliveries(DeliveryStatus.PARKED, limit=10_000)]
        missing = 0
        for key in keys:
            if await store.requeue_delivery(key, now=utcnow()):
                print(f"requeued {key}")
            else:
                print(f"not parked (or unknown): {key}", file=sys.stderr)
                missing += 1
    finally:
        await store.close()
    return 1 if missing else 0


async def _calendar_feed(settings: Settings, repo: str | None, *, rotate: bool = False) -> int:
    """Print the feed URL of one repository (or of all); with `rotate`, revoke the old ones first."""
    from .calendar.feed import ALL, FeedTokens
    from .context import utcnow
    from .secrets import SecretBox, Vault
    from .store import make_store

    if settings.public_url is None:
        print("set PUBLIC_URL (the bot's address as others reach it): the feed URL is built from it", file=sys.stderr)
        return 2
    if not settings.secrets_keys:
        print(
            "set SECRETS_KEY (python -m bot keygen): the feed's token is derived from a stored secret", file=sys.stderr
        )
        return 2
    store = make_store(settings)
    await store.open()
    try:
        tokens = FeedTokens(Vault(store, SecretBox(settings.secrets_keys)), utcnow, values=store)
        scope = repo or ALL
        if rotate:
            await tokens.rotate(scope)
            print(f"revoked every earlier feed URL of {'every repository' if scope == ALL else scope}", file=sys.stderr)
        print(await tokens.url(settings.public_url, scope))
    finally:
        await store.close()
    return 0


async def _agent(settings: Settings, args: argparse.Namespace) -> int:
    from .a2a.registry import AgentError
    from .a2a.runner import DevAgents, session_summary
    from .context import utcnow
    from .secrets import SecretBox, Vault
    from .store import make_store

    if not settings.secrets_keys:
        print("set SECRETS_KEY (python -m bot keygen): the signing keys are stored encrypted", file=sys.stderr)
        return 2
    store = make_store(settings)
    await store.open()
    try:
        agents = DevAgents(store, settings, utcnow, Vault(store, SecretBox(settings.secrets_keys)))
        command = args.agent_command
        if command == "add":
            agent = await agents.registry.add(args.scope, args.url)
            try:
                card = await agents.registry.card(agent, fresh=True)
            except AgentError as exc:
                print(f"registered, but {exc.message}", file=sys.stderr)
                return 1
            skills = ", ".join(s.id for s in card.skills) or "none"
            print(f"{agent.scope}: {agent.url} ({card.name}; skills: {skills})")
        elif command == "remove":
            gone = await agents.registry.remove(args.scope)
            print(f"removed the agent of {args.scope}" if gone else f"no agent was registered for {args.scope}")
        elif command == "list":
            for agent in await agents.registry.agents():
                print(f"{agent.scope}\t{agent.url}")
        elif command == "rotate-key":
            keys = await agents.keys.rotate()
            print(f"signing with {keys[0].kid}; still published: {', '.join(k.kid for k in keys[1:]) or 'none'}")
        elif command == "sessions":
            for session in await agents.registry.sessions(limit=args.limit):
                print(json.dumps(session_summary(session)))
    finally:
        await store.close()
    return 0


def _read_service_account(path: str) -> str | None:
    from .config import service_account_problem

    try:
        text = Path(path).expanduser().read_text()
    except OSError as exc:
        print(f"cannot read {path}: {exc.strerror}", file=sys.stderr)
        return None
    problem = service_account_problem(text, path)
    if problem is not None:
        print(problem, file=sys.stderr)
        return None
    return text


async def _google_service_account(settings: Settings, text: str | None) -> int:
    """Store the key (encrypted), or with `text` None forget the stored one."""
    from .calendar.planner import SERVICE_ACCOUNT_SECRET
    from .context import utcnow
    from .secrets import SecretBox, Vault
    from .store import make_store

    if not settings.secrets_keys:
        print("set SECRETS_KEY (python -m bot keygen): the key is stored encrypted", file=sys.stderr)
        return 2
    store = make_store(settings)
    await store.open()
    try:
        if text is None:
            gone = await store.delete_secret(SERVICE_ACCOUNT_SECRET)
            print("removed the stored service account key" if gone else "no service account key was stored")
        else:
            await Vault(store, SecretBox(settings.secrets_keys)).put(SERVICE_ACCOUNT_SECRET, text, now=utcnow())
            email = json.loads(text)["client_email"]
            print(f"stored the key of {email} (encrypted); share release calendars with that address")
            if settings.google_service_account is not None:
                print("note: GOOGLE_SERVICE_ACCOUNT_* is set in the environment and wins over the stored key")
    finally:
        await store.close()
    return 0


async def _tokens(settings: Settings, args: argparse.Namespace) -> int:
    from .api.tokens import ApiTokens, TokenError
    from .context import utcnow
    from .store import make_store

    store = make_store(settings)
    await store.open()
    try:
        tokens = ApiTokens(store, utcnow)
        if args.tokens_command == "create":
            try:
                token, record = await tokens.create(
                    name=args.name,
                    login=args.login,
                    repos=[r.strip() for r in args.repos.split(",") if r.strip()],
                    scopes=[s.strip() for s in args.scopes.split(",") if s.strip()],
                )
            except TokenError as exc:
                print(f"release-secretary: {exc}", file=sys.stderr)
                return 2
            print(f"token {record.id} ({record.name}): acts as @{record.login} on {', '.join(record.repos)}")
            print(
                f"scopes: {', '.join(record.scopes)}; shown once, stored hashed; revoke with: tokens revoke {record.id}"
            )
            print(token)
        elif args.tokens_command == "list":
            for record in await tokens.list():
                state = f"revoked {record.revoked_at}" if record.revoked_at else "live"
                print(
                    f"{record.id}  {record.name}  @{record.login}  {','.join(record.repos)}  "
                    f"{','.join(record.scopes)}  created {record.created_at}  {state}"
                )
        else:
            revoked = await tokens.revoke(args.id)
            if revoked is None:
                print(f"no token {args.id}", file=sys.stderr)
                return 1
            print(f"token {revoked.id} ({revoked.name}) revoked")
    finally:
        await store.close()
    return 0


async def _telegram_setup(settings: Settings) -> int:
    if settings.telegram_bot_token is None:
        print("set TELEGRAM_BOT_TOKEN (from @BotFather) first", file=sys.stderr)
        return 2
    from telegram.error import TelegramError

    from chatops.telegram import TelegramChat

    from .context import utcnow
    from .store import make_store

    store = make_store(settings)  # not opened: the setup touches only Telegram
    chat = TelegramChat(settings, store, utcnow)
    try:
        for line in await chat.setup():
            print(line)
    except TelegramError as exc:
        print(f"Telegram refused: {exc.message}", file=sys.stderr)
        return 1
    finally:
        await chat.close()
    return 0


# Commands that read or write encrypted data: on SQLite they create the local key if it is missing.
_KEYED_COMMANDS = ("serve", "web", "worker", "calendar-feed", "google-service-account", "agent", "mcp")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="web and worker in one process (the embedded default)")
    sub.add_parser("web", help="the web process only (Procfile: web)")
    sub.add_parser("worker", help="the worker process only (Procfile: worker)")
    sub.add_parser("doctor", help="check settings, store and GitHub App credentials")
    listing = sub.add_parser("deliveries", help="list stored webhook deliveries")
    listing.add_argument("--status", choices=["pending", "processing", "done", "parked"])
    listing.add_argument("--limit", type=int, default=20)
    requeue = sub.add_parser("requeue", help="put parked deliveries back in the queue")
    requeue.add_argument("keys", nargs="*", help="delivery keys as `deliveries` prints them")
    requeue.add_argument("--all-parked", action="store_true")
    sub.add_parser("keygen", help="print a new SECRETS_KEY value")
    feed = sub.add_parser("calendar-feed", help="print the iCalendar subscription URL of the built-in release calendar")
    feed.add_argument("--repo", help="owner/repo: only that repository's releases (default: every repository)")
    feed.add_argument(
        "--rotate", action="store_true", help="revoke that feed's earlier URLs (they answer 404), then print a new one"
    )
    google = sub.add_parser(
        "google-service-account", help="store a Google service account key (encrypted) for booking releases"
    )
    google.add_argument("key_file", nargs="?", help="the JSON key file from Google Cloud")
    google.add_argument("--remove", action="store_true", help="forget the stored key")
    agent = sub.add_parser("agent", help="dev agents: register, list, rotate the signing key, read the audit log")
    agent_sub = agent.add_subparsers(dest="agent_command", required=True)
    add = agent_sub.add_parser("add", help="register a dev agent (its Agent Card is fetched to check it)")
    add.add_argument("url", help="the agent's URL, as its Agent Card and tokens name it")
    add.add_argument("--scope", default="*", help="owner/repo, an owner, or * for every repository (default)")
    remove = agent_sub.add_parser("remove", help="forget the agent of a scope")
    remove.add_argument("--scope", default="*")
    agent_sub.add_parser("list", help="the registered agents")
    agent_sub.add_parser("rotate-key", help="a new signing key; the previous one stays published for tokens in flight")
    sessions = agent_sub.add_parser("sessions", help="the audit log of dev agent sessions, newest first (JSON lines)")
    sessions.add_argument("--limit", type=int, default=20)
    sub.add_parser("mcp", help="MCP over stdio for a local assistant, acting as the token in RELEASE_SECRETARY_TOKEN")
    tokens = sub.add_parser("tokens", help="API tokens for Micromanager and MCP clients: create, list, revoke")
    tokens_sub = tokens.add_subparsers(dest="tokens_command", required=True)
    create = tokens_sub.add_parser("create", help="a new token (printed once, on the last line; stored hashed)")
    create.add_argument("--name", required=True, help="what the token is for, e.g. micromanager")
    create.add_argument("--as", dest="login", required=True, help="the GitHub login the token acts as")
    create.add_argument("--repos", required=True, help="owner/repo or owner/*, comma-separated")
    create.add_argument("--scopes", default="read", help="read, write or read,write (default: read)")
    tokens_sub.add_parser("list", help="the tokens (never the tokens themselves)")
    revoke = tokens_sub.add_parser("revoke", help="revoke a token by its id (from `tokens list`)")
    revoke.add_argument("id")
    telegram = sub.add_parser("telegram", help="Telegram: register the webhook and the command menu")
    telegram_sub = telegram.add_subparsers(dest="telegram_command", required=True)
    telegram_sub.add_parser(
        "setup", help="setWebhook (PUBLIC_URL/telegram/webhook with TELEGRAM_WEBHOOK_SECRET) and setMyCommands"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "keygen":
        print(generate_key())
        return 0
    env = read_environment()
    try:
        settings = load_settings(env, create_local_key=args.command in _KEYED_COMMANDS)
    except SettingsError as exc:
        print(f"release-secretary: {exc}", file=sys.stderr)
        return 2
    if args.command in ("serve", "web"):  # web takes chat input; the worker reads them with its own store
        settings = asyncio.run(_with_stored_chat(settings))
    if args.command == "serve":
        _serve(settings, run_worker=True)
    elif args.command == "web":
        _serve(settings, run_worker=False)
    elif args.command == "worker":
        with contextlib.suppress(KeyboardInterrupt):
            _run(settings, _run_worker(settings))
    elif args.command == "doctor":
        from .doctor import run_doctor

        return asyncio.run(run_doctor(settings))
    elif args.command == "deliveries":
        return asyncio.run(_deliveries(settings, args.status, args.limit))
    elif args.command == "google-service-account":
        if (args.key_file is None) == (not args.remove):
            print("give the key file, or --remove", file=sys.stderr)
            return 2
        text = None if args.remove else _read_service_account(args.key_file)
        if text is None and not args.remove:
            return 2
        return asyncio.run(_google_service_account(settings, text))
    elif args.command == "agent":
        return asyncio.run(_agent(settings, args))
    elif args.command == "mcp":
        from .mcp import TOKEN_ENV, run_stdio

        # stdout is the MCP stream; load_settings sent logging to stderr.
        with contextlib.suppress(KeyboardInterrupt):
            return _run(settings, run_stdio(settings, env.get(TOKEN_ENV))) or 0
        return 0
    elif args.command == "tokens":
        return asyncio.run(_tokens(settings, args))
    elif args.command == "telegram":
        return asyncio.run(_telegram_setup(settings))
    elif args.command == "calendar-feed":
        return asyncio.run(_calendar_feed(settings, args.repo, rotate=args.rotate))
    elif args.command == "requeue":
        if not args.keys and not args.all_parked:
            print("name delivery keys or pass --all-parked", file=sys.stderr)
            return 2
        return asyncio.run(_requeue(settings, args.keys, args.all_parked))
    return 0


if __name__ == "__main__":
    sys.exit(main())
