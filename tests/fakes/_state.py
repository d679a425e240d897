"""What the fake GitHub knows: Apps, installations, tokens, repositories, PRs, comments, checks...

Plain records plus `State`, whose `add_*`/`set_*` methods are how a test arranges the world before
the bot runs, and whose helpers keep GitHub's invariants (ids, labels, check suites, required checks).
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from tests.fakes._spec import Spec

JSON = dict[str, Any]
GITHUB_ACTIONS_APP_ID = 15368
PERMISSION_ROLES = {
    "admin": "admin",
    "maintain": "write",
    "write": "write",
    "triage": "read",
    "read": "read",
    "none": "none",
}
_ID_BASES = {
    "comment": 1_000_000,
    "reaction": 2_000_000,
    "check_run": 3_000_000,
    "check_suite": 4_000_000,
    "status": 5_000_000,
    "deployment": 6_000_000,
    "deployment_status": 7_000_000,
    "delivery": 8_000_000,
    "review": 9_000_000,
    "label": 10_000_000,
    "pull": 11_000_000,
    "issue": 12_000_000,
    "user": 20_000_000,
    "repo": 30_000_000,
    "run": 40_000_000,
}


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fake_sha(*parts: object) -> str:
    """A deterministic 40-hex "commit" id."""
    return hashlib.sha1("\0".join(map(str, parts)).encode(), usedforsecurity=False).hexdigest()


def git_blob_sha(data: bytes) -> str:
    header = f"blob {len(data)}\0".encode()
    return hashlib.sha1(header + data, usedforsecurity=False).hexdigest()


@dataclass
class FakeApp:
    app_id: int
    public_key: RSAPublicKey
    slug: str
    name: str
    owner_login: str
    permissions: dict[str, str]
    events: list[str]
    client_id: str

    @property
    def bot_login(self) -> str:
        return f"{self.slug}[bot]"


@dataclass
class FakeInstallation:
    installation_id: int
    app_id: int
    account_login: str
    account_type: str
    repos: list[str] | None  # None: every repository of the account
    permissions: dict[str, str]
    suspended: bool = False


@dataclass
class IssuedToken:
    token: str
    installation_id: int
    expires_at: datetime
    repos: frozenset[str] | None
    permissions: dict[str, str]


@dataclass
class FakeRepo:
    id: int
    full_name: str
    default_branch: str
    private: bool
    branches: dict[str, str]
    commits: set[str] = field(default_factory=set)
    files: dict[tuple[str, str], bytes] = field(default_factory=dict)
    protection: dict[str, JSON] = field(default_factory=dict)
    rules: dict[str, list[JSON]] = field(default_factory=dict)
    permissions: dict[str, str] = field(default_factory=dict)
    comparisons: dict[tuple[str, str], JSON] = field(default_factory=dict)
    labels: dict[str, JSON] = field(default_factory=dict)

    @property
    def owner(self) -> str:
        return self.full_name.split("/")[0]

    @property
    def name(self) -> str:
        return self.full_name.split("/")[1]


@dataclass
class FakeIssue:
    repo: str
    number: int
    id: int
    title: str
    body: str | None
    user_login: str
    labels: list[str]
    state: str
    is_pull: bool
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None = None


@dataclass
class FakePull:
    repo: str
    number: int
    id: int
    head_sha: str
    head_ref: str
    base: str
    draft: bool
    mergeable: bool | None
    commits: list[str]
    files: list[str]
    merged: bool = False
    merged_at: datetime | None = None
    merged_by: str | None = None
    merge_commit_sha: str | None = None


@dataclass
class FakeComment:
    id: int
    repo: str
    issue_number: int
    body: str
    user_login: str
    created_at: datetime
    updated_at: datetime


@dataclass
class FakeReaction:
    id: int
    comment_id: int
    content: str
    user_login: str
    created_at: datetime


@dataclass
class FakeCheckRun:
    id: int
    repo: str
    head_sha: str
    name: str
    status: str
    conclusion: str | None
    started_at: datetime | None
    completed_at: datetime | None
    app_id: int
    app_slug: str
    check_suite_id: int
    details_url: str | None = None
    external_id: str | None = None
    output: JSON = field(default_factory=dict)
    actions: list[JSON] = field(default_factory=list)


@dataclass
class FakeCheckSuite:
    id: int
    repo: str
    head_sha: str
    head_branch: str | None
    app_id: int
    app_slug: str
    created_at: datetime


@dataclass
class FakeStatus:
    id: int
    repo: str
    sha: str
    state: str
    context: str
    description: str | None
    target_url: str | None
    creator: str
    created_at: datetime


@dataclass
class FakeReview:
    id: int
    repo: str
    number: int
    user_login: str
    state: str
    body: str
    commit_id: str
    submitted_at: datetime


@dataclass
class FakeWorkflowRun:
    id: int
    repo: str
    name: str
    head_sha: str
    head_branch: str
    status: str
    conclusion: str | None
    event: str
    workflow_id: int
    run_number: int
    run_attempt: int
    created_at: datetime
    updated_at: datetime


@dataclass
class FakeCommit:
    """What a commit says of itself (message, author) beyond its SHA; commits without one read as the
    documented example's ("Fix all the bugs" by octocat)."""

    sha: str
    message: str
    author_login: str | None  # the GitHub user the author email maps to; None: an unknown email
    author_name: str
    authored_at: datetime


