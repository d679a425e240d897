"""The MCP tools through the official SDK client: over streamable HTTP (uvicorn in this process, beside the real
app and the fake GitHub) and over stdio (a real subprocess sharing the SQLite store), with API tokens."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx2
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from mcp import Client, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, TextContent
from pydantic import BaseModel

from bot.api import models
from bot.api.tokens import ApiTokens
from bot.api.web import OPERATIONS, TOKENS
from bot.app import make_app
from bot.config import Settings
from bot.context import utcnow
from bot.mcp import TOKEN_ENV, TOOL_NAMES
from bot.mcp_http import MCP_PATH, METADATA_PATH, SHUTDOWN_GRACE_SECONDS, McpHttpServer, serve_http
from bot.release import State
from bot.store import make_store
from bot.store.base import Installation
from tests.fakes.github import FakeGitHub
from tests.scenario import INSTALLATION, REPO, Clock, Scenario

ClientFactory = Callable[[web.Application], Awaitable[TestClient]]
ROOT = Path(__file__).resolve().parent.parent
FIRST = "d" * 40
HEAD = "e" * 40
CONFIG = """\
timezone: Europe/Berlin
windows:
  - days: [mon-fri]
    hours: "10:00-16:00"
"""
READ_TOOLS = {
    "list_prs",
    "get_pr",
    "what_changed",
    "list_commit_statuses",
    "list_check_runs",
    "list_releases",
    "get_release",
}
WRITE_CALLS: dict[str, dict[str, Any]] = {
    "tag_pr_for_release": {"repo": REPO, "number": 7},
    "schedule_release": {"repo": REPO, "number": 7, "when": "friday 3pm"},
    "cancel_release": {"repo": REPO, "number": 7},
    "comment_on_pr": {"repo": REPO, "number": 7, "body": "hello"},
    "call_dev_agent": {"repo": REPO, "number": 7, "skill": "run_playbook"},
}
# The bot's process runs as `python -m bot mcp` does: settings from the environment, then run_stdio.
LAUNCH = (
    "import asyncio, os, sys\n"
    "from bot.config import Settings\n"
    "from bot.logs import setup_logging\n"
    "from bot.mcp import TOKEN_ENV, run_stdio\n"
    "settings = Settings.from_env(os.environ)\n"
    "setup_logging(settings.log_level)\n"
    "sys.exit(asyncio.run(run_stdio(settings, os.environ.get(TOKEN_ENV))))\n"
)
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}},
}
Result = TypeVar("Result", bound=BaseModel)


def arrange(fake: FakeGitHub) -> None:
    for pr in (7, 8):
        fake.add_pull(REPO, pr, head_sha=HEAD, title=f"Change {pr}", user_login="alice", commits=[FIRST, HEAD])
    fake.set_permission(REPO, "alice", "write")
    fake.set_branch_protection(REPO, "main", ["ci/build"])
    fake.add_check_run(REPO, HEAD, "ci/build", status="completed", conclusion="success")
    fake.add_status(REPO, HEAD, "ci/lint", "success", description="lint passed")
    fake.set_file(REPO, ".github/release-secretary.yml", CONFIG)


class Bot:
    """The real app (no worker) over the fake GitHub, and its MCP endpoint on a free port."""

    def __init__(self, scenario: Scenario, mcp: McpHttpServer) -> None:
        self.s = scenario
        self.mcp = mcp
        self.tokens = ApiTokens(scenario.store, scenario.clock)

    async def token(self, login: str = "alice", *, scopes: tuple[str, ...] = ("read", "write")) -> str:
        token, _ = await self.tokens.create(
            name=f"{login}-{'-'.join(scopes)}", login=login, repos=[REPO], scopes=list(scopes)
        )
        return token

    @contextlib.asynccontextmanager
    async def client(self, token: str, *, mode: str = "legacy") -> AsyncIterator[Client]:
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(20)) as http,
            Client(streamable_http_client(self.mcp.url, http_client=http), mode=mode) as client,
        ):
            yield client


@pytest.fixture
async def bot(aiohttp_client: ClientFactory, app_settings: Settings, fake_github: FakeGitHub) -> AsyncIterator[Bot]:
    arrange(fake_github)
    clock = Clock()
    client = await aiohttp_client(make_app(app_settings, clock=clock))
    scenario = Scenario(client, app_settings, fake_github, clock)
    await scenario.store.save_installation(
        Installation(id=INSTALLATION, account_login=REPO.split("/")[0], repositories=(REPO,))
    )
    app = client.app
    mcp = await serve_http(app_settings, app[OPERATIONS], app[TOKENS], host="127.0.0.1", port=0)
    try:
        yield Bot(scenario, mcp)
    finally:
        await mcp.close()


def ok(result: CallToolResult, model: type[Result]) -> Result:
    assert not result.is_error, result.content
    assert result.structured_content is not None
    parsed = model.model_validate(result.structured_content)
    # Clients without structured content read the same document as text.
    [block] = result.content
    assert isinstance(block, TextContent) and json.loads(block.text) == result.structured_content
    return parsed


def refused(result: CallToolResult) -> str:
    assert result.is_error
    [block] = result.content
    assert isinstance(block, TextContent)
    return block.text


# Streamable HTTP -----------------------------------------------------------------------------------


async def test_every_tool_is_listed_with_its_schemas_and_hints(bot: Bot) -> None:
    async with bot.client(await bot.token()) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(tools) == set(TOOL_NAMES) and len(tools) == 12
    for name, tool in tools.items():
        assert tool.input_schema["type"] == "object" and tool.output_schema is not None, name
        assert tool.description and tool.annotations is not None, name
        assert tool.annotations.read_only_hint is (name in READ_TOOLS), name
    assert tools["get_pr"].input_schema["required"] == ["repo", "number"]
    assert "owner/name" in tools["get_pr"].input_schema["properties"]["repo"]["description"]
    assert tools["schedule_release"].annotations is not None and tools["schedule_release"].annotations.destructive_hint
    assert set(tools["call_dev_agent"].input_schema["properties"]["skill"]["enum"]) == {
        "run_playbook",
        "tail_logs",
        "rollback_release",
    }


async def test_every_tool_acts_through_the_shared_operations(bot: Bot) -> None:
    fake = bot.s.fake
    async with bot.client(await bot.token()) as client:
        # A PR the store does not know yet is read from GitHub once, then answered from the store.
        pull = ok(await client.call_tool("get_pr", {"repo": REPO, "number": 7}), models.Pull)
        assert pull.head_sha == HEAD and pull.title == "Change 7" and pull.release is None
        assert [(c.name, c.state) for c in pull.required_checks] == [("ci/build", "success")]
        page = ok(await client.call_tool("list_prs", {"repo": REPO}), models.PullPage)
        assert [p.number for p in page.items] == [7]
        changes = ok(
            await client.call_tool("what_changed", {"repo": REPO, "number": 7, "since_sha": FIRST[:7]}),
            models.Changes,
        )
        assert changes.head_sha == HEAD and changes.since_sha == FIRST and [c.sha for c in changes.commits] == [HEAD]
        text = refused(await client.call_tool("what_changed", {"repo": REPO, "number": 7}))
        assert text == "Error executing tool what_changed: invalid: give exactly one of sha or reviewer"
        runs = ok(await client.call_tool("list_check_runs", {"repo": REPO, "sha": HEAD}), models.CheckRuns)
        assert [(r.name, r.conclusion) for r in runs.check_runs] == [("ci/build", "success")]
        statuses = ok(
            await client.call_tool("list_commit_statuses", {"repo": REPO, "sha": HEAD}), models.CommitStatuses
        )
        assert [(s.context, s.state) for s in statuses.statuses] == [("ci/lint", "success")]

        booked = ok(
            await client.call_tool("schedule_release", {"repo": REPO, "number": 7, "when": "friday 3pm"}),
            models.ActionResult,
        )
        assert booked.release is not None and booked.release.state == "scheduled"
        assert booked.release.slot_start is not None and booked.release.slot_start.isoformat() == (
            "2026-11-27T14:00:00+00:00"
        )
        assert booked.release.requested_by == "alice" and any("booked" in m for m in booked.messages)
        releases = ok(await client.call_tool("list_releases", {"state": "scheduled"}), models.ReleasePage)
        assert [(r.repo, r.pr, r.number) for r in releases.items] == [(REPO, 7, 1)]
        release = ok(
            await client.call_tool("get_release", {"repo": REPO, "number": 7, "release_number": 1}), models.Release
        )
        assert [a.to_state for a in release.audit][-1] == "scheduled" and release.audit[0].actor == "alice"

        tagged = ok(await client.call_tool("tag_pr_for_release", {"repo": REPO, "number": 8}), models.ActionResult)
        assert tagged.release is not None and tagged.release.pr == 8
        assert "Ready for Prod" in fake.labels_on(REPO, 8)

        posted = ok(
            await client.call_tool("comment_on_pr", {"repo": REPO, "number": 7, "body": "Looks good to ship."}),
            models.PostedComment,
        )
        body = fake.comment(posted.id)["body"]
        assert body.startswith("**@alice**") and "Looks good to ship." in body

        # No dev agent is registered: refused, saying so, and nothing is queued.
        agent = await client.call_tool(
            "call_dev_agent", {"repo": REPO, "number": 7, "skill": "run_playbook", "playbook": "deploy"}
        )
        assert refused(agent).startswith("Error executing tool call_dev_agent: conflict: ")

        cancelled = ok(
            await client.call_tool("cancel_release", {"repo": REPO, "number": 7, "reason": "not this week"}),
            models.ActionResult,
        )
        assert cancelled.release is not None and cancelled.release.state == "cancelled"
    latest = await bot.s.store.get_latest_release(REPO, 7)
    assert latest is not None and latest.state is State.CANCELLED
    assert fake.violations == []


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_read_only_token_reads_but_every_write_tool_refuses_it(bot: Bot, mode: str) -> None:
    async with bot.client(await bot.token(scopes=("read",)), mode=mode) as client:
        ok(await client.call_tool("list_releases", {}), models.ReleasePage)
        for name, arguments in WRITE_CALLS.items():
            text = refused(await client.call_tool(name, arguments))
            assert text == f"Error executing tool {name}: forbidden: the token 'alice-read' lacks the write scope"
    assert await bot.s.store.get_latest_release(REPO, 7) is None
    assert bot.s.fake.comments_on(REPO, 7) == []


async def test_each_request_acts_as_its_own_token(bot: Bot) -> None:
    """Two clients at once, one token each: every call acts as the token of its own request."""
    async with bot.client(await bot.token("alice")) as alice, bot.client(await bot.token("bob")) as bob:
        bob_try = refused(await bob.call_tool("schedule_release", {"repo": REPO, "number": 7}))
        assert "forbidden: " in bob_try and "@bob" in bob_try
        booked = ok(await alice.call_tool("schedule_release", {"repo": REPO, "number": 7}), models.ActionResult)
        assert booked.release is not None and booked.release.requested_by == "alice"


async def test_refusals_carry_the_operations_precise_words(bot: Bot) -> None:
    async with bot.client(await bot.token()) as client:
        text = refused(await client.call_tool("get_release", {"repo": REPO, "number": 7, "release_number": 2}))
        assert text.endswith(f"not found: {REPO}#7 has no release number 2")
        text = refused(await client.call_tool("list_prs", {"repo": "octo-org/elsewhere"}))
        assert text.endswith("not found: no repository octo-org/elsewhere here")
        text = refused(await client.call_tool("list_releases", {"cursor": "nonsense"}))
        assert "bad request: the cursor is not one this list gave" in text
        text = refused(await client.call_tool("get_pr", {"repo": "not a repo", "number": 7}))
        assert "repo" in text and "pattern" in text
        # GitHub failing is a tool error too, saying so, not a crash of the session.
        bot.s.fake.fail_next("POST", rf"/repos/{REPO}/issues/7/comments$", 502)
        text = refused(await client.call_tool("comment_on_pr", {"repo": REPO, "number": 7, "body": "hi"}))
        assert text.startswith("Error executing tool comment_on_pr: GitHub answered 502 Bad Gateway"), text
        ok(await client.call_tool("list_releases", {}), models.ReleasePage)


async def test_a_missing_bad_or_revoked_token_is_401_naming_the_metadata(bot: Bot) -> None:
    token = await bot.token()
    base = bot.mcp.url.removesuffix(MCP_PATH)
    challenge = f'Bearer resource_metadata="{base}{METADATA_PATH}{MCP_PATH}"'
    accept = {"Accept": "application/json, text/event-stream"}
    async with httpx2.AsyncClient(timeout=10) as http:
        missing = await http.post(bot.mcp.url, json=INITIALIZE, headers=accept)
        assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == challenge
        bad = await http.post(bot.mcp.url, json=INITIALIZE, headers={**accept, "Authorization": "Bearer rs_nope"})
        assert bad.status_code == 401
        assert bad.headers["WWW-Authenticate"].startswith(challenge + ', error="invalid_token"')
        assert bad.json()["error"] == "invalid_token"
        good = await http.post(bot.mcp.url, json=INITIALIZE, headers={**accept, "Authorization": f"Bearer {token}"})
        assert good.status_code == 200
        [record] = await bot.tokens.list()
        await bot.tokens.revoke(record.id)
        # The session it opened is refused with it: every request is checked again.
        revoked = await http.post(
            bot.mcp.url,
            json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
            headers={**accept, "Authorization": f"Bearer {token}", "Mcp-Session-Id": good.headers["Mcp-Session-Id"]},
        )
        assert revoked.status_code == 401 and revoked.headers["WWW-Authenticate"].startswith(challenge)


async def test_a_session_answers_only_the_token_that_opened_it(bot: Bot) -> None:
    alice, bob = await bot.token("alice"), await bot.token("bob")
    accept = {"Accept": "application/json, text/event-stream"}
    async with httpx2.AsyncClient(timeout=10) as http:
        opened = await http.post(bot.mcp.url, json=INITIALIZE, headers={**accept, "Authorization": f"Bearer {alice}"})
        session = opened.headers["Mcp-Session-Id"]
        hijack = await http.post(
            bot.mcp.url,
            json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
            headers={**accept, "Authorization": f"Bearer {bob}", "Mcp-Session-Id": session},
        )
        assert hijack.status_code == 404


async def test_the_protected_resource_metadata_is_served_without_a_token(bot: Bot) -> None:
    base = bot.mcp.url.removesuffix(MCP_PATH)
    async with httpx2.AsyncClient(timeout=10) as http:
        for path in (METADATA_PATH + MCP_PATH, METADATA_PATH):
            response = await http.get(base + path)
            assert response.status_code == 200 and response.headers["Content-Type"] == "application/json"
            document = response.json()
            assert document["resource"] == bot.mcp.url
            assert document["bearer_methods_supported"] == ["header"]
            assert document["scopes_supported"] == ["read", "write"]
            assert "authorization_servers" not in document  # tokens come from the operator's CLI, not OAuth
        head = await http.head(base + METADATA_PATH)
        assert head.status_code == 200 and head.content == b""
        preflight = await http.options(base + METADATA_PATH, headers={"Origin": "https://inspector.test"})
        assert preflight.status_code == 204 and preflight.headers["Access-Control-Allow-Origin"] == "*"
        assert (await http.post(base + METADATA_PATH)).status_code == 405


async def test_behind_a_proxy_the_public_url_names_the_resource(bot: Bot) -> None:
    app = bot.s.client.app
    public = "https://mcp.example.test"
    token = await bot.token()
    async with await serve_http(
        bot.s.settings, app[OPERATIONS], app[TOKENS], host="127.0.0.1", port=0, public_url=public
    ) as proxied:
        listed = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        headers = {"Accept": "application/json, text/event-stream", "Host": "mcp.example.test"}
        async with httpx2.AsyncClient(timeout=10) as http:
            document = (await http.get(proxied.url.removesuffix(MCP_PATH) + METADATA_PATH, headers=headers)).json()
            assert document["resource"] == public + MCP_PATH
            refused = await http.post(proxied.url, json=listed, headers=headers)
            assert refused.headers["WWW-Authenticate"] == (
                f'Bearer resource_metadata="{public}{METADATA_PATH}{MCP_PATH}"'
            )
            # The proxy's Host passes the SDK's DNS-rebinding check on a loopback port; another does not.
            authorized = {**headers, "Authorization": f"Bearer {token}"}
            assert (await http.post(proxied.url, json=INITIALIZE, headers=authorized)).status_code == 200
            other = await http.post(proxied.url, json=INITIALIZE, headers={**authorized, "Host": "evil.test"})
            assert other.status_code == 421


async def test_closing_ends_open_sessions_at_once(bot: Bot, caplog: pytest.LogCaptureFixture) -> None:
    metadata = bot.mcp.url.removesuffix(MCP_PATH) + METADATA_PATH
    async with bot.client(await bot.token()) as client:
        await client.list_tools()  # a 2025-11-25 session, with its event stream open
        started = time.monotonic()
        await bot.mcp.close()
        assert time.monotonic() - started < SHUTDOWN_GRACE_SECONDS  # nothing was left to wait out
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    async with httpx2.AsyncClient(timeout=5) as http:
        with pytest.raises(httpx2.ConnectError):
            await http.get(metadata)


# stdio ---------------------------------------------------------------------------------------------


@pytest.fixture
async def stdio_env(tmp_path: Path, app_settings: Settings, fake_github: FakeGitHub) -> AsyncIterator[dict[str, str]]:
    """The environment of a `python -m bot mcp` process over the test's SQLite store and fake GitHub."""
    arrange(fake_github)
    settings = app_settings.replace(database_path=tmp_path / "bot.db")
    store = make_store(settings)
    await store.open()
    try:
        await store.save_installation(
            Installation(id=INSTALLATION, account_login=REPO.split("/")[0], repositories=(REPO,))
        )
        token, _ = await ApiTokens(store, utcnow).create(
            name="assistant", login="alice", repos=[REPO], scopes=["read", "write"]
        )
    finally:
        await store.close()
    assert settings.github_private_key is not None
    yield {
        "PYTHONPATH": str(ROOT),
        "DATABASE_PATH": str(settings.database_path),
        "DATA_DIR": str(tmp_path / "data"),
        "SECRETS_KEY": settings.secrets_keys[0],
        "GITHUB_APP_ID": "4242",
        "GITHUB_PRIVATE_KEY": settings.github_private_key,
        "GITHUB_WEBHOOK_SECRET": "stdio-test",
        "GITHUB_API_URL": fake_github.url,
        TOKEN_ENV: token,
    }


