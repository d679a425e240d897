"""The dashboard: sign-in, releases by state across a person's repositories, a release's page, the week's
windows, freezes and bookings, and live updates over server-sent events.

Every page but the sign-in needs a session (bot.web.auth), and shows only the repositories GitHub says the
person can access; the event stream is filtered the same way. Pages are server-rendered (Jinja2); one small
script (no build step) listens to the stream and re-renders the part of the page that changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final
from urllib.parse import urlencode

import orjson
from aiohttp import web

from ..a2a.registry import Registry
from ..calendar.feed import FeedTokens
from ..policy import Policy, describe_windows
from ..release import Release
from ..render import _SOURCE_WORDS
from ..repo_config import DEFAULT_CONFIG, RepoConfig, parse_config
from ..secrets import SecretBox, Vault
from ..store import Store
from . import dashboard_views as views
from .auth import (
    CALLBACK_PATH,
    FLOW_TTL,
    FORM_TTL,
    HOME_PATH,
    LOGIN_PATH,
    LOGOUT_PATH,
    Auth,
    SignInFailed,
    WebSession,
    safe_next,
    security_headers,
)
from .dashboard_render import STATIC_PATH, render, static_file, wiring

log = logging.getLogger(__name__)

SSE_POLL: Final = 0.25  # seconds between looks at the change feed
SSE_KEEPALIVE: Final = 15.0  # and between checks that the session still stands (and may see what it sees)
SSE_GAP_GRACE: Final = 5.0  # seconds a missing event id is waited for (a writer that took it, not done yet)
MAX_EVENT_ID: Final = 2**62
RELEASES_PER_REPO: Final = 1000
AGENT_SESSIONS_SCANNED: Final = 200
_CONFIG_KEY: Final = "config:last-good:"  # + repo: the last valid config the service read (bot.service)
_STOPPING = web.AppKey("dashboard_stopping", asyncio.Event)
_OWNER = "{owner:[A-Za-z0-9][A-Za-z0-9-]{0,38}}"
_NAME = "{name:[A-Za-z0-9._-]{1,100}}"
SOURCES: Final = {
    **_SOURCE_WORDS,
    "github_push": "push",
    "github_checks": "checks",
    "github_pull_request": "pull request",
    "timer": "timer",
    "dev_agent": "dev agent",
}


def add_routes(app: web.Application) -> None:
    """Sign-in (`/login`, `/login/callback`, `/logout`) and the dashboard (`/dashboard...`); once per app."""
    if _STOPPING in app:
        return  # added already (make_app does; a test building its own app may too)
    stopping = asyncio.Event()
    app[_STOPPING] = stopping

    async def stop_streams(app: web.Application) -> None:
        stopping.set()  # open event streams end, so shutdown does not wait for them

    app.on_shutdown.append(stop_streams)
    router = app.router
    router.add_get(LOGIN_PATH, login_page)
    router.add_post(LOGIN_PATH, login_start)
    router.add_get(CALLBACK_PATH, login_callback)
    router.add_post(LOGOUT_PATH, logout)
    router.add_get(HOME_PATH, dashboard_page)
    router.add_get(HOME_PATH + "/week", week_page)
    router.add_get(HOME_PATH + "/events", events)
    router.add_get(f"{HOME_PATH}/releases/{_OWNER}/{_NAME}/{{pr:[0-9]{{1,9}}}}/{{number:[0-9]{{1,6}}}}", release_page)
    router.add_get(STATIC_PATH + "/{name}", static_file)


# Sign-in ------------------------------------------------------------------------------------------


def _auth(request: web.Request) -> Auth:
    wired = wiring(request)
    return Auth(wired.settings, wired.store, wired.clock)


def _message(request: web.Request, status: int, title: str, text: str, *, back: str = HOME_PATH) -> web.Response:
    auth = _auth(request)
    back_text = "Sign in again" if back.startswith(LOGIN_PATH) else "Back to the releases"
    return render(
        request,
        "message.html",
        status=status,
        title=title,
        text=text,
        root=auth.base_path,
        back_href=back,
        back_text=back_text,
    )


def _redirect(request: web.Request, location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, **security_headers(wiring(request).settings)})


def _cookie_args(auth: Auth) -> dict[str, Any]:
    return {"secure": auth.secure, "httponly": True, "samesite": "Lax"}


async def login_page(request: web.Request) -> web.Response:
    auth = _auth(request)
    next_path = safe_next(request.query.get("next"))
    missing = await auth.ready()
    if missing:
        return render(
            request,
            "login.html",
            status=503,
            title="Sign in",
            root=auth.base_path,
            missing=missing,
            callback=auth.redirect_uri,
            nav="",
        )
    try:
        if await auth.session(request.cookies.get(auth.session_cookie)) is not None:
            return _redirect(request, auth.base_path + next_path)
    except SignInFailed:
        pass  # GitHub cannot confirm the old session: offer a new sign-in
    token = auth.form_token()
    notice = "You are signed out." if request.query.get("signed_out") else ""
    response = render(
        request,
        "login.html",
        title="Sign in",
        root=auth.base_path,
        missing=[],
        csrf=token,
        next=next_path,
        notice=notice,
        nav="",
    )
    max_age = int(FORM_TTL.total_seconds())
    response.set_cookie(auth.form_cookie, token, max_age=max_age, path=auth.flow_cookie_path, **_cookie_args(auth))
    return response


async def login_start(request: web.Request) -> web.Response:
    """The sign-in form: to GitHub's authorization page, with this browser bound to the flow."""
    auth = _auth(request)
    form = await request.post()
    expected = request.cookies.get(auth.form_cookie, "")
    sent = form.get("csrf")
    if not expected or not isinstance(sent, str) or not _same(expected, sent):
        return _message(
            request,
            403,
            "This form is out of date",
            "Nobody was signed in. Open the sign-in page again.",
            back=LOGIN_PATH,
        )
    if await auth.ready():
        return _message(request, 503, "Signing in is not set up", "See the sign-in page.", back=LOGIN_PATH)
    next_path = form.get("next")
    url, browser = await auth.begin(next_path if isinstance(next_path, str) else HOME_PATH)
    response = _redirect(request, url)
    max_age = int(FLOW_TTL.total_seconds())
    response.set_cookie(auth.flow_cookie, browser, max_age=max_age, path=auth.flow_cookie_path, **_cookie_args(auth))
    response.del_cookie(auth.form_cookie, path=auth.flow_cookie_path, **_cookie_args(auth))
    return response


