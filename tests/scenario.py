"""A release scenario harness: the real app and worker, the fake GitHub, real signed webhooks.

Webhook bodies are the vendored GitHub examples, re-pointed at the scenario's repository and PR
(the derivation is the `_retarget` below: repository, installation, PR number and head, sender).
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient

from bot.app import GITHUB, STORE
from bot.config import Settings
from bot.worker import Worker
from handlers.routes import compose
from tests.fakes.github import FakeGitHub
from tests.helpers import webhook_body, webhook_headers

REPO = "octo-org/widgets"
INSTALLATION = 99


@dataclass
class Clock:
    now: datetime = field(default_factory=lambda: datetime(2026, 11, 25, 9, 0, tzinfo=UTC))  # a Wednesday

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


def _template(event: str, name: str) -> dict[str, Any]:
    return json.loads(webhook_body(event, name))


_PR_LABELED = _template("pull_request", "labeled")
_PR_SYNC = _template("pull_request", "synchronize")
_COMMENT = _template("issue_comment", "created")
_SUITE = _template("check_suite", "completed")
_RUN = _template("workflow_run", "completed")
_DEPLOYMENT_STATUS = _template("deployment_status", "created")


def _retarget(data: dict[str, Any], repo: str, sender: str) -> dict[str, Any]:
    out = copy.deepcopy(data)
    owner, name = repo.split("/")
    out["repository"]["full_name"] = repo
    out["repository"]["name"] = name
    out["repository"]["owner"]["login"] = owner
    out["installation"] = {"id": INSTALLATION, "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uOTk="}
    out["sender"] = {**out["sender"], "login": sender, "type": "User"}
    return out


def labeled(pr: int, head_sha: str, *, sender: str, label: str = "Ready for Prod", repo: str = REPO) -> dict[str, Any]:
    data = _retarget(_PR_LABELED, repo, sender)
    data["number"] = pr
    data["pull_request"]["number"] = pr
    data["pull_request"]["head"]["sha"] = head_sha
    data["label"] = {**data["label"], "name": label}
    return data


def unlabeled(pr: int, head_sha: str, *, sender: str, label: str = "Ready for Prod") -> dict[str, Any]:
    data = labeled(pr, head_sha, sender=sender, label=label)
    data["action"] = "unlabeled"
    return data


def synchronize(pr: int, head_sha: str, *, sender: str, repo: str = REPO) -> dict[str, Any]:
    data = _retarget(_PR_SYNC, repo, sender)
    data["number"] = pr
    data["pull_request"]["number"] = pr
    data["pull_request"]["head"]["sha"] = head_sha
    return data


def pr_comment(pr: int, body: str, *, sender: str, comment_id: int, repo: str = REPO) -> dict[str, Any]:
    data = _retarget(_COMMENT, repo, sender)
    data["issue"]["number"] = pr
    data["issue"]["pull_request"] = {
        "url": f"https://api.github.com/repos/{repo}/pulls/{pr}",
        "html_url": f"https://github.com/{repo}/pull/{pr}",
        "diff_url": f"https://github.com/{repo}/pull/{pr}.diff",
        "patch_url": f"https://github.com/{repo}/pull/{pr}.patch",
    }
    data["comment"]["id"] = comment_id
    data["comment"]["body"] = body
    data["comment"]["user"] = {**data["comment"]["user"], "login": sender, "type": "User"}
    return data


def suite_completed(
    head_sha: str, *, conclusion: str = "success", repo: str = REPO, app_id: int = 15368
) -> dict[str, Any]:
    data = _retarget(_SUITE, repo, "github-actions[bot]")
    data["sender"]["type"] = "Bot"
    data["check_suite"]["head_sha"] = head_sha
    data["check_suite"]["conclusion"] = conclusion
    data["check_suite"]["app"] = {**data["check_suite"]["app"], "id": app_id}
    return data


def workflow_run(
    run_id: int,
    head_sha: str,
    *,
    workflow: str,
    action: str = "completed",
    conclusion: str | None = "success",
    repo: str = REPO,
) -> dict[str, Any]:
    """A run of `.github/workflows/<workflow>` started by workflow_dispatch (the bot's deploy)."""
    data = _retarget(_RUN, repo, "octocat")
    data["action"] = action
    run = data["workflow_run"]
    run.update(
        id=run_id,
        head_sha=head_sha,
        event="workflow_dispatch",
        path=f".github/workflows/{workflow}",
        name="Deploy",
        status="completed" if action == "completed" else action,
        conclusion=conclusion if action == "completed" else None,
        html_url=f"https://github.com/{repo}/actions/runs/{run_id}",
    )
    data["workflow"] = {**data.get("workflow", {}), "path": f".github/workflows/{workflow}"}
    return data


def deployment_status(
    deployment_id: int, sha: str, *, state: str, environment: str = "production", repo: str = REPO
) -> dict[str, Any]:
    data = _retarget(_DEPLOYMENT_STATUS, repo, "deploy-bot")
    data["deployment"] = {**data["deployment"], "id": deployment_id, "sha": sha, "environment": environment}
    data["deployment_status"] = {
        **data["deployment_status"],
        "state": state,
        "environment": environment,
        "description": f"deploy {state}",
        "target_url": f"https://deploys.example/{deployment_id}",
    }
    return data


class Scenario:
    def __init__(self, client: TestClient, settings: Settings, fake: FakeGitHub, clock: Clock) -> None:  # type: ignore[type-arg]
        self.client = client
        self.settings = settings
        self.fake = fake
        self.clock = clock
        app = client.server.app
        self.store = app[STORE]
        self.worker = Worker(self.store, settings, compose(), app[GITHUB], clock=clock)

    async def send(self, event: str, data: dict[str, Any], *, delivery: str | None = None) -> int:
        body = json.dumps(data).encode()
        headers = webhook_headers(event, body, delivery=delivery or str(uuid.uuid4()))
        response = await self.client.post("/webhooks/github", data=body, headers=headers)
        return response.status

    async def settle(self) -> int:
        """Run the worker until nothing is due now (debounced renders wait for the clock)."""
        return await self.worker.drain()

    async def deliver(self, event: str, data: dict[str, Any], *, delivery: str | None = None) -> None:
        assert await self.send(event, data, delivery=delivery) in (200, 202)
        await self.settle()

    def comment(self, pr: int, body: str, *, sender: str) -> dict[str, Any]:
        """Someone comments on the PR: the comment exists on GitHub, then its webhook is built."""
        comment_id = self.fake.add_comment(REPO, pr, body, user_login=sender)
        return pr_comment(pr, body, sender=sender, comment_id=comment_id)

    def comments(self, pr: int) -> list[dict[str, Any]]:
        return self.fake.comments_on(REPO, pr)

    def sticky(self, pr: int) -> dict[str, Any]:
        [sticky] = [c for c in self.comments(pr) if c["body"].startswith("<!-- release-secretary -->")]
        return sticky

    def answers(self, pr: int) -> list[str]:
        """Replies other than the confirmations of successful `/ship` bookings ("@x booked ...")."""
        return [r for r in self.replies(pr) if " booked **" not in r.split("\n", 1)[0]]

    def replies(self, pr: int) -> list[str]:
        """What the bot answered (not the sticky comment, not the people's own comments)."""
        return [
            # Without the hidden mark each reply carries (its job, for exactly-once posting).
            re.sub(r"\n<!-- release-secretary:reply [0-9a-f]+ -->$", "", c["body"])
            for c in self.comments(pr)
            if c["user"]["type"] == "Bot" and not c["body"].startswith("<!-- release-secretary -->")
        ]
