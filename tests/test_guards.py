"""Guards that keep the project's declarations true: app.yml, Procfile, fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from handlers.routes import ALWAYS_DELIVERED, compose, handled_events
from tests.helpers import webhook_fixtures

ROOT = Path(__file__).resolve().parent.parent


def test_app_yml_default_events_are_exactly_the_handled_events() -> None:
    manifest = yaml.safe_load((ROOT / "app.yml").read_text())
    handled = handled_events(compose())
    assert set(manifest["default_events"]) == handled - ALWAYS_DELIVERED
    assert "installation" in handled and "installation_repositories" in handled


def test_app_yml_asks_for_least_privilege() -> None:
    manifest = yaml.safe_load((ROOT / "app.yml").read_text())
    perms = manifest["default_permissions"]
    assert all(level in ("read", "write") for level in perms.values())
    assert "administration" not in perms and "members" not in perms
    assert manifest["public"] is False


def test_slack_manifest_declares_what_the_bot_listens_to() -> None:
    from chatops.slack import COMMANDS, EVENTS, EVENTS_PATH

    manifest = yaml.safe_load((ROOT / "slack-manifest.yml").read_text())
    commands = manifest["features"]["slash_commands"]
    assert tuple(c["command"] for c in commands) == COMMANDS
    settings = manifest["settings"]
    assert tuple(settings["event_subscriptions"]["bot_events"]) == EVENTS
    urls = [c["url"] for c in commands]
    urls += [settings["event_subscriptions"]["request_url"], settings["interactivity"]["request_url"]]
    assert {url.removeprefix("https://bot.example.com") for url in urls} == {EVENTS_PATH}
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert "chat:write" in scopes and "commands" in scopes
    assert not scopes & {"channels:read", "users:read", "chat:write.public", "admin", "channels:manage"}


def test_procfile_runs_web_and_worker_from_one_cli() -> None:
    lines = dict(line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line.strip())
    assert {k: v.strip() for k, v in lines.items()} == {
        "web": "python -m bot web",
        "worker": "python -m bot worker",
    }


def test_vendored_webhook_fixtures_are_whole() -> None:
    files = list(webhook_fixtures())
    assert len(files) == 99
    for _, path in files:
        assert isinstance(json.loads(path.read_bytes()), dict)
