"""The dashboard and its sign-in, through the real app against the fake GitHub: the App's user authorization
end to end, cookies, CSRF, the CSP, and what a person may see (pages and the event stream)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from bot.a2a.registry import Agent, Registry
from bot.app import STORE, make_app
from bot.checks import CheckItem, CheckState, ChecksVerdict
from bot.config import Settings
from bot.credentials import RegisteredApp
from bot.policy import Slot
from bot.prstate import CheckRunInfo, ShaChecks
from bot.release import Commit, Release, State, Transition
from bot.store import Store
from bot.web.auth import SESSION_TTL, Auth, safe_next
from bot.web.dashboard import add_routes
from tests.fakes.github import FakeGitHub
from tests.fakes.keys import AppKey
from tests.scenario import Clock

ClientFactory = Callable[[web.Application], Awaitable[TestClient]]
APP_ID = 4242
CLIENT_ID = "Iv1.dashboard0000001"
CLIENT_SECRET = "dashboard-client-secret"
PUBLIC = "http://bot.test"
WIDGETS = "octo-org/widgets"
SECRET_REPO = "octo-org/secret"
NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)  # a Wednesday
CONFIG = """\
timezone: Europe/Berlin
windows:
  - days: [mon-thu]
    hours: "10:00-16:00"
  - days: [fri]
    hours: "10:00-12:00"
freezes:
  - from: 2026-11-26
    reason: Thanksgiving
