"""MCP tools over the operations the REST API runs, for assistants: stdio here, streamable HTTP in mcp_http.

Each tool is one `Operations` call made as the caller of an API token, so a tool can do exactly what the
same token can do through `/api/v1` and a `/ship` comment by that login can do on the PR. A refusal
(`ApiError`) becomes a tool error (`isError`) carrying the same precise message, led by what the status
means ("forbidden: ..."); the client's model reads it and can put the call right.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Final, Literal, TypeVar

import aiohttp
import gidgethub
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field, StringConstraints, ValidationError

from .api import models
from .api.operations import MAX_PAGE, ApiError, Operations
from .api.tokens import ApiTokens, Caller
from .config import Settings
from .context import utcnow
from .credentials import load_registered_app
from .github import GitHubApp
from .release import Source, State
from .service import ReleaseService
from .store import make_store

log = logging.getLogger(__name__)

SERVER_NAME: Final = "release-secretary"
TOKEN_ENV: Final = "RELEASE_SECRETARY_TOKEN"  # noqa: S105 - the variable's name, not a token
TOOL_NAMES: Final = (
    "list_prs",
    "get_pr",
    "what_changed",
    "list_commit_statuses",
    "list_check_runs",
    "list_releases",
    "get_release",
    "tag_pr_for_release",
    "schedule_release",
    "cancel_release",
    "comment_on_pr",
    "call_dev_agent",
)
INSTRUCTIONS: Final = """\
Release Secretary books and ships releases of GitHub pull requests: one release per PR per ship request, \
verified against the required checks, booked into the repository's release windows, merged at its slot.
Name repositories as owner/name. The read tools answer from what the bot has recorded (webhooks keep it \
current; `synced_at` says when a record last matched GitHub). The other tools act as the GitHub login of \
the API token, under that login's permission on the repository, exactly as a `/ship` comment on the PR \
would; they need the token's write scope. A refused call says why and what would unblock it."""

# Who a tool call acts as: the stdio session's token, or the token of the HTTP request carrying the call.
CallerFor = Callable[[], Awaitable[Caller]]
_Result = TypeVar("_Result", bound=BaseModel)

_REPO_PATTERN: Final = r"^[A-Za-z0-9-]{1,39}/[A-Za-z0-9._-]{1,100}$"
_REPO_TEXT: Final = "The repository as owner/name, e.g. octo-org/widgets"
Repo = Annotated[str, Field(pattern=_REPO_PATTERN, description=_REPO_TEXT)]
AnyRepo = Annotated[
    Annotated[str, StringConstraints(pattern=_REPO_PATTERN)] | None,
    Field(description=_REPO_TEXT + "; none: every repository the token covers"),
]
Number = Annotated[int, Field(ge=1, le=999_999_999, description="The pull request number")]
Sha = Annotated[str, Field(pattern=r"^[0-9a-f]{40}$", description="A full commit SHA (40 lowercase hex digits)")]
Cursor = Annotated[
    Annotated[str, StringConstraints(max_length=500)] | None,
    Field(description="`next_cursor` from the previous page; none for the first page"),
]
Limit = Annotated[int, Field(ge=1, le=MAX_PAGE, description=f"At most this many items (1-{MAX_PAGE})")]

_READ: Final = ToolAnnotations(read_only_hint=True, open_world_hint=False)
# What each status means, and the title RFC 9110 gives it (a different title is the operation's own).
_STATUSES: Final = {
    400: ("bad request", "bad request"),
    401: ("unauthorized", "unauthorized"),
    403: ("forbidden", "forbidden"),
    404: ("not found", "not found"),
    409: ("conflict", "conflict"),
    422: ("invalid", "unprocessable content"),
}


def tool_error(exc: ApiError) -> ToolError:
    """The tool error for a refused operation: what the status means, then the operation's own words."""
    word, title = _STATUSES.get(exc.status, (exc.title.lower(), exc.title.lower()))
    # A title of its own ("GitHub refused the comment") says more than the status does: keep it.
    lead = word if exc.title.lower() == title else f"{word}: {exc.title}"
    return ToolError(f"{lead}: {exc.detail}")


