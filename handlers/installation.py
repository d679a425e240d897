"""Keep the App's installations and their repositories in the store, as GitHub reports them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from gidgethub import routing, sansio
from gidgethub.abc import GitHubAPI

from bot.context import HandlerContext
from bot.store import Installation, VersionConflict

router = routing.Router()

_MAX_CONFLICT_RETRIES = 5


def installation_from_payload(data: dict[str, Any]) -> Installation:
    inst = data["installation"]
    account = inst.get("account") or {}
    return Installation(
        id=int(inst["id"]),
        account_login=account.get("login", ""),
        account_type=account.get("type", "User"),
        repository_selection=inst.get("repository_selection", "selected"),
        suspended=inst.get("suspended_at") is not None,
        permissions=dict(inst.get("permissions") or {}),
        events=tuple(inst.get("events") or ()),
    )


async def _update(
    ctx: HandlerContext, data: dict[str, Any], change: Callable[[Installation], Installation]
) -> Installation:
    """Read-modify-write with optimistic versioning: another event may have saved in between."""
    for _ in range(_MAX_CONFLICT_RETRIES):
        current = await ctx.store.get_installation(int(data["installation"]["id"]))
        if current is None:
            current = installation_from_payload(data)
        try:
            return await ctx.store.save_installation(replace(change(current), updated_at=ctx.clock()))
        except VersionConflict:
            continue
    raise VersionConflict(f"installation {data['installation']['id']} kept changing")


def _names(repos: list[dict[str, Any]] | None) -> set[str]:
    return {r["full_name"] for r in repos or ()}


@router.register("installation", action="created")
@router.register("installation", action="new_permissions_accepted")
@router.register("installation", action="unsuspend")
@router.register("installation", action="suspend")
async def record_installation(event: sansio.Event, gh: GitHubAPI, *, ctx: HandlerContext) -> None:
    data = event.data
    fresh = installation_from_payload(data)

    def apply(current: Installation) -> Installation:
        repos = set(current.repositories)
        if "repositories" in data:  # only `created` lists them
            repos = _names(data["repositories"])
        return replace(
            fresh,
            repositories=tuple(sorted(repos)),
            version=current.version,
        )

    saved = await _update(ctx, data, apply)
    ctx.log.info(
        "installation %s",
        event.data["action"],
        extra={
            "installation": saved.id,
            "account": saved.account_login,
            "repos": len(saved.repositories),
        },
    )


@router.register("installation", action="deleted")
async def forget_installation(event: sansio.Event, gh: GitHubAPI, *, ctx: HandlerContext) -> None:
    installation_id = int(event.data["installation"]["id"])
    await ctx.store.delete_installation(installation_id)
    ctx.log.info("installation deleted", extra={"installation": installation_id})


@router.register("installation_repositories")
async def update_repositories(event: sansio.Event, gh: GitHubAPI, *, ctx: HandlerContext) -> None:
    data = event.data
    added, removed = (
        _names(data.get("repositories_added")),
        _names(data.get("repositories_removed")),
    )

    def apply(current: Installation) -> Installation:
        repos = (set(current.repositories) | added) - removed
        return replace(
            current,
            repositories=tuple(sorted(repos)),
            repository_selection=data.get("repository_selection", current.repository_selection),
        )

    saved = await _update(ctx, data, apply)
    ctx.log.info(
        "installation repositories %s",
        data["action"],
        extra={"installation": saved.id, "added": len(added), "removed": len(removed)},
    )
