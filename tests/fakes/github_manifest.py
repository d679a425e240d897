"""GitHub's checks of an App manifest (the manifest flow's form post), for the fake GitHub.

What `https://github.com/settings/apps/new` does with a posted `manifest` before it offers to create the
App: the documented parameters ("Registering a GitHub App from a manifest": `url` required, `hook_attributes`
with a required `url`, up to 10 `callback_urls`, booleans, `default_permissions` as permission: access),
permission names and levels as the REST description's `app-permissions` schema lists them, and events
GitHub offers an App only with the permission that covers them.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from tests.fakes._spec import Spec

KNOWN_KEYS = frozenset(
    {
        "name",
        "url",
        "hook_attributes",
        "redirect_url",
        "callback_urls",
        "setup_url",
        "description",
        "public",
        "default_events",
        "default_permissions",
        "request_oauth_on_install",
        "setup_on_update",
    }
)
MAX_CALLBACK_URLS = 10
MAX_NAME = 34  # GitHub App names

# The events an App can subscribe to, each with the permissions that offer it (None: every App).
EVENT_PERMISSIONS: dict[str, tuple[str, ...] | None] = {
    "check_run": ("checks",),
    "check_suite": ("checks",),
    "commit_comment": ("contents",),
    "create": ("contents",),
    "delete": ("contents",),
    "deployment": ("deployments",),
    "deployment_status": ("deployments",),
    "issue_comment": ("issues", "pull_requests"),
    "issues": ("issues",),
    "label": None,
    "merge_group": ("merge_queues",),
    "milestone": ("issues", "pull_requests"),
    "public": None,
    "pull_request": ("pull_requests",),
    "pull_request_review": ("pull_requests",),
    "pull_request_review_comment": ("pull_requests",),
    "pull_request_review_thread": ("pull_requests",),
    "push": ("contents",),
    "release": ("contents",),
    "repository": None,
    "star": None,
    "status": ("statuses",),
    "watch": None,
    "workflow_dispatch": ("actions",),
    "workflow_job": ("actions",),
    "workflow_run": ("actions",),
}


class ManifestRefused(ValueError):
    """GitHub would show these problems instead of offering to create the App."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def slug_of(name: str) -> str:
    """The App's URL name, as GitHub derives it from the display name."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _is_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def manifest_problems(manifest: Any, spec: Spec) -> list[str]:
    """Everything GitHub would refuse in `manifest` (empty: it would offer to create the App)."""
    if not isinstance(manifest, dict):
        return ["the manifest must be a JSON object"]
    problems = [f"unknown manifest parameter {key!r}" for key in sorted(manifest.keys() - KNOWN_KEYS)]
    if not _is_url(manifest.get("url")):
        problems.append("url is required: the App's homepage, an http(s) URL")
    name = manifest.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME):
        problems.append(f"name must be 1-{MAX_NAME} characters")
    for key in ("redirect_url", "setup_url"):
        if key in manifest and not _is_url(manifest[key]):
            problems.append(f"{key} must be an http(s) URL")
    for key in ("public", "request_oauth_on_install", "setup_on_update"):
        if key in manifest and not isinstance(manifest[key], bool):
            problems.append(f"{key} must be true or false")
    if "description" in manifest and not isinstance(manifest["description"], str):
        problems.append("description must be a string")
    hook = manifest.get("hook_attributes")
    if hook is not None:
        if not isinstance(hook, dict) or not _is_url(hook.get("url")):
            problems.append("hook_attributes.url is required: the webhook URL, an http(s) URL")
        elif hook.keys() - {"url", "active"} or not isinstance(hook.get("active", True), bool):
            problems.append("hook_attributes takes url and active (true or false) only")
    callbacks = manifest.get("callback_urls", [])
    if not isinstance(callbacks, list) or not all(_is_url(u) for u in callbacks):
        problems.append("callback_urls must be a list of http(s) URLs")
    elif len(callbacks) > MAX_CALLBACK_URLS:
        problems.append(f"callback_urls takes at most {MAX_CALLBACK_URLS} URLs")
    permissions = manifest.get("default_permissions", {})
    scopes = spec.raw["components"]["schemas"]["app-permissions"]["properties"]
    if not isinstance(permissions, dict):
        problems.append("default_permissions must be an object of permission: access")
        permissions = {}
    for scope, level in permissions.items():
        if scope not in scopes:
            problems.append(f"default_permissions: unknown permission {scope!r}")
        elif level not in scopes[scope].get("enum", ()):
            problems.append(f"default_permissions: {scope} cannot be {level!r}")
    events = manifest.get("default_events", [])
    if not isinstance(events, list):
        problems.append("default_events must be a list of event names")
        events = []
    for event in events:
        if event not in EVENT_PERMISSIONS:
            problems.append(f"default_events: unknown event {event!r}")
            continue
        needs = EVENT_PERMISSIONS[event]
        if needs is not None and not any(scope in permissions for scope in needs):
            problems.append(f"default_events: {event} needs the {' or '.join(needs)} permission")
    return problems