async def login_callback(request: web.Request) -> web.Response:
    auth = _auth(request)
    if await auth.ready():
        return _message(request, 503, "Signing in is not set up", "See the sign-in page.", back=LOGIN_PATH)
    query = request.query
    if "error" in query:
        said = query.get("error_description") or query.get("error", "")
        return _message(request, 400, "Nobody was signed in", f"GitHub said: {said}", back=LOGIN_PATH)
    try:
        cookie, next_path = await auth.finish(
            query.get("state", ""), query.get("code", ""), request.cookies.get(auth.flow_cookie)
        )
    except SignInFailed as exc:
        return _message(request, exc.status, exc.title, exc.text, back=LOGIN_PATH)
    response = _redirect(request, auth.base_path + next_path)
    response.set_cookie(
        auth.session_cookie, cookie, max_age=auth.session_max_age(), path=auth.session_cookie_path, **_cookie_args(auth)
    )
    response.del_cookie(auth.flow_cookie, path=auth.flow_cookie_path, **_cookie_args(auth))
    return response


async def logout(request: web.Request) -> web.Response:
    auth = _auth(request)
    form = await request.post()
    try:
        session = await auth.session(request.cookies.get(auth.session_cookie))
    except SignInFailed:
        session = None
    if session is None or not session.csrf_ok(form.get("csrf")):
        # A form without the session's token is refused, signed in or not: nothing else may sign anyone out.
        return _message(request, 403, "This form is out of date", "Nothing was done. Reload the page and try again.")
    await auth.end(session)
    response = _redirect(request, f"{auth.base_path}{LOGIN_PATH}?signed_out=1")
    response.del_cookie(auth.session_cookie, path=auth.session_cookie_path, **_cookie_args(auth))
    return response


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8", "replace"), b.encode("utf-8", "replace"))


