"""The fake GitHub is honest both ways: it refuses what GitHub refuses, and answers in GitHub's shapes."""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import cachetools
import jwt
import pytest
from gidgethub import BadRequest, GitHubBroken, InvalidField, RateLimitExceeded, apps
from gidgethub.aiohttp import GitHubAPI

from tests.fakes._operations import Reply
from tests.fakes._spec import FIXTURES, load_spec, openapi_to_jsonschema
from tests.fakes.github import FakeGitHub
from tests.fakes.github_oauth import pkce_challenge
from tests.fakes.keys import AppKey, make_app_key

pytest_plugins = ["tests.fakes.plugin"]

REPO = "octo-org/widgets"
APP_ID = 4242
INSTALLATION_ID = 77
HEAD = "a" * 40
WEBHOOKS = FIXTURES / "webhooks"


@pytest.fixture
def world(fake_github: FakeGitHub, app_key: AppKey) -> FakeGitHub:
    """One App installed on octo-org (selected: widgets), with PR #5 open on widgets."""
    fake_github.add_app(APP_ID, app_key.public_key_pem)
    fake_github.add_repo(REPO)
    fake_github.add_repo("octo-org/other")
    fake_github.add_installation(INSTALLATION_ID, "octo-org", repos=[REPO])
    fake_github.add_pull(REPO, 5, head_sha=HEAD, labels=["release"], files=["app.py"])
    return fake_github


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
def gh(session: aiohttp.ClientSession, world: FakeGitHub) -> GitHubAPI:
    return GitHubAPI(session, "test", base_url=world.url, cache=cachetools.LRUCache(100))


@pytest.fixture
def token(world: FakeGitHub) -> str:
    return world.issue_token(INSTALLATION_ID)


@pytest.fixture(scope="session")
def other_key() -> AppKey:
    return make_app_key()


def app_jwt(key: AppKey, **claims: Any) -> str:
    now = int(time.time())
    payload = {"iat": now - 60, "exp": now + 540, "iss": str(APP_ID), **claims}
    # Signed with PyJWS: PyJWT refuses to encode an integer `iss`, which GitHub accepts.
    return jwt.PyJWS().encode(json.dumps(payload).encode(), key.rsa_private_key_pem, algorithm="RS256")


# ------------------------------------------------------------------ refusing what GitHub refuses


async def test_fixture_serves_on_loopback(fake_github: FakeGitHub) -> None:
    assert fake_github.url.startswith("http://127.0.0.1:")
    assert fake_github.requests == [] and fake_github.violations == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"/repos/{REPO}/nonsense"),
        ("DELETE", f"/repos/{REPO}/pulls/5"),
        ("GET", f"/repos/{REPO}/issues/comments"),  # exists on GitHub, but not a kept operation
        ("POST", f"/repos/{REPO}/issues/five/comments"),  # issue_number is an integer
    ],
)
async def test_unknown_operation_is_refused_and_recorded(
    world: FakeGitHub, session: aiohttp.ClientSession, token: str, method: str, path: str
) -> None:
    headers = {"Authorization": f"token {token}"}
    async with session.request(method, world.url + path, headers=headers) as response:
        body = await response.json()
    assert response.status == 404
    assert body["message"] == "Not Found"
    expected = f"no operation {method} {path} in the OpenAPI description"
    assert body["fake_github_error"] == expected
    assert world.violations == [expected]
    assert world.requests[-1].operation_id is None and world.requests[-1].status == 404


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"head_sha": HEAD}, "name", "missing_field"),
        ({"name": "Release", "head_sha": HEAD, "conclusion": "great"}, "conclusion", "invalid"),
        ({"name": "Release", "head_sha": HEAD, "output": {"title": "t"}}, "output.summary", "missing_field"),
    ],
)
async def test_request_body_that_breaks_the_schema_gets_422(
    world: FakeGitHub, gh: GitHubAPI, token: str, body: dict[str, Any], field: str, code: str
) -> None:
    with pytest.raises(InvalidField) as raised:
        await gh.post(f"/repos/{REPO}/check-runs", data=body, oauth_token=token)
    assert raised.value.status_code == 422
    answer = world.requests[-1].response
    assert answer["message"] == "Validation Failed"
    assert answer["documentation_url"].startswith("https://docs.github.com/")
    assert {"resource": "CheckRun", "field": field, "code": code}.items() <= answer["errors"][0].items()
    assert len(world.violations) == 1 and "checks/create" in world.violations[0]
    assert world.check_runs == {}


async def test_missing_required_body_gets_422(world: FakeGitHub, gh: GitHubAPI, token: str) -> None:
    with pytest.raises(InvalidField):
        await gh.post(f"/repos/{REPO}/issues/5/comments", data=b"", oauth_token=token)
    assert world.violations == ["issues/create-comment: request body is required"]


@pytest.mark.parametrize("query", ["per_page=abc", "state=weird", "per_page=500"])
async def test_query_that_breaks_the_schema_gets_422(world: FakeGitHub, gh: GitHubAPI, token: str, query: str) -> None:
    with pytest.raises(BadRequest) as raised:
        await gh.getitem(f"/repos/{REPO}/pulls?{query}", oauth_token=token)
    assert raised.value.status_code == 422
    assert len(world.violations) == 1 and "pulls/list: bad query" in world.violations[0]


async def test_unknown_query_parameter_is_answered_but_recorded(world: FakeGitHub, gh: GitHubAPI, token: str) -> None:
    pulls = await gh.getitem(f"/repos/{REPO}/pulls?sate=open", oauth_token=token)
    assert [p["number"] for p in pulls] == [5]
    assert world.violations == ["pulls/list: unknown query parameter 'sate'"]


