"""Pull request events: the label requests or cancels a release; a push re-earns the verified SHA."""

from __future__ import annotations

from gidgethub import routing, sansio
from gidgethub.abc import GitHubAPI

from bot.context import HandlerContext
from bot.release import Source

from .common import is_bot, pull_ref

router = routing.Router()


@router.register("pull_request", action="labeled")
async def queue_release_on_label(event: sansio.Event, gh: GitHubAPI, *, ctx: HandlerContext) -> None:
    data = event.data
    ref = pull_ref(data, data["pull_request"]["number"])
    if ref is None or is_bot(data.get("sender")) or "label" not in data:
        return
    loaded = await ctx.releases.read.config(gh, ref.repo)
    if data["label"]["name"] != loaded.config.label:
        return
    await ctx.releases.ship(
        gh, ref, data["sender"]["login"], source=Source.LABEL, delivery=event.delivery_id, loaded=loaded
    )


@router.register("pull_request", action="unlabeled")
async def cancel_release_on_unlabel(event: sansio.Event, gh: GitHubAPI, *, ctx: HandlerContext) -> None:
    data = event.data
    ref = pull_ref(data, data["pull_request"]["number"])
    if ref is None or is_bot(data.get("sender")) or "label" not in data:
        return
    if await ctx.store.get_active_release(ref.repo, ref.pr) is None:
        return  # no release: no need to even read the config
    loaded = await ctx.releases.read.config(gh, ref.repo)
    if data["label"]["name"] != loaded.config.label:
        return
    login = data["sender"]["login"]
    await ctx.releases.cancel(
        gh, ref, login, source=Source.LABEL, delivery=event.delivery_id, reason=f"label removed by {login}"
    )


@router.register("pull_request", action="synchronize")
async def reverify_on_push(event: sansio.Event, gh: GitHubAPI, *, ctx: HandlerContext) -> None:
    data = event.data
    ref = pull_ref(data, data["pull_request"]["number"])
    if ref is None:
        return
    await ctx.releases.head_moved(
        gh, ref, data["pull_request"]["head"]["sha"], data["sender"]["login"], delivery=event.delivery_id
    )


@router.register("pull_request", action="closed")
async def cancel_on_close(event: sansio.Event, gh: GitHubAPI, *, ctx: HandlerContext) -> None:
    data = event.data
    ref = pull_ref(data, data["pull_request"]["number"])
    if ref is None or await ctx.store.get_active_release(ref.repo, ref.pr) is None:
        return
    merged = bool(data["pull_request"].get("merged"))
    await ctx.releases.closed(ref, data["sender"]["login"], merged=merged, delivery=event.delivery_id)
