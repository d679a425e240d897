"""State rendered into GitHub's documented JSON shapes, starting from the spec's example bodies.

Each shape begins as the example for its operation (tests/fixtures/github/rest-examples), retargeted
to the fake's URL and repository, with every field the fake has state for overridden.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any, TypeVar, cast

from tests.fakes._state import (
    JSON,
    FakeCheckRun,
    FakeCheckSuite,
    FakeComment,
    FakeHookDelivery,
    FakeInstallation,
    FakeIssue,
    FakePull,
    FakeReaction,
    FakeRepo,
    FakeStatus,
    FakeWorkflowRun,
    IssuedToken,
    State,
    fake_sha,
    git_blob_sha,
    iso,
)

EXAMPLE_API = "https://api.github.com"
EXAMPLE_REPO = "octocat/Hello-World"

_T = TypeVar("_T")


def _node_id(kind: str, number: int) -> str:
    return base64.b64encode(f"0:{kind}{number}".encode()).decode()


def _retarget(node: _T, replacements: Sequence[tuple[str, str]]) -> _T:
    """Replace substrings in every string of an example body (URLs that name the example repo)."""
    out: Any = node
    if isinstance(node, dict):
        out = {k: _retarget(v, replacements) for k, v in node.items()}
    elif isinstance(node, list):
        out = [_retarget(v, replacements) for v in node]
    elif isinstance(node, str):
        for old, new in replacements:
            out = out.replace(old, new)
    return cast(_T, out)


class Rendering(State):
    def _template(self, name: str, *path: str | int) -> JSON:
        """The example object `rest-examples/<name>.json` (at `path` inside it), on the fake's URL."""
        node = self.spec.example(name)
        for part in path:
            node = node[part]
        retargeted: JSON = _retarget(node, [(EXAMPLE_API, self.url)])
        return retargeted

    def _user_json(self, login: str) -> JSON:
        if login not in self._user_ids:
            self._user_ids[login] = self._next_id("user")
        user = self._template("issues/get-comment", "user")
        user = _retarget(user, [("/octocat", f"/{login}")])
        kind = "Bot" if login.endswith("[bot]") else "User"
        if login in self._org_logins:
            kind = "Organization"
        user.update(
            login=login,
            id=self._user_ids[login],
            node_id=_node_id("U", self._user_ids[login]),
            avatar_url=f"https://avatars.githubusercontent.com/u/{self._user_ids[login]}?v=4",
            gravatar_id="",
            type=kind,
            site_admin=False,
        )
        return user

    def _association(self, repo: FakeRepo, login: str) -> str:
        if login.lower() == repo.owner.lower():
            return "OWNER"
        if repo.permissions.get(login.lower(), "none") != "none":
            return "COLLABORATOR"
        return "NONE"

    def _repo_json(self, repo: FakeRepo, example: str, *path: str | int) -> JSON:
        node = self._template(example, *path)
        node = _retarget(node, [(EXAMPLE_REPO, repo.full_name)])
        for key in ("source", "parent", "template_repository", "organization"):
            node.pop(key, None)
        node.update(
            id=repo.id,
            node_id=_node_id("R", repo.id),
            name=repo.name,
            full_name=repo.full_name,
            owner=self._user_json(repo.owner),
            private=repo.private,
            fork=False,
            html_url=f"https://github.com/{repo.full_name}",
            url=f"{self.url}/repos/{repo.full_name}",
        )
        if "default_branch" in node:
            node["default_branch"] = repo.default_branch
        if "visibility" in node:
            node["visibility"] = "private" if repo.private else "public"
        if "language" in node or example == "repos/get":
            node["language"] = None
        return node

    def _app_json(self, app_id: int, slug: str | None = None) -> JSON:
        node = self._template("apps/get-authenticated")
        app = self.apps.get(app_id)
        if app is None:
            slug = slug or f"app-{app_id}"
            node.update(
                id=app_id,
                slug=slug,
                node_id=_node_id("A", app_id),
                name=slug,
                owner=self._user_json("github"),
                html_url=f"https://github.com/apps/{slug}",
            )
            node.pop("client_id", None)
            return node
        node.update(
            id=app.app_id,
            slug=app.slug,
            client_id=app.client_id,
            node_id=_node_id("A", app.app_id),
            owner=self._user_json(app.owner_login),
            name=app.name,
            html_url=f"https://github.com/apps/{app.slug}",
            permissions=dict(app.permissions),
            events=list(app.events),
        )
        return node

    def _installation_json(self, installation: FakeInstallation) -> JSON:
        node = self._template("apps/get-installation")
        app = self.apps[installation.app_id]
        account = self._user_json(installation.account_login)
        node.update(
            id=installation.installation_id,
            account=account,
            access_tokens_url=(f"{self.url}/app/installations/{installation.installation_id}/access_tokens"),
            repositories_url=f"{self.url}/installation/repositories",
            html_url=(
                f"https://github.com/organizations/{installation.account_login}/settings/"
                f"installations/{installation.installation_id}"
            ),
            app_id=app.app_id,
            app_slug=app.slug,
            target_id=account["id"],
            target_type=installation.account_type,
            permissions=dict(installation.permissions),
            events=list(app.events),
            single_file_name=None,
            repository_selection="all" if installation.repos is None else "selected",
            suspended_at=iso(self.now()) if installation.suspended else None,
            suspended_by=None,
        )
        for key in ("has_multiple_single_files", "single_file_paths"):
            node.pop(key, None)
        return node

    def _label_json(self, repo: FakeRepo, name: str) -> JSON:
        label = repo.labels[name.lower()]
        node = self._template("issues/list-labels-on-issue", 0)
        node.update(
            id=label["id"],
            node_id=_node_id("L", label["id"]),
            url=f"{self.url}/repos/{repo.full_name}/labels/{label['name']}",
            name=label["name"],
            description="",
            color=label["color"],
            default=False,
        )
        return node

    def _issue_json(self, issue: FakeIssue) -> JSON:
        repo = self._repo_state(issue.repo)
        node = self._template("issues/get.200.default")
        node = _retarget(node, [("/issues/1347", f"/issues/{issue.number}"), (EXAMPLE_REPO, repo.full_name)])
        node.update(
            id=issue.id,
            node_id=_node_id("I", issue.id),
            number=issue.number,
            state=issue.state,
            state_reason=None,
            title=issue.title,
            body=issue.body,
            user=self._user_json(issue.user_login),
            labels=[self._label_json(repo, name) for name in issue.labels],
            assignee=None,
            assignees=[],
            milestone=None,
            locked=False,
            active_lock_reason=None,
            comments=len(self._comments_of(issue)),
            created_at=iso(issue.created_at),
            updated_at=iso(issue.updated_at),
            closed_at=iso(issue.closed_at) if issue.closed_at else None,
            closed_by=None,
            author_association=self._association(repo, issue.user_login),
            pinned_comment=None,
        )
        if issue.is_pull:
            pull = self._pull_state(repo.full_name, issue.number)
            html = f"https://github.com/{repo.full_name}/pull/{issue.number}"
            node["html_url"] = html
            node["pull_request"] = {
                "url": f"{self.url}/repos/{repo.full_name}/pulls/{issue.number}",
                "html_url": html,
                "diff_url": f"{html}.diff",
                "patch_url": f"{html}.patch",
                "merged_at": iso(pull.merged_at) if pull.merged_at else None,
            }
        else:
            node.pop("pull_request", None)
        return node

    def _comment_json(self, comment: FakeComment) -> JSON:
        repo = self._repo_state(comment.repo)
        issue = self._issue_state(comment.repo, comment.issue_number)
        kind = "pull" if issue.is_pull else "issues"
        node = self._template("issues/get-comment")
        node.update(
            id=comment.id,
            node_id=_node_id("IC", comment.id),
            url=f"{self.url}/repos/{repo.full_name}/issues/comments/{comment.id}",
            html_url=(f"https://github.com/{repo.full_name}/{kind}/{comment.issue_number}#issuecomment-{comment.id}"),
            body=comment.body,
            user=self._user_json(comment.user_login),
            created_at=iso(comment.created_at),
            updated_at=iso(comment.updated_at),
            issue_url=f"{self.url}/repos/{repo.full_name}/issues/{comment.issue_number}",
            author_association=self._association(repo, comment.user_login),
        )
        return node

    def _reaction_json(self, reaction: FakeReaction) -> JSON:
        node = self._template("reactions/create-for-issue-comment")
        node.update(
            id=reaction.id,
            node_id=_node_id("RE", reaction.id),
            user=self._user_json(reaction.user_login),
            content=reaction.content,
            created_at=iso(reaction.created_at),
        )
        return node

    def _mergeable_state(self, repo: FakeRepo, pull: FakePull) -> str:
        if pull.merged:
            return "unknown"
        if pull.mergeable is None:
            return "unknown"
        if not pull.mergeable:
            return "dirty"
        if pull.draft:
            return "draft"
        return "blocked" if self._unmet_checks(repo, pull) else "clean"

    def _pull_json(self, pull: FakePull, *, full: bool) -> JSON:
        repo = self._repo_state(pull.repo)
        issue = self._issue_state(pull.repo, pull.number)
        node = self._template("pulls/get") if full else self._template("pulls/list", 0)
        node = _retarget(
            node,
            [
                ("/pulls/1347", f"/pulls/{pull.number}"),
                ("/pull/1347", f"/pull/{pull.number}"),
                ("/issues/1347", f"/issues/{pull.number}"),
                ("6dcb09b5b57875f334f61aebed695e2e4193db5e", pull.head_sha),
                (EXAMPLE_REPO, repo.full_name),
            ],
        )
        repo_json = self._repo_json(repo, "pulls/get", "head", "repo")
        owner = self._user_json(repo.owner)
        base_sha = repo.branches.get(pull.base, fake_sha(repo.full_name, pull.base))
        node.update(
            id=pull.id,
            node_id=_node_id("PR", pull.id),
            number=pull.number,
            state=issue.state,
            locked=False,
            active_lock_reason=None,
            title=issue.title,
            user=self._user_json(issue.user_login),
            body=issue.body,
            labels=[self._label_json(repo, name) for name in issue.labels],
            milestone=None,
            created_at=iso(issue.created_at),
            updated_at=iso(issue.updated_at),
            closed_at=iso(issue.closed_at) if issue.closed_at else None,
            merged_at=iso(pull.merged_at) if pull.merged_at else None,
            merge_commit_sha=pull.merge_commit_sha,
            assignee=None,
            assignees=[],
            requested_reviewers=[],
            requested_teams=[],
            head={
                "label": f"{repo.owner}:{pull.head_ref}",
                "ref": pull.head_ref,
                "sha": pull.head_sha,
                "user": owner,
                "repo": repo_json,
            },
            base={
                "label": f"{repo.owner}:{pull.base}",
                "ref": pull.base,
                "sha": base_sha,
                "user": owner,
                "repo": repo_json,
            },
            author_association=self._association(repo, issue.user_login),
            auto_merge=None,
            draft=pull.draft,
        )
        if full:
            node.update(
                merged=pull.merged,
                mergeable=None if pull.merged else pull.mergeable,
                rebaseable=None if pull.merged else pull.mergeable,
                mergeable_state=self._mergeable_state(repo, pull),
                merged_by=self._user_json(pull.merged_by) if pull.merged_by else None,
                comments=len(self._comments_of(issue)),
                review_comments=0,
                maintainer_can_modify=False,
                commits=len(pull.commits),
                additions=10 * len(pull.files),
                deletions=2 * len(pull.files),
                changed_files=len(pull.files),
            )
        return node

    def _check_run_json(self, run: FakeCheckRun) -> JSON:
        repo = self._repo_state(run.repo)
        node = self._template("checks/get")
        output = {
            "title": run.output.get("title"),
            "summary": run.output.get("summary"),
            "text": run.output.get("text"),
            "annotations_count": len(run.output.get("annotations", [])),
            "annotations_url": f"{self.url}/repos/{repo.full_name}/check-runs/{run.id}/annotations",
        }
        pulls = [
            self._pull_minimal(repo, p)
            for p in self.pulls.values()
            if p.repo == repo.full_name and p.head_sha == run.head_sha and not p.merged
        ]
        node.update(
            id=run.id,
            head_sha=run.head_sha,
            node_id=_node_id("CR", run.id),
            external_id=run.external_id or "",
            url=f"{self.url}/repos/{repo.full_name}/check-runs/{run.id}",
            html_url=f"https://github.com/{repo.full_name}/runs/{run.id}",
            details_url=run.details_url,
            status=run.status,
            conclusion=run.conclusion,
            started_at=iso(run.started_at) if run.started_at else None,
            completed_at=iso(run.completed_at) if run.completed_at else None,
            output=output,
            name=run.name,
            check_suite={"id": run.check_suite_id},
            app=self._app_json(run.app_id, run.app_slug),
            pull_requests=pulls,
        )
        return node

    def _pull_minimal(self, repo: FakeRepo, pull: FakePull) -> JSON:
        small_repo = {"id": repo.id, "url": f"{self.url}/repos/{repo.full_name}", "name": repo.name}
        return {
            "id": pull.id,
            "number": pull.number,
            "url": f"{self.url}/repos/{repo.full_name}/pulls/{pull.number}",
            "head": {"ref": pull.head_ref, "sha": pull.head_sha, "repo": small_repo},
            "base": {
                "ref": pull.base,
                "sha": repo.branches.get(pull.base, ""),
                "repo": small_repo,
            },
        }

    def _check_suite_json(self, suite: FakeCheckSuite) -> JSON:
        repo = self._repo_state(suite.repo)
        runs = [r for r in self.check_runs.values() if r.check_suite_id == suite.id]
        if runs and all(r.status == "completed" for r in runs):
            status = "completed"
            order = ["action_required", "cancelled", "timed_out", "failure", "neutral", "skipped"]
            conclusions = {r.conclusion for r in runs}
            conclusion = next((c for c in order if c in conclusions), "success")
        else:
            status, conclusion = ("in_progress" if runs else "queued"), None
        node = self._template("checks/list-suites-for-ref", "check_suites", 0)
        node.update(
            id=suite.id,
            node_id=_node_id("CS", suite.id),
            head_branch=suite.head_branch,
            head_sha=suite.head_sha,
            status=status,
            conclusion=conclusion,
            url=f"{self.url}/repos/{repo.full_name}/check-suites/{suite.id}",
            before=None,
            after=suite.head_sha,
            pull_requests=[],
            app=self._app_json(suite.app_id, suite.app_slug),
            repository=self._repo_json(repo, "checks/list-suites-for-ref", "check_suites", 0, "repository"),
            created_at=iso(suite.created_at),
            updated_at=iso(suite.created_at),
            latest_check_runs_count=len(runs),
            check_runs_url=f"{self.url}/repos/{repo.full_name}/check-suites/{suite.id}/check-runs",
        )
        node["head_commit"]["id"] = suite.head_sha
        return node

    def _status_json(self, status: FakeStatus, *, simple: bool = False) -> JSON:
        repo = self._repo_state(status.repo)
        if simple:
            node = self._template("repos/get-combined-status-for-ref", "statuses", 0)
        else:
            node = self._template("repos/list-commit-statuses-for-ref", 0)
        node.update(
            url=f"{self.url}/repos/{repo.full_name}/statuses/{status.sha}",
            avatar_url=None,
            id=status.id,
            node_id=_node_id("SC", status.id),
            state=status.state,
            description=status.description,
            target_url=status.target_url,
            context=status.context,
            created_at=iso(status.created_at),
            updated_at=iso(status.created_at),
        )
        if not simple:
            node["creator"] = self._user_json(status.creator)
        return node

    def _protection_checks(self, repo: FakeRepo, branch: str) -> JSON:
        protection = repo.protection[branch]
        base = f"{self.url}/repos/{repo.full_name}/branches/{branch}/protection"
        return {
            "url": f"{base}/required_status_checks",
            "strict": protection["strict"],
            "contexts": list(protection["contexts"]),
            "contexts_url": f"{base}/required_status_checks/contexts",
            "checks": [{"context": c, "app_id": None} for c in protection["contexts"]],
        }

    def _content_json(self, repo: FakeRepo, ref: str, path: str, data: bytes) -> JSON:
        node = self._template("repos/get-content.200.response-if-content-is-a-file")
        sha = git_blob_sha(data)
        encoded = base64.b64encode(data).decode()
        wrapped = "\n".join(encoded[i : i + 60] for i in range(0, len(encoded), 60))
        api = f"{self.url}/repos/{repo.full_name}"
        html = f"https://github.com/{repo.full_name}/blob/{ref}/{path}"
        node.update(
            type="file",
            encoding="base64",
            size=len(data),
            name=path.rsplit("/", 1)[-1],
            path=path,
            content=wrapped + "\n" if wrapped else "",
            sha=sha,
            url=f"{api}/contents/{path}?ref={ref}",
            git_url=f"{api}/git/blobs/{sha}",
            html_url=html,
            download_url=f"https://raw.githubusercontent.com/{repo.full_name}/{ref}/{path}",
        )
        node["_links"] = {"git": node["git_url"], "self": node["url"], "html": html}
        return node

    def _dir_entry_json(self, repo: FakeRepo, ref: str, path: str, data: bytes | None) -> JSON:
        node = self._template("repos/get-content.200.response-if-content-is-a-directory", 0)
        api = f"{self.url}/repos/{repo.full_name}"
        sha = git_blob_sha(data) if data is not None else fake_sha("tree", path)
        html = f"https://github.com/{repo.full_name}/{'blob' if data is not None else 'tree'}"
        node.update(
            type="file" if data is not None else "dir",
            size=len(data) if data is not None else 0,
            name=path.rsplit("/", 1)[-1],
            path=path,
            sha=sha,
            url=f"{api}/contents/{path}?ref={ref}",
            git_url=f"{api}/git/{'blobs' if data is not None else 'trees'}/{sha}",
            html_url=f"{html}/{ref}/{path}",
            download_url=(
                f"https://raw.githubusercontent.com/{repo.full_name}/{ref}/{path}" if data is not None else None
            ),
        )
        node["_links"] = {"git": node["git_url"], "self": node["url"], "html": node["html_url"]}
        return node

    def _workflow_run_json(self, run: FakeWorkflowRun) -> JSON:
        repo = self._repo_state(run.repo)
        node = self._template("actions/get-workflow-run")
        node = _retarget(
            node,
            [
                ("/runs/30433642", f"/runs/{run.id}"),
                ("octo-org/octo-repo", repo.full_name),
                (EXAMPLE_REPO, repo.full_name),
            ],
        )
        node.update(
            id=run.id,
            name=run.name,
            node_id=_node_id("WFR", run.id),
            head_branch=run.head_branch,
            head_sha=run.head_sha,
            path=f".github/workflows/{run.name.lower()}.yml",
            run_number=run.run_number,
            run_attempt=run.run_attempt,
            event=run.event,
            display_title=run.name,
            status=run.status,
            conclusion=run.conclusion,
            workflow_id=run.workflow_id,
            pull_requests=[],
            created_at=iso(run.created_at),
            updated_at=iso(run.updated_at),
            run_started_at=iso(run.created_at),
            repository=self._repo_json(repo, "actions/get-workflow-run", "repository"),
            head_repository=self._repo_json(repo, "actions/get-workflow-run", "head_repository"),
            referenced_workflows=[],
        )
        node.pop("previous_attempt_url", None)
        node["head_commit"]["id"] = run.head_sha
        return node

    def _delivery_json(self, delivery: FakeHookDelivery, *, full: bool) -> JSON:
        if full:
            node = self._template("apps/get-webhook-delivery")
        else:
            node = self._template("apps/list-webhook-deliveries", 0)
        ok = 200 <= delivery.status_code < 300
        node.update(
            id=delivery.id,
            guid=delivery.guid,
            delivered_at=iso(delivery.delivered_at),
            redelivery=delivery.redelivery,
            duration=delivery.duration,
            status="OK"
            if ok
            else (
                "Invalid HTTP Response: 0"
                if not delivery.status_code
                else f"Invalid HTTP Response: {delivery.status_code}"
            ),
            status_code=delivery.status_code,
            event=delivery.event,
            action=delivery.action,
            installation_id=delivery.installation_id,
            repository_id=delivery.repository_id,
        )
        node.pop("throttled_at", None)
        if full:
            node["request"]["headers"]["X-GitHub-Delivery"] = delivery.guid
            node["request"]["headers"]["X-GitHub-Event"] = delivery.event
        return node

    def _token_json(self, token: IssuedToken) -> JSON:
        node = self._template("apps/create-installation-access-token")
        installation = self.installations[token.installation_id]
        node.update(
            token=token.token,
            expires_at=iso(token.expires_at),
            permissions=dict(token.permissions),
            repository_selection=("all" if installation.repos is None and token.repos is None else "selected"),
        )
        for key in ("has_multiple_single_files", "single_file_paths", "single_file"):
            node.pop(key, None)
        if token.repos is None:
            node.pop("repositories", None)
        else:
            template = "apps/create-installation-access-token"
            node["repositories"] = [
                self._repo_json(self.repos[name], template, "repositories", 0) for name in sorted(token.repos)
            ]
        return node
