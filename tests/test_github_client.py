"""GitHub plumbing against the fake GitHub: App JWT, cached tokens, ETag 304s, rate limits, pacing."""

from __future__ import annotations

import asyncio
import http
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import aiohttp
import gidgethub
import pytest

from bot.config import Settings
from bot.github import GitHubApp, RateLimitWaitTooLong, retry_delay
from tests.fakes.github import FakeGitHub

TOKENS = "apps/create-installation-access-token"


@pytest.fixture
async def github(app_settings: Settings) -> AsyncIterator[GitHubApp]:
    async with aiohttp.ClientSession() as session:
        yield GitHubApp(app_settings, session)


async def test_app_jwt_is_accepted(github: GitHubApp, fake_github: FakeGitHub) -> None:
    app = await github.app_client().getitem("/app")
    assert app["id"] == 4242 and app["slug"] == "release-secretary"
    [call] = fake_github.calls("apps/get-authenticated")
    assert call.headers["authorization"].startswith("bearer ")
    assert fake_github.violations == []


async def test_installation_token_is_fetched_lazily_once_and_shared(github: GitHubApp, fake_github: FakeGitHub) -> None:
    gh = github.installation_client(99)
    assert fake_github.calls(TOKENS) == []  # nothing until the first request
    await asyncio.gather(*(github.installation_client(99).getitem("/repos/octo-org/widgets") for _ in range(20)))
    await gh.getitem("/repos/octo-org/widgets")
    assert len(fake_github.calls(TOKENS)) == 1
    assert github.token_requests == 1
    assert fake_github.violations == []


async def test_token_is_refreshed_before_it_expires(github: GitHubApp, fake_github: FakeGitHub) -> None:
    fake_github.token_ttl = timedelta(minutes=4)  # inside the five-minute refresh margin
    await github.installation_client(99).getitem("/repos/octo-org/widgets")
    await github.installation_client(99).getitem("/repos/octo-org/widgets")
    assert len(fake_github.calls(TOKENS)) == 2
    fake_github.token_ttl = timedelta(hours=1)
    await github.installation_client(99).getitem("/repos/octo-org/widgets")
    await github.installation_client(99).getitem("/repos/octo-org/widgets")
    assert len(fake_github.calls(TOKENS)) == 3


async def test_repeated_get_is_a_free_conditional_request(github: GitHubApp, fake_github: FakeGitHub) -> None:
    first = await github.installation_client(99).getitem("/repos/octo-org/widgets")
    remaining = github.pacer(99).rate_limit.remaining
    second = await github.installation_client(99).getitem("/repos/octo-org/widgets")
    assert second == first
    gets = fake_github.calls("repos/get")
    assert [r.status for r in gets] == [200, 304]
    assert gets[1].headers["if-none-match"]
    assert github.pacer(99).rate_limit.remaining == remaining


async def test_secondary_rate_limit_honours_retry_after(github: GitHubApp, fake_github: FakeGitHub) -> None:
    fake_github.fail_next(
        "GET",
        r"/repos/octo-org/widgets$",
        403,
        headers={"Retry-After": "1"},
        body={
            "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
            "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
        },
    )
    started = time.monotonic()
    repo = await github.installation_client(99).getitem("/repos/octo-org/widgets")
    assert repo["full_name"] == "octo-org/widgets"
    assert time.monotonic() - started >= 1.0
    assert [r.status for r in fake_github.calls("repos/get")] == [403, 200]


async def test_wait_longer_than_allowed_is_handed_back_to_the_worker(
    github: GitHubApp, fake_github: FakeGitHub
) -> None:
    fake_github.fail_next(
        "GET", r"/repos/octo-org/widgets$", 429, headers={"Retry-After": "600"}, body={"message": "slow down"}
    )
    with pytest.raises(RateLimitWaitTooLong) as info:
        await github.installation_client(99).getitem("/repos/octo-org/widgets")
    assert info.value.seconds == 600


async def test_permission_403_is_not_retried(github: GitHubApp, fake_github: FakeGitHub) -> None:
    fake_github.fail_next(
        "GET", r"/repos/octo-org/widgets$", 403, body={"message": "Resource not accessible by integration"}
    )
    with pytest.raises(gidgethub.BadRequest) as info:
        await github.installation_client(99).getitem("/repos/octo-org/widgets")
    assert info.value.status_code == 403
    assert len(fake_github.calls("repos/get")) == 1


async def test_writes_are_spaced_per_installation_reads_are_not(
    app_settings: Settings, fake_github: FakeGitHub
) -> None:
    fake_github.add_pull("octo-org/widgets", 7, head_sha="a" * 40)
    async with aiohttp.ClientSession() as session:
        github = GitHubApp(app_settings.replace(github_write_interval=0.25), session)
        gh = github.installation_client(99)
        started = time.monotonic()
        for _ in range(3):
            await gh.getitem("/repos/octo-org/widgets/pulls/7")
        reads = time.monotonic() - started
        started = time.monotonic()
        for i in range(3):
            await gh.post("/repos/octo-org/widgets/issues/7/comments", data={"body": f"note {i}"})
        writes = time.monotonic() - started
    assert reads < 0.25
    assert writes >= 0.5  # three writes, two gaps
    assert len(fake_github.comments_on("octo-org/widgets", 7)) == 3
    assert fake_github.violations == []


