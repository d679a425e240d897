"""Deploy progress: the dispatched workflow's runs and the deployment's statuses move a releasing
release on to released or failed."""

from __future__ import annotations

from gidgethub import routing, sansio
from gidgethub.abc import GitHubAPI

from bot.context import HandlerContext
from bot.release import Release
from bot.service import PullRef

router = routing.Router()

# A deployment status's states (deployment_status webhook): which end it, and how.
_DONE_OK = frozenset({"success"})
_DONE_FAILED = frozenset({"failure", "error", "inactive"})


def _ref(data: dict[str, object]) -> PullRef | None:
    installation = data.get("installation") or {}
    repository = data.get("repository") or {}
    if not isinstance(installation, dict) or "id" not in installation or not isinstance(repository, dict):
        return None
    return PullRef(repo=str(repository["full_name"]), pr=0, installation_id=int(installation["id"]))


@router.register("workflow_run", action="requested")
@router.register("workflow_run", action="in_progress")
@router.register("workflow_run", action="completed")
async def follow_workflow_run(event: sansio.Event, gh: GitHubAPI, *, ctx: HandlerContext) -> None:
    data = event.data
    run = data.get("workflow_run") or {}
    ref = _ref(data)
    if ref is None or run.get("event") != "workflow_dispatch":
        return  # only the runs the bot dispatches deploy a release
    path = str(run.get("path") or (data.get("workflow") or {}).get("path") or "")
    head_sha = run.get("head_sha")

    run_id = str(run.get("id")) if run.get("id") is not None else None

    def ours(release: Release) -> bool:
        kind, _, name = (release.deploy_target or "").partition(" ")
        if kind != "workflow" or path.rsplit("/", 1)[-1] != name:
            return False
        # Once the dispatch named its run, that run is the deploy, whatever commit the base branch had
        # moved on to; before that, a dispatched run of the merge commit.
        if release.deploy_id is not None:
            return release.deploy_id == run_id
        return release.merge_sha == head_sha

    done = event.data.get("action") == "completed"
    conclusion = run.get("conclusion")
    if done and run_id is not None:
        await ctx.releases.rollback_progress(
            ref,
            run_id=run_id,
            url=run.get("html_url"),
            ok=conclusion == "success",
            detail=f"the {run.get('name') or 'rollback'} workflow run ended {conclusion}",
            delivery=event.delivery_id,
        )
    await ctx.releases.deploy_progress(
        ref,
        merge_sha=head_sha,
        deploy_id=run_id,
        url=run.get("html_url"),
        done=done,
        ok=conclusion == "success",
        detail=f"the {run.get('name') or 'deploy'} workflow run ended {conclusion}" if done else "",
        delivery=event.delivery_id,
        match=ours,
    )


@router.register("deployment_status", action="created")
async def follow_deployment_status(event: sansio.Event, gh: GitHubAPI, *, ctx: HandlerContext) -> None:
    data = event.data
    status = data.get("deployment_status") or {}
    deployment = data.get("deployment") or {}
    ref = _ref(data)
    if ref is None or "id" not in deployment:
        return
    deployment_id = str(deployment["id"])
    state = str(status.get("state") or "")

    def ours(release: Release) -> bool:
        return (release.deploy_target or "").startswith("deployment ") and release.deploy_id == deployment_id

    done = state in _DONE_OK or state in _DONE_FAILED
    description = str(status.get("description") or "")
    await ctx.releases.deploy_progress(
        ref,
        merge_sha=deployment.get("sha"),
        deploy_id=deployment_id,
        url=status.get("log_url") or status.get("target_url"),
        done=done,
        ok=state in _DONE_OK,
        detail=f"the deployment ended {state}" + (f": {description}" if description else "") if done else "",
        delivery=event.delivery_id,
        match=ours,
    )