async def signed_in(request: web.Request) -> WebSession | web.Response:
    """The session, or the answer for a request without one: to the sign-in page with the way back.

    For any page that needs a person (`if isinstance(session, web.Response): return session`)."""
    auth = _auth(request)
    cookie = request.cookies.get(auth.session_cookie)
    try:
        session = None if await auth.ready() else await auth.session(cookie)
    except SignInFailed as exc:
        return _message(request, exc.status, exc.title, exc.text)
    if session is not None:
        return session
    path = request.rel_url.path_qs
    if auth.base_path:
        path = path.removeprefix(auth.base_path) or HOME_PATH
    response = _redirect(request, f"{auth.base_path}{LOGIN_PATH}?{urlencode({'next': safe_next(path)})}")
    if cookie is not None:
        response.del_cookie(auth.session_cookie, path=auth.session_cookie_path, **_cookie_args(auth))
    return response


def _context(request: web.Request, session: WebSession, *, title: str, nav: str) -> dict[str, Any]:
    return {"title": title, "nav": nav, "session": session, "root": _auth(request).base_path}


# Pages --------------------------------------------------------------------------------------------


async def _releases(store: Store, repos: tuple[str, ...]) -> list[Release]:
    found: list[Release] = []
    for repo in repos:
        found += await store.find_releases(repo=repo, active_only=False, limit=RELEASES_PER_REPO)
    return found


async def dashboard_page(request: web.Request) -> web.Response:
    session = await signed_in(request)
    if isinstance(session, web.Response):
        return session
    store = wiring(request).store
    after = await store.last_event_id()  # before reading: a change made meanwhile still reaches the page
    groups = views.group_releases(await _releases(store, session.repos))
    return render(
        request,
        "dashboard.html",
        **_context(request, session, title="Releases", nav="releases"),
        groups=groups,
        repos=session.repos,
        live=True,
        after=after,
    )


async def release_page(request: web.Request) -> web.Response:
    session = await signed_in(request)
    if isinstance(session, web.Response):
        return session
    wired = wiring(request)
    info = request.match_info
    repo = session.canonical(f"{info['owner']}/{info['name']}")
    pr, number = int(info["pr"]), int(info["number"])
    release = await _find(wired.store, repo, pr, number) if repo is not None else None
    if release is None:
        # The same answer for a release that does not exist and one in a repository the person cannot access.
        return _message(
            request, 404, "No such release", "It does not exist, or it is in a repository you cannot access."
        )
    after = await wired.store.last_event_id()
    records = {}
    for sha, _ in views.verification_shas(release):
        record = await wired.store.get_sha_checks(release.repo, sha)
        if record is not None:
            records[sha] = record
    registry = Registry(wired.store, wired.clock)
    scanned = await registry.sessions(limit=AGENT_SESSIONS_SCANNED)
    agent_sessions = [s for s in scanned if s.release == release.key and s.repo == release.repo]
    agent_sessions.sort(key=lambda s: s.started_at)
    return render(
        request,
        "release.html",
        **_context(request, session, title=f"{release.repo}#{release.pr}", nav="releases"),
        release=release,
        verifications=views.verifications(release, records),
        agent_sessions=agent_sessions,
        sources=SOURCES,
        live=True,
        after=after,
        scope={"repo": release.repo, "pr": release.pr, "number": release.number},
    )


async def _find(store: Store, repo: str, pr: int, number: int) -> Release | None:
    latest = await store.get_latest_release(repo, pr)
    if latest is None or latest.number == number:
        return latest
    found = await store.find_releases(repo=repo, active_only=False, limit=RELEASES_PER_REPO)
    return next((r for r in found if r.pr == pr and r.number == number), None)


@functools.lru_cache(maxsize=256)
def _config(text: str) -> RepoConfig | None:
    parsed = parse_config(text)
    return parsed if isinstance(parsed, RepoConfig) else None


async def _policy(store: Store, repo: str) -> tuple[Policy, bool]:
    """The repo's windows and freezes as the bot last read them (the defaults before it read any)."""
    text = await store.get_value(_CONFIG_KEY + repo)
    config = _config(text) if text is not None else None
    return (config or DEFAULT_CONFIG).policy(), config is not None