@dataclass
class FakeHookDelivery:
    id: int
    guid: str
    delivered_at: datetime
    redelivery: bool
    status_code: int
    event: str
    action: str | None
    installation_id: int | None
    repository_id: int | None
    duration: float = 0.05


@dataclass
class RateBucket:
    """One rate limit window: per installation, per App (JWT), or for anonymous callers."""

    limit: int
    remaining: int
    reset: int
    used: int = 0


@dataclass(frozen=True)
class Principal:
    kind: Literal["app", "installation", "user", "anonymous"]
    app: FakeApp | None = None
    installation: FakeInstallation | None = None
    token: IssuedToken | None = None
    user: str | None = None  # the login a user access token acts as

    @property
    def bucket(self) -> str:
        if self.installation is not None:
            return f"installation:{self.installation.installation_id}"
        if self.user is not None:
            return f"user:{self.user.lower()}"
        if self.app is not None:
            return f"app:{self.app.app_id}"
        return "anonymous"


class State:
    """The fake's world; rendering, operations and the server are layered on top of it."""

    violations: list[str]  # the server's record of what the bot did wrong (FakeGitHub)

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.url = ""
        self.token_ttl = timedelta(hours=1)
        self.rate_limit = 5000
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        self.redelivery_status_code = 200
        self.apps: dict[int, FakeApp] = {}
        self.installations: dict[int, FakeInstallation] = {}
        self.tokens: dict[str, IssuedToken] = {}
        self.repos: dict[str, FakeRepo] = {}
        self.issues: dict[tuple[str, int], FakeIssue] = {}
        self.pulls: dict[tuple[str, int], FakePull] = {}
        self.comments: dict[int, FakeComment] = {}
        self.reactions: dict[int, FakeReaction] = {}
        self.check_runs: dict[int, FakeCheckRun] = {}
        self.check_suites: dict[int, FakeCheckSuite] = {}
        self.statuses: dict[int, FakeStatus] = {}
        self.reviews: dict[int, FakeReview] = {}
        self.deployments: dict[int, JSON] = {}
        self.deployment_statuses: dict[int, JSON] = {}
        self.workflow_runs: dict[int, FakeWorkflowRun] = {}
        self.commit_details: dict[str, FakeCommit] = {}
        self.workflow_dispatches: list[JSON] = []
        self.hook_deliveries: dict[int, FakeHookDelivery] = {}
        self.redeliveries: list[int] = []
        self.rerequested_suites: list[int] = []
        self._manifest_codes: dict[str, JSON] = {}
        self.manifests: dict[int, JSON] = {}  # app id -> the manifest it was registered from (`manifest_code`)
        self._org_logins: set[str] = set()
        self._user_ids: dict[str, int] = {}
        self._buckets: dict[str, RateBucket] = {}
        self._counters = {kind: itertools.count(base + 1) for kind, base in _ID_BASES.items()}

    def now(self) -> datetime:
        return self.clock()

    def _next_id(self, kind: str) -> int:
        return next(self._counters[kind])

    def add_app(
        self,
        app_id: int,
        public_key_pem: bytes | str,
        *,
        slug: str = "release-secretary",
        name: str = "Release Secretary",
        owner_login: str = "octo-org",
        permissions: dict[str, str] | None = None,
        events: Sequence[str] = ("pull_request", "issue_comment", "check_suite", "check_run"),
    ) -> FakeApp:
        """Register a GitHub App; a private key PEM is accepted too (its public half is used)."""
        pem = public_key_pem.encode() if isinstance(public_key_pem, str) else public_key_pem
        if b"PRIVATE KEY" in pem:
            key: Any = serialization.load_pem_private_key(pem, password=None).public_key()
        else:
            key = serialization.load_pem_public_key(pem)
        if not isinstance(key, RSAPublicKey):
            raise TypeError("GitHub App keys are RSA keys")
        app = FakeApp(
            app_id=app_id,
            public_key=key,
            slug=slug,
            name=name,
            owner_login=owner_login,
            permissions=dict(
                permissions
                or {
                    "checks": "write",
                    "contents": "write",
                    "issues": "write",
                    "metadata": "read",
                    "pull_requests": "write",
                    "statuses": "write",
                }
            ),
            events=list(events),
            client_id=f"Iv1.{fake_sha('client', app_id)[:16]}",
        )
        self.apps[app_id] = app
        return app

    def add_manifest_code(
        self,
        code: str,
        *,
        app_id: int,
        private_key_pem: bytes | str,
        slug: str = "release-secretary",
        name: str = "Release Secretary",
        owner_login: str = "octo-org",
        webhook_secret: str = "manifest-webhook-secret",
        client_id: str | None = None,
        client_secret: str = "manifest-client-secret",
        permissions: dict[str, str] | None = None,
        events: Sequence[str] | None = None,
        manifest: JSON | None = None,
    ) -> None:
        """A one-time code the manifest flow exchanges (POST /app-manifests/{code}/conversions)
        for the new App's credentials, within an hour as on GitHub; the conversion registers the App."""
        pem = private_key_pem.decode() if isinstance(private_key_pem, bytes) else private_key_pem
        self._manifest_codes[code] = {
            "expires": self.now() + timedelta(hours=1),
            "permissions": permissions,
            "events": list(events) if events is not None else None,
            "manifest": manifest,
            "app_id": app_id,
            "pem": pem,
            "slug": slug,
            "name": name,
            "owner_login": owner_login,
            "webhook_secret": webhook_secret,
            "client_id": client_id or f"Iv1.{fake_sha('client', app_id)[:16]}",
            "client_secret": client_secret,
        }

    def manifest_code(self, manifest: JSON | str, *, owner: str = "octocat", app_id: int | None = None) -> str:
        """What GitHub's "register a GitHub App" page does with a posted `manifest` once the person confirms:
        the App's code for the flow's redirect. The App gets a new key and secrets and the manifest's name,
        permissions and events when the code is converted. A manifest GitHub would refuse raises
        ManifestRefused (and is a violation: the bot built it)."""
        import json

        from tests.fakes.github_manifest import ManifestRefused, manifest_problems, slug_of
        from tests.fakes.keys import make_app_key

        data = json.loads(manifest) if isinstance(manifest, str) else manifest
        problems = manifest_problems(data, self.spec)
        name = str(data.get("name") or "") if isinstance(data, dict) else ""
        slug = slug_of(name) if name else ""
        taken = {a.slug for a in self.apps.values()} | {c["slug"] for c in self._manifest_codes.values()}
        if not problems and (not slug or slug in taken):
            problems.append(f"Name {name!r} is already in use" if slug else "name is required")
        if problems:
            self.violations.append(f"manifest refused: {problems}")
            raise ManifestRefused(problems)
        key = make_app_key()
        code = secrets.token_hex(10)
        self.add_manifest_code(
            code,
            app_id=app_id or max([*self.apps, 900_000]) + 1,
            private_key_pem=key.rsa_private_key_pem,
            slug=slug,
            name=name,
            owner_login=owner,
            webhook_secret=secrets.token_hex(20),
            client_secret=secrets.token_hex(20),
            permissions=dict(data.get("default_permissions") or {}),
            events=list(data.get("default_events") or []),
            manifest=data,
        )
        return code

    def add_installation(
        self,
        installation_id: int,
        account_login: str,
        *,
        repos: Sequence[str] | None = None,
        app_id: int | None = None,
        account_type: str = "Organization",
        permissions: dict[str, str] | None = None,
        suspended: bool = False,
    ) -> FakeInstallation:
        """Install an App on an account; `repos` (full names) selects repositories, None: all."""
        if app_id is None:
            if len(self.apps) != 1:
                raise ValueError("add_installation needs app_id when there is not exactly one app")
            app_id = next(iter(self.apps))
        app = self.apps[app_id]
        if account_type == "Organization":
            self._org_logins.add(account_login)
        installation = FakeInstallation(
            installation_id=installation_id,
            app_id=app_id,
            account_login=account_login,
            account_type=account_type,
            repos=[r.lower() for r in repos] if repos is not None else None,
            permissions=dict(permissions or app.permissions),
            suspended=suspended,
        )
        self.installations[installation_id] = installation
        return installation

    def issue_token(self, installation_id: int, *, ttl: timedelta | None = None) -> str:
        """An installation token, as if the App had asked for one (for tests that need no JWT)."""
        installation = self.installations[installation_id]
        return self._issue_token(installation, None, dict(installation.permissions), ttl).token

    def add_repo(
        self,
        full_name: str,
        *,
        default_branch: str = "main",
        private: bool = False,
        head_sha: str | None = None,
    ) -> FakeRepo:
        sha = head_sha or fake_sha(full_name, default_branch)
        repo = FakeRepo(
            id=self._next_id("repo"),
            full_name=full_name,
            default_branch=default_branch,
            private=private,
            branches={default_branch: sha},
            commits={sha},
        )
        self.repos[full_name.lower()] = repo
        return repo

    def set_branch(self, full_name: str, branch: str, sha: str) -> None:
        repo = self._repo_state(full_name)
        repo.branches[branch] = sha
        repo.commits.add(sha)

    def add_commit(self, full_name: str, sha: str) -> None:
        self._repo_state(full_name).commits.add(sha)

    def add_issue(
        self,
        full_name: str,
        number: int,
        *,
        title: str = "An issue",
        body: str | None = None,
        user_login: str = "octocat",
        labels: Sequence[str] = (),
        state: str = "open",
    ) -> FakeIssue:
        repo = self._repo_state(full_name)
        now = self.now()
        issue = FakeIssue(
            repo=repo.full_name,
            number=number,
            id=self._next_id("issue"),
            title=title,
            body=body,
            user_login=user_login,
            labels=[],
            state=state,
            is_pull=False,
            created_at=now,
            updated_at=now,
        )
        for label in labels:
            self._add_label(repo, issue, label)
        self.issues[(repo.full_name.lower(), number)] = issue
        return issue

    def add_pull(
        self,
        full_name: str,
        number: int,
        *,
        head_sha: str,
        head_ref: str | None = None,
        base: str | None = None,
        title: str = "Amazing new feature",
        body: str | None = None,
        user_login: str = "octocat",
        labels: Sequence[str] = (),
        draft: bool = False,
        mergeable: bool | None = True,
        state: str = "open",
        commits: Sequence[str] | None = None,
        files: Sequence[str] = (),
    ) -> FakePull:
        repo = self._repo_state(full_name)
        issue = self.add_issue(full_name, number, title=title, body=body, user_login=user_login, labels=labels)
        issue.is_pull = True
        issue.state = state
        head_ref = head_ref or f"feature-{number}"
        pull = FakePull(
            repo=repo.full_name,
            number=number,
            id=self._next_id("pull"),
            head_sha=head_sha,
            head_ref=head_ref,
            base=base or repo.default_branch,
            draft=draft,
            mergeable=mergeable,
            commits=list(commits or [head_sha]),
            files=list(files),
        )
        repo.branches.setdefault(head_ref, head_sha)
        repo.commits.update(pull.commits)
        repo.commits.add(head_sha)
        self.pulls[(repo.full_name.lower(), number)] = pull
        return pull

    def push_to_pull(self, full_name: str, number: int, head_sha: str, *, message: str | None = None) -> None:
        """A new push to the PR's head branch: the head SHA moves (with `message`, the commit says so)."""
        pull = self._pull_state(full_name, number)
        repo = self._repo_state(full_name)
        pull.head_sha = head_sha
        pull.commits.append(head_sha)
        repo.branches[pull.head_ref] = head_sha
        repo.commits.add(head_sha)
        self._issue_state(full_name, number).updated_at = self.now()
        if message is not None:
            self.set_commit(head_sha, message, author_login=self._issue_state(full_name, number).user_login)

    def force_push_to_pull(self, full_name: str, number: int, commits: Sequence[str]) -> None:
        """A force-push: the PR's commits are now exactly `commits` (oldest first), the last its head."""
        pull = self._pull_state(full_name, number)
        repo = self._repo_state(full_name)
        pull.commits = list(commits)
        pull.head_sha = pull.commits[-1]
        repo.branches[pull.head_ref] = pull.head_sha
        repo.commits.update(pull.commits)
        self._issue_state(full_name, number).updated_at = self.now()

    def set_commit(
        self,
        sha: str,
        message: str,
        *,
        author_login: str | None = "octocat",
        author_name: str | None = None,
        authored_at: datetime | None = None,
    ) -> None:
        """What commit `sha` says of itself, as GET .../pulls/{n}/commits shows it."""
        self.commit_details[sha] = FakeCommit(
            sha=sha,
            message=message,
            author_login=author_login,
            author_name=author_name or author_login or "A. Developer",
            authored_at=authored_at or self.now(),
        )

    def label_pull(self, full_name: str, number: int, name: str) -> None:
        """Someone adds a label to the PR on GitHub (the webhook is the test's to send)."""
        repo = self._repo_state(full_name)
        issue = self._issue_state(full_name, number)
        self._add_label(repo, issue, name)
        issue.updated_at = self.now()

    def unlabel_pull(self, full_name: str, number: int, name: str) -> None:
        issue = self._issue_state(full_name, number)
        issue.labels = [n for n in issue.labels if n.lower() != name.lower()]
        issue.updated_at = self.now()

    def set_pull_title(self, full_name: str, number: int, title: str) -> None:
        """Someone edits the PR's title (no webhook: that is the test's to send, or to lose)."""
        issue = self._issue_state(full_name, number)
        issue.title = title
        issue.updated_at = self.now()

    def add_comment(self, full_name: str, issue_number: int, body: str, *, user_login: str = "octocat") -> int:
        """A comment someone else wrote (e.g. a `/ship` command); returns its id."""
        issue = self._issue_state(full_name, issue_number)
        return self._create_comment(issue, body, user_login).id

    def add_review(
        self,
        full_name: str,
        number: int,
        *,
        user_login: str,
        state: str = "APPROVED",
        body: str = "",
        commit_id: str | None = None,
    ) -> int:
        pull = self._pull_state(full_name, number)
        review = FakeReview(
            id=self._next_id("review"),
            repo=pull.repo,
            number=number,
            user_login=user_login,
            state=state,
            body=body,
            commit_id=commit_id or pull.head_sha,
            submitted_at=self.now(),
        )
        self.reviews[review.id] = review
        return review.id

    def add_check_run(
        self,
        full_name: str,
        head_sha: str,
        name: str,
        *,
        status: str = "completed",
        conclusion: str | None = "success",
        app_id: int = GITHUB_ACTIONS_APP_ID,
        app_slug: str = "github-actions",
    ) -> int:
        """A check run by another App (CI, by default GitHub Actions); returns its id."""
        repo = self._repo_state(full_name)
        repo.commits.add(head_sha)
        now = self.now()
        run = self._create_check_run(
            repo,
            head_sha=head_sha,
            name=name,
            status=status,
            conclusion=conclusion if status == "completed" else None,
            app_id=app_id,
            app_slug=app_slug,
            started_at=now,
            completed_at=now if status == "completed" else None,
        )
        return run.id

    def add_status(
        self,
        full_name: str,
        sha: str,
        context: str,
        state: str = "success",
        *,
        description: str | None = None,
        target_url: str | None = None,
        creator: str = "ci-bot",
    ) -> int:
        repo = self._repo_state(full_name)
        repo.commits.add(sha)
        status = FakeStatus(
            id=self._next_id("status"),
            repo=repo.full_name,
            sha=sha,
            state=state,
            context=context,
            description=description,
            target_url=target_url,
            creator=creator,
            created_at=self.now(),
        )
        self.statuses[status.id] = status
        return status.id

    def set_branch_protection(
        self, full_name: str, branch: str, contexts: Sequence[str] = (), *, strict: bool = False
    ) -> None:
        """Classic branch protection requiring these status checks (`contexts`)."""
        repo = self._repo_state(full_name)
        repo.protection[branch] = {"contexts": list(contexts), "strict": strict}

    def remove_branch_protection(self, full_name: str, branch: str) -> None:
        self._repo_state(full_name).protection.pop(branch, None)

    def set_branch_rules(self, full_name: str, branch: str, rules: Sequence[JSON]) -> None:
        """Ruleset rules that apply to `branch`, as GET /rules/branches/{branch} lists them, e.g.
        `{"type": "required_status_checks", "parameters": {"required_status_checks":
        [{"context": "ci"}], "strict_required_status_checks_policy": False}}`."""
        repo = self._repo_state(full_name)
        repo.rules[branch] = [
            {
                "ruleset_source_type": "Repository",
                "ruleset_source": repo.full_name,
                "ruleset_id": 1,
                **rule,
            }
            for rule in rules
        ]

    def set_file(self, full_name: str, path: str, text: str | bytes, *, ref: str | None = None) -> str:
        """Put a file on a branch (default: the default branch); returns its blob sha."""
        repo = self._repo_state(full_name)
        data = text.encode() if isinstance(text, str) else text
        repo.files[(ref or repo.default_branch, path.strip("/"))] = data
        return git_blob_sha(data)

    def set_permission(self, full_name: str, login: str, permission: str) -> None:
        """`admin`, `maintain`, `write`, `triage`, `read` or `none`, as GitHub reports it."""
        if permission not in PERMISSION_ROLES:
            raise ValueError(f"unknown permission {permission!r}")
        self._repo_state(full_name).permissions[login.lower()] = permission

    def set_compare(
        self,
        full_name: str,
        base: str,
        head: str,
        *,
        status: str,
        ahead_by: int = 0,
        behind_by: int = 0,
    ) -> None:
        """What comparing `base...head` reports (otherwise: identical, or head 1 ahead)."""
        repo = self._repo_state(full_name)
        repo.comparisons[(base, head)] = {
            "status": status,
            "ahead_by": ahead_by,
            "behind_by": behind_by,
        }

    def add_workflow_run(
        self,
        full_name: str,
        run_id: int | None = None,
        *,
        head_sha: str,
        name: str = "CI",
        head_branch: str | None = None,
        status: str = "completed",
        conclusion: str | None = "success",
        event: str = "push",
        workflow_id: int = 1,
    ) -> int:
        repo = self._repo_state(full_name)
        repo.commits.add(head_sha)
        now = self.now()
        run = FakeWorkflowRun(
            id=run_id or self._next_id("run"),
            repo=repo.full_name,
            name=name,
            head_sha=head_sha,
            head_branch=head_branch or repo.default_branch,
            status=status,
            conclusion=conclusion,
            event=event,
            workflow_id=workflow_id,
            run_number=len(self.workflow_runs) + 1,
            run_attempt=1,
            created_at=now,
            updated_at=now,
        )
        self.workflow_runs[run.id] = run
        return run.id

    def add_hook_delivery(
        self,
        *,
        event: str,
        action: str | None = None,
        status_code: int = 200,
        guid: str | None = None,
        installation_id: int | None = None,
        repository_id: int | None = None,
        delivered_at: datetime | None = None,
        redelivery: bool = False,
    ) -> int:
        """A delivery in the App's webhook log (`status_code` 0 or >= 400: failed)."""
        delivery = FakeHookDelivery(
            id=self._next_id("delivery"),
            guid=guid or secrets.token_hex(16),
            delivered_at=delivered_at or self.now(),
            redelivery=redelivery,
            status_code=status_code,
            event=event,
            action=action,
            installation_id=installation_id,
            repository_id=repository_id,
        )
        self.hook_deliveries[delivery.id] = delivery
        return delivery.id

    def _issue_token(
        self,
        installation: FakeInstallation,
        repos: frozenset[str] | None,
        permissions: dict[str, str],
        ttl: timedelta | None = None,
    ) -> IssuedToken:
        token = IssuedToken(
            token="ghs_" + secrets.token_urlsafe(27)[:36],
            installation_id=installation.installation_id,
            expires_at=self.now() + (ttl if ttl is not None else self.token_ttl),
            repos=repos,
            permissions=permissions,
        )
        self.tokens[token.token] = token
        return token

    def _repo_state(self, full_name: str) -> FakeRepo:
        try:
            return self.repos[full_name.lower()]
        except KeyError:
            raise KeyError(f"no repo {full_name!r}: add_repo() it first") from None

    def _issue_state(self, full_name: str, number: int) -> FakeIssue:
        return self.issues[(full_name.lower(), number)]

    def _pull_state(self, full_name: str, number: int) -> FakePull:
        return self.pulls[(full_name.lower(), number)]

    def _covers(self, principal: Principal, repo: FakeRepo) -> bool:
        installation = principal.installation
        if installation is None:
            return False
        if installation.repos is None:
            if repo.owner.lower() != installation.account_login.lower():
                return False
        elif repo.full_name.lower() not in installation.repos:
            return False
        token = principal.token
        return token is None or token.repos is None or repo.full_name.lower() in token.repos

    def _installation_repos(self, installation: FakeInstallation) -> list[FakeRepo]:
        if installation.repos is None:
            owner = installation.account_login.lower()
            return [r for r in self.repos.values() if r.owner.lower() == owner]
        return [self.repos[name] for name in installation.repos if name in self.repos]

    def _resolve_ref(self, repo: FakeRepo, ref: str) -> str | None:
        ref = ref.removeprefix("refs/").removeprefix("heads/")
        if ref in repo.branches:
            return repo.branches[ref]
        if ref in repo.commits:
            return ref
        return None

    def _comments_of(self, issue: FakeIssue) -> list[FakeComment]:
        return [
            c for c in self.comments.values() if c.repo.lower() == issue.repo.lower() and c.issue_number == issue.number
        ]

    def _create_comment(self, issue: FakeIssue, body: str, user_login: str) -> FakeComment:
        now = self.now()
        comment = FakeComment(
            id=self._next_id("comment"),
            repo=issue.repo,
            issue_number=issue.number,
            body=body,
            user_login=user_login,
            created_at=now,
            updated_at=now,
        )
        self.comments[comment.id] = comment
        issue.updated_at = now
        return comment

    def _add_label(self, repo: FakeRepo, issue: FakeIssue, name: str) -> None:
        if name.lower() not in repo.labels:
            label_id = self._next_id("label")
            repo.labels[name.lower()] = {"id": label_id, "name": name, "color": "ededed"}
        if name.lower() not in (n.lower() for n in issue.labels):
            issue.labels.append(repo.labels[name.lower()]["name"])

    def _create_check_run(
        self,
        repo: FakeRepo,
        *,
        head_sha: str,
        name: str,
        status: str,
        conclusion: str | None,
        app_id: int,
        app_slug: str,
        started_at: datetime | None,
        completed_at: datetime | None,
    ) -> FakeCheckRun:
        suite = next(
            (
                s
                for s in self.check_suites.values()
                if s.repo == repo.full_name and s.head_sha == head_sha and s.app_id == app_id
            ),
            None,
        )
        if suite is None:
            branch = next((b for b, sha in repo.branches.items() if sha == head_sha), None)
            suite = FakeCheckSuite(
                id=self._next_id("check_suite"),
                repo=repo.full_name,
                head_sha=head_sha,
                head_branch=branch,
                app_id=app_id,
                app_slug=app_slug,
                created_at=self.now(),
            )
            self.check_suites[suite.id] = suite
        run = FakeCheckRun(
            id=self._next_id("check_run"),
            repo=repo.full_name,
            head_sha=head_sha,
            name=name,
            status=status,
            conclusion=conclusion,
            started_at=started_at,
            completed_at=completed_at,
            app_id=app_id,
            app_slug=app_slug,
            check_suite_id=suite.id,
        )
        self.check_runs[run.id] = run
        return run

    def _latest_statuses(self, repo: FakeRepo, sha: str) -> list[FakeStatus]:
        latest: dict[str, FakeStatus] = {}
        for status in sorted(self.statuses.values(), key=lambda s: s.id):
            if status.repo == repo.full_name and status.sha == sha:
                latest[status.context] = status
        return sorted(latest.values(), key=lambda s: s.id, reverse=True)

    def required_checks(self, full_name: str, branch: str) -> list[str]:
        """Status checks required on `branch` by classic protection and by rulesets."""
        repo = self._repo_state(full_name)
        required = list(repo.protection.get(branch, {}).get("contexts", []))
        for rule in repo.rules.get(branch, []):
            if rule.get("type") == "required_status_checks":
                for check in rule.get("parameters", {}).get("required_status_checks", []):
                    if check["context"] not in required:
                        required.append(check["context"])
        return required

    def _unmet_checks(self, repo: FakeRepo, pull: FakePull) -> list[str]:
        """Messages for each required check the head SHA has not passed, as merge reports them."""
        statuses = {s.context: s.state for s in self._latest_statuses(repo, pull.head_sha)}
        latest_runs: dict[str, FakeCheckRun] = {}
        for run in sorted(self.check_runs.values(), key=lambda r: r.id):
            if run.repo == repo.full_name and run.head_sha == pull.head_sha:
                latest_runs[run.name] = run
        unmet = []
        for context in self.required_checks(repo.full_name, pull.base):
            found = latest_runs.get(context)
            if statuses.get(context) == "success" or (
                found is not None
                and found.status == "completed"
                and found.conclusion in ("success", "neutral", "skipped")
            ):
                continue
            if context in statuses or found is not None:
                unmet.append(f'Required status check "{context}" is failing.')
            else:
                unmet.append(f'Required status check "{context}" is expected.')
        return unmet

    def _bucket(self, principal: Principal) -> RateBucket:
        key = principal.bucket
        now = int(self.now().timestamp())
        bucket = self._buckets.get(key)
        if bucket is None or bucket.reset <= now:
            limit = 60 if key == "anonymous" else self.rate_limit
            bucket = RateBucket(limit=limit, remaining=limit, reset=now + 3600)
            self._buckets[key] = bucket
        return bucket
