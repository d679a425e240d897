"""Keep the store's record of every PR and its head's checks current from GitHub's webhooks."""

from __future__ import annotations

from typing import Any

from gidgethub import routing, sansio
from gidgethub.abc import GitHubAPI

from bot.context import HandlerContext
from bot.tracker import PullTracker

router = routing.Router()

PULL_ACTIONS = (
    "opened",
    "edited",
    "reopened",
    "closed",
    "synchronize",
    "labeled",
    "unlabeled",
    "ready_for_review",
    "converted_to_draft",
)
REVIEW_ACTIONS = ("submitted", "edited", "dismissed")


def tracker(ctx: HandlerContext) -> PullTracker:
    """Cheap to build: the caches live in the service's GitHub reader, shared with the releases."""
    return PullTracker(ctx.store, ctx.releases.read, ctx.clock)


def _app_delivery(data: dict[str, Any]) -> bool:
    # A repository webhook carries no installation: nothing to read GitHub with, and no App to answer for.
    return "id" in (data.get("installation") or {}) and "full_name" in (data.get("repository") or {})


async def track_pull_request(event: sansio.Event, gh: GitHubAPI, *, ctx: HandlerContext) -> None:
    if not _app_delivery(event.data) or "pull_request" not in event.data:
        return
    await tracker(ctx).on_pull_request(gh, event.data)


for _action in PULL_ACTIONS:
    router.add(track_pull_request, "pull_request", action=_action)


async def track_review(event: sansio.Event, gh: GitHubAPI, *, ctx: HandlerContext) -> None:
    data = event.data
    if not _app_delivery(data) or "pull_request" not in data or "review" not in data:
        return
    await tracker(ctx).on_review(gh, data)


for _action in REVIEW_ACTIONS:
    router.add(track_review, "pull_request_review", action=_action)


@router.register("check_run")
async def track_check_run(event: sansio.Event, gh: GitHubAPI, *, ctx: HandlerContext) -> None:
    # Every action (created, completed, rerequested, requested_action) carries the run as it is now.
    if not _app_delivery(event.data) or not (event.data.get("check_run") or {}).get("head_sha"):
        return
    await tracker(ctx).on_check_run(gh, event.data)


@router.register("check_suite", action="completed")
async def track_check_suite(event: sansio.Event, gh: GitHubAPI, *, ctx: HandlerContext) -> None:
    suite = event.data.get("check_suite") or {}
    if not _app_delivery(event.data) or not suite.get("head_sha"):
        return
    if (suite.get("app") or {}).get("id") == ctx.settings.credentials.app_id:
        return  # our own suite: its `Release` run came by check_run already
    await tracker(ctx).on_check_suite(gh, event.data)


@router.register("status")
async def track_status(event: sansio.Event, gh: GitHubAPI, *, ctx: HandlerContext) -> None:
    if not _app_delivery(event.data) or not event.data.get("sha") or not event.data.get("state"):
        return
    await tracker(ctx).on_status(gh, event.data)