async def week_page(request: web.Request) -> web.Response:
    session = await signed_in(request)
    if isinstance(session, web.Response):
        return session
    wired = wiring(request)
    now = wired.clock()
    try:
        picked = date.fromisoformat(request.query.get("week", ""))
    except ValueError:
        picked = now.astimezone(UTC).date()
    monday = views.monday_of(picked)
    policies = {repo: await _policy(wired.store, repo) for repo in session.repos}
    start, end = views.week_bounds(monday, [p.timezone for p, _ in policies.values()])
    feeds = FeedTokens(Vault(wired.store, SecretBox(wired.settings.secrets_keys)), wired.clock, values=wired.store)
    base_url = (wired.settings.public_url or str(request.url.origin())).rstrip("/")
    weeks, quiet = [], []
    for repo, (policy, configured) in policies.items():
        releases = [
            r
            for r in await wired.store.find_releases(repo=repo, active_only=False, limit=RELEASES_PER_REPO)
            if views.overlaps(r.slot, start, end)
        ]
        events = await wired.store.list_calendar_events(None, start=start, end=end, calendar_prefix=f"{repo} ")
        if not configured and not releases and not events:
            quiet.append(repo)
            continue
        today = now.astimezone(policy.timezone).date()
        weeks.append(
            views.repo_week(
                repo,
                policy,
                monday,
                releases,
                events,
                today=today,
                feed_url=await feeds.url(base_url, repo),
                configured=configured,
            )
        )
    return render(
        request,
        "week.html",
        **_context(request, session, title="Week", nav="week"),
        weeks=weeks,
        quiet=quiet,
        default_windows=describe_windows(DEFAULT_CONFIG.policy()),
        week_label=f"{views.day_label(monday)} {monday.year}",
        previous=(monday - timedelta(days=7)).isoformat(),
        following=(monday + timedelta(days=7)).isoformat(),
        live=True,
        after=await wired.store.last_event_id(),
    )


# Live updates -------------------------------------------------------------------------------------


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events of release and PR changes in the person's repositories, resumable (Last-Event-ID).
    The stream re-checks the session every SSE_KEEPALIVE: signed out, expired or revoked, it says so and ends;
    a repository the person lost access to stops being streamed."""
    auth = _auth(request)
    cookie = request.cookies.get(auth.session_cookie)
    try:
        session = None if await auth.ready() else await auth.session(cookie)
    except SignInFailed:
        session = None
    headers = security_headers(wiring(request).settings)
    if session is None:
        return web.Response(status=401, text="sign in first\n", headers=headers)
    last = request.headers.get("Last-Event-ID", "").strip() or request.query.get("after", "").strip()
    store = wiring(request).store
    if last and last.isascii() and last.isdigit() and int(last) <= MAX_EVENT_ID:
        after = int(last)
    else:
        after = await store.last_event_id()
    stopping = request.app.get(_STOPPING) or asyncio.Event()
    response = web.StreamResponse(headers={**headers, "Content-Type": "text/event-stream", "X-Accel-Buffering": "no"})
    await response.prepare(request)
    try:
        await response.write(b"retry: 2000\n\n")
        idle = 0.0
        while not stopping.is_set():
            batch = await store.read_events(after=after, limit=200)
            now = datetime.now(UTC)
            gap = False
            for event in batch:
                if event.id != after + 1 and (now - event.at).total_seconds() < SSE_GAP_GRACE:
                    gap = True  # an id below this one is taken but not written yet: wait for it a little
                    break
                after = event.id
                if event.topic not in ("release", "pr") or not session.sees(event.subject):
                    continue
                data = orjson.dumps({**event.data, "at": event.at.isoformat()})
                await response.write(f"id: {event.id}\nevent: {event.topic}\ndata: ".encode() + data + b"\n\n")
            if batch and not gap:
                idle = 0.0
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), SSE_POLL)
            idle += SSE_POLL
            if idle >= SSE_KEEPALIVE:
                idle = 0.0
                try:
                    session = await auth.session(cookie)
                except SignInFailed:
                    session = None
                if session is None:
                    await response.write(b"event: signed-out\ndata: {}\n\n")
                    break
                await response.write(b": keep-alive\n\n")
    except ConnectionResetError:
        pass  # the browser went away (another page, a closed tab)
    return response