# ------------------------------------------------------------------ answering in GitHub's shapes


def test_response_validator_rejects_a_wrong_body() -> None:
    op = load_spec().by_id["issues/get-comment"]
    good = load_spec().example("issues/get-comment")
    assert op.response_errors(200, good) == []
    errors = op.response_errors(200, {**good, "id": "x"})
    assert [e.message for e in errors] == ["'x' is not of type 'integer'"]
    missing = {k: v for k, v in good.items() if k != "user"}
    assert [e.message for e in op.response_errors(200, missing)] == ["'user' is a required property"]


async def test_a_response_that_breaks_the_schema_is_a_500_and_a_violation(
    world: FakeGitHub, gh: GitHubAPI, token: str
) -> None:
    comment_id = world.add_comment(REPO, 5, "/ship friday")
    world._handlers["issues/get-comment"] = lambda call: Reply(200, {"id": "x"})
    with pytest.raises(GitHubBroken) as raised:
        await gh.getitem(f"/repos/{REPO}/issues/comments/{comment_id}", oauth_token=token)
    assert raised.value.status_code == 500
    assert len(world.violations) == 1
    assert "issues/get-comment answered 200 that breaks its schema" in world.violations[0]


def test_nullable_becomes_a_type_union_or_an_any_of() -> None:
    assert openapi_to_jsonschema({"type": "string", "nullable": True, "enum": ["a"]}) == {
        "type": ["string", "null"],
        "enum": ["a", None],
    }
    ref = {"$ref": "#/components/schemas/simple-user"}
    assert openapi_to_jsonschema({"allOf": [ref], "nullable": True}) == {"anyOf": [{"type": "null"}, {"allOf": [ref]}]}
    assert openapi_to_jsonschema({"type": "object", "nullable": False}) == {
        "type": "object",
        "nullable": False,
    }


