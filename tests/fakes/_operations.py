"""The fake's answer to each operation of the description: one `_op_<operationId>` method each.

Handlers get a validated `Call`, change state, and return a `Reply` (or a `Page` that the server
slices and links); they raise `GitHubError` to answer an error as GitHub does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

from tests.fakes._render import EXAMPLE_REPO, Rendering, _node_id, _retarget
from tests.fakes._spec import Operation
from tests.fakes._state import (
    JSON,
    PERMISSION_ROLES,
    FakeApp,
    FakeCheckRun,
    FakeComment,
    FakeHookDelivery,
    FakeInstallation,
    FakeIssue,
    FakePull,
    FakeReaction,
    FakeRepo,
    FakeStatus,
    FakeWorkflowRun,
    Principal,
    fake_sha,
    iso,
)

API_DOCS = "https://docs.github.com/rest"
_RESOURCE_NAMES = {
    "actions": "Workflow",
    "apps": "Integration",
    "checks": "CheckRun",
    "issues": "Issue",
    "pulls": "PullRequest",
    "reactions": "Reaction",
    "repos": "Repository",
}


class GitHubError(Exception):
    """Raised by a handler to answer an error the way GitHub does."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        errors: list[JSON] | None = None,
        headers: dict[str, str] | None = None,
        why: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors
        self.headers = headers or {}
        self.why = why

    def body(self) -> JSON:
        body: JSON = {"message": self.message, "documentation_url": API_DOCS}
        if self.errors is not None:
            body["errors"] = self.errors
        if self.why:
            body["fake_github_error"] = self.why
        body["status"] = str(self.status)
        return body


def _not_found(why: str) -> GitHubError:
    return GitHubError(404, "Not Found", why=why)


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Page:
    """A list answer: sliced by `per_page`/`page`, with a Link header."""

    items: list[Any]
    key: str | None = None  # the list lives under this key, next to `total_count`


@dataclass
class Call:
    op: Operation
    params: dict[str, str]
    query: dict[str, str]
    body: Any
    principal: Principal
    request: web.Request


