"""pytest plugin: the `fake_github` server (per test) and a GitHub App key pair (`app_key`, per session)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.fakes.github import FakeGitHub
from tests.fakes.keys import AppKey, make_app_key


@pytest.fixture(scope="session")
def app_key() -> AppKey:
    """`app_key.rsa_private_key_pem` for the bot's settings, `app_key.public_key_pem` for
    `fake_github.add_app(...)`; RSA 2048, generated once per session."""
    return make_app_key()


@pytest.fixture
async def fake_github() -> AsyncIterator[FakeGitHub]:
    """A started FakeGitHub with no state: arrange it with `add_app`, `add_installation`, ..."""
    fake = FakeGitHub()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.close()