async def test_every_operation_answers_in_its_documented_shape(
    world: FakeGitHub, gh: GitHubAPI, token: str, app_key: AppKey
) -> None:
    """A tour of all kept operations, as the bot would call them; nothing may break the spec."""
    r = f"/repos/{REPO}"
    bearer = app_jwt(app_key)
    world.set_file(REPO, ".github/release-secretary.yml", "label: ship\n")
    world.set_permission(REPO, "alice", "maintain")
    world.set_branch_protection(REPO, "main", ["ci"])
    world.set_branch_rules(
        REPO,
        "main",
        [
            {
                "type": "required_status_checks",
                "parameters": {
                    "required_status_checks": [{"context": "lint"}],
                    "strict_required_status_checks_policy": False,
                },
            }
        ],
    )
    world.add_review(REPO, 5, user_login="bob")
    world.add_check_run(REPO, HEAD, "lint")
    run_id = world.add_workflow_run(REPO, head_sha=HEAD)
    delivery_id = world.add_hook_delivery(event="pull_request", action="opened", status_code=502)

    assert (await gh.getitem("/app", jwt=bearer))["id"] == APP_ID
    assert [i["id"] async for i in gh.getiter("/app/installations", jwt=bearer)] == [INSTALLATION_ID]
    assert (await gh.getitem(f"/app/installations/{INSTALLATION_ID}", jwt=bearer))["app_id"] == APP_ID
    assert (await gh.getitem(f"{r}/installation", jwt=bearer))["id"] == INSTALLATION_ID
    issued = await gh.post(
        f"/app/installations/{INSTALLATION_ID}/access_tokens",
        data={"repositories": ["widgets"]},
        jwt=bearer,
    )
    assert [repo["full_name"] for repo in issued["repositories"]] == [REPO]
    listed = gh.getiter("/installation/repositories", oauth_token=token, iterable_key="repositories")
    assert [repo["full_name"] async for repo in listed] == [REPO]
    deliveries = [d async for d in gh.getiter("/app/hook/deliveries?status=failure", jwt=bearer)]
    assert [d["id"] for d in deliveries] == [delivery_id]
    assert (await gh.getitem(f"/app/hook/deliveries/{delivery_id}", jwt=bearer))["status_code"] == 502
    await gh.post(f"/app/hook/deliveries/{delivery_id}/attempts", data=b"", jwt=bearer)
    assert world.redeliveries == [delivery_id]

    assert (await gh.getitem(r, oauth_token=token))["default_branch"] == "main"
    branch = await gh.getitem(f"{r}/branches/main", oauth_token=token)
    assert branch["protected"] is True
    protection = await gh.getitem(f"{r}/branches/main/protection", oauth_token=token)
    assert protection["required_status_checks"]["contexts"] == ["ci"]
    checks = await gh.getitem(f"{r}/branches/main/protection/required_status_checks", oauth_token=token)
    assert checks["contexts"] == ["ci"]
    rules = [rule async for rule in gh.getiter(f"{r}/rules/branches/main", oauth_token=token)]
    assert rules[0]["parameters"]["required_status_checks"] == [{"context": "lint"}]
    permission = await gh.getitem(f"{r}/collaborators/alice/permission", oauth_token=token)
    assert (permission["permission"], permission["role_name"]) == ("write", "maintain")
    content = await gh.getitem(f"{r}/contents/{{+path}}", {"path": ".github/release-secretary.yml"}, oauth_token=token)
    assert content["encoding"] == "base64" and content["content"] == "bGFiZWw6IHNoaXAK\n"
    listing = await gh.getitem(f"{r}/contents/.github", oauth_token=token)
    assert [entry["name"] for entry in listing] == ["release-secretary.yml"]

    pull = await gh.getitem(f"{r}/pulls/5", oauth_token=token)
    assert (pull["head"]["sha"], pull["mergeable_state"]) == (HEAD, "blocked")
    assert [p["number"] async for p in gh.getiter(f"{r}/pulls", oauth_token=token)] == [5]
    assert [c["sha"] async for c in gh.getiter(f"{r}/pulls/5/commits", oauth_token=token)] == [HEAD]
    assert [f["filename"] async for f in gh.getiter(f"{r}/pulls/5/files", oauth_token=token)] == ["app.py"]
    reviews = [rv["state"] async for rv in gh.getiter(f"{r}/pulls/5/reviews", oauth_token=token)]
    assert reviews == ["APPROVED"]
    assert [p["number"] async for p in gh.getiter(f"{r}/commits/{HEAD}/pulls", oauth_token=token)] == [5]
    assert "pull_request" in await gh.getitem(f"{r}/issues/5", oauth_token=token)

    comment = await gh.post(f"{r}/issues/5/comments", data={"body": "booked"}, oauth_token=token)
    assert comment["user"]["login"] == "release-secretary[bot]"
    edited = await gh.patch(comment["url"], data={"body": "booked (edited)"}, oauth_token=token)
    assert edited["body"] == "booked (edited)"
    assert (await gh.getitem(comment["url"], oauth_token=token))["body"] == "booked (edited)"
    assert len([c async for c in gh.getiter(f"{r}/issues/5/comments", oauth_token=token)]) == 1
    created = await gh.post(f"{comment['url']}/reactions", data={"content": "eyes"}, oauth_token=token)
    again = await gh.post(f"{comment['url']}/reactions", data={"content": "eyes"}, oauth_token=token)
    assert created == again
    assert [x["content"] async for x in gh.getiter(f"{comment['url']}/reactions", oauth_token=token)] == ["eyes"]
    await gh.delete(f"{comment['url']}/reactions/{created['id']}", oauth_token=token)
    await gh.delete(comment["url"], oauth_token=token)
    assert world.comments == {} and world.reactions == {}

    labels = await gh.post(f"{r}/issues/5/labels", data={"labels": ["queued"]}, oauth_token=token)
    assert [label["name"] for label in labels] == ["release", "queued"]
    await gh.put(f"{r}/issues/5/labels", data={"labels": ["queued", "held"]}, oauth_token=token)
    await gh.delete(f"{r}/issues/5/labels/held", oauth_token=token)
    assert [x["name"] async for x in gh.getiter(f"{r}/issues/5/labels", oauth_token=token)] == ["queued"]

    run = await gh.post(
        f"{r}/check-runs",
        data={"name": "Release", "head_sha": HEAD, "status": "in_progress"},
        oauth_token=token,
    )
    assert [p["number"] for p in run["pull_requests"]] == [5]
    run = await gh.patch(
        f"{r}/check-runs/{run['id']}",
        data={"conclusion": "success", "output": {"title": "Released", "summary": "ok"}},
        oauth_token=token,
    )
    assert (run["status"], run["output"]["title"]) == ("completed", "Released")
    assert (await gh.getitem(f"{r}/check-runs/{run['id']}", oauth_token=token))["conclusion"] == "success"
    runs = gh.getiter(f"{r}/commits/{HEAD}/check-runs", oauth_token=token, iterable_key="check_runs")
    assert sorted([x["name"] async for x in runs]) == ["Release", "lint"]
    suites = gh.getiter(f"{r}/commits/{HEAD}/check-suites", oauth_token=token, iterable_key="check_suites")
    suite_ids = [s["id"] async for s in suites]
    await gh.post(f"{r}/check-suites/{suite_ids[0]}/rerequest", data=b"", oauth_token=token)
    status = await gh.post(f"{r}/statuses/{HEAD}", data={"state": "success", "context": "ci"}, oauth_token=token)
    assert status["creator"]["type"] == "Bot"
    assert (await gh.getitem(f"{r}/commits/{HEAD}/status", oauth_token=token))["state"] == "success"
    assert len([s async for s in gh.getiter(f"{r}/commits/{HEAD}/statuses", oauth_token=token)]) == 1
    assert (await gh.getitem(f"{r}/compare/main...feature-5", oauth_token=token))["status"] == "ahead"
    world.set_compare(REPO, "main", "feature-5", status="diverged", ahead_by=1, behind_by=3)
    compared = await gh.getitem(f"{r}/compare/{{basehead}}", {"basehead": "main...feature-5"}, oauth_token=token)
    assert (compared["status"], compared["behind_by"]) == ("diverged", 3)

    deployment = await gh.post(f"{r}/deployments", data={"ref": "main"}, oauth_token=token)
    await gh.post(deployment["statuses_url"], data={"state": "success"}, oauth_token=token)
    listed = [d async for d in gh.getiter(f"{r}/deployments?environment=production", oauth_token=token)]
    assert [d["id"] for d in listed] == [deployment["id"]]
    assert [d async for d in gh.getiter(f"{r}/deployments?environment=staging", oauth_token=token)] == []
    await gh.post(f"{r}/actions/workflows/deploy.yml/dispatches", data={"ref": "main"}, oauth_token=token)
    assert world.workflow_dispatches[0]["workflow_id"] == "deploy.yml"
    workflow_runs = gh.getiter(f"{r}/actions/runs", oauth_token=token, iterable_key="workflow_runs")
    assert [x["id"] async for x in workflow_runs] == [run_id]
    assert (await gh.getitem(f"{r}/actions/runs/{run_id}", oauth_token=token))["conclusion"] == "success"
    await gh.post(f"{r}/actions/runs/{run_id}/rerun", data=b"", oauth_token=token)
    rate = await gh.getitem("/rate_limit", oauth_token=token)
    assert rate["resources"]["core"]["remaining"] < 5000
    world.add_oauth_app("Iv1.tour", "tour-secret", "https://bot.example/oauth/github")
    user_token = world.issue_user_token("Iv1.tour", "alice")
    assert (await gh.getitem("/user", oauth_token=user_token))["login"] == "alice"
    world.add_oauth_app("Iv1.tour-app", "tour-secret", "https://bot.example/login/callback", app_id=APP_ID)
    app_user_token = world.issue_user_token("Iv1.tour-app", "alice")  # the App's user authorization
    mine = gh.getiter("/user/installations", oauth_token=app_user_token, iterable_key="installations")
    assert [i["id"] async for i in mine] == [INSTALLATION_ID]
    reachable = gh.getiter(
        f"/user/installations/{INSTALLATION_ID}/repositories", oauth_token=app_user_token, iterable_key="repositories"
    )
    assert [(x["full_name"], x["permissions"]["maintain"]) async for x in reachable] == [(REPO, True)]

    merged = await gh.put(f"{r}/pulls/5/merge", data={"sha": HEAD, "merge_method": "squash"}, oauth_token=token)
    assert merged["merged"] is True

    world.add_manifest_code("code-1", app_id=APP_ID + 1, private_key_pem=app_key.rsa_private_key_pem)
    converted = await gh.post("/app-manifests/code-1/conversions", data=b"")
    assert converted["id"] == APP_ID + 1 and converted["pem"].startswith("-----BEGIN")

    assert world.violations == []
    assert {call.operation_id for call in world.requests} == set(load_spec().by_id) - {
        "repos/compare-commits-with-basehead"  # the same URLs as repos/compare-commits
    }
    assert world.calls("repos/compare-commits-with-basehead") == world.calls("repos/compare-commits")
    for call in world.requests:  # the fake checked these already; check again, independently
        op = load_spec().by_id[str(call.operation_id)]
        assert op.response_errors(call.status, call.response) == [], call


