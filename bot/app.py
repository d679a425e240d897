"""The aiohttp application: webhook intake, health, and the start page. Nothing happens at import."""

from __future__ import annotations

import asyncio
import html
import logging
import re
from collections.abc import AsyncIterator, Callable
from datetime import datetime

import aiohttp
import msgspec
import orjson
from aiohttp import web
from gidgethub import ValidationFailure, sansio

from chatops.identity import CHAT_LINKS
from chatops.runtime import CHAT, Chat
from chatops.runtime import add_routes as add_chat_routes
from handlers.routes import compose

from .a2a.runner import DevAgents
from .a2a.web import AGENTS
from .a2a.web import add_routes as add_a2a_routes
from .api.operations import Operations
from .api.tokens import ApiTokens
from .api.web import OPERATIONS as API_OPERATIONS
from .api.web import PUBLIC_URL as API_PUBLIC_URL
from .api.web import TOKENS as API_TOKENS
from .api.web import add_routes as add_api_routes
from .calendar.feed import AHEAD as FEED_AHEAD
from .calendar.feed import ALL as ALL_SCOPE
from .calendar.feed import PAST as FEED_PAST
from .calendar.feed import FeedTokens, render_feed
from .calendar.oauth import GOOGLE_LINKS, GoogleLinks
from .calendar.oauth import add_routes as add_google_routes
from .config import Settings
from .context import utcnow
from .credentials import load_registered_app
from .github import GitHubApp
from .secrets import SecretBox, Vault
from .service import ReleaseService
from .store import NewDelivery, Store, make_store
from .tracker import PullTracker
from .web.dashboard import add_routes as add_dashboard_routes
from .web.integrations import add_routes as add_integration_routes
from .web.setup import APP_REGISTRATION, AppRegistration, page_html, setup_page
from .web.setup import add_routes as add_setup_routes
from .webhook_proxy import WebhookProxy, local_intake_url
from .worker import Worker

log = logging.getLogger(__name__)

MAX_WEBHOOK_BYTES = 25 * 1024 * 1024  # GitHub caps webhook payloads at 25 MB
_DELIVERY_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_EVENT_NAME = re.compile(r"^[a-z_]{1,64}$")


class _Installation(msgspec.Struct):
    id: int


class _Envelope(msgspec.Struct):
    """What intake needs from a payload. Decoding it validates the whole document as JSON but
    builds only these fields: about 3x cheaper than parsing everything on the ack path."""

    action: str | None = None
    installation: _Installation | None = None


_ENVELOPE = msgspec.json.Decoder(_Envelope)

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
GITHUB = web.AppKey("github", GitHubApp)
WORKER = web.AppKey("worker", Worker)
CLOCK: web.AppKey[Callable[[], datetime]] = web.AppKey("clock")


def _error(status: int, message: str, **extra: object) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps({"error": message, **extra}),
        content_type="application/json",
    )


