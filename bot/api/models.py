"""The API's request and response models: the OpenAPI document and the MCP tools' schemas are made from them."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Skill = Literal["run_playbook", "tail_logs", "rollback_release"]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Problem(Model):
    """An error, as RFC 9457 problem details."""

    type: str = Field(default="about:blank", description="A URI naming the kind of problem")
    title: str = Field(description="A short summary of the kind of problem")
    status: int = Field(description="The HTTP status code")
    detail: str = Field(description="What exactly went wrong, and how to put it right")
    instance: str | None = Field(default=None, description="The request path")


class Commit(Model):
    sha: str
    message: str
    author: str | None
    authored_at: datetime | None


class Review(Model):
    id: int
    login: str
    state: str
    commit_id: str | None
    submitted_at: datetime | None


class LabelChange(Model):
    at: datetime
    action: Literal["labeled", "unlabeled"]
    label: str
    actor: str | None


class CheckRun(Model):
    id: int
    name: str
    status: str
    conclusion: str | None
    app: str | None
    details_url: str | None
    started_at: datetime | None
    completed_at: datetime | None


class CommitStatus(Model):
    context: str
    state: str
    description: str | None
    target_url: str | None
    updated_at: datetime | None


class RequiredCheck(Model):
    name: str
    state: str = Field(description="success, failure, pending or missing")
    url: str | None = None


class AuditEntry(Model):
    at: datetime
    from_state: str | None
    to_state: str
    actor: str
    reason: str
    source: str


class AgentSession(Model):
    id: str
    skill: str
    playbook: str
    state: str
    requested_by: str
    started_at: str
    result: str
    last_lines: list[str]


class ReleaseSummary(Model):
    repo: str
    pr: int
    number: int = Field(description="The nth release asked for on this PR")
    state: str
    title: str
    requested_by: str
    head_sha: str
    verified_sha: str | None
    slot_start: datetime | None
    slot_end: datetime | None
    timezone: str
    calendar_event_id: str | None
    merge_sha: str | None
    updated_at: datetime | None


class Release(ReleaseSummary):
    blockers: list[str]
    deploy_target: str | None
    deploy_url: str | None
    deploy_log: list[str]
    failure: str | None
    audit: list[AuditEntry]
    agent_sessions: list[AgentSession]


class PullSummary(Model):
    repo: str
    number: int
    title: str
    author: str
    state: str
    draft: bool
    labels: list[str]
    head_sha: str
    base: str
    updated_at: datetime | None
    release_state: str | None = Field(description="The state of the PR's latest release, if any")
    synced_at: datetime = Field(description="When this record last matched GitHub")


class Pull(PullSummary):
    commits: list[Commit]
    reviews: list[Review]
    required_checks: list[RequiredCheck]
    release: Release | None


class PullPage(Model):
    items: list[PullSummary]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last")


class ReleasePage(Model):
    items: list[ReleaseSummary]
    next_cursor: str | None


class Changes(Model):
    repo: str
    number: int
    head_sha: str
    since_sha: str | None
    since_review: Review | None
    commits: list[Commit]
    labels: list[LabelChange]
    check_runs: list[CheckRun]
    statuses: list[CommitStatus]
    synced_at: datetime


class CheckRuns(Model):
    repo: str
    sha: str
    check_runs: list[CheckRun]
    synced_at: datetime


class CommitStatuses(Model):
    repo: str
    sha: str
    statuses: list[CommitStatus]
    synced_at: datetime


class TagRequest(Model):
    label: str | None = Field(default=None, max_length=50, description="The label to add (default: the repo's)")
    calendar_event_id: str | None = Field(
        default=None, max_length=200, description="A built-in calendar event whose time to book"
    )


class ScheduleRequest(Model):
    when: str | None = Field(
        default=None, max_length=100, description="A time as on the PR (`friday 3pm`, `2026-12-01 14:00`); none: next"
    )
    now: bool = Field(default=False, description="Release as soon as the checks allow (`/ship now`)")
    dry_run: bool = Field(default=False, description="Say what would happen, book nothing")


class CancelRequest(Model):
    reason: str | None = Field(default=None, max_length=500)


class CommentRequest(Model):
    body: str = Field(min_length=1, max_length=60000, description="Markdown; posted by the App, naming the caller")


class AgentCallRequest(Model):
    skill: Skill
    playbook: str | None = Field(default=None, max_length=100, description="Default: the repo's deploy playbook")
    parameters: dict[str, str] = Field(default_factory=dict, description="Playbook parameters (the agent checks them)")


class ActionResult(Model):
    release: Release | None
    messages: list[str] = Field(description="What the bot answered, as it would on the PR")


class PostedComment(Model):
    id: int
    url: str


class AgentCall(Model):
    call_id: str
    release: str = Field(description="The release the session belongs to (repo#pr/number)")
    state: str = Field(description="queued: the worker starts the session; follow it in get_release")