# ------------------------------------------------------------------ authentication


async def test_app_jwt_is_verified_like_github(
    world: FakeGitHub, gh: GitHubAPI, app_key: AppKey, other_key: AppKey
) -> None:
    now = int(time.time())
    assert (await gh.getitem("/app", jwt=app_jwt(app_key)))["slug"] == "release-secretary"
    assert (await gh.getitem("/app", jwt=app_jwt(app_key, iss=APP_ID)))["id"] == APP_ID  # int iss
    refused = {
        "expired": app_jwt(app_key, iat=now - 700, exp=now - 100),
        "wrong key": app_jwt(other_key),
        "lives too long": app_jwt(app_key, iat=now, exp=now + 3600),
        "issued in the future": app_jwt(app_key, iat=now + 120, exp=now + 600),
        "unknown app": app_jwt(app_key, iss="999"),
        "not a JWT": "abc.def.ghi",
    }
    for why, bearer in refused.items():
        with pytest.raises(BadRequest) as raised:
            await gh.getitem("/app", jwt=bearer)
        assert raised.value.status_code == 401, why
        assert str(raised.value) == "Bad credentials"
        assert world.requests[-1].response["fake_github_error"], why
    assert world.violations == []


async def test_each_credential_only_opens_its_own_endpoints(
    world: FakeGitHub, gh: GitHubAPI, app_key: AppKey, token: str
) -> None:
    for call in (
        gh.getitem("/app", oauth_token=token),  # an installation token is not an App JWT
        gh.getitem(f"/repos/{REPO}", jwt=app_jwt(app_key)),  # nor the other way around
        gh.getitem(f"/repos/{REPO}"),  # nothing at all
        gh.getitem(f"/repos/{REPO}", oauth_token="ghs_made_up"),
    ):
        with pytest.raises(BadRequest) as raised:
            await call
        assert raised.value.status_code == 401
    with pytest.raises(BadRequest) as raised:  # not in the installation: GitHub says 404
        await gh.getitem("/repos/octo-org/other", oauth_token=token)
    assert raised.value.status_code == 404
    assert world.violations == []


async def test_user_tokens_open_get_user_only(world: FakeGitHub, gh: GitHubAPI, app_key: AppKey, token: str) -> None:
    world.add_oauth_app(CLIENT_ID, CLIENT_SECRET, CALLBACK, app_id=APP_ID)
    user_token = world.issue_user_token(CLIENT_ID, "alice")
    me = await gh.getitem("/user", oauth_token=user_token)
    assert (me["login"], me["type"], me["user_view_type"]) == ("alice", "User", "public")
    assert world.requests[-1].headers["authorization"] == f"token {user_token}"
    assert world.requests[-1].status == 200

    with pytest.raises(BadRequest) as raised:  # the operation is not enabled for GitHub Apps
        await gh.getitem("/user", oauth_token=token)
    assert (raised.value.status_code, str(raised.value)) == (403, "Resource not accessible by integration")
    for call in (
        gh.getitem("/user", jwt=app_jwt(app_key)),
        gh.getitem("/user"),
        gh.getitem("/app", oauth_token=user_token),  # App endpoints take the App's JWT only
    ):
        with pytest.raises(BadRequest) as raised:
            await call
        assert raised.value.status_code == 401
    assert world.violations == []

    # GitHub would serve this to a user token the App and the person can both reach; the fake does not
    # model that and says so, as a violation, rather than answer as if it did.
    with pytest.raises(BadRequest):
        await gh.getitem(f"/repos/{REPO}", oauth_token=user_token)
    assert world.violations == ["repos/get: the fake serves user access tokens on GET /user only"]
    world.violations.clear()

    later = datetime.now(UTC) + timedelta(hours=8, seconds=1)
    world.clock = lambda: later
    with pytest.raises(BadRequest) as raised:
        await gh.getitem("/user", oauth_token=user_token)
    assert raised.value.status_code == 401
    assert "expired" in world.requests[-1].response["fake_github_error"]


