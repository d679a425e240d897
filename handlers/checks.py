"""Check and status events: re-evaluate only the releases whose head SHA they concern."""

from __future__ import annotations

from gidgethub import routing, sansio
from gidgethub.abc import GitHubAPI

from bot.context import HandlerContext

router = routing.Router()


async def _reevaluate(event: sansio.Event, gh: GitHubAPI, ctx: HandlerContext, head_sha: str | None) -> None:
    data = event.data
    installation = (data.get("installation") or {}).get("id")
    if not head_sha or installation is None or "repository" not in data:
        return
    await ctx.releases.checks_changed(
        gh, data["repository"]["full_name"], int(installation), head_sha, delivery=event.delivery_id
    )


def _own(app: dict[str, object] | None, ctx: HandlerContext) -> bool:
    # Our own `Release` check run changing must not re-trigger an evaluation (and another edit).
    return app is not None and app.get("id") == ctx.settings.credentials.app_id


@router.register("check_suite", action="completed")
async def reevaluate_on_check_suite(event: sansio.Event, gh: GitHubAPI, *, ctx: HandlerContext) -> None:
    suite = event.data.get("check_suite") or {}
    if _own(suite.get("app"), ctx):
        return
    await _reevaluate(event, gh, ctx, suite.get("head_sha"))


@router.register("check_run", action="completed")
@router.register("check_run", action="created")
async def reevaluate_on_check_run(event: sansio.Event, gh: GitHubAPI, *, ctx: HandlerContext) -> None:
    run = event.data.get("check_run") or {}
    if _own(run.get("app"), ctx):
        return
    await _reevaluate(event, gh, ctx, run.get("head_sha"))


@router.register("status")
async def reevaluate_on_status(event: sansio.Event, gh: GitHubAPI, *, ctx: HandlerContext) -> None:
    await _reevaluate(event, gh, ctx, event.data.get("sha"))