"""


# The world: two repositories in one installation; alice may access widgets only. -----------------------


def arrange_github(fake: FakeGitHub, app_key: AppKey, public: str = PUBLIC) -> None:
    fake.add_app(APP_ID, app_key.public_key_pem)
    fake.add_repo(WIDGETS)
    fake.add_repo(SECRET_REPO, private=True)
    fake.add_installation(99, "octo-org", repos=[WIDGETS, SECRET_REPO])
    fake.set_permission(WIDGETS, "alice", "write")
    fake.set_permission(SECRET_REPO, "carol", "admin")
    fake.add_oauth_app(CLIENT_ID, CLIENT_SECRET, f"{public}/login/callback", app_id=APP_ID)


def dashboard_settings(settings: Settings, fake: FakeGitHub, app_key: AppKey, public: str = PUBLIC) -> Settings:
    return settings.replace(
        github_app_id=APP_ID,
        github_private_key=app_key.rsa_private_key_pem.decode(),
        github_api_url=fake.url,
        github_url=fake.url,
        github_client_id=CLIENT_ID,
        github_client_secret=CLIENT_SECRET,
        public_url=public,
    )


def _verdict(state: str, *items: tuple[str, CheckState]) -> ChecksVerdict:
    return ChecksVerdict(
        state,  # type: ignore[arg-type]
        tuple(CheckItem(name, s, "check_run", f"https://ci.example/{name}") for name, s in items),
        frozenset(name for name, _ in items),
    )


def _audit(*steps: tuple[State, str, str], start: datetime) -> tuple[Transition, ...]:
    out: list[Transition] = []
    for i, (to, actor, reason) in enumerate(steps):
        out.append(
            Transition(
                at=start + timedelta(minutes=5 * i),
                from_state=out[-1].to_state if out else None,
                to_state=to,
                actor=actor,
                reason=reason,
                source="github_comment" if actor not in ("github", "release-secretary") else "github_checks",
            )
        )
    return tuple(out)


def release(repo: str, pr: int, state: State, title: str, *, slot_at: datetime | None = None, **extra: Any) -> Release:
    head = f"{pr:x}".rjust(7, "a") + "0" * 33
    requested = NOW - timedelta(days=1)
    steps = extra.pop("steps", None) or [(State.REQUESTED, "alice", "/ship friday 3pm")]
    base = Release(
        repo=repo,
        pr=pr,
        number=1,
        installation_id=99,
        state=state,
        title=title,
        base="main",
        head_sha=head,
        requested_by="alice",
        requested_at=requested,
        slot=Slot(slot_at, slot_at + timedelta(minutes=30)) if slot_at else None,
        timezone="Europe/Berlin",
        commits=(Commit(head, title),),
        audit=_audit(*steps, start=requested),
        updated_at=requested + timedelta(minutes=5 * len(steps)),
        lane=f"{repo} production",
    )
    return replace(base, **extra)


def seeded_releases() -> list[Release]:
    green = _verdict("green", ("ci/build", CheckState.SUCCESS), ("e2e", CheckState.SUCCESS))
    pending = _verdict("pending", ("ci/build", CheckState.PENDING))
    failing = _verdict("failing", ("ci/build", CheckState.FAILURE), ("lint", CheckState.SUCCESS))
    friday = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    return [
        release(
            WIDGETS,
            7,
            State.SCHEDULED,
            "Faster widgets",
            slot_at=friday,
            checks=green,
            verified_sha="00000007" + "0" * 32,
            steps=[
                (State.REQUESTED, "alice", "/ship friday 11am"),
                (State.VERIFYING, "alice", "/ship friday 11am; waiting for required checks on aaaaaa7"),
                (State.SCHEDULED, "github", "checks changed; checks green on aaaaaa7"),
            ],
        ),
        release(
            WIDGETS,
            8,
            State.VERIFYING,
            "Widget colours",
            slot_at=datetime(2026, 11, 25, 13, 0, tzinfo=UTC),
            checks=pending,
            blockers=("waiting for ci/build",),
            steps=[
                (State.REQUESTED, "bob", "label Ready for Prod"),
                (State.VERIFYING, "bob", "label; waiting for required checks on aaaaaa8"),
            ],
        ),
        release(
            WIDGETS,
            9,
            State.BLOCKED,
            "Remove the legacy widget API",
            slot_at=datetime(2026, 11, 30, 9, 0, tzinfo=UTC),
            checks=failing,
            blockers=("ci/build is failing",),
            steps=[
                (State.REQUESTED, "alice", "/ship monday"),
                (State.BLOCKED, "github", "checks changed; required checks failing: ci/build"),
            ],
        ),
        release(
            WIDGETS,
            10,
            State.RELEASING,
            "Widget search",
            slot_at=NOW - timedelta(minutes=5),
            checks=green,
            verified_sha="aaaaaaa" + "0" * 33,
            merge_sha="5e1f" + "0" * 36,
            deploy_target="dev agent deploy-web",
            deploy_url="https://agent.example/tasks/42",
            deploy_log=("Pulling image widgets:5e1f000", "Migrating the database (3 of 5)", "Rolling out 2 of 6 pods"),
            deploy_log_total=12,
            steps=[
                (State.REQUESTED, "alice", "/ship now"),
                (State.SCHEDULED, "github", "checks green on aaaaaaa"),
                (State.RELEASING, "release-secretary", "merged as 5e1f000; deploying with dev agent deploy-web"),
            ],
        ),
        release(
            WIDGETS,
            11,
            State.RELEASED,
            "Widget sizes",
            slot_at=NOW - timedelta(days=1),
            merge_sha="cafe" + "0" * 36,
            released_at=NOW - timedelta(hours=20),
            steps=[(State.REQUESTED, "alice", "/ship"), (State.RELEASED, "release-secretary", "merged as cafe000")],
        ),
        release(
            WIDGETS,
            12,
            State.FAILED,
            "Widget cache",
            slot_at=NOW - timedelta(hours=3),
            merge_sha="beef" + "0" * 36,
            deploy_target="workflow deploy.yml",
            deploy_url="https://github.com/octo-org/widgets/actions/runs/99",
            failure="deploy step 'migrate' exited 1",
            steps=[(State.REQUESTED, "alice", "/ship"), (State.FAILED, "github", "deploy failed: migrate exited 1")],
        ),
        release(
            WIDGETS,
            13,
            State.CANCELLED,
            "Widget <script>alert(1)</script> names",
            steps=[(State.REQUESTED, "bob", "/ship"), (State.CANCELLED, "bob", "cancelled by bob: not needed")],
        ),
        release(SECRET_REPO, 3, State.SCHEDULED, "Secret launch", slot_at=datetime(2026, 11, 25, 14, 0, tzinfo=UTC)),
    ]


async def seed(store: Store, clock: Callable[[], datetime] = lambda: NOW) -> None:
    for r in seeded_releases():
        await store.save_release(r)
    await store.set_value(f"config:last-good:{WIDGETS}", CONFIG, now=NOW)
    head7 = seeded_releases()[0].head_sha
    run = CheckRunInfo(1, "ci/build", "completed", "success", "github-actions", "https://ci.example/1", NOW, NOW)
    await store.save_sha_checks(ShaChecks(WIDGETS, head7, (run,), (), NOW))
    registry = Registry(store, clock)
    agent = Agent(scope=WIDGETS, url="https://agent.example")
    session = await registry.open_session(
        agent,
        skill="run_playbook",
        playbook="deploy-web",
        parameters={"sha": "5e1f000"},
        repo=WIDGETS,
        release=f"{WIDGETS}#10/1",
        requested_by="alice",
        push_secret="push-secret",
    )
    session.task_id = "task-42"
    registry.note(session, "working", "rolling out")
    for i, line in enumerate(("Pulling image widgets:5e1f000", "Migrating the database (3 of 5)"), start=1):
        session.add_line(i, line)
    await registry.save(session)


# Signing in, as the browser would, through the fake's OAuth web flow. ------------------------------------


def plain(page: str) -> str:
    """The page's text, roughly as a person reads it: no tags, whitespace collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page.split("<main", 1)[-1])).replace(" :", ":")