# ------------------------------------------------------------------ user authorization (web flow)

CLIENT_ID = "Iv1.8a61f9b3a7aba766"
CLIENT_SECRET = "not-a-real-client-secret"
CALLBACK = "https://bot.example/oauth/github"


def authorize_url(world: FakeGitHub, **params: str) -> str:
    return f"{world.url}/login/oauth/authorize?" + urlencode({"client_id": CLIENT_ID, **params})


async def exchange(
    session: aiohttp.ClientSession, world: FakeGitHub, *, accept: str = "application/json", **form: str
) -> tuple[int, str, Any]:
    fields = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "redirect_uri": CALLBACK, **form}
    async with session.post(f"{world.url}/login/oauth/access_token", data=fields, headers={"Accept": accept}) as r:
        return r.status, r.headers["Content-Type"], await r.read()


async def test_web_flow_gives_the_signed_in_person_a_user_token(
    world: FakeGitHub, session: aiohttp.ClientSession, gh: GitHubAPI
) -> None:
    world.add_oauth_app(CLIENT_ID, CLIENT_SECRET, CALLBACK, app_id=APP_ID)
    verifier = "v" * 60
    url = authorize_url(
        world,
        redirect_uri=CALLBACK,
        state="xyz",
        login="alice",
        allow_signup="false",
        code_challenge=pkce_challenge(verifier),
        code_challenge_method="S256",
    )
    async with session.get(url, allow_redirects=False) as page:  # nobody signed in: GitHub's sign-in page
        assert page.status == 200 and "Sign in to GitHub" in await page.text()
    world.signed_in_as = "alice"
    async with session.get(url, allow_redirects=False) as back:
        assert back.status == 302
        location = back.headers["Location"]
    assert location.startswith(CALLBACK + "?")
    returned = parse_qs(urlsplit(location).query)
    assert returned["state"] == ["xyz"] and set(returned) == {"code", "state"}
    code = returned["code"][0]

    status, content_type, body = await exchange(session, world, code=code, code_verifier=verifier)
    assert (status, content_type) == (200, "application/json; charset=utf-8")
    answer = json.loads(body)
    assert answer["access_token"].startswith("ghu_") and answer["refresh_token"].startswith("ghr_")
    assert {k: v for k, v in answer.items() if k not in ("access_token", "refresh_token")} == {
        "expires_in": 28800,
        "refresh_token_expires_in": 15811200,
        "scope": "",
        "token_type": "bearer",
    }
    assert (await gh.getitem("/user", oauth_token=answer["access_token"]))["login"] == "alice"
    [sent] = [r for r in world.requests if r.path == "/login/oauth/access_token"]
    assert sent.form["code"] == code and sent.response == answer

    again = json.loads((await exchange(session, world, code=code, code_verifier=verifier))[2])
    assert again == {  # codes work once; errors are HTTP 200 with `error`
        "error": "bad_verification_code",
        "error_description": "The code passed is incorrect or expired.",
        "error_uri": "/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/"
        "#bad-verification-code",
    }
    assert world.violations == []


async def test_web_flow_refuses_like_github(world: FakeGitHub, session: aiohttp.ClientSession) -> None:
    world.add_oauth_app(CLIENT_ID, CLIENT_SECRET, CALLBACK)
    world.signed_in_as = "alice"

    async def code(**params: str) -> str:
        async with session.get(authorize_url(world, **params), allow_redirects=False) as back:
            return parse_qs(urlsplit(back.headers["Location"]).query)["code"][0]

    def error(body: bytes) -> str:
        return str(json.loads(body)["error"])

    assert error((await exchange(session, world, code=await code(), client_secret="wrong"))[2]) == (
        "incorrect_client_credentials"
    )
    mismatch = await exchange(session, world, code=await code(), redirect_uri="https://evil.example/cb")
    assert error(mismatch[2]) == "redirect_uri_mismatch"
    challenge = pkce_challenge("v" * 60)
    wrong = await code(code_challenge=challenge, code_challenge_method="S256")
    assert error((await exchange(session, world, code=wrong, code_verifier="w" * 60))[2]) == "bad_verification_code"
    missing = await code(code_challenge=challenge, code_challenge_method="S256")
    assert error((await exchange(session, world, code=missing))[2]) == "bad_verification_code"
    expired = await code()
    later = datetime.now(UTC) + timedelta(minutes=10, seconds=1)
    world.clock = lambda: later
    assert error((await exchange(session, world, code=expired))[2]) == "bad_verification_code"

    status, content_type, body = await exchange(session, world, code="nope", accept="*/*")
    assert (status, content_type) == (200, "application/x-www-form-urlencoded; charset=utf-8")
    assert parse_qs(body.decode())["error"] == ["bad_verification_code"]  # form-encoded unless JSON is asked

    world.oauth_deny = True
    async with session.get(authorize_url(world, state="s1"), allow_redirects=False) as back:
        declined = parse_qs(urlsplit(back.headers["Location"]).query)
    assert declined == {
        "error": ["access_denied"],
        "error_description": ["The user has denied your application access."],
        "error_uri": [
            "/apps/building-integrations/setting-up-and-registering-oauth-apps/"
            "troubleshooting-authorization-request-errors/#access-denied"
        ],
        "state": ["s1"],
    }
    assert world.violations == []

    # A bot bug: a redirect_uri that is not a callback URL is sent back, with the error, to the first one.
    async with session.get(authorize_url(world, redirect_uri="https://evil.example/cb"), allow_redirects=False) as b:
        assert b.headers["Location"].startswith(CALLBACK + "?error=redirect_uri_mismatch")
    assert world.violations == [
        "GET /login/oauth/authorize: redirect_uri 'https://evil.example/cb' is not a callback URL"
    ]


