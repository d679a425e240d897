"""The REST API through the real app and the fake GitHub: auth, problem details, writes under the PR's
permission rule, idempotency, pages, server-sent events, the OpenAPI document and the tokens CLI."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate

from bot.__main__ import _tokens, build_parser
from bot.api.tokens import ApiTokens
from bot.api.web import openapi_document
from bot.app import STORE as STORE_KEY
from bot.app import make_app
from bot.config import Settings
from bot.release import State
from bot.store.base import Installation
from tests.fakes.github import FakeGitHub
from tests.scenario import INSTALLATION, REPO, Clock, Scenario

ClientFactory = Callable[[web.Application], Awaitable[TestClient]]
HEAD = "d" * 40
CONFIG = """\
timezone: Europe/Berlin
windows:
  - days: [mon-fri]
    hours: "10:00-16:00"
"""


class Api:
    def __init__(self, scenario: Scenario) -> None:
        self.s = scenario
        self.tokens = ApiTokens(scenario.store, scenario.clock)

    async def token(self, login: str, *, repos: list[str] | None = None, scopes: list[str] | None = None) -> str:
        token, _ = await self.tokens.create(
            name=f"{login}-token", login=login, repos=repos or [REPO], scopes=scopes or ["read", "write"]
        )
        return token

    async def call(
        self, method: str, path: str, token: str | None, *, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        data = json.dumps(body) if body is not None else None
        if data is not None:
            sent["Content-Type"] = "application/json"
        response = await self.s.client.request(method, f"/api/v1{path}", data=data, headers=sent)
        text = await response.text()
        await self.s.settle()
        return response.status, (json.loads(text) if text else {}), dict(response.headers)


@pytest.fixture
async def api(aiohttp_client: ClientFactory, app_settings: Settings, fake_github: FakeGitHub) -> AsyncIterator[Api]:
    clock = Clock()
    for pr in (7, 8, 9):
        fake_github.add_pull(REPO, pr, head_sha=HEAD, title=f"Change {pr}", user_login="alice")
    fake_github.set_permission(REPO, "alice", "write")
    fake_github.set_permission(REPO, "bob", "read")
    fake_github.set_branch_protection(REPO, "main", ["ci/build"])
    fake_github.add_check_run(REPO, HEAD, "ci/build", status="completed", conclusion="success")
    fake_github.set_file(REPO, ".github/release-secretary.yml", CONFIG)
    settings = app_settings.replace(public_url="http://bot.test")
    client = await aiohttp_client(make_app(settings, clock=clock))
    scenario = Scenario(client, settings, fake_github, clock)
    await scenario.store.save_installation(
        Installation(id=INSTALLATION, account_login=REPO.split("/")[0], repositories=(REPO,))
    )
    yield Api(scenario)


def test_the_openapi_document_is_valid_and_names_every_operation() -> None:
    document = openapi_document("https://bot.example")
    validate(document)
    operations = {entry["operationId"] for path in document["paths"].values() for entry in path.values()}
    assert operations >= {
        "list_prs",
        "get_pr",
        "changes",
        "list_commit_statuses",
        "list_check_runs",
        "list_releases",
        "get_release",
        "tag_pr_for_release",
        "schedule_release",
        "cancel_release",
        "comment_on_pr",
        "call_dev_agent",
        "events",
    }


async def test_the_document_is_served(api: Api) -> None:
    response = await api.s.client.get("/api/v1/openapi.json")
    document = await response.json()
    assert response.status == 200 and document["servers"] == [{"url": "http://bot.test"}]
    validate(document)


@pytest.mark.parametrize(
    ("authorization", "detail"),
    [
        (None, "send a token"),
        ("Bearer", "send a token"),
        ("Basic dXNlcjpwYXNz", "send a token"),
        ("Bearer rs_not-a-real-token", "not valid"),
        ("Bearer ghp_somethingelse", "not valid"),
    ],
)
async def test_no_token_or_a_bad_one_is_401_with_problem_details(
    api: Api, authorization: str | None, detail: str
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = await api.s.client.get("/api/v1/releases", headers=headers)
    body = await response.json(content_type=None)
    assert response.status == 401 and response.headers["Content-Type"] == "application/problem+json"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert body["status"] == 401 and detail in body["detail"] and body["title"] == "Unauthorized"


async def test_a_revoked_token_is_refused(api: Api) -> None:
    token = await api.token("alice")
    assert (await api.call("GET", "/releases", token))[0] == 200
    [record] = await api.tokens.list()
    await api.tokens.revoke(record.id)
    assert (await api.call("GET", "/releases", token))[0] == 401


async def test_a_repository_outside_the_token_does_not_exist(api: Api) -> None:
    token = await api.token("alice", repos=["octo-org/other"])
    status, body, _ = await api.call("POST", f"/repos/{REPO}/prs/7/schedule", token, body={})
    assert status == 404 and "no repository" in body["detail"]
    status, body, _ = await api.call("GET", f"/releases?repo={REPO}", token)
    assert status == 404
    assert await api.s.store.get_active_release(REPO, 7) is None


async def test_a_read_only_token_cannot_write(api: Api) -> None:
    token = await api.token("alice", scopes=["read"])
    status, body, _ = await api.call("POST", f"/repos/{REPO}/prs/7/schedule", token, body={"when": "friday 3pm"})
    assert status == 403 and "write scope" in body["detail"]


async def test_schedule_acts_as_the_login_under_the_prs_rule(api: Api) -> None:
    writer = await api.token("alice")
    status, body, _ = await api.call("POST", f"/repos/{REPO}/prs/7/schedule", writer, body={"when": "friday 3pm"})
    assert status == 200, body
    release = body["release"]
    assert release["state"] == "scheduled" and release["slot_start"] == "2026-11-27T14:00:00Z"
    assert release["audit"][0]["source"] == "api" and release["requested_by"] == "alice"
    assert any("booked" in m for m in body["messages"])
    assert "Fri 27 Nov 15:00-15:30 Europe/Berlin" in api.s.sticky(7)["body"]
    # A token acting as a read user cannot do what that person could not.
    reader = await api.token("bob")
    status, body, _ = await api.call("POST", f"/repos/{REPO}/prs/8/schedule", reader, body={"when": "friday 3pm"})
    assert status == 403 and "**write**" in body["detail"] and "**read**" in body["detail"]
    assert await api.s.store.get_active_release(REPO, 8) is None


async def test_bad_bodies_and_queries_say_precisely_what_is_wrong(api: Api) -> None:
    token = await api.token("alice")
    status, body, _ = await api.call("POST", f"/repos/{REPO}/prs/7/schedule", token, body={"when": 5, "later": 1})
    assert status == 422 and "body when" in body["detail"] and "body later" in body["detail"]
    response = await api.s.client.post(
        f"/api/v1/repos/{REPO}/prs/7/schedule",
        data=b"{not json",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert response.status == 400 and "not JSON" in (await response.json(content_type=None))["detail"]
    status, body, _ = await api.call("GET", "/releases?limit=1000", token)
    assert status == 400 and "query limit" in body["detail"]
    status, body, _ = await api.call("GET", "/releases?state=shipped", token)
    assert status == 400 and "query state" in body["detail"]
    # Nothing done, and the bot says why, as it would on the PR.
    status, body, _ = await api.call("POST", f"/repos/{REPO}/prs/7/schedule", token, body={"when": "someday maybe"})
    assert status == 409 and "someday maybe" in body["detail"]
    status, body, _ = await api.call("POST", f"/repos/{REPO}/prs/125/schedule", token, body={})
    assert status == 404 and "125" in body["detail"]


async def test_an_idempotency_key_acts_once_and_answers_the_same(api: Api) -> None:
    token = await api.token("alice")
    headers = {"Idempotency-Key": "book-7-friday"}
    first = await api.call("POST", f"/repos/{REPO}/prs/7/schedule", token, body={"when": "friday 3pm"}, headers=headers)
    again = await api.call("POST", f"/repos/{REPO}/prs/7/schedule", token, body={"when": "friday 3pm"}, headers=headers)
    assert first[0] == again[0] == 200 and first[1] == again[1]
    assert again[2].get("Idempotent-Replayed") == "true"
    release = await api.s.store.get_active_release(REPO, 7)
    assert release is not None and len([t for t in release.audit if t.source == "api"]) == len(
        [t for t in first[1]["release"]["audit"] if t["source"] == "api"]
    )
    other = await api.call("POST", f"/repos/{REPO}/prs/7/schedule", token, body={"when": "monday"}, headers=headers)
    assert other[0] == 422 and "different request" in other[1]["detail"]
    # Another token's key is its own.
    bob_like = await api.token("alice")
    fresh = await api.call("POST", f"/repos/{REPO}/prs/8/cancel", bob_like, body={}, headers=headers)
    assert fresh[0] == 409 and "no release" in fresh[1]["detail"] and "Idempotent-Replayed" not in fresh[2]


async def test_cancel_and_get_release_with_its_audit_trail(api: Api) -> None:
    token = await api.token("alice")
    await api.call("POST", f"/repos/{REPO}/prs/7/schedule", token, body={"when": "friday 3pm"})
    status, body, _ = await api.call("POST", f"/repos/{REPO}/prs/7/cancel", token, body={"reason": "not this week"})
    assert status == 200 and body["release"]["state"] == "cancelled"
    status, release, _ = await api.call("GET", f"/repos/{REPO}/prs/7/releases/1", token)
    assert status == 200 and [a["to_state"] for a in release["audit"]][-1] == "cancelled"
    assert release["audit"][-1]["actor"] == "alice" and release["agent_sessions"] == []
    status, body, _ = await api.call("GET", f"/repos/{REPO}/prs/7/releases/2", token)
    assert status == 404 and "no release number 2" in body["detail"]


async def test_list_releases_pages_with_a_cursor_and_filters(api: Api) -> None:
    token = await api.token("alice")
    # One release at a time per lane: three different slots.
    for pr, when in ((7, "friday 3pm"), (8, "monday 11:00"), (9, "friday 2pm")):
        status, body, _ = await api.call("POST", f"/repos/{REPO}/prs/{pr}/schedule", token, body={"when": when})
        assert status == 200 and body["release"] is not None, body
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        path = "/releases?limit=2" + (f"&cursor={cursor}" if cursor else "")
        status, page, _ = await api.call("GET", path, token)
        assert status == 200
        seen += [item["pr"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == [7, 8, 9] and len(seen) == 3 and pages == 2
    status, page, _ = await api.call(
        "GET", "/releases?window_start=2026-11-30T00:00:00Z&window_end=2026-12-01T00:00:00Z", token
    )
    assert [item["pr"] for item in page["items"]] == [8]
    status, body, _ = await api.call("GET", "/releases?cursor=nonsense", token)
    assert status == 400 and "cursor" in body["detail"]


async def test_events_resume_after_a_dropped_connection_without_loss_or_repeat(api: Api) -> None:
    token = await api.token("alice")
    headers = {"Authorization": f"Bearer {token}"}

    async def read(response: Any, count: int) -> list[tuple[int, str, dict[str, Any]]]:
        events: list[tuple[int, str, dict[str, Any]]] = []
        block: dict[str, str] = {}
        while len(events) < count:
            line = (await asyncio.wait_for(response.content.readline(), 5)).decode().rstrip("\n")
            if not line:
                if "id" in block:
                    events.append((int(block["id"]), block["event"], json.loads(block["data"])))
                block = {}
                continue
            if line.startswith(":") or line.startswith("retry:"):
                continue
            name, _, value = line.partition(": ")
            block[name] = value
        return events

    first = await api.s.client.get("/api/v1/events?after=0", headers=headers)
    assert first.status == 200 and first.headers["Content-Type"].startswith("text/event-stream")
    await api.call("POST", f"/repos/{REPO}/prs/7/schedule", token, body={"when": "friday 3pm"})
    got = await read(first, 1)
    first.close()  # the connection drops
    last_id = got[-1][0]
    await api.call("POST", f"/repos/{REPO}/prs/7/cancel", token, body={})
    second = await api.s.client.get("/api/v1/events", headers={**headers, "Last-Event-ID": str(last_id)})
    more = await read(second, 1)
    second.close()
    ids = [e[0] for e in got + more]
    assert ids == sorted(set(ids))  # none repeated, in order
    everything = [e for e in await api.s.store.read_events(after=0, limit=1000) if e.topic == "release"]
    assert [e.id for e in everything][: len(ids)] == ids  # none lost
    assert more[-1][1] == "release" and more[-1][2]["state"] in {s.value for s in State}


async def test_tokens_cli_prints_the_token_once_on_its_last_line(
    app_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    args = build_parser().parse_args(
        [
            "tokens",
            "create",
            "--name",
            "micromanager",
            "--as",
            "alice",
            "--repos",
            f"{REPO},acme/*",
            "--scopes",
            "read,write",
        ]
    )
    assert await _tokens(app_settings, args) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    assert token.startswith("rs_")
    assert await _tokens(app_settings, build_parser().parse_args(["tokens", "list"])) == 0
    listing = capsys.readouterr().out
    assert "micromanager" in listing and "@alice" in listing and token not in listing
    bad = build_parser().parse_args(
        ["tokens", "create", "--name", "x", "--as", "alice", "--repos", "nope", "--scopes", "admin"]
    )
    assert await _tokens(app_settings, bad) == 2
    assert "--repos" in capsys.readouterr().err


async def test_odd_inputs_are_400_not_500(api: Api) -> None:
    token = await api.token("alice", repos=["octo-org/*"])
    for path, says in (
        ("/releases?window_start=2026-11-30T00:00:00", "timezone"),
        ("/prs?cursor=nonsense", "cursor"),
        ("/prs?repo=octo-org/w*", "no repository"),
    ):
        status, body, _ = await api.call("GET", path, token)
        assert status in (400, 404) and says in body["detail"], (path, body)
    response = await api.s.client.get(
        "/api/v1/events", headers={"Authorization": f"Bearer {token}", "Last-Event-ID": "\u00b2"}
    )
    assert response.status == 400


async def test_open_event_streams_end_when_the_bot_stops(
    aiohttp_server: Any, app_settings: Settings, fake_github: FakeGitHub
) -> None:
    import time

    import aiohttp

    server = await aiohttp_server(make_app(app_settings))
    token, _ = await ApiTokens(server.app[STORE_KEY], Clock()).create(
        name="t", login="alice", repos=[REPO], scopes=["read"]
    )
    async with aiohttp.ClientSession() as session:
        response = await session.get(
            f"http://127.0.0.1:{server.port}/api/v1/events", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status == 200
        started = time.monotonic()
        await server.close()
        assert time.monotonic() - started < 3.0  # the stream ended instead of holding the shutdown
        response.close()