@pytest.mark.slow
async def test_stdio_serves_the_tools_to_a_subprocess_client(stdio_env: dict[str, str], tmp_path: Path) -> None:
    server = StdioServerParameters(command=sys.executable, args=["-c", LAUNCH], env=stdio_env, cwd=tmp_path)
    with (tmp_path / "stderr.log").open("w+") as errlog:
        async with Client(stdio_client(server, errlog=errlog), mode="legacy") as client:
            tools = (await client.list_tools()).tools
            assert {t.name for t in tools} == set(TOOL_NAMES)
            assert all(t.input_schema["type"] == "object" and t.input_schema.get("properties") for t in tools)
            pull = ok(await client.call_tool("get_pr", {"repo": REPO, "number": 7}), models.Pull)
            assert pull.head_sha == HEAD
            booked = ok(await client.call_tool("schedule_release", {"repo": REPO, "number": 7}), models.ActionResult)
            assert booked.release is not None and booked.release.requested_by == "alice"
            page = ok(await client.call_tool("list_releases", {"repo": REPO}), models.ReleasePage)
            assert [(r.pr, r.number) for r in page.items] == [(7, 1)]
            text = refused(await client.call_tool("get_release", {"repo": REPO, "number": 7, "release_number": 3}))
            assert text.endswith(f"not found: {REPO}#7 has no release number 3")
            # Revoked while the session runs: the next call is refused.
            store = make_store(Settings(database_path=Path(stdio_env["DATABASE_PATH"])))
            await store.open()
            try:
                tokens = ApiTokens(store, utcnow)
                [record] = await tokens.list()
                await tokens.revoke(record.id)
            finally:
                await store.close()
            text = refused(await client.call_tool("list_releases", {}))
            assert text.endswith("unauthorized: the token 'assistant' was revoked; set a live one and restart")
        errlog.seek(0)
        assert "MCP over stdio as @alice" in errlog.read()  # the log went to stderr, not into the protocol
    store = make_store(Settings(database_path=Path(stdio_env["DATABASE_PATH"])))
    await store.open()
    try:
        release = await store.get_active_release(REPO, 7)
        assert release is not None and release.requested_by == "alice"
    finally:
        await store.close()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("token", "message"),
    [
        (None, f"set {TOKEN_ENV} to an API token"),
        ("", f"set {TOKEN_ENV} to an API token"),
        ("rs_not-a-token", f"{TOKEN_ENV} is not a live token"),
    ],
)
async def test_stdio_refuses_to_start_without_a_live_token(
    stdio_env: dict[str, str], tmp_path: Path, token: str | None, message: str
) -> None:
    env = {**os.environ, **stdio_env}
    env.pop(TOKEN_ENV)
    if token is not None:
        env[TOKEN_ENV] = token
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        LAUNCH,
        env=env,
        cwd=tmp_path,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2 and stdout == b""
    assert message in stderr.decode()


async def test_the_app_serves_mcp_on_its_own_port(
    app_settings: Settings, aiohttp_client: ClientFactory, unused_tcp_port: int
) -> None:
    from bot.app import STORE
    from bot.context import utcnow

    settings = app_settings.replace(host="127.0.0.1", mcp_port=unused_tcp_port)
    client = await aiohttp_client(make_app(settings))
    token, _ = await ApiTokens(client.app[STORE], utcnow).create(name="t", login="alice", repos=[REPO], scopes=["read"])
    url = f"http://127.0.0.1:{unused_tcp_port}{MCP_PATH}"
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http,
        Client(streamable_http_client(url, http_client=http), mode="legacy") as mcp,
    ):
        assert {t.name for t in (await mcp.list_tools()).tools} == set(TOOL_NAMES)