async def test_installation_tokens_are_issued_and_expire(world: FakeGitHub, gh: GitHubAPI, app_key: AppKey) -> None:
    issued = await apps.get_installation_access_token(
        gh, installation_id=str(INSTALLATION_ID), app_id=str(APP_ID), private_key=app_key.rsa_private_key_pem
    )
    expires_at = datetime.fromisoformat(issued["expires_at"].replace("Z", "+00:00"))
    assert abs(expires_at - (datetime.now(UTC) + timedelta(hours=1))) < timedelta(seconds=5)
    assert issued["token"].startswith("ghs_") and issued["repository_selection"] == "selected"

    world.token_ttl = timedelta(seconds=5)
    short = await apps.get_installation_access_token(
        gh, installation_id=str(INSTALLATION_ID), app_id=str(APP_ID), private_key=app_key.rsa_private_key_pem
    )
    assert (await gh.getitem(f"/repos/{REPO}", oauth_token=short["token"]))["full_name"] == REPO
    later = datetime.now(UTC) + timedelta(seconds=6)
    world.clock = lambda: later
    with pytest.raises(BadRequest) as raised:
        await gh.getitem(f"/repos/{REPO}", oauth_token=short["token"])
    assert raised.value.status_code == 401
    assert "expired" in world.requests[-1].response["fake_github_error"]
    # The hour-long token still works; a JWT-less request for a new one does not.
    assert (await gh.getitem(f"/repos/{REPO}", oauth_token=issued["token"]))["id"]
    with pytest.raises(BadRequest):
        await gh.post(f"/app/installations/{INSTALLATION_ID}/access_tokens", data=b"")
    assert world.violations == []


async def test_token_scoped_to_repositories(world: FakeGitHub, gh: GitHubAPI, app_key: AppKey) -> None:
    world.add_installation(88, "octo-org")  # all repositories of octo-org
    bearer = app_jwt(app_key)
    wide = await gh.post("/app/installations/88/access_tokens", data=b"", jwt=bearer)
    assert wide["repository_selection"] == "all" and "repositories" not in wide
    assert (await gh.getitem("/repos/octo-org/other", oauth_token=wide["token"]))["name"] == "other"
    narrow = await gh.post("/app/installations/88/access_tokens", data={"repositories": ["widgets"]}, jwt=bearer)
    with pytest.raises(BadRequest) as raised:
        await gh.getitem("/repos/octo-org/other", oauth_token=narrow["token"])
    assert raised.value.status_code == 404
    with pytest.raises(BadRequest) as raised:
        await gh.post(
            f"/app/installations/{INSTALLATION_ID}/access_tokens",
            data={"repositories": ["other"]},
            jwt=bearer,
        )
    assert raised.value.status_code == 422
    assert world.violations == []


async def test_manifest_code_is_exchanged_once_and_registers_the_app(
    world: FakeGitHub, gh: GitHubAPI, app_key: AppKey
) -> None:
    world.add_manifest_code("abc", app_id=9001, private_key_pem=app_key.rsa_private_key_pem, slug="rs-test")
    created = await gh.post("/app-manifests/abc/conversions", data=b"")
    assert (created["slug"], created["webhook_secret"]) == ("rs-test", "manifest-webhook-secret")
    bearer = app_jwt(AppKey(created["pem"].encode(), app_key.public_key_pem), iss="9001")
    assert (await gh.getitem("/app", jwt=bearer))["slug"] == "rs-test"
    with pytest.raises(BadRequest) as raised:
        await gh.post("/app-manifests/abc/conversions", data=b"")
    assert raised.value.status_code == 404


# ------------------------------------------------------------------ HTTP semantics


async def test_etag_turns_a_repeated_get_into_a_free_304(world: FakeGitHub, gh: GitHubAPI, token: str) -> None:
    url = f"/repos/{REPO}/pulls/5"
    first = await gh.getitem(url, oauth_token=token)
    second = await gh.getitem(url, oauth_token=token)
    assert second == first
    assert [r.status for r in world.requests] == [200, 304]
    assert world.requests[1].headers["if-none-match"].startswith('"')
    used = (await gh.getitem("/rate_limit", oauth_token=token))["rate"]["used"]
    assert used == 1  # the 304 did not count
    world.add_comment(REPO, 5, "/ship friday")  # state changed: a new body, a new ETag
    third = await gh.getitem(url, oauth_token=token)
    assert third["comments"] == 1 and world.requests[-1].status == 200


async def test_every_response_carries_rate_limit_and_request_id_headers(
    world: FakeGitHub, session: aiohttp.ClientSession, token: str
) -> None:
    recorded = json.loads((FIXTURES / "recorded" / "get-repository.json").read_text())[0]["headers"]
    ids = set()
    for headers in ({"Authorization": f"token {token}"}, {}):
        async with session.get(f"{world.url}/repos/{REPO}", headers=headers) as response:
            names = {name.lower() for name in response.headers}
            ids.add(response.headers["X-GitHub-Request-Id"])
        wanted = {n for n in recorded if n.startswith("x-ratelimit-")} | {"x-github-request-id"}
        assert wanted <= names
    assert len(ids) == 2