async def github_webhook(request: web.Request) -> web.Response:
    """Verify, store, acknowledge. The worker does everything else, after we have answered."""
    settings = request.app[SETTINGS]
    credentials = settings.credentials
    if not credentials.configured:
        # Registered on the setup page by another process? Its App id keys the dedupe, so load it even
        # when the environment gives the webhook secret.
        await credentials.refresh()
    secret = credentials.webhook_secret
    if secret is None:
        return _error(
            503, "webhooks are refused until a GitHub App is registered (see /) or GITHUB_WEBHOOK_SECRET is set"
        )
    headers = request.headers
    delivery_id = headers.get("X-GitHub-Delivery", "")
    if not _DELIVERY_ID.match(delivery_id):
        return _error(400, "missing or malformed X-GitHub-Delivery header")
    event_name = headers.get("X-GitHub-Event", "")
    if not _EVENT_NAME.match(event_name):
        return _error(400, "missing or malformed X-GitHub-Event header")
    if request.content_type != "application/json":
        return _error(
            415,
            f"content type {request.content_type!r} is not accepted: set the webhook's content "
            "type to application/json",
        )
    if request.content_length is not None and request.content_length > MAX_WEBHOOK_BYTES:
        return _error(413, f"payload over {MAX_WEBHOOK_BYTES} bytes")
    signature = headers.get("X-Hub-Signature-256")
    if not signature:
        return _error(401, "missing X-Hub-Signature-256 header: is the webhook secret set on GitHub?")
    if not signature.startswith("sha256=") or not signature.isascii():
        return _error(401, "X-Hub-Signature-256 must be sha256=<hex digest>")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _error(413, f"payload over {MAX_WEBHOOK_BYTES} bytes")
    try:
        # gidgethub's check: HMAC-SHA256 compared in constant time.
        sansio.validate_event(body, signature=signature, secret=secret)
    except ValidationFailure:
        log.warning("webhook signature mismatch", extra={"delivery": delivery_id})
        return _error(401, "signature does not match the payload and the webhook secret")
    try:
        envelope = _ENVELOPE.decode(body)
    except msgspec.ValidationError as exc:
        return _error(400, f"unexpected payload shape: {exc}")
    except msgspec.DecodeError as exc:
        return _error(400, f"body is not valid JSON: {exc}")
    delivery = NewDelivery(
        key=f"{credentials.app_id or 0}:{delivery_id}",
        delivery_id=delivery_id,
        event=event_name,
        action=envelope.action,
        installation_id=envelope.installation.id if envelope.installation else None,
        body=body,
        received_at=request.app[CLOCK](),
    )
    try:
        new = await request.app[STORE].record_delivery(delivery)
    except Exception:
        # Not stored means not acknowledged: GitHub shows the failure and the sweep redelivers it.
        log.exception("could not store delivery", extra={"delivery": delivery_id})
        return _error(503, "could not store the delivery; it will be redelivered")
    worker = request.app.get(WORKER)
    if worker is not None:
        worker.notify()
    if not new:
        return _ack(200, b'{"status":"duplicate","delivery":"%s"}' % delivery_id.encode())
    return _ack(202, b'{"status":"queued","delivery":"%s"}' % delivery_id.encode())


