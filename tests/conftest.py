"""Shared fixtures: settings for a bot wired to local fakes, and a running app."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from bot.config import Settings
from bot.secrets import generate_key
from tests.fakes.github import FakeGitHub
from tests.fakes.keys import AppKey
from tests.helpers import SECRET

pytest_plugins = ["tests.fakes.plugin", "tests.fakes.google_calendar"]

# Property tests check properties, not speed (benches do that). On a fresh clone Hypothesis first
# builds its Unicode tables, which can make one early draw take over a second: not a failure.
hypothesis_settings.register_profile(
    "project", deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
hypothesis_settings.load_profile("project")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """A bot that accepts webhooks (secret set) with no GitHub App: the intake on its own."""
    return Settings(
        github_webhook_secret=SECRET,
        data_dir=tmp_path / "data",
        secrets_keys=(generate_key(),),
        github_write_interval=0.0,
        worker_poll_interval=0.05,
        worker_retry_base=0.01,
    )


@pytest.fixture
def app_settings(settings: Settings, fake_github: FakeGitHub, app_key: AppKey) -> Settings:
    """A bot configured as GitHub App 4242, installed as 99 on octo-org/widgets, at the fake GitHub."""
    fake_github.add_app(4242, app_key.public_key_pem)
    fake_github.add_repo("octo-org/widgets")
    fake_github.add_installation(99, "octo-org", repos=["octo-org/widgets"])
    return settings.replace(
        github_app_id=4242,
        github_private_key=app_key.rsa_private_key_pem.decode(),
        github_api_url=fake_github.url,
        github_max_retry_wait=5.0,
    )
