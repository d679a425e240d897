"""All handler routers composed once, and the list of events they handle (app.yml must match it)."""

from __future__ import annotations

from gidgethub import routing

from . import checks, deploys, installation, pr_state, pull_request, ship_command

ROUTERS: tuple[routing.Router, ...] = (
    installation.router,
    pull_request.router,
    ship_command.router,
    checks.router,
    deploys.router,
    pr_state.router,
)

# GitHub sends these to every App whatever it subscribes to; they never appear in default_events.
ALWAYS_DELIVERED = frozenset({"installation", "installation_repositories", "github_app_authorization", "ping"})


def compose() -> routing.Router:
    return routing.Router(*ROUTERS)


def handled_events(router: routing.Router) -> frozenset[str]:
    # gidgethub's Router has no public listing; its two route tables are the source of truth.
    return frozenset(router._shallow_routes) | frozenset(router._deep_routes)