class Operations(Rendering):
    @staticmethod
    def _field_error(op: Operation, field_name: str | None, message: str, code: str = "invalid") -> JSON:
        error: JSON = {
            "resource": _RESOURCE_NAMES.get(op.operation_id.split("/")[0], "Resource"),
            "code": code,
            "message": message,
        }
        if field_name:
            error["field"] = field_name
        return error

    def _app_of(self, call: Call) -> FakeApp:
        assert call.principal.app is not None
        return call.principal.app

    def _installation_of_app(self, call: Call) -> FakeInstallation:
        installation = self.installations.get(int(call.params["installation_id"]))
        if installation is None or installation.app_id != self._app_of(call).app_id:
            raise _not_found(f"no installation {call.params['installation_id']} of this App")
        return installation

    def _repo(self, call: Call) -> FakeRepo:
        full_name = f"{call.params['owner']}/{call.params['repo']}"
        repo = self.repos.get(full_name.lower())
        if repo is None:
            raise _not_found(f"no repository {full_name} in the fake")
        if call.principal.kind == "installation" and not self._covers(call.principal, repo):
            raise _not_found(f"installation does not cover {full_name}")
        return repo

    def _issue(self, call: Call, repo: FakeRepo, key: str = "issue_number") -> FakeIssue:
        issue = self.issues.get((repo.full_name.lower(), int(call.params[key])))
        if issue is None:
            raise _not_found(f"no issue {repo.full_name}#{call.params[key]}")
        return issue

    def _pull(self, call: Call, repo: FakeRepo) -> FakePull:
        pull = self.pulls.get((repo.full_name.lower(), int(call.params["pull_number"])))
        if pull is None:
            raise _not_found(f"no pull request {repo.full_name}#{call.params['pull_number']}")
        return pull

    def _comment(self, call: Call, repo: FakeRepo) -> FakeComment:
        comment = self.comments.get(int(call.params["comment_id"]))
        if comment is None or comment.repo.lower() != repo.full_name.lower():
            raise _not_found(f"no issue comment {call.params['comment_id']} in {repo.full_name}")
        return comment

    def _actor(self, call: Call) -> str:
        app = call.principal.app
        return app.bot_login if app is not None else "octocat"

    def _delivery(self, call: Call) -> FakeHookDelivery:
        delivery = self.hook_deliveries.get(int(call.params["delivery_id"]))
        if delivery is None:
            raise _not_found(f"no hook delivery {call.params['delivery_id']}")
        return delivery

    def _compare(self, call: Call, base: str, head: str) -> Reply:
        repo = self._repo(call)
        base_sha = self._resolve_ref(repo, base)
        head_sha = self._resolve_ref(repo, head)
        if base_sha is None or head_sha is None:
            raise _not_found(f"cannot resolve {base}...{head} in {repo.full_name}")
        found = repo.comparisons.get((base, head))
        if found is None:
            same = base_sha == head_sha
            found = {"status": "identical" if same else "ahead", "ahead_by": 0 if same else 1, "behind_by": 0}
        node = self._template("repos/compare-commits")
        node = _retarget(node, [(EXAMPLE_REPO, repo.full_name), ("master...topic", f"{base}...{head}")])
        node.update(found)
        node["total_commits"] = found["ahead_by"]
        commit = node["commits"][0] if node["commits"] else None
        commits = []
        if commit is not None and found["ahead_by"]:
            commit = dict(commit, sha=head_sha)
            commit["url"] = f"{self.url}/repos/{repo.full_name}/commits/{head_sha}"
            commits.append(commit)
        node["commits"] = commits
        node["base_commit"]["sha"] = base_sha
        node["merge_base_commit"]["sha"] = base_sha
        node["files"] = []
        return Reply(200, node)

    @staticmethod
    def _label_names(body: Any) -> list[str]:
        items = body.get("labels", []) if isinstance(body, dict) else []
        return [item["name"] if isinstance(item, dict) else item for item in items]

    @staticmethod
    def _parse_time(value: str | None) -> datetime | None:
        return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None

    def _check_run(self, call: Call, repo: FakeRepo) -> FakeCheckRun:
        run = self.check_runs.get(int(call.params["check_run_id"]))
        if run is None or run.repo != repo.full_name:
            raise _not_found(f"no check run {call.params['check_run_id']} in {repo.full_name}")
        return run

    def _workflow_run(self, call: Call, repo: FakeRepo) -> FakeWorkflowRun:
        run = self.workflow_runs.get(int(call.params["run_id"]))
        if run is None or run.repo != repo.full_name:
            raise _not_found(f"no workflow run {call.params['run_id']} in {repo.full_name}")
        return run

    def _op_apps_get_authenticated(self, call: Call) -> Reply:
        return Reply(200, self._app_json(self._app_of(call).app_id))

    def _op_apps_list_installations(self, call: Call) -> Page:
        app = self._app_of(call)
        found = [i for i in self.installations.values() if i.app_id == app.app_id]
        return Page([self._installation_json(i) for i in found])

    def _op_apps_get_installation(self, call: Call) -> Reply:
        return Reply(200, self._installation_json(self._installation_of_app(call)))

    def _op_apps_create_installation_access_token(self, call: Call) -> Reply:
        installation = self._installation_of_app(call)
        if installation.suspended:
            raise GitHubError(403, "This installation has been suspended")
        body = call.body or {}
        available = self._installation_repos(installation)
        by_name = {r.name.lower(): r for r in available}
        by_id = {r.id: r for r in available}
        chosen: set[str] | None = None
        if "repositories" in body or "repository_ids" in body:
            chosen = set()
            for name in body.get("repositories", []):
                if name.lower() not in by_name:
                    raise GitHubError(
                        422,
                        "There is at least one repository that does not exist or is not "
                        "accessible to the parent installation.",
                    )
                chosen.add(by_name[name.lower()].full_name.lower())
            for repo_id in body.get("repository_ids", []):
                if repo_id not in by_id:
                    raise GitHubError(
                        422,
                        "There is at least one repository that does not exist or is not "
                        "accessible to the parent installation.",
                    )
                chosen.add(by_id[repo_id].full_name.lower())
        permissions = dict(installation.permissions)
        if "permissions" in body:
            levels = {"read": 1, "write": 2, "admin": 3}
            for name, level in body["permissions"].items():
                granted = installation.permissions.get(name)
                if granted is None or levels[level] > levels.get(granted, 0):
                    raise GitHubError(
                        422,
                        "The permissions requested are not granted to this installation.",
                    )
            permissions = dict(body["permissions"])
        token = self._issue_token(installation, frozenset(chosen) if chosen is not None else None, permissions)
        return Reply(201, self._token_json(token))

    def _op_apps_get_repo_installation(self, call: Call) -> Reply:
        repo = self._repo(call)
        app = self._app_of(call)
        for installation in self.installations.values():
            if installation.app_id == app.app_id and self._covers(
                Principal("installation", installation=installation), repo
            ):
                return Reply(200, self._installation_json(installation))
        raise _not_found(f"App {app.app_id} is not installed on {repo.full_name}")

    def _op_apps_list_repos_accessible_to_installation(self, call: Call) -> Page:
        assert call.principal.installation is not None
        repos = [r for r in self._installation_repos(call.principal.installation) if self._covers(call.principal, r)]
        template = "apps/list-repos-accessible-to-installation"
        return Page([self._repo_json(r, template, "repositories", 0) for r in repos], key="repositories")

    def _user_app(self, call: Call) -> tuple[str, FakeApp]:
        """The login and the App behind a user access token (these endpoints serve no other token)."""
        login = call.principal.user
        if login is None:
            raise GitHubError(403, "Resource not accessible by integration")
        if call.principal.app is None:
            # An OAuth App's token (here: a client registered without an App) is refused, as documented.
            raise GitHubError(
                403,
                "You must authenticate with an access token authorized to a GitHub App in order to list installations",
            )
        return login, call.principal.app

    @staticmethod
    def _user_reaches(login: str, repo: FakeRepo) -> bool:
        """ "Explicit permission": the person owns the repository or has a role on it (`set_permission`)."""
        return login.lower() == repo.owner.lower() or repo.permissions.get(login.lower(), "none") != "none"

    def _op_apps_list_installations_for_authenticated_user(self, call: Call) -> Page:
        login, app = self._user_app(call)
        found = [
            i
            for i in self.installations.values()
            if i.app_id == app.app_id and any(self._user_reaches(login, r) for r in self._installation_repos(i))
        ]
        return Page([self._installation_json(i) for i in found], key="installations")

    def _op_apps_list_installation_repos_for_authenticated_user(self, call: Call) -> Page:
        login, app = self._user_app(call)
        installation = self.installations.get(int(call.params["installation_id"]))
        repos = (
            [r for r in self._installation_repos(installation) if self._user_reaches(login, r)]
            if installation is not None and installation.app_id == app.app_id
            else []
        )
        if not repos:  # GitHub does not tell an installation the person cannot reach from a missing one
            raise _not_found(f"installation {call.params['installation_id']} has no repository {login} can access")
        template = "apps/list-installation-repos-for-authenticated-user"
        nodes = []
        for repo in repos:
            node = self._repo_json(repo, template, "repositories", 0)
            role = "admin" if login.lower() == repo.owner.lower() else repo.permissions[login.lower()]
            node["permissions"] = {
                "admin": role == "admin",
                "maintain": role in ("admin", "maintain"),
                "push": role in ("admin", "maintain", "write"),
                "triage": role in ("admin", "maintain", "write", "triage"),
                "pull": True,
            }
            nodes.append(node)
        return Page(nodes, key="repositories")

    def _op_apps_list_webhook_deliveries(self, call: Call) -> Reply:
        per_page = int(call.query.get("per_page", "30"))
        deliveries = sorted(self.hook_deliveries.values(), key=lambda d: d.id, reverse=True)
        wanted = call.query.get("status")
        if wanted == "success":
            deliveries = [d for d in deliveries if 200 <= d.status_code < 300]
        elif wanted == "failure":
            deliveries = [d for d in deliveries if not 200 <= d.status_code < 300]
        cursor = call.query.get("cursor")
        if cursor:
            match = re.fullmatch(r"v1_([0-9]+)", cursor)
            if match is None:
                raise GitHubError(400, "Bad Request", why=f"cursor {cursor!r} was not issued here")
            deliveries = [d for d in deliveries if d.id < int(match.group(1))]
        chunk = deliveries[:per_page]
        headers = {}
        if len(deliveries) > per_page:
            next_url = call.request.url.update_query(cursor=f"v1_{chunk[-1].id}")
            headers["Link"] = f'<{next_url}>; rel="next"'
        return Reply(200, [self._delivery_json(d, full=False) for d in chunk], headers)

    def _op_apps_get_webhook_delivery(self, call: Call) -> Reply:
        return Reply(200, self._delivery_json(self._delivery(call), full=True))

    def _op_apps_redeliver_webhook_delivery(self, call: Call) -> Reply:
        delivery = self._delivery(call)
        self.redeliveries.append(delivery.id)
        self.add_hook_delivery(
            event=delivery.event,
            action=delivery.action,
            status_code=self.redelivery_status_code,
            guid=delivery.guid,
            installation_id=delivery.installation_id,
            repository_id=delivery.repository_id,
            redelivery=True,
        )
        return Reply(202, {})

    def _op_apps_create_from_manifest(self, call: Call) -> Reply:
        code = call.params["code"]
        found = self._manifest_codes.pop(code, None)
        if found is None:
            raise _not_found(f"manifest code {code!r} unknown or already used")
        if found["expires"] <= self.now():
            raise _not_found(f"manifest code {code!r} expired (codes work for an hour)")
        extra: JSON = {}
        if found["permissions"] is not None:
            extra["permissions"] = found["permissions"]
        if found["events"] is not None:
            extra["events"] = found["events"]
        app = self.add_app(
            found["app_id"],
            found["pem"],
            slug=found["slug"],
            name=found["name"],
            owner_login=found["owner_login"],
            **extra,
        )
        app.client_id = found["client_id"]
        if found["manifest"] is not None:
            self.manifests[app.app_id] = found["manifest"]
        node = self._template("apps/create-from-manifest")
        node.update(self._app_json(app.app_id))
        node.update(
            client_id=found["client_id"],
            client_secret=found["client_secret"],
            webhook_secret=found["webhook_secret"],
            pem=found["pem"],
        )
        return Reply(201, node)

    def _op_rate_limit_get(self, call: Call) -> Reply:
        bucket = self._bucket(call.principal)
        node = self._template("rate-limit/get")
        core = {
            "limit": bucket.limit,
            "used": bucket.used,
            "remaining": bucket.remaining,
            "reset": bucket.reset,
        }
        node["resources"]["core"] = core
        node["rate"] = dict(core)
        return Reply(200, node)

    def _op_users_get_authenticated(self, call: Call) -> Reply:
        login = call.principal.user
        if login is None:  # an installation token: the operation is not enabled for GitHub Apps
            raise GitHubError(403, "Resource not accessible by integration")
        user = self._user_json(login)
        # The public profile (a GitHub App's user token without account permissions sees no private
        # fields), starting from GitHub's example, with the person's own details left empty.
        node = self._template("users/get-authenticated.200.response-with-public-profile-information")
        node = _retarget(node, [("/octocat", f"/{login}")])
        node.update({key: user[key] for key in ("login", "id", "node_id", "avatar_url", "gravatar_id", "type")})
        node.update(
            user_view_type="public",
            html_url=f"https://github.com/{login}",
            site_admin=False,
            name=None,
            company=None,
            blog="",
            location=None,
            email=None,
            hireable=None,
            bio=None,
            twitter_username=None,
            public_repos=0,
            public_gists=0,
            followers=0,
            following=0,
        )
        return Reply(200, node)

    def _op_repos_get(self, call: Call) -> Reply:
        return Reply(200, self._repo_json(self._repo(call), "repos/get"))

    def _op_repos_get_branch(self, call: Call) -> Reply:
        repo = self._repo(call)
        branch = call.params["branch"]
        sha = repo.branches.get(branch)
        if sha is None:
            raise GitHubError(404, "Branch not found")
        node = self._template("repos/get-branch")
        node = _retarget(node, [(EXAMPLE_REPO, repo.full_name)])
        commit = node["commit"]
        commit.update(
            sha=sha,
            node_id=_node_id("C", int(sha[:8], 16)),
            url=f"{self.url}/repos/{repo.full_name}/commits/{sha}",
            html_url=f"https://github.com/{repo.full_name}/commit/{sha}",
            parents=[],
        )
        protected = branch in repo.protection
        node.update(
            name=branch,
            protected=protected,
            protection_url=f"{self.url}/repos/{repo.full_name}/branches/{branch}/protection",
        )
        node["_links"] = {
            "self": f"{self.url}/repos/{repo.full_name}/branches/{branch}",
            "html": f"https://github.com/{repo.full_name}/tree/{branch}",
        }
        contexts = repo.protection.get(branch, {}).get("contexts", [])
        node["protection"] = {
            "enabled": protected,
            "required_status_checks": {
                "enforcement_level": "non_admins" if protected else "off",
                "contexts": list(contexts),
                "checks": [{"context": c, "app_id": None} for c in contexts],
            },
        }
        return Reply(200, node)

    def _op_repos_get_branch_protection(self, call: Call) -> Reply:
        repo = self._repo(call)
        branch = call.params["branch"]
        if branch not in repo.protection:
            raise GitHubError(404, "Branch not protected")
        node = self._template("repos/get-branch-protection")
        node = _retarget(node, [(EXAMPLE_REPO, repo.full_name), ("/branches/master", f"/branches/{branch}")])
        for key in ("required_pull_request_reviews", "restrictions"):
            node.pop(key, None)
        node["url"] = f"{self.url}/repos/{repo.full_name}/branches/{branch}/protection"
        node["required_status_checks"] = self._protection_checks(repo, branch)
        node["enforce_admins"] = {"url": node["url"] + "/enforce_admins", "enabled": False}
        for key in (
            "required_linear_history",
            "allow_force_pushes",
            "allow_deletions",
            "lock_branch",
            "required_conversation_resolution",
        ):
            node[key] = {"enabled": False}
        return Reply(200, node)

    def _op_repos_get_status_checks_protection(self, call: Call) -> Reply:
        repo = self._repo(call)
        branch = call.params["branch"]
        if branch not in repo.protection:
            raise GitHubError(404, "Branch not protected")
        return Reply(200, self._protection_checks(repo, branch))

    def _op_repos_get_branch_rules(self, call: Call) -> Page:
        repo = self._repo(call)
        return Page([dict(rule) for rule in repo.rules.get(call.params["branch"], [])])

    def _op_repos_get_collaborator_permission_level(self, call: Call) -> Reply:
        repo = self._repo(call)
        login = call.params["username"]
        role = repo.permissions.get(login.lower())
        if role is None:
            role = "none" if repo.private else "read"
        if login.lower() == repo.owner.lower():
            role = "admin"
        user = self._user_json(login)
        user["role_name"] = role
        node = {"permission": PERMISSION_ROLES[role], "role_name": role, "user": user}
        return Reply(200, node)

    def _op_repos_get_content(self, call: Call) -> Reply:
        repo = self._repo(call)
        ref = call.query.get("ref") or repo.default_branch
        path = call.params["path"].strip("/")
        branch = ref.removeprefix("refs/heads/").removeprefix("heads/")
        if branch not in repo.branches:
            branch = next((b for b, sha in repo.branches.items() if sha == ref), "")
            if not branch:
                raise _not_found(f"no branch or commit {ref!r} in {repo.full_name}")
        data = repo.files.get((branch, path))
        if data is not None:
            return Reply(200, self._content_json(repo, ref, path, data))
        prefix = path + "/" if path else ""
        entries: dict[str, bytes | None] = {}
        for (file_branch, file_path), file_data in repo.files.items():
            if file_branch == branch and file_path.startswith(prefix):
                head, _, rest = file_path[len(prefix) :].partition("/")
                entries[prefix + head] = None if rest else file_data
        if not entries:
            raise _not_found(f"no file {path!r} on {branch} of {repo.full_name}")
        return Reply(200, [self._dir_entry_json(repo, ref, p, d) for p, d in sorted(entries.items())])

    def _op_repos_compare_commits(self, call: Call) -> Reply:
        return self._compare(call, call.params["base"], call.params["head"])

    def _op_repos_compare_commits_with_basehead(self, call: Call) -> Reply:
        base, sep, head = call.params["basehead"].partition("...")
        if not sep:
            raise _not_found("basehead must look like BASE...HEAD")
        return self._compare(call, base, head)

    def _op_repos_get_combined_status_for_ref(self, call: Call) -> Reply:
        repo = self._repo(call)
        sha = self._resolve_ref(repo, call.params["ref"])
        if sha is None:
            raise _not_found(f"no ref {call.params['ref']!r}")
        latest = self._latest_statuses(repo, sha)
        states = {s.state for s in latest}
        if states & {"error", "failure"}:
            state = "failure"
        elif not latest or "pending" in states:
            state = "pending"
        else:
            state = "success"
        node = self._template("repos/get-combined-status-for-ref")
        node.update(
            state=state,
            statuses=[self._status_json(s, simple=True) for s in latest],
            sha=sha,
            total_count=len(latest),
            repository=self._repo_json(repo, "repos/get-combined-status-for-ref", "repository"),
            commit_url=f"{self.url}/repos/{repo.full_name}/commits/{sha}",
            url=f"{self.url}/repos/{repo.full_name}/commits/{sha}/status",
        )
        return Reply(200, node)

    def _op_repos_list_commit_statuses_for_ref(self, call: Call) -> Page:
        repo = self._repo(call)
        sha = self._resolve_ref(repo, call.params["ref"])
        found = [s for s in self.statuses.values() if s.repo == repo.full_name and s.sha == sha]
        found.sort(key=lambda s: s.id, reverse=True)
        return Page([self._status_json(s) for s in found])

    def _op_repos_create_commit_status(self, call: Call) -> Reply:
        repo = self._repo(call)
        sha = call.params["sha"]
        if sha not in repo.commits:
            raise GitHubError(422, f"No commit found for SHA: {sha}")
        status = FakeStatus(
            id=self._next_id("status"),
            repo=repo.full_name,
            sha=sha,
            state=call.body["state"],
            context=call.body.get("context", "default"),
            description=call.body.get("description"),
            target_url=call.body.get("target_url"),
            creator=self._actor(call),
            created_at=self.now(),
        )
        self.statuses[status.id] = status
        return Reply(201, self._status_json(status))

    def _op_repos_list_pull_requests_associated_with_commit(self, call: Call) -> Page:
        repo = self._repo(call)
        sha = call.params["commit_sha"]
        found = [p for p in self.pulls.values() if p.repo == repo.full_name and (sha == p.head_sha or sha in p.commits)]
        return Page([self._pull_json(p, full=False) for p in sorted(found, key=lambda p: -p.number)])

    def _op_repos_create_deployment(self, call: Call) -> Reply:
        repo = self._repo(call)
        ref = call.body["ref"]
        sha = self._resolve_ref(repo, ref)
        if sha is None:
            raise GitHubError(409, f"No ref found for: {ref}")
        deployment_id = self._next_id("deployment")
        now = iso(self.now())
        node = self._template("repos/create-deployment")
        api = f"{self.url}/repos/{repo.full_name}"
        environment = call.body.get("environment", "production")
        node.update(
            url=f"{api}/deployments/{deployment_id}",
            id=deployment_id,
            node_id=_node_id("DE", deployment_id),
            sha=sha,
            ref=ref,
            task=call.body.get("task", "deploy"),
            payload=call.body.get("payload", {}),
            original_environment=environment,
            environment=environment,
            description=call.body.get("description"),
            creator=self._user_json(self._actor(call)),
            created_at=now,
            updated_at=now,
            statuses_url=f"{api}/deployments/{deployment_id}/statuses",
            repository_url=api,
            transient_environment=call.body.get("transient_environment", False),
            production_environment=call.body.get("production_environment", environment == "production"),
        )
        self.deployments[deployment_id] = node
        return Reply(201, node)

    def _op_repos_list_deployments(self, call: Call) -> Page:
        repo = self._repo(call)
        prefix = f"{self.url}/repos/{repo.full_name}/"
        found = [d for d in self.deployments.values() if d["url"].startswith(prefix)]
        for name in ("sha", "ref", "task", "environment"):
            if name in call.query:
                found = [d for d in found if d[name] == call.query[name]]
        found.sort(key=lambda d: -int(d["id"]))
        return Page(found)

    def _op_repos_create_deployment_status(self, call: Call) -> Reply:
        repo = self._repo(call)
        deployment = self.deployments.get(int(call.params["deployment_id"]))
        if deployment is None or not deployment["url"].startswith(f"{self.url}/repos/{repo.full_name}/"):
            raise _not_found(f"no deployment {call.params['deployment_id']}")
        status_id = self._next_id("deployment_status")
        now = iso(self.now())
        node = self._template("repos/create-deployment-status")
        node.update(
            url=f"{deployment['url']}/statuses/{status_id}",
            id=status_id,
            node_id=_node_id("DES", status_id),
            state=call.body["state"],
            creator=self._user_json(self._actor(call)),
            description=call.body.get("description", ""),
            environment=call.body.get("environment", deployment["environment"]),
            target_url=call.body.get("target_url", ""),
            log_url=call.body.get("log_url", ""),
            environment_url=call.body.get("environment_url", ""),
            created_at=now,
            updated_at=now,
            deployment_url=deployment["url"],
            repository_url=deployment["repository_url"],
        )
        self.deployment_statuses[status_id] = node
        return Reply(201, node)

    def _op_issues_get(self, call: Call) -> Reply:
        repo = self._repo(call)
        return Reply(200, self._issue_json(self._issue(call, repo)))

    def _op_issues_create_comment(self, call: Call) -> Reply:
        repo = self._repo(call)
        issue = self._issue(call, repo)
        comment = self._create_comment(issue, call.body["body"], self._actor(call))
        return Reply(
            201,
            self._comment_json(comment),
            {"Location": f"{self.url}/repos/{repo.full_name}/issues/comments/{comment.id}"},
        )

    def _op_issues_get_comment(self, call: Call) -> Reply:
        repo = self._repo(call)
        return Reply(200, self._comment_json(self._comment(call, repo)))

    def _op_issues_update_comment(self, call: Call) -> Reply:
        repo = self._repo(call)
        comment = self._comment(call, repo)
        comment.body = call.body["body"]
        comment.updated_at = self.now()
        return Reply(200, self._comment_json(comment))

    def _op_issues_delete_comment(self, call: Call) -> Reply:
        repo = self._repo(call)
        comment = self._comment(call, repo)
        del self.comments[comment.id]
        for reaction in [r for r in self.reactions.values() if r.comment_id == comment.id]:
            del self.reactions[reaction.id]
        return Reply(204)

    def _op_issues_list_comments(self, call: Call) -> Page:
        repo = self._repo(call)
        issue = self._issue(call, repo)
        comments = sorted(self._comments_of(issue), key=lambda c: c.id)
        since = call.query.get("since")
        if since:
            threshold = datetime.fromisoformat(since.replace("Z", "+00:00"))
            comments = [c for c in comments if c.updated_at >= threshold]
        return Page([self._comment_json(c) for c in comments])

    def _op_issues_list_labels_on_issue(self, call: Call) -> Page:
        repo = self._repo(call)
        issue = self._issue(call, repo)
        return Page([self._label_json(repo, name) for name in issue.labels])

    def _op_issues_add_labels(self, call: Call) -> Reply:
        repo = self._repo(call)
        issue = self._issue(call, repo)
        for name in self._label_names(call.body):
            self._add_label(repo, issue, name)
        issue.updated_at = self.now()
        return Reply(200, [self._label_json(repo, name) for name in issue.labels])

    def _op_issues_set_labels(self, call: Call) -> Reply:
        repo = self._repo(call)
        issue = self._issue(call, repo)
        issue.labels = []
        for name in self._label_names(call.body):
            self._add_label(repo, issue, name)
        issue.updated_at = self.now()
        return Reply(200, [self._label_json(repo, name) for name in issue.labels])

    def _op_issues_remove_label(self, call: Call) -> Reply:
        repo = self._repo(call)
        issue = self._issue(call, repo)
        name = call.params["name"]
        present = [n for n in issue.labels if n.lower() == name.lower()]
        if not present:
            raise GitHubError(404, "Label does not exist")
        issue.labels.remove(present[0])
        issue.updated_at = self.now()
        return Reply(200, [self._label_json(repo, n) for n in issue.labels])

    def _op_reactions_create_for_issue_comment(self, call: Call) -> Reply:
        repo = self._repo(call)
        comment = self._comment(call, repo)
        user = self._actor(call)
        content = call.body["content"]
        for reaction in self.reactions.values():
            if (reaction.comment_id, reaction.content, reaction.user_login) == (
                comment.id,
                content,
                user,
            ):
                return Reply(200, self._reaction_json(reaction))
        reaction = FakeReaction(
            id=self._next_id("reaction"),
            comment_id=comment.id,
            content=content,
            user_login=user,
            created_at=self.now(),
        )
        self.reactions[reaction.id] = reaction
        return Reply(201, self._reaction_json(reaction))

    def _op_reactions_list_for_issue_comment(self, call: Call) -> Page:
        repo = self._repo(call)
        comment = self._comment(call, repo)
        found = [r for r in self.reactions.values() if r.comment_id == comment.id]
        if "content" in call.query:
            found = [r for r in found if r.content == call.query["content"]]
        return Page([self._reaction_json(r) for r in sorted(found, key=lambda r: r.id)])

    def _op_reactions_delete_for_issue_comment(self, call: Call) -> Reply:
        repo = self._repo(call)
        comment = self._comment(call, repo)
        reaction = self.reactions.get(int(call.params["reaction_id"]))
        if reaction is None or reaction.comment_id != comment.id:
            raise _not_found(f"no reaction {call.params['reaction_id']} on comment {comment.id}")
        del self.reactions[reaction.id]
        return Reply(204)

    def _op_pulls_get(self, call: Call) -> Reply:
        repo = self._repo(call)
        return Reply(200, self._pull_json(self._pull(call, repo), full=True))

    def _op_pulls_list(self, call: Call) -> Page:
        repo = self._repo(call)
        state = call.query.get("state", "open")
        found = []
        for pull in self.pulls.values():
            issue = self._issue_state(pull.repo, pull.number)
            if pull.repo != repo.full_name or (state != "all" and issue.state != state):
                continue
            if "base" in call.query and pull.base != call.query["base"]:
                continue
            if "head" in call.query and call.query["head"] != f"{repo.owner}:{pull.head_ref}":
                continue
            found.append(pull)
        descending = call.query.get("direction", "desc") == "desc"
        found.sort(key=lambda p: p.number, reverse=descending)
        return Page([self._pull_json(p, full=False) for p in found])

    def _op_pulls_list_commits(self, call: Call) -> Page:
        repo = self._repo(call)
        pull = self._pull(call, repo)
        commits = []
        parent: str | None = None
        for sha in pull.commits:
            node = self._template("pulls/list-commits", 0)
            node = _retarget(
                node,
                [("6dcb09b5b57875f334f61aebed695e2e4193db5e", sha), (EXAMPLE_REPO, repo.full_name)],
            )
            node.update(sha=sha, node_id=_node_id("C", int(sha[:8], 16)))
            details = self.commit_details.get(sha)
            if details is not None:
                person = {"name": details.author_name, "email": "dev@example.com", "date": iso(details.authored_at)}
                node["commit"].update(message=details.message, author=person, committer=person)
                user = self._user_json(details.author_login) if details.author_login else None
                node.update(author=user, committer=user)
            node["parents"] = (
                [
                    {
                        "url": f"{self.url}/repos/{repo.full_name}/commits/{parent}",
                        "sha": parent,
                        "html_url": f"https://github.com/{repo.full_name}/commit/{parent}",
                    }
                ]
                if parent
                else []
            )
            commits.append(node)
            parent = sha
        return Page(commits)

    def _op_pulls_list_files(self, call: Call) -> Page:
        repo = self._repo(call)
        pull = self._pull(call, repo)
        files = []
        for filename in pull.files:
            node = self._template("pulls/list-files", 0)
            node = _retarget(node, [(EXAMPLE_REPO, repo.full_name), ("file1.txt", filename)])
            node.update(
                sha=fake_sha(pull.head_sha, filename),
                filename=filename,
                status="modified",
                additions=10,
                deletions=2,
                changes=12,
            )
            files.append(node)
        return Page(files)

    def _op_pulls_list_reviews(self, call: Call) -> Page:
        repo = self._repo(call)
        return Page(self._reviews_json(repo, self._pull(call, repo)))

    def _reviews_json(self, repo: FakeRepo, pull: FakePull) -> list[JSON]:
        found = []
        for review in sorted(self.reviews.values(), key=lambda r: r.id):
            if review.repo != repo.full_name or review.number != pull.number:
                continue
            node = self._template("pulls/list-reviews", 0)
            node = _retarget(
                node,
                [
                    ("/pull/12", f"/pull/{pull.number}"),
                    ("/pulls/12", f"/pulls/{pull.number}"),
                    (EXAMPLE_REPO, repo.full_name),
                ],
            )
            node.update(
                id=review.id,
                node_id=_node_id("PRR", review.id),
                user=self._user_json(review.user_login),
                body=review.body,
                state=review.state,
                submitted_at=iso(review.submitted_at),
                commit_id=review.commit_id,
                author_association=self._association(repo, review.user_login),
            )
            found.append(node)
        return found

    def _op_pulls_merge(self, call: Call) -> Reply:
        repo = self._repo(call)
        pull = self._pull(call, repo)
        issue = self._issue_state(repo.full_name, pull.number)
        body = call.body or {}
        if pull.merged or issue.state != "open":
            raise GitHubError(405, "Pull Request is not mergeable")
        if "sha" in body and body["sha"] != pull.head_sha:
            raise GitHubError(409, "Head branch was modified. Review and try the merge again.")
        if pull.draft:
            raise GitHubError(405, "Pull Request is still a draft")
        if not pull.mergeable:
            raise GitHubError(405, "Pull Request is not mergeable")
        unmet = self._unmet_checks(repo, pull)
        if unmet:
            raise GitHubError(405, "Repository rule violations found\n\n" + "\n".join(unmet))
        now = self.now()
        merge_sha = fake_sha("merge", repo.full_name, pull.number, pull.head_sha)
        pull.merged = True
        pull.merged_at = now
        pull.merged_by = self._actor(call)
        pull.merge_commit_sha = merge_sha
        issue.state = "closed"
        issue.closed_at = now
        issue.updated_at = now
        repo.branches[pull.base] = merge_sha
        repo.commits.add(merge_sha)
        return Reply(200, {"sha": merge_sha, "merged": True, "message": "Pull Request successfully merged"})

    def _op_checks_create(self, call: Call) -> Reply:
        repo = self._repo(call)
        app = self._app_of(call)
        body = call.body
        sha = body["head_sha"]
        if sha not in repo.commits:
            raise GitHubError(422, f"No commit found for SHA: {sha}")
        now = self.now()
        conclusion = body.get("conclusion")
        status = "completed" if conclusion else body.get("status", "queued")
        if status == "completed" and not conclusion:
            raise GitHubError(
                422,
                "Validation Failed",
                errors=[self._field_error(call.op, "conclusion", "conclusion is required", "missing_field")],
            )
        run = self._create_check_run(
            repo,
            head_sha=sha,
            name=body["name"],
            status=status,
            conclusion=conclusion,
            app_id=app.app_id,
            app_slug=app.slug,
            started_at=self._parse_time(body.get("started_at")) or now,
            completed_at=(self._parse_time(body.get("completed_at")) or now) if status == "completed" else None,
        )
        run.details_url = body.get("details_url")
        run.external_id = body.get("external_id")
        run.output = dict(body.get("output", {}))
        run.actions = list(body.get("actions", []))
        return Reply(201, self._check_run_json(run))

    def _op_checks_get(self, call: Call) -> Reply:
        repo = self._repo(call)
        return Reply(200, self._check_run_json(self._check_run(call, repo)))

    def _op_checks_update(self, call: Call) -> Reply:
        repo = self._repo(call)
        run = self._check_run(call, repo)
        app = self._app_of(call)
        if run.app_id != app.app_id:
            raise GitHubError(
                403, f"Invalid app_id `{app.app_id}` - check run can only be modified by its creator app."
            )
        body = call.body
        now = self.now()
        for key in ("name", "details_url", "external_id"):
            if key in body:
                setattr(run, key, body[key])
        if "started_at" in body:
            run.started_at = self._parse_time(body["started_at"])
        if "output" in body:
            run.output = dict(body["output"])
        if "actions" in body:
            run.actions = list(body["actions"])
        if "status" in body:
            run.status = body["status"]
        if body.get("conclusion"):
            run.conclusion = body["conclusion"]
            run.status = "completed"
        if run.status == "completed":
            if not run.conclusion:
                raise GitHubError(
                    422,
                    "Validation Failed",
                    errors=[self._field_error(call.op, "conclusion", "conclusion is required", "missing_field")],
                )
            run.completed_at = self._parse_time(body.get("completed_at")) or run.completed_at or now
        else:
            run.conclusion = None
            run.completed_at = None
        return Reply(200, self._check_run_json(run))

    def _op_checks_list_for_ref(self, call: Call) -> Page:
        repo = self._repo(call)
        sha = self._resolve_ref(repo, call.params["ref"])
        runs = [r for r in self.check_runs.values() if r.repo == repo.full_name and r.head_sha == sha]
        runs.sort(key=lambda r: r.id, reverse=True)
        if call.query.get("filter", "latest") == "latest":
            seen: set[tuple[str, int]] = set()
            latest = []
            for run in runs:
                if (run.name, run.app_id) not in seen:
                    seen.add((run.name, run.app_id))
                    latest.append(run)
            runs = latest
        if "check_name" in call.query:
            runs = [r for r in runs if r.name == call.query["check_name"]]
        if "status" in call.query:
            runs = [r for r in runs if r.status == call.query["status"]]
        if "app_id" in call.query:
            runs = [r for r in runs if r.app_id == int(call.query["app_id"])]
        return Page([self._check_run_json(r) for r in runs], key="check_runs")

    def _op_checks_list_suites_for_ref(self, call: Call) -> Page:
        repo = self._repo(call)
        sha = self._resolve_ref(repo, call.params["ref"])
        suites = [s for s in self.check_suites.values() if s.repo == repo.full_name and s.head_sha == sha]
        if "app_id" in call.query:
            suites = [s for s in suites if s.app_id == int(call.query["app_id"])]
        if "check_name" in call.query:
            names = {r.check_suite_id for r in self.check_runs.values() if r.name == call.query["check_name"]}
            suites = [s for s in suites if s.id in names]
        return Page([self._check_suite_json(s) for s in suites], key="check_suites")

    def _op_checks_rerequest_suite(self, call: Call) -> Reply:
        repo = self._repo(call)
        suite = self.check_suites.get(int(call.params["check_suite_id"]))
        if suite is None or suite.repo != repo.full_name:
            raise _not_found(f"no check suite {call.params['check_suite_id']}")
        self.rerequested_suites.append(suite.id)
        return Reply(201, {})

    def _op_actions_get_workflow_run(self, call: Call) -> Reply:
        repo = self._repo(call)
        return Reply(200, self._workflow_run_json(self._workflow_run(call, repo)))

    def _op_actions_list_workflow_runs_for_repo(self, call: Call) -> Page:
        repo = self._repo(call)
        runs = [r for r in self.workflow_runs.values() if r.repo == repo.full_name]
        query = call.query
        if "branch" in query:
            runs = [r for r in runs if r.head_branch == query["branch"]]
        if "event" in query:
            runs = [r for r in runs if r.event == query["event"]]
        if "head_sha" in query:
            runs = [r for r in runs if r.head_sha == query["head_sha"]]
        if "status" in query:
            runs = [r for r in runs if query["status"] in (r.status, r.conclusion)]
        runs.sort(key=lambda r: r.id, reverse=True)
        return Page([self._workflow_run_json(r) for r in runs], key="workflow_runs")

    def _op_actions_re_run_workflow(self, call: Call) -> Reply:
        repo = self._repo(call)
        run = self._workflow_run(call, repo)
        run.status, run.conclusion = "queued", None
        run.run_attempt += 1
        run.updated_at = self.now()
        return Reply(201, {})

    def _op_actions_create_workflow_dispatch(self, call: Call) -> Reply:
        repo = self._repo(call)
        ref = call.body["ref"]
        sha = self._resolve_ref(repo, ref)
        if sha is None:
            raise GitHubError(422, f"No ref found for: {ref}")
        dispatch = {
            "repo": repo.full_name,
            "workflow_id": call.params["workflow_id"],
            "ref": ref,
            "inputs": call.body.get("inputs", {}),
        }
        self.workflow_dispatches.append(dispatch)
        if not call.body.get("return_run_details"):
            return Reply(204)
        name = str(call.params["workflow_id"]).removesuffix(".yml").removesuffix(".yaml")
        run_id = self.add_workflow_run(
            repo.full_name,
            head_sha=sha,
            name=name,
            head_branch=ref,
            status="queued",
            conclusion=None,
            event="workflow_dispatch",
        )
        api = f"{self.url}/repos/{repo.full_name}/actions/runs/{run_id}"
        return Reply(
            200,
            {
                "workflow_run_id": run_id,
                "run_url": api,
                "html_url": f"https://github.com/{repo.full_name}/actions/runs/{run_id}",
            },
        )