def build_server(operations: Operations, caller_for: CallerFor) -> MCPServer[Any]:
    """The MCP server with the twelve tools; `caller_for` says who each call acts as (and may refuse)."""
    server: MCPServer[Any] = MCPServer(
        SERVER_NAME, title="Release Secretary", instructions=INSTRUCTIONS, version=_version()
    )

    async def run(tool: str, repo: str | None, operation: Callable[[Caller], Awaitable[_Result]]) -> _Result:
        caller = dataclasses.replace(await caller_for(), via=Source.MCP)
        log.info("mcp %s by @%s (token %s)", tool, caller.login, caller.token_id, extra={"repo": repo})
        try:
            return await operation(caller)
        except ApiError as exc:
            raise tool_error(exc) from exc
        except gidgethub.HTTPException as exc:
            status = exc.status_code
            raise ToolError(f"GitHub answered {status.value} {status.phrase}: {exc}") from exc
        except aiohttp.ClientError as exc:
            raise ToolError(f"GitHub could not be reached ({type(exc).__name__}); try again shortly") from exc

    # Reads --------------------------------------------------------------------------------------------

    @server.tool(
        name="list_prs",
        title="List pull requests",
        annotations=_READ,
        description="Pull requests the bot tracks, newest first per repository, each with the state of its "
        "latest release. Filter by repository, state and label; page with `cursor`.",
    )
    async def list_prs(
        repo: AnyRepo = None,
        state: Annotated[
            Literal["open", "closed", "merged"] | None, Field(description="Only PRs in this state")
        ] = None,
        label: Annotated[
            Annotated[str, StringConstraints(max_length=100)] | None, Field(description="Only PRs with this label")
        ] = None,
        cursor: Cursor = None,
        limit: Limit = 50,
    ) -> models.PullPage:
        return await run(
            "list_prs",
            repo,
            lambda caller: operations.list_prs(caller, repo=repo, state=state, label=label, cursor=cursor, limit=limit),
        )

    @server.tool(
        name="get_pr",
        title="Get a pull request",
        annotations=_READ,
        description="One pull request: its commits, reviews, the required checks' verdict on its head SHA, "
        "and its latest release.",
    )
    async def get_pr(repo: Repo, number: Number) -> models.Pull:
        return await run("get_pr", repo, lambda caller: operations.get_pr(caller, repo, number))

    @server.tool(
        name="what_changed",
        title="What changed on a pull request",
        annotations=_READ,
        description="What changed on a pull request since one of its commits (`since_sha`) or since a "
        "reviewer's last review (`reviewer`); give exactly one. The answer: the commits after it, label changes "
        "since, and the check runs and statuses on the head.",
    )
    async def what_changed(
        repo: Repo,
        number: Number,
        since_sha: Annotated[
            Annotated[str, StringConstraints(min_length=7, max_length=40, pattern=r"^[0-9a-fA-F]+$")] | None,
            Field(description="A commit SHA (7-40 hex digits) of the PR: what came after it"),
        ] = None,
        reviewer: Annotated[
            Annotated[str, StringConstraints(max_length=39)] | None,
            Field(description="A GitHub login: what came after that person's last review"),
        ] = None,
    ) -> models.Changes:
        return await run(
            "what_changed",
            repo,
            lambda caller: operations.changes(caller, repo, number, since_sha=since_sha, reviewer=reviewer),
        )

    @server.tool(
        name="list_commit_statuses",
        title="List commit statuses",
        annotations=_READ,
        description="The latest commit status per context for a commit, as GitHub's webhooks reported them.",
    )
    async def list_commit_statuses(repo: Repo, sha: Sha) -> models.CommitStatuses:
        return await run(
            "list_commit_statuses", repo, lambda caller: operations.list_commit_statuses(caller, repo, sha)
        )

    @server.tool(
        name="list_check_runs",
        title="List check runs",
        annotations=_READ,
        description="The latest check run per name for a commit, as GitHub's webhooks reported them.",
    )
    async def list_check_runs(repo: Repo, sha: Sha) -> models.CheckRuns:
        return await run("list_check_runs", repo, lambda caller: operations.list_check_runs(caller, repo, sha))

    @server.tool(
        name="list_releases",
        title="List releases",
        annotations=_READ,
        description="Releases (one per pull request per ship request), filtered by repository, state and a time "
        "window their slot overlaps; page with `cursor`.",
    )
    async def list_releases(
        repo: AnyRepo = None,
        state: Annotated[State | None, Field(description="Only releases in this state")] = None,
        window_start: Annotated[
            datetime | None, Field(description="Only releases whose slot ends after this time (ISO 8601)")
        ] = None,
        window_end: Annotated[
            datetime | None, Field(description="Only releases whose slot starts before this time (ISO 8601)")
        ] = None,
        cursor: Cursor = None,
        limit: Limit = 50,
    ) -> models.ReleasePage:
        return await run(
            "list_releases",
            repo,
            lambda caller: operations.list_releases(
                caller,
                repo=repo,
                state=state.value if state is not None else None,
                window_start=window_start,
                window_end=window_end,
                cursor=cursor,
                limit=limit,
            ),
        )

    @server.tool(
        name="get_release",
        title="Get a release",
        annotations=_READ,
        description="One release of a pull request: its state, slot, blockers, audit trail (who moved it, when, "
        "why, from which input) and dev agent sessions.",
    )
    async def get_release(
        repo: Repo,
        number: Number,
        release_number: Annotated[
            int, Field(ge=1, le=999_999, description="Which release of the PR: 1 for the first one asked for")
        ],
    ) -> models.Release:
        return await run(
            "get_release", repo, lambda caller: operations.get_release(caller, repo, number, release_number)
        )

    # Writes -------------------------------------------------------------------------------------------

    @server.tool(
        name="tag_pr_for_release",
        title="Tag a pull request for release",
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=True),
        description="Ask for a release of the pull request as adding the release label does: the bot verifies "
        "the PR and books the next free release window (or the time of a built-in calendar event), then adds "
        "the label on GitHub. Acts as the token's login. Needs the write scope.",
    )
    async def tag_pr_for_release(
        repo: Repo,
        number: Number,
        label: Annotated[
            Annotated[str, StringConstraints(max_length=50)] | None,
            Field(description="The label to add; default: the repository's release label"),
        ] = None,
        calendar_event_id: Annotated[
            Annotated[str, StringConstraints(max_length=200)] | None,
            Field(description="An event of the built-in release calendar whose time to book"),
        ] = None,
    ) -> models.ActionResult:
        body = _body(models.TagRequest, label=label, calendar_event_id=calendar_event_id)
        return await run(
            "tag_pr_for_release", repo, lambda caller: operations.tag_pr_for_release(caller, repo, number, body)
        )

    @server.tool(
        name="schedule_release",
        title="Schedule a release",
        # Destructive: it can move an existing booking, and `now` merges as soon as the checks allow.
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=True),
        description="Book a release window for the pull request, as `/ship WHEN` does in a PR comment. `when` "
        "is a time as people write it there (`friday 3pm`, `2026-12-01 14:00 Europe/Berlin`); none books the "
        "next free window. `now` releases as soon as the checks allow (`/ship now`); `dry_run` says what "
        "would happen and books nothing. The answer holds the release and the bot's messages. Acts as the "
        "token's login. Needs the write scope.",
    )
    async def schedule_release(
        repo: Repo,
        number: Number,
        when: Annotated[
            Annotated[str, StringConstraints(max_length=100)] | None,
            Field(description="When to release, as on the PR; none: the next free window"),
        ] = None,
        now: Annotated[bool, Field(description="Release as soon as the checks allow")] = False,
        dry_run: Annotated[bool, Field(description="Say what would happen; book nothing")] = False,
    ) -> models.ActionResult:
        body = _body(models.ScheduleRequest, when=when, now=now, dry_run=dry_run)
        return await run(
            "schedule_release", repo, lambda caller: operations.schedule_release(caller, repo, number, body)
        )

    @server.tool(
        name="cancel_release",
        title="Cancel a release",
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=True
        ),
        description="Cancel the pull request's active release, as `/ship cancel` does; the people on the PR "
        "are told, with the reason if one is given. Acts as the token's login. Needs the write scope.",
    )
    async def cancel_release(
        repo: Repo,
        number: Number,
        reason: Annotated[
            Annotated[str, StringConstraints(max_length=500)] | None,
            Field(description="Why, for the people on the PR"),
        ] = None,
    ) -> models.ActionResult:
        body = _body(models.CancelRequest, reason=reason)
        return await run("cancel_release", repo, lambda caller: operations.cancel_release(caller, repo, number, body))

    @server.tool(
        name="comment_on_pr",
        title="Comment on a pull request",
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=True),
        description="Post a comment (Markdown) on the pull request. The bot posts it, headed with the token's "
        "login so nobody takes it for the bot's own words. Needs the write scope.",
    )
    async def comment_on_pr(
        repo: Repo,
        number: Number,
        body: Annotated[str, Field(min_length=1, max_length=60000, description="The comment, in Markdown")],
    ) -> models.PostedComment:
        request = _body(models.CommentRequest, body=body)
        return await run("comment_on_pr", repo, lambda caller: operations.comment_on_pr(caller, repo, number, request))

    @server.tool(
        name="call_dev_agent",
        title="Call the dev agent",
        # Playbooks deploy and roll back.
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=True),
        description="Run a skill of the repository's dev agent for the pull request's latest release: "
        "`run_playbook`, `tail_logs` or `rollback_release`. The agent refuses anything off its allowlist. The "
        "call is queued; follow its session in get_release. Needs the write scope and the repository's ship "
        "permission.",
    )
    async def call_dev_agent(
        repo: Repo,
        number: Number,
        skill: Annotated[models.Skill, Field(description="What the agent should do")],
        playbook: Annotated[
            Annotated[str, StringConstraints(max_length=100)] | None,
            Field(description="The playbook; default: the repository's deploy (or rollback) playbook"),
        ] = None,
        parameters: Annotated[
            dict[str, str] | None, Field(description="Playbook parameters (the agent checks them)")
        ] = None,
    ) -> models.AgentCall:
        body = _body(models.AgentCallRequest, skill=skill, playbook=playbook, parameters=parameters or {})
        return await run("call_dev_agent", repo, lambda caller: operations.call_dev_agent(caller, repo, number, body))

    return server