async def test_rate_limit_runs_out_per_installation(world: FakeGitHub, gh: GitHubAPI, token: str) -> None:
    world.rate_limit = 2
    second_token = world.issue_token(INSTALLATION_ID)
    await gh.getitem(f"/repos/{REPO}/pulls/5", oauth_token=token)
    await gh.getitem(f"/repos/{REPO}/issues/5", oauth_token=second_token)
    with pytest.raises(RateLimitExceeded) as raised:
        await gh.getitem(f"/repos/{REPO}", oauth_token=token)
    assert raised.value.rate_limit.remaining == 0
    assert world.violations == []


async def test_pagination_follows_link_headers(world: FakeGitHub, gh: GitHubAPI, token: str) -> None:
    for n in range(75):
        world.add_comment(REPO, 5, f"comment {n}")
    bodies = [c["body"] async for c in gh.getiter(f"/repos/{REPO}/issues/5/comments", oauth_token=token)]
    assert bodies == [f"comment {n}" for n in range(75)]
    assert [r.query.get("page") for r in world.requests] == [None, "2", "3"]
    for n in range(35):
        world.add_check_run(REPO, HEAD, f"job {n}")
    url = f"/repos/{REPO}/commits/{HEAD}/check-runs?per_page=10"
    names = [r["name"] async for r in gh.getiter(url, oauth_token=token, iterable_key="check_runs")]
    assert len(names) == 35 and world.requests[-1].response["total_count"] == 35
    assert world.violations == []


async def test_link_headers_match_what_github_really_sends(
    world: FakeGitHub, session: aiohttp.ClientSession, token: str
) -> None:
    """recorded/paginate-issues.json: 5 pages of 3; the fake must name the same rels in the same order."""
    recorded = json.loads((FIXTURES / "recorded" / "paginate-issues.json").read_text())
    for n in range(14):
        world.add_comment(REPO, 5, f"comment {n}")
    url = f"{world.url}/repos/{REPO}/issues/5/comments?per_page=3"
    for page, real in enumerate(recorded, start=1):
        async with session.get(url + f"&page={page}", headers={"Authorization": f"token {token}"}) as response:
            ours = response.headers["Link"]
        assert [part.split("; ")[1] for part in ours.split(", ")] == [
            part.split("; ")[1] for part in real["headers"]["link"].split(", ")
        ]
        real_pages = [part.split("page=")[-1].split(">")[0] for part in real["headers"]["link"].split(", ")]
        assert [part.split("page=")[-1].split(">")[0] for part in ours.split(", ")] == real_pages


async def test_fault_injection_secondary_rate_limit(world: FakeGitHub, gh: GitHubAPI, token: str) -> None:
    message = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
    world.fail_next("POST", r"/issues/5/comments$", 403, headers={"Retry-After": "1"}, body={"message": message})
    with pytest.raises(BadRequest) as raised:  # remaining > 0: not a primary RateLimitExceeded
        await gh.post(f"/repos/{REPO}/issues/5/comments", data={"body": "hi"}, oauth_token=token)
    assert raised.value.status_code == 403
    assert raised.value.headers["retry-after"] == "1"
    assert str(raised.value) == message
    assert world.comments == {}
    await gh.post(f"/repos/{REPO}/issues/5/comments", data={"body": "hi"}, oauth_token=token)
    assert [r.status for r in world.calls("issues/create-comment")] == [403, 201]


async def test_fault_injection_repeats_and_any_method(world: FakeGitHub, gh: GitHubAPI, token: str) -> None:
    world.fail_next("*", r"/pulls/5$", 502, times=2)
    world.fail_next("GET", r"^/repos/[^/]+/[^/]+$", 429, headers={"Retry-After": "3"})
    for _ in range(2):
        with pytest.raises(GitHubBroken):
            await gh.getitem(f"/repos/{REPO}/pulls/5", oauth_token=token)
    assert (await gh.getitem(f"/repos/{REPO}/pulls/5", oauth_token=token))["number"] == 5
    with pytest.raises(BadRequest) as raised:
        await gh.getitem(f"/repos/{REPO}", oauth_token=token)
    assert raised.value.status_code == 429
    assert world.violations == []


# ------------------------------------------------------------------ state: merge, log


async def test_merge_is_pinned_to_the_head_sha(world: FakeGitHub, gh: GitHubAPI, token: str) -> None:
    url = f"/repos/{REPO}/pulls/5/merge"
    with pytest.raises(BadRequest) as raised:
        await gh.put(url, data={"sha": "b" * 40}, oauth_token=token)
    assert raised.value.status_code == 409
    assert str(raised.value) == "Head branch was modified. Review and try the merge again."
    world.push_to_pull(REPO, 5, "c" * 40)
    with pytest.raises(BadRequest) as raised:
        await gh.put(url, data={"sha": HEAD}, oauth_token=token)
    assert raised.value.status_code == 409
    merged = await gh.put(url, data={"sha": "c" * 40}, oauth_token=token)
    assert merged["merged"] is True
    pull = world.pull(REPO, 5)
    assert (pull["state"], pull["merged"], pull["merge_commit_sha"]) == ("closed", True, merged["sha"])
    assert world.repos[REPO].branches["main"] == merged["sha"]
    with pytest.raises(BadRequest) as raised:
        await gh.put(url, data={"sha": "c" * 40}, oauth_token=token)
    assert raised.value.status_code == 405
    assert world.violations == []