async def test_unauthorized_drops_the_cached_token(github: GitHubApp, fake_github: FakeGitHub) -> None:
    await github.installation_client(99).getitem("/repos/octo-org/widgets")
    fake_github.fail_next("GET", r"/repos/octo-org/widgets$", 401, body={"message": "Bad credentials"})
    with pytest.raises(gidgethub.BadRequest):
        await github.installation_client(99).getitem("/repos/octo-org/widgets")
    await github.installation_client(99).getitem("/repos/octo-org/widgets")
    assert len(fake_github.calls(TOKENS)) == 2


async def test_exhausted_quota_waits_for_the_reset(github: GitHubApp, fake_github: FakeGitHub) -> None:
    reset = int(time.time()) + 2
    fake_github.fail_next(
        "GET",
        r"/repos/octo-org/widgets$",
        403,
        headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Limit": "5000", "X-RateLimit-Reset": str(reset)},
        body={"message": "API rate limit exceeded for installation ID 99."},
    )
    await github.installation_client(99).getitem("/repos/octo-org/widgets")
    assert time.time() >= reset


def _exc(status: int, headers: dict[str, str], message: str = "") -> gidgethub.HTTPException:
    return gidgethub.BadRequest(http.HTTPStatus(status), message or "x", headers=headers)


@pytest.mark.parametrize(
    ("status", "headers", "message", "attempt", "expected"),
    [
        (403, {"Retry-After": "30"}, "", 1, 30.0),
        (429, {"retry-after": "5"}, "", 1, 5.0),
        (403, {}, "You have exceeded a secondary rate limit", 1, 60.0),
        (403, {}, "You have exceeded a secondary rate limit", 2, 120.0),
        (429, {}, "", 1, 60.0),
        (403, {}, "Resource not accessible by integration", 1, None),
        (404, {"Retry-After": "1"}, "", 1, None),
    ],
)
def test_retry_delay_follows_githubs_guidance(
    status: int, headers: dict[str, str], message: str, attempt: int, expected: float | None
) -> None:
    assert retry_delay(_exc(status, headers, message), attempt) == expected


async def test_no_token_reaches_the_logs(
    github: GitHubApp, fake_github: FakeGitHub, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from bot.logs import JsonFormatter, TextFormatter

    caplog.set_level(logging.DEBUG)
    await github.installation_client(99).getitem("/repos/octo-org/widgets")
    [token] = list(fake_github.tokens)
    assert token
    formatted = "\n".join(TextFormatter("%(message)s").format(r) + JsonFormatter().format(r) for r in caplog.records)
    assert "installation token issued" in formatted
    assert token not in formatted
    assert repr(await github.installation_token(99)).count(token) == 0


@pytest.mark.parametrize(
    "secret",
    [
        "ghs_16C7e42F292c6912E7710c838347Ae178B4a",
        "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
        "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
        "110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw",
        "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiI0MiJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ",
    ],
)
def test_redact_masks_known_token_shapes(secret: str) -> None:
    from bot.logs import redact

    assert secret not in redact(f"request failed with token {secret} attached")


async def test_probes_keep_only_etags_and_are_free_when_nothing_changed(
    github: GitHubApp, fake_github: FakeGitHub
) -> None:
    fake_github.add_pull("octo-org/widgets", 7, head_sha="a" * 40, title="t", user_login="alice")
    gh = github.installation_client(99)
    assert await gh.unchanged("/repos/octo-org/widgets/pulls/7") is False  # first look
    # Until the caller says it handled what changed, the new ETag is not trusted: a failure in between
    # must not hide the change from the next sweep.
    assert await gh.unchanged("/repos/octo-org/widgets/pulls/7") is False
    gh.settle()
    remaining = github.pacer(99).rate_limit.remaining
    assert await gh.unchanged("/repos/octo-org/widgets/pulls/7") is True
    assert github.pacer(99).rate_limit.remaining == remaining  # a 304: no rate limit spent
    fake_github.push_to_pull("octo-org/widgets", 7, "b" * 40)
    assert await gh.unchanged("/repos/octo-org/widgets/pulls/7") is False  # changed: the caller reads it
    gh.settle()
    assert await github.installation_client(99).unchanged("/repos/octo-org/widgets/pulls/7") is True
    assert [r.status for r in fake_github.calls("pulls/get")] == [200, 200, 304, 200, 304]
    assert all(r.headers["authorization"].startswith("token ") for r in fake_github.calls("pulls/get"))
    # A probe that fails (here a 404) is "changed": the caller's full read then says what is wrong.
    assert await gh.unchanged("/repos/octo-org/widgets/pulls/999") is False