def _body(model: type[_Result], **fields: Any) -> _Result:
    """The operation's request model; the tool's own schema already holds its limits, so this rarely refuses."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        where = "; ".join(
            f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)[:5]
        )
        raise ToolError(f"invalid arguments: {where}") from exc


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("release-secretary")
    except PackageNotFoundError:
        return "0"


# stdio -------------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def open_operations(
    settings: Settings, clock: Callable[[], datetime] = utcnow
) -> AsyncIterator[tuple[Operations, ApiTokens]]:
    """The operations and tokens over a store of their own, wired as the web app's API is."""
    from .app import make_tracker  # the web app's, so the two can never be wired differently

    store = make_store(settings)
    await store.open()
    try:
        await load_registered_app(settings.credentials, store, settings.secrets_keys)
        async with aiohttp.ClientSession() as session:
            service = ReleaseService(store, settings, clock)
            tracker = make_tracker(store, service)
            yield (
                Operations(store, service, GitHubApp(settings, session), clock, tracker=tracker),
                ApiTokens(store, clock),
            )
    finally:
        await store.close()


async def run_stdio(settings: Settings, token: str | None, *, clock: Callable[[], datetime] = utcnow) -> int:
    """Serve the tools over stdin/stdout as the token's caller until the client hangs up; the exit status.

    stdout is the protocol: everything else goes to stderr (logging's default stream; while serving, the
    SDK points file descriptor 1 at stderr as well, so even a stray print cannot corrupt the stream).
    The token is checked again on every call, so revoking it ends what the session may do at once.
    """
    token = (token or "").strip()
    if not token:
        sys.stderr.write(
            f"release-secretary mcp: set {TOKEN_ENV} to an API token; make one with\n"
            "  python -m bot tokens create --name assistant --as LOGIN --repos OWNER/REPO --scopes read,write\n"
        )
        return 2
    async with open_operations(settings, clock) as (operations, tokens):
        caller = await tokens.caller(token)
        if caller is None:
            sys.stderr.write(
                f"release-secretary mcp: {TOKEN_ENV} is not a live token (unknown, mistyped or revoked; "
                "`python -m bot tokens list` shows the live ones)\n"
            )
            return 2

        async def caller_for() -> Caller:
            current = await tokens.caller(token)
            if current is None:
                raise ToolError(f"unauthorized: the token {caller.name!r} was revoked; set a live one and restart")
            return current

        log.info(
            "MCP over stdio as @%s on %s (scopes: %s; token %s)",
            caller.login,
            ", ".join(caller.repos),
            ", ".join(caller.scopes),
            caller.token_id,
        )
        await build_server(operations, caller_for).run_stdio_async()
    return 0
