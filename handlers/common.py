"""Small readers of webhook payloads shared by the handlers."""

from __future__ import annotations

from typing import Any

from bot.service import PullRef


def is_bot(user: dict[str, Any] | None) -> bool:
    """Bots (including this App) never drive a release: that is how loops are avoided."""
    if not user:
        return False
    return user.get("type") == "Bot" or str(user.get("login", "")).endswith("[bot]")


def pull_ref(data: dict[str, Any], number: int) -> PullRef | None:
    installation = data.get("installation") or {}
    if "id" not in installation:
        return None  # a repository webhook, not an App delivery: nothing we could act with
    return PullRef(repo=data["repository"]["full_name"], pr=number, installation_id=int(installation["id"]))