def form_value(page: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert match is not None, f"no {name} in the page"
    return match.group(1)


async def sign_in(client: TestClient, fake: FakeGitHub, login: str, *, next_path: str = "/dashboard") -> None:
    fake.signed_in_as = login
    page = await client.get(f"/login?next={next_path}")
    assert page.status == 200
    text = await page.text()
    started = await client.post(
        "/login", data={"csrf": form_value(text, "csrf"), "next": form_value(text, "next")}, allow_redirects=False
    )
    assert started.status == 303, await started.text()
    authorize = started.headers["Location"]
    assert authorize.startswith(f"{fake.url}/login/oauth/authorize?")
    async with aiohttp.ClientSession() as browser, browser.get(authorize, allow_redirects=False) as github:
        assert github.status == 302
        back = github.headers["Location"]
    assert back.startswith(f"{PUBLIC}/login/callback?")
    done = await client.get(f"/login/callback?{urlsplit(back).query}", allow_redirects=False)
    assert done.status == 303, await done.text()
    assert done.headers["Location"] == next_path


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
async def client(
    aiohttp_client: ClientFactory, settings: Settings, fake_github: FakeGitHub, app_key: AppKey, clock: Clock
) -> TestClient:
    arrange_github(fake_github, app_key)
    app = make_app(dashboard_settings(settings, fake_github, app_key), clock=clock)
    add_routes(app)
    client = await aiohttp_client(app)
    await seed(client.server.app[STORE], clock)
    return client


# Tests ---------------------------------------------------------------------------------------------------


async def test_the_fake_lists_only_what_the_person_can_access(fake_github: FakeGitHub, app_key: AppKey) -> None:
    arrange_github(fake_github, app_key)
    fake_github.add_oauth_app("Iv1.oauth-app-only", "s", f"{PUBLIC}/x")  # an OAuth App's token, not the App's
    headers = {"Accept": "application/vnd.github+json"}
    async with aiohttp.ClientSession() as http:

        async def get(path: str, token: str) -> tuple[int, Any]:
            auth = {"Authorization": f"Bearer {token}", **headers}
            async with http.get(f"{fake_github.url}{path}", headers=auth) as resp:
                return resp.status, await resp.json()

        alice = fake_github.issue_user_token(CLIENT_ID, "alice")
        status, body = await get("/user/installations", alice)
        assert status == 200 and [i["id"] for i in body["installations"]] == [99]
        status, body = await get("/user/installations/99/repositories", alice)
        assert status == 200 and [r["full_name"] for r in body["repositories"]] == [WIDGETS]
        assert body["repositories"][0]["permissions"] == {
            "admin": False,
            "maintain": False,
            "push": True,
            "triage": True,
            "pull": True,
        }
        dave = fake_github.issue_user_token(CLIENT_ID, "dave")  # no access to anything
        assert await get("/user/installations", dave) == (200, {"total_count": 0, "installations": []})
        assert (await get("/user/installations/99/repositories", dave))[0] == 404
        assert (await get("/user/installations", fake_github.issue_user_token("Iv1.oauth-app-only", "alice")))[0] == 403
    assert fake_github.violations == []


async def test_sign_in_end_to_end_shows_only_the_persons_releases(client: TestClient, fake_github: FakeGitHub) -> None:
    anonymous = await client.get("/dashboard", allow_redirects=False)
    assert anonymous.status == 303 and anonymous.headers["Location"] == "/login?next=%2Fdashboard"

    await sign_in(client, fake_github, "alice")
    page = await client.get("/dashboard")
    assert page.status == 200
    text = await page.text()
    for title in ("Faster widgets", "Widget colours", "Remove the legacy widget API", "Widget search", "Widget sizes"):
        assert title in text
    assert "Secret launch" not in text and SECRET_REPO not in text
    # Grouped by state, in words; upcoming with the window in the repo's zone and UTC.
    for heading in ("Upcoming", "In progress", "Released", "Failed or rolled back", "Cancelled"):
        assert f"{heading} <span" in text
    assert "Fri 27 Nov 11:00-11:30 Europe/Berlin (10:00 UTC)" in text
    assert "Rolling out 2 of 6 pods" in text  # a running release's live step and log
    assert "Widget &lt;script&gt;alert(1)&lt;/script&gt; names" in text and "<script>alert" not in text

    # GitHub was asked who signed in and what they may access, with the user's token.
    assert [c.operation_id for c in fake_github.requests if c.operation_id] == [
        "users/get-authenticated",
        "apps/list-installations-for-authenticated-user",
        "apps/list-installation-repos-for-authenticated-user",
    ]
    token_request = next(r for r in fake_github.requests if r.path == "/login/oauth/access_token")
    assert token_request.form["code_verifier"] and token_request.form["redirect_uri"] == f"{PUBLIC}/login/callback"
    authorize = next(r for r in fake_github.requests if r.path == "/login/oauth/authorize")
    assert authorize.query["code_challenge_method"] == "S256" and authorize.query["client_id"] == CLIENT_ID
    assert fake_github.violations == []


async def test_release_page_has_the_timeline_checks_merge_deploy_and_agent_log(
    client: TestClient, fake_github: FakeGitHub
) -> None:
    await sign_in(client, fake_github, "alice")
    page = await client.get(f"/dashboard/releases/{WIDGETS}/7/1")
    assert page.status == 200
    text = await page.text()
    assert "checks green on aaaaaa7" in text and "@alice" in text and "via comment" in text
    assert "Checks at each verification" in text and "ci/build" in text and "https://ci.example/ci/build" in text
    running = await (await client.get(f"/dashboard/releases/{WIDGETS}/10/1")).text()
    assert "5e1f000" in running and "https://agent.example/tasks/42" in running
    assert "run_playbook deploy-web: working" in running and "Migrating the database (3 of 5)" in running
    assert "the last 3 of 12 lines" in running
    # Another person's repository: the same 404 as a release that does not exist.
    hidden = await client.get(f"/dashboard/releases/{SECRET_REPO}/3/1")
    missing = await client.get(f"/dashboard/releases/{WIDGETS}/404/1")
    assert hidden.status == missing.status == 404
    assert "Secret launch" not in await hidden.text()


async def test_week_view_shows_windows_freezes_bookings_and_the_feed(
    client: TestClient, fake_github: FakeGitHub
) -> None:
    await sign_in(client, fake_github, "alice")
    page = await client.get("/dashboard/week")
    assert page.status == 200
    text = await page.text()
    words = plain(text)
    assert "Week of Mon 23 Nov 2026" in words and "Times below are Europe/Berlin, with UTC after them" in words
    assert "Thu 26 Nov Frozen: Thanksgiving (Thu 26 Nov)" in words
    friday = words[words.index("Fri 27 Nov") : words.index("Sat 28 Nov")]
    window, booking = (
        "Windows: 10:00-12:00 (09:00-11:00 UTC)",
        "11:00-11:30 (10:00-10:30 UTC) #7 Faster widgets Scheduled",
    )
    assert friday == f"Fri 27 Nov {window} {booking} "
    feed = re.search(r'href="(http://bot\.test/calendar\.ics\?[^"]+)"', text)
    assert feed is not None
    query = parse_qs(urlsplit(feed.group(1).replace("&amp;", "&")).query)
    assert query["repo"] == [WIDGETS]
    ics = await client.get(f"/calendar.ics?repo={WIDGETS}&token={query['token'][0]}")
    assert ics.status == 200 and ics.content_type == "text/calendar"
    assert SECRET_REPO not in text
    following = await client.get("/dashboard/week?week=2026-11-30")
    assert "Remove the legacy widget API" in await following.text()


async def test_pages_without_a_session_go_to_sign_in(client: TestClient) -> None:
    for path in ("/dashboard", "/dashboard/week", f"/dashboard/releases/{WIDGETS}/7/1"):
        response = await client.get(path, allow_redirects=False)
        assert response.status == 303
        assert response.headers["Location"].startswith("/login?next=")
    assert (await client.get("/dashboard/events")).status == 401
    forged = {"rs_session": "gAAAAABnot-a-real-token"}
    response = await client.get("/dashboard", cookies=forged, allow_redirects=False)
    assert response.status == 303


async def test_forms_without_the_csrf_token_are_refused(client: TestClient, fake_github: FakeGitHub) -> None:
    page = await client.get("/login")
    assert (await client.post("/login", data={"next": "/dashboard"}, allow_redirects=False)).status == 403
    assert (await client.post("/login", data={"csrf": "guess"}, allow_redirects=False)).status == 403
    assert not any(r.path.startswith("/login/oauth") for r in fake_github.requests)
    assert page.status == 200

    await sign_in(client, fake_github, "alice")
    assert (await client.post("/logout", data={}, allow_redirects=False)).status == 403
    assert (await client.post("/logout", data={"csrf": "guess"}, allow_redirects=False)).status == 403
    assert (await client.get("/dashboard", allow_redirects=False)).status == 200  # still signed in

    csrf = form_value(await (await client.get("/dashboard")).text(), "csrf")
    out = await client.post("/logout", data={"csrf": csrf}, allow_redirects=False)
    assert out.status == 303 and out.headers["Location"] == "/login?signed_out=1"
    assert (await client.get("/dashboard", allow_redirects=False)).status == 303


async def test_signed_out_session_cookie_is_dead_even_if_kept(client: TestClient, fake_github: FakeGitHub) -> None:
    await sign_in(client, fake_github, "alice")
    kept = {c.key: c.value for c in client.session.cookie_jar if c.key == "rs_session"}
    csrf = form_value(await (await client.get("/dashboard")).text(), "csrf")
    await client.post("/logout", data={"csrf": csrf}, allow_redirects=False)
    client.session.cookie_jar.clear()
    assert (await client.get("/dashboard", cookies=kept, allow_redirects=False)).status == 303


async def test_callback_in_another_browser_signs_nobody_in(client: TestClient, fake_github: FakeGitHub) -> None:
    fake_github.signed_in_as = "alice"
    text = await (await client.get("/login")).text()
    started = await client.post(
        "/login", data={"csrf": form_value(text, "csrf"), "next": "/dashboard"}, allow_redirects=False
    )
    async with (
        aiohttp.ClientSession() as browser,
        browser.get(started.headers["Location"], allow_redirects=False) as gh,
    ):
        back = gh.headers["Location"]
    client.session.cookie_jar.clear()  # someone else's browser opens the callback
    done = await client.get(f"/login/callback?{urlsplit(back).query}", allow_redirects=False)
    assert done.status == 403 and "another browser" in await done.text()
    again = await client.get(f"/login/callback?{urlsplit(back).query}", allow_redirects=False)
    assert again.status == 400  # the state is spent


async def test_security_headers_and_cookie_flags(
    aiohttp_client: ClientFactory, settings: Settings, fake_github: FakeGitHub, app_key: AppKey
) -> None:
    """On https: the session cookie is __Host-, Secure, HttpOnly, SameSite=Lax, with an expiry; the CSP is strict."""
    public = "https://bot.example"
    arrange_github(fake_github, app_key, public)
    app = make_app(dashboard_settings(settings, fake_github, app_key, public), clock=Clock(NOW))
    add_routes(app)
    client = await aiohttp_client(app)
    fake_github.signed_in_as = "alice"

    page = await client.get("/login")
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "style-src 'self'" in csp
    assert f"form-action 'self' {fake_github.url}" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["X-Content-Type-Options"] == "nosniff"
    form = _cookies(page)["rs_login_form"]
    assert form["httponly"] and form["secure"] and form["samesite"] == "Lax" and form["path"] == "/login"

    text = await page.text()
    started = await client.post(
        "/login",
        data={"csrf": form_value(text, "csrf"), "next": "/dashboard"},
        cookies={"rs_login_form": form.value},
        allow_redirects=False,
    )
    flow = _cookies(started)["rs_login"]
    assert flow["httponly"] and flow["secure"] and flow["samesite"] == "Lax" and int(flow["max-age"]) == 600
    async with (
        aiohttp.ClientSession() as browser,
        browser.get(started.headers["Location"], allow_redirects=False) as gh,
    ):
        back = gh.headers["Location"]
    done = await client.get(
        f"/login/callback?{urlsplit(back).query}", cookies={"rs_login": flow.value}, allow_redirects=False
    )
    session = _cookies(done)["__Host-rs_session"]
    assert session["httponly"] and session["secure"] and session["samesite"] == "Lax"
    assert session["path"] == "/" and not session["domain"]
    assert int(session["max-age"]) == int(SESSION_TTL.total_seconds())
    assert "alice" not in session.value and "ghu_" not in session.value  # encrypted, not just signed
    dashboard = await client.get("/dashboard", cookies={"__Host-rs_session": session.value})
    assert dashboard.status == 200 and "Content-Security-Policy" in dashboard.headers
    assert dashboard.headers["Cache-Control"] == "no-store"
    assert "<script src=" in await dashboard.text() and "<script>" not in await dashboard.text()
    tampered = session.value[:-6] + ("AAAAAA" if not session.value.endswith("AAAAAA") else "BBBBBB")
    assert (
        await client.get("/dashboard", cookies={"__Host-rs_session": tampered}, allow_redirects=False)
    ).status == 303
    static = await client.get("/dashboard/static/dashboard.js")
    assert static.status == 200 and "Content-Security-Policy" in static.headers


def _cookies(response: aiohttp.ClientResponse) -> SimpleCookie:
    jar: SimpleCookie = SimpleCookie()
    for header in response.headers.getall("Set-Cookie", []):
        jar.load(header)
    return jar


async def _read_events(
    response: aiohttp.ClientResponse, until: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    event = ""
    while not until(seen):
        line = (await asyncio.wait_for(response.content.readline(), 10)).decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            seen.append({"event": event, **json.loads(line[6:])})
    return seen


async def test_event_stream_carries_only_the_persons_repositories(client: TestClient, fake_github: FakeGitHub) -> None:
    await sign_in(client, fake_github, "alice")
    store: Store = client.server.app[STORE]
    stream = await client.get("/dashboard/events")
    assert stream.status == 200 and stream.content_type == "text/event-stream"
    assert "Content-Security-Policy" in stream.headers
    secret = await store.get_active_release(SECRET_REPO, 3)
    mine = await store.get_active_release(WIDGETS, 8)
    assert secret is not None and mine is not None
    await store.save_release(replace(secret, state=State.CANCELLED))
    await store.save_release(replace(mine, state=State.CANCELLED))
    seen = await _read_events(stream, lambda seen: any(e.get("pr") == 8 for e in seen))
    assert [(e["event"], e["repo"], e["pr"], e["state"]) for e in seen] == [("release", WIDGETS, 8, "cancelled")]
    stream.close()


async def test_losing_access_on_github_hides_the_repository_after_the_recheck(
    client: TestClient, fake_github: FakeGitHub, clock: Clock
) -> None:
    await sign_in(client, fake_github, "alice")
    assert "Faster widgets" in await (await client.get("/dashboard")).text()
    fake_github.set_permission(WIDGETS, "alice", "none")
    clock.advance(minutes=11)  # past the time GitHub's answer is trusted
    text = await (await client.get("/dashboard")).text()
    assert "Faster widgets" not in text and "0 repositories" in text
    assert len(fake_github.calls("apps/list-installations-for-authenticated-user")) == 2


async def test_github_down_uses_the_last_answer_for_an_hour_then_fails_closed(
    client: TestClient, fake_github: FakeGitHub, clock: Clock
) -> None:
    await sign_in(client, fake_github, "alice")
    fake_github.fail_next("GET", "^/user/installations$", 502, times=10)
    clock.advance(minutes=11)
    assert "Faster widgets" in await (await client.get("/dashboard")).text()
    assert "Faster widgets" in await (await client.get("/dashboard")).text()
    assert len(fake_github.calls("apps/list-installations-for-authenticated-user")) == 2  # not again at once
    clock.advance(minutes=50)
    down = await client.get("/dashboard", allow_redirects=False)
    assert down.status == 503 and "GitHub cannot be reached" in await down.text()
    assert "Faster widgets" not in await down.text()


async def test_revoked_authorization_ends_the_session(
    client: TestClient, fake_github: FakeGitHub, clock: Clock
) -> None:
    await sign_in(client, fake_github, "alice")
    fake_github.revoke_authorization("alice")
    clock.advance(minutes=11)
    response = await client.get("/dashboard", allow_redirects=False)
    assert response.status == 303 and response.headers["Location"].startswith("/login")


async def test_expired_user_token_is_refreshed_on_the_recheck(
    client: TestClient, fake_github: FakeGitHub, clock: Clock
) -> None:
    fake_github.user_token_ttl = timedelta(minutes=8)
    await sign_in(client, fake_github, "alice")
    clock.advance(minutes=11)  # the bot's clock says the token expired; GitHub rotates both tokens
    response = await client.get("/dashboard")
    assert response.status == 200 and "Faster widgets" in await response.text()
    assert fake_github.refreshes == 1


def test_next_paths_stay_on_the_dashboard() -> None:
    assert safe_next("/dashboard/week?week=2026-11-30") == "/dashboard/week?week=2026-11-30"
    for bad in (
        None,
        "",
        "https://evil.example",
        "//evil.example",
        "/dashboard//evil",
        "/dashboardx",
        "/\\evil",
        "/login",
    ):
        assert safe_next(bad) == "/dashboard"


def test_sign_in_is_off_until_configured(settings: Settings) -> None:
    auth = Auth(settings, None, lambda: NOW)  # type: ignore[arg-type]
    assert auth.missing() == ["GITHUB_CLIENT_ID", "GITHUB_CLIENT_SECRET", "PUBLIC_URL"]


async def test_an_app_registered_on_the_setup_page_lets_people_sign_in(
    aiohttp_client: ClientFactory, settings: Settings
) -> None:
    """Without GITHUB_CLIENT_ID in the environment, the OAuth client of the App the manifest flow made counts."""
    bare = settings.replace(public_url=PUBLIC)
    client = await aiohttp_client(_app(bare))
    off = await client.get("/login")
    assert off.status == 503 and "GITHUB_CLIENT_ID" in await off.text()
    registered = RegisteredApp(APP_ID, "release-secretary", "octo-org", "", "pem", "hook", CLIENT_ID, CLIENT_SECRET)
    bare.credentials.use(registered)
    on = await client.get("/login")
    assert on.status == 200 and "Sign in with GitHub" in await on.text()


def _app(settings: Settings) -> web.Application:
    app = make_app(settings, clock=Clock(NOW))
    add_routes(app)
    return app
