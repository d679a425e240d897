"""`python -m bot doctor` says precisely what is wrong, checked against the fake GitHub."""

from __future__ import annotations

import io
from pathlib import Path

from bot.config import Settings
from bot.doctor import run_doctor
from bot.secrets import generate_key
from tests.fakes.github import FakeGitHub
from tests.fakes.google_calendar import FakeGoogle
from tests.fakes.keys import make_app_key


async def doctor(settings: Settings) -> tuple[int, str]:
    out = io.StringIO()
    code = await run_doctor(settings, out)
    return code, out.getvalue()


async def test_all_good(app_settings: Settings, fake_github: FakeGitHub) -> None:
    code, text = await doctor(app_settings.replace(public_url="https://bot.example.com"))
    assert code == 0, text
    assert "App 'release-secretary' (id 4242) owned by octo-org" in text
    assert "doctor: all good" in text


async def test_key_of_another_app_is_named(app_settings: Settings, fake_github: FakeGitHub) -> None:
    other = make_app_key().rsa_private_key_pem.decode()
    code, text = await doctor(app_settings.replace(github_private_key=other))
    assert code == 1
    assert "rejected the App's JWT (401)" in text and "GITHUB_APP_ID=4242" in text


async def test_unreachable_api_is_named(app_settings: Settings, fake_github: FakeGitHub) -> None:
    code, text = await doctor(app_settings.replace(github_api_url="http://127.0.0.1:9"))
    assert code == 1
    assert "cannot reach GITHUB_API_URL=http://127.0.0.1:9" in text


async def test_not_configured_lists_what_is_missing(tmp_path: Path) -> None:
    code, text = await doctor(Settings(data_dir=tmp_path, secrets_keys=(generate_key(),)))
    assert code == 1
    assert "no App configured; set GITHUB_APP_ID, GITHUB_PRIVATE_KEY or GITHUB_PRIVATE_KEY_PATH" in text
    assert "[ ok ] store: SQLite" in text


async def test_parked_deliveries_are_listed(app_settings: Settings, fake_github: FakeGitHub) -> None:
    from datetime import UTC, datetime

    from bot.store import NewDelivery
    from bot.store.sqlite import SqliteStore

    store = SqliteStore(app_settings.sqlite_path)
    await store.open()
    now = datetime.now(UTC)
    await store.record_delivery(NewDelivery("4242:x", "x", "push", None, 1, b"{}", now))
    await store.claim_deliveries("w", now=now, lease_seconds=10, limit=1)
    await store.park_delivery("4242:x", "w", error="KeyError: 'ref'", now=now)
    await store.close()
    _, text = await doctor(app_settings)
    assert "1 webhook deliveries are parked" in text
    assert "4242:x push: KeyError: 'ref'" in text


async def test_calendar_is_built_in_without_google(app_settings: Settings, fake_github: FakeGitHub) -> None:
    code, text = await doctor(app_settings.replace(public_url="https://bot.example.com"))
    assert code == 0
    assert (
        "calendar: built-in (no Google service account); subscribers use https://bot.example.com/calendar.ics" in text
    )


async def test_google_service_account_signs_in(
    app_settings: Settings, fake_github: FakeGitHub, fake_google: FakeGoogle
) -> None:
    robot = fake_google.add_service_account()
    settings = app_settings.replace(
        public_url="https://bot.example.com",
        google_service_account=robot.key_json,
        google_calendar_api_url=fake_google.url,
    )
    code, text = await doctor(settings)
    assert code == 0, text
    assert f"calendar: Google service account {robot.email} (GOOGLE_SERVICE_ACCOUNT_*) signs in" in text
    robot.disabled = True
    code, text = await doctor(settings)
    assert code == 1
    assert f"the service account {robot.email} (GOOGLE_SERVICE_ACCOUNT_*) cannot sign in" in text
    assert "GOOGLE_SERVICE_ACCOUNT_FILE" in text


async def test_a_stored_service_account_key_is_checked(
    app_settings: Settings, fake_github: FakeGitHub, fake_google: FakeGoogle
) -> None:
    from bot.calendar.planner import SERVICE_ACCOUNT_SECRET
    from bot.context import utcnow
    from bot.secrets import SecretBox, Vault
    from bot.store.sqlite import SqliteStore

    robot = fake_google.add_service_account()
    settings = app_settings.replace(public_url="https://bot.example.com", google_calendar_api_url=fake_google.url)
    store = SqliteStore(settings.sqlite_path)
    await store.open()
    await Vault(store, SecretBox(settings.secrets_keys)).put(SERVICE_ACCOUNT_SECRET, robot.key_json, now=utcnow())
    await store.close()
    code, text = await doctor(settings)
    assert code == 0, text
    assert f"calendar: Google service account {robot.email} (the stored key) signs in" in text


async def test_calendar_linking_needs_a_public_url_and_the_app_oauth_client(
    app_settings: Settings, fake_github: FakeGitHub
) -> None:
    settings = app_settings.replace(google_client_id="id.apps.googleusercontent.com", google_client_secret="s")
    _, text = await doctor(settings)
    assert "GOOGLE_CLIENT_ID is set but PUBLIC_URL is not" in text
    _, text = await doctor(settings.replace(public_url="https://bot.example.com"))
    assert "GITHUB_CLIENT_ID/GITHUB_CLIENT_SECRET are not" in text
    _, text = await doctor(
        settings.replace(public_url="https://bot.example.com", github_client_id="Iv1.x", github_client_secret="y")
    )
    assert "https://bot.example.com/oauth/google/callback (Google OAuth client)" in text
    assert "https://bot.example.com/oauth/google/github (the GitHub App)" in text