def _ack(status: int, body: bytes) -> web.Response:
    # The delivery id is already restricted to [A-Za-z0-9._:-], so it needs no JSON escaping.
    return web.Response(status=status, body=body, content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    try:
        await asyncio.wait_for(request.app[STORE].ping(), timeout=2)
    except Exception as exc:  # noqa: BLE001 - any failure means unhealthy
        return _error(503, f"store unreachable: {type(exc).__name__}", store=settings.store_kind)
    return web.json_response({"status": "ok", "store": settings.store_kind})


async def calendar_feed(request: web.Request) -> web.Response:
    """`/calendar.ics?repo=owner/repo&token=...`: the embedded calendar for subscribing.

    A wrong, missing or revoked (rotated) token is a plain 404, the same as a repository with no
    feed: a guess learns nothing. Cancelled releases are left out, so a cancelled release disappears
    from subscribers."""
    settings = request.app[SETTINGS]
    repo = request.query.get("repo") or ALL_SCOPE
    token = request.query.get("token", "")
    if not settings.secrets_keys or not token:
        return _error(404, "no such calendar feed")
    store = request.app[STORE]
    tokens = FeedTokens(Vault(store, SecretBox(settings.secrets_keys)), request.app[CLOCK], values=store)
    if not await tokens.verify(repo, token):
        return _error(404, "no such calendar feed")
    now = request.app[CLOCK]()
    # One repository's lanes are "owner/repo environment": filtered in the store, before its limit.
    events = await store.list_calendar_events(
        None,
        start=now - FEED_PAST,
        end=now + FEED_AHEAD,
        calendar_prefix=None if repo == ALL_SCOPE else f"{repo} ",
    )
    name = f"Releases: {repo}" if repo != ALL_SCOPE else "Releases"
    body = render_feed(events, name=name, now=now)
    return web.Response(
        body=body,
        content_type="text/calendar",
        charset="utf-8",
        headers={
            "Cache-Control": "private, max-age=60",
            "Content-Disposition": 'inline; filename="releases.ics"',
            "Referrer-Policy": "no-referrer",
        },
    )


async def index(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    if not settings.credentials.configured:
        await settings.credentials.refresh()  # registered on the setup page, by another process?
    if not settings.credentials.configured:
        return await setup_page(request, settings)
    # Without PUBLIC_URL, the address this page was reached at is the best guess of the bot's own.
    base = settings.public_url or str(request.url.origin())
    return web.Response(text=render_index(settings, base), content_type="text/html")


def render_index(settings: Settings, base_url: str) -> str:
    """The start page once an App is configured (without one, `/` is the setup page: bot/web/setup.py)."""
    credentials = settings.credentials
    webhook_url = f"{base_url}/webhooks/github"
    registered = None if credentials.from_environment else credentials.registered
    if registered is not None:
        install = html.escape(f"{registered.html_url}/installations/new")
        source = (
            f' (<a href="{html.escape(registered.html_url)}">{html.escape(registered.slug)}</a>, registered on this '
            f'page; its credentials are stored encrypted). Install it on more repositories from <a href="{install}">'
            "its install page</a>"
        )
    else:
        source = " (from the environment)"
    if credentials.webhook_secret is None:
        status = f"""
<section class="warn">
  <h2>Webhooks are refused</h2>
  <p>GitHub App <code>{credentials.app_id}</code>{source}. No webhook secret is known, so webhooks are refused:
  set <code>GITHUB_WEBHOOK_SECRET</code> to the App's webhook secret and restart.</p>
</section>"""
    else:
        status = f"""
<section class="ok">
  <h2>Connected</h2>
  <p>GitHub App <code>{credentials.app_id}</code>{source}; webhooks are accepted at
  <code>{html.escape(webhook_url)}</code>.</p>
  <p><a href="/dashboard">Open the dashboard</a>: every release at a glance (sign in with GitHub).</p>
</section>"""
    body = f"""
<p>Label a pull request <code>Ready for Prod</code> or comment <code>/ship friday</code>: the bot
verifies the PR, books a release window and keeps the thread up to date.</p>
{status}"""
    footer = f'Store: {html.escape(settings.store_kind)} &middot; health: <a href="/healthz">/healthz</a>'
    return page_html("Release Secretary", body, footer=footer)


def make_tracker(store: Store, service: ReleaseService) -> PullTracker:
    """The PR tracker the API uses to read a PR the store does not know yet."""
    return PullTracker(store, service.read, service.clock)


def make_app(
    settings: Settings,
    *,
    store: Store | None = None,
    run_worker: bool = False,
    clock: Callable[[], datetime] = utcnow,
) -> web.Application:
    """Build the web application; with run_worker the worker runs in the same process (`serve`)."""
    app = web.Application(client_max_size=MAX_WEBHOOK_BYTES)
    app[SETTINGS] = settings
    app[CLOCK] = clock
    app.router.add_get("/", index)
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/webhooks/github", github_webhook)
    app.router.add_get("/calendar.ics", calendar_feed)
    add_setup_routes(app)
    add_google_routes(app)
    add_a2a_routes(app)
    add_chat_routes(app)
    add_api_routes(app)
    add_dashboard_routes(app)
    add_integration_routes(app)
    if settings.public_url:
        app[API_PUBLIC_URL] = settings.public_url

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        owned = store is None
        app[STORE] = store if store is not None else make_store(settings)
        if owned:
            await app[STORE].open()
        if settings.secrets_keys:
            vault = Vault(app[STORE], SecretBox(settings.secrets_keys))
            app[GOOGLE_LINKS] = GoogleLinks(settings, app[STORE], vault, clock)
            app[AGENTS] = DevAgents(app[STORE], settings, clock, vault)
        await load_registered_app(settings.credentials, app[STORE], settings.secrets_keys)
        yield
        if owned:
            await app[STORE].close()

    async def github_ctx(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as session:
            app[GITHUB] = GitHubApp(settings, session)
            registration = AppRegistration(settings, app[STORE], app[GITHUB], clock)
            app[APP_REGISTRATION] = registration
            if not settings.credentials.configured:
                # The one-time link is for the operator reading this log (as Jupyter prints its token):
                # it is what keeps others who reach the page from registering an App of theirs.
                log.warning(
                    "no GitHub App configured (missing: %s); open %s/?setup=%s to register one",
                    ", ".join(settings.missing_for_github()),
                    settings.public_url or f"http://localhost:{settings.port}",
                    registration.token,
                )
            yield

    async def api_ctx(app: web.Application) -> AsyncIterator[None]:
        """Micromanager's REST API: its operations over the store and the release service."""
        service = ReleaseService(app[STORE], settings, clock)
        app[API_TOKENS] = ApiTokens(app[STORE], clock)
        app[API_OPERATIONS] = Operations(
            app[STORE], service, app[GITHUB], clock, tracker=make_tracker(app[STORE], service)
        )
        yield

    async def webhook_proxy_ctx(app: web.Application) -> AsyncIterator[None]:
        """WEBHOOK_PROXY_URL: a smee.io channel's deliveries, replayed into our own intake (verified there)."""
        assert settings.webhook_proxy_url is not None
        proxy = WebhookProxy(
            settings.webhook_proxy_url,
            local_intake_url(settings.host, settings.port),
            secret=settings.credentials.webhook_secret,
        )
        await proxy.start()
        yield
        await proxy.close()

    async def mcp_ctx(app: web.Application) -> AsyncIterator[None]:
        """MCP over streamable HTTP on its own port (MCP_PORT), over the API's operations and tokens."""
        from .mcp_http import serve_http  # uvicorn and the MCP SDK only when MCP_PORT is set

        assert settings.mcp_port is not None
        server = await serve_http(
            settings,
            app[API_OPERATIONS],
            app[API_TOKENS],
            host=settings.host,
            port=settings.mcp_port,
            public_url=settings.public_url,
        )
        yield
        await server.close()

    async def chat_ctx(app: web.Application) -> AsyncIterator[None]:
        """Slack and Telegram intake (routes, Socket Mode, polling) and, with the worker, their delivery."""
        service = ReleaseService(app[STORE], settings, clock)
        chat = Chat(app[STORE], settings, clock, service, app[GITHUB])
        app[CHAT] = chat
        if chat.links is not None:
            app[CHAT_LINKS] = chat.links
        await chat.start(intake=True)
        yield
        await chat.close()

    async def worker_ctx(app: web.Application) -> AsyncIterator[None]:
        chat = app.get(CHAT)
        worker = Worker(app[STORE], settings, compose(), app[GITHUB], clock=clock, chat=chat)
        if chat is not None:
            chat.on_input(worker.notify)
        app[WORKER] = worker
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        yield
        stop.set()
        # The worker gives in-flight work half a lease to finish; whatever is left is re-run later.
        done, _ = await asyncio.wait({task}, timeout=settings.worker_lease_seconds / 2 + 5)
        if not done:
            task.cancel()

    app.cleanup_ctx.append(store_ctx)
    app.cleanup_ctx.append(github_ctx)
    app.cleanup_ctx.append(api_ctx)
    if settings.mcp_port is not None:
        app.cleanup_ctx.append(mcp_ctx)
    if settings.webhook_proxy_url:
        app.cleanup_ctx.append(webhook_proxy_ctx)
    if settings.chat_configured:
        app.cleanup_ctx.append(chat_ctx)
    if run_worker:
        app.cleanup_ctx.append(worker_ctx)
    return app