async def test_merge_refuses_unmergeable_and_unchecked_pulls(world: FakeGitHub, gh: GitHubAPI, token: str) -> None:
    world.add_pull(REPO, 6, head_sha="d" * 40, mergeable=False)
    with pytest.raises(BadRequest) as raised:
        await gh.put(f"/repos/{REPO}/pulls/6/merge", data={"sha": "d" * 40}, oauth_token=token)
    assert (raised.value.status_code, str(raised.value)) == (405, "Pull Request is not mergeable")
    world.set_branch_protection(REPO, "main", ["ci"])
    world.add_status(REPO, HEAD, "ci", "failure")
    with pytest.raises(BadRequest) as raised:
        await gh.put(f"/repos/{REPO}/pulls/5/merge", data={"sha": HEAD}, oauth_token=token)
    assert raised.value.status_code == 405 and 'Required status check "ci" is failing.' in str(raised.value)
    world.add_status(REPO, HEAD, "ci", "success")
    assert (await gh.put(f"/repos/{REPO}/pulls/5/merge", data={"sha": HEAD}, oauth_token=token))["merged"]


async def test_request_log_records_what_was_sent_and_answered(world: FakeGitHub, gh: GitHubAPI, token: str) -> None:
    await gh.post(f"/repos/{REPO}/issues/5/comments", data={"body": "booked"}, oauth_token=token)
    [call] = world.calls("issues/create-comment")
    assert (call.method, call.path, call.status) == ("POST", f"/repos/{REPO}/issues/5/comments", 201)
    assert call.json == {"body": "booked"}
    assert call.headers["authorization"] == f"token {token}"
    assert call.params == {"owner": "octo-org", "repo": "widgets", "issue_number": "5"}
    assert call.response["body"] == "booked"
    assert world.comments_on(REPO, 5)[0]["id"] == call.response["id"]


async def test_paths_with_slashes_and_dots_route_like_github(world: FakeGitHub, gh: GitHubAPI, token: str) -> None:
    world.set_branch(REPO, "release/1.0", "e" * 40)
    world.set_branch_protection(REPO, "release/1.0", ["ci"])
    world.set_file(REPO, "deploy/prod.yml", "x: 1\n")
    await gh.getitem(f"/repos/{REPO}/branches/release/1.0/protection", oauth_token=token)
    await gh.getitem(f"/repos/{REPO}/contents/{{path}}", {"path": "deploy/prod.yml"}, oauth_token=token)
    await gh.getitem(f"/repos/{REPO}/contents/deploy/prod.yml?ref=main", oauth_token=token)
    await gh.getitem(f"/repos/{REPO}/compare/main...release/1.0", oauth_token=token)
    assert [(r.operation_id, r.status) for r in world.requests] == [
        ("repos/get-branch-protection", 200),
        ("repos/get-content", 200),
        ("repos/get-content", 200),
        ("repos/compare-commits", 200),
    ]
    assert world.requests[0].params["branch"] == "release/1.0"
    assert world.requests[1].params["path"] == world.requests[2].params["path"] == "deploy/prod.yml"
    assert world.violations == []


# ------------------------------------------------------------------ vendored fixtures


def test_vendored_openapi_resolves_every_ref_and_keeps_nothing_else() -> None:
    spec = load_spec()
    resolver = spec.registry.resolver()
    refs = set(spec.iter_refs())
    for ref in refs:
        if not ref.startswith("#/components/examples/"):  # example values are not schemas
            resolver.lookup("https://fake-github.invalid/openapi.json" + ref)
        spec.resolve({"$ref": ref})
    components = {f"#/components/{kind}/{name}" for kind, items in spec.raw["components"].items() for name in items}
    assert components == refs & components


def test_vendored_openapi_holds_exactly_the_operations_reduce_openapi_keeps() -> None:
    script = FIXTURES / "reduce_openapi.py"
    module_spec = importlib.util.spec_from_file_location("reduce_openapi", script)
    assert module_spec is not None and module_spec.loader is not None
    reducer = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(reducer)
    spec = load_spec()
    assert set(spec.by_id) == set(reducer.KEPT_OPERATION_IDS)
    assert spec.raw["x-reduced"]["operationIds"] == reducer.KEPT_OPERATION_IDS
    index = json.loads((FIXTURES / "rest-examples" / "index.json").read_text())["operations"]
    assert set(index) == set(spec.by_id)
    for info in index.values():
        for name in info["files"]:
            assert (FIXTURES / "rest-examples" / name).is_file()


def test_fixture_provenance_is_vendored() -> None:
    readme = (FIXTURES / "README.md").read_text()
    for package in ("@octokit/openapi", "@octokit/webhooks-examples", "@octokit/fixtures"):
        assert package in readme
    assert len(list((FIXTURES / "LICENSES").iterdir())) == 4


def test_all_webhook_fixtures_are_vendored() -> None:
    assert len(list(WEBHOOKS.glob("*/*.json"))) == 99


@pytest.mark.parametrize("path", sorted(WEBHOOKS.glob("*/*.json")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_webhook_fixture_loads(path: Path) -> None:
    payload = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(payload, dict) and payload
    action = path.name.split(".")[0]
    if action != "event":
        assert payload["action"] == action


def test_recorded_interactions_load_and_errors_look_like_ours() -> None:
    for path in sorted((FIXTURES / "recorded").glob("*.json")):
        for interaction in json.loads(path.read_text()):
            assert {"method", "path", "status", "headers", "response"} <= interaction.keys()
    [real] = json.loads((FIXTURES / "recorded" / "errors.json").read_text())
    assert real["response"]["message"] == "Validation Failed"
    assert set(real["response"]["errors"][0]) <= {"resource", "code", "field", "message"}
