"""The CLI as operators run it: `python -m bot serve` with nothing configured, and bad settings."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient

from bot.app import make_app
from bot.config import Settings

ROOT = Path(__file__).resolve().parent.parent
ClientFactory = Callable[[web.Application], Awaitable[TestClient]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "HOME": str(tmp_path), **extra}


async def test_serve_starts_unconfigured_and_explains_itself(tmp_path: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, "-m", "bot", "serve"],
        cwd=tmp_path,
        env=_env(tmp_path, PORT=str(port), HOST="127.0.0.1"),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        page = ""
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/") as response:
                        page = await response.text()
                        break
                except aiohttp.ClientConnectionError:
                    await _sleep(0.1)
            async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200
            async with session.post(
                f"http://127.0.0.1:{port}/webhooks/github", data=b"{}", headers={"X-GitHub-Event": "ping"}
            ) as response:
                assert response.status == 503
        assert "Not connected to GitHub yet" in page and "GITHUB_WEBHOOK_SECRET" in page
        key = tmp_path / "data" / "secrets.key"
        assert key.stat().st_mode & 0o777 == 0o600
        assert (tmp_path / "data" / "release-secretary.db").exists()
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0, stderr
    assert "created" in stderr and "secrets.key" in stderr
    assert "no GitHub App configured" in stderr


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


def test_bad_settings_exit_2_with_every_problem(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bot", "serve"],
        cwd=tmp_path,
        env=_env(tmp_path, PORT="eighty", GITHUB_APP_ID="12", GITHUB_PRIVATE_KEY_PATH="/nope.pem"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "PORT must be a whole number, got 'eighty'" in result.stderr
    assert "GITHUB_PRIVATE_KEY_PATH: cannot read /nope.pem" in result.stderr
    assert "Traceback" not in result.stderr


def test_dotenv_file_is_read_and_environment_wins(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("PORT=notaport\nLOG_LEVEL=chatty\n")
    result = subprocess.run(
        [sys.executable, "-m", "bot", "deliveries"],
        cwd=tmp_path,
        env=_env(tmp_path, PORT="3001"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "LOG_LEVEL must be one of" in result.stderr
    assert "PORT" not in result.stderr


def test_keygen_prints_a_usable_key(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bot", "keygen"],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        check=True,
    )
    key = result.stdout.strip()
    listing = subprocess.run(
        [sys.executable, "-m", "bot", "deliveries"],
        cwd=tmp_path,
        env=_env(tmp_path, SECRETS_KEY=key),
        capture_output=True,
        text=True,
        check=False,
    )
    assert listing.returncode == 0, listing.stderr
    assert "pending=0" in listing.stdout


async def _wait_http(session: aiohttp.ClientSession, url: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            async with session.get(url) as response:
                if response.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await _sleep(0.1)
    raise AssertionError(f"{url} never answered")


async def _wait_installation(db: Path, installation_id: int) -> None:
    from bot.store.sqlite import SqliteStore

    store = SqliteStore(db)
    await store.open()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if await store.get_installation(installation_id) is not None:
                return
            await _sleep(0.1)
        raise AssertionError(f"installation {installation_id} never stored")
    finally:
        await store.close()


async def test_procfile_split_web_and_worker_share_the_work(tmp_path: Path) -> None:
    """`web` stores and acknowledges; a separate `worker` process picks the delivery up."""
    from tests.helpers import SECRET, webhook_body, webhook_headers

    port = _free_port()
    env = _env(
        tmp_path,
        PORT=str(port),
        HOST="127.0.0.1",
        GITHUB_WEBHOOK_SECRET=SECRET,
        WORKER_POLL_INTERVAL="0.1",
        REDELIVERY_SWEEP_INTERVAL="0",
    )
    procs = [
        subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, "-m", "bot", role], cwd=tmp_path, env=env, stderr=subprocess.DEVNULL
        )
        for role in ("web", "worker")
    ]
    try:
        body = webhook_body("installation", "created")
        async with aiohttp.ClientSession() as session:
            await _wait_http(session, f"http://127.0.0.1:{port}/healthz")
            async with session.post(
                f"http://127.0.0.1:{port}/webhooks/github",
                data=body,
                headers=webhook_headers("installation", body),
            ) as response:
                assert response.status == 202
        await _wait_installation(tmp_path / "data" / "release-secretary.db", 957387)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            assert proc.wait(timeout=20) == 0


def test_calendar_feed_prints_a_stable_subscription_url(tmp_path: Path) -> None:
    env = _env(tmp_path, PUBLIC_URL="https://bot.example.com")
    run = [sys.executable, "-m", "bot", "calendar-feed", "--repo", "octo-org/widgets"]
    first = subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=True)
    again = subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=True)
    url = first.stdout.strip()
    assert url.startswith("https://bot.example.com/calendar.ics?repo=octo-org%2Fwidgets&token=")
    assert again.stdout.strip() == url  # the secret behind the token is stored (encrypted) and reused
    everything = subprocess.run(
        [sys.executable, "-m", "bot", "calendar-feed"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert everything.stdout.startswith("https://bot.example.com/calendar.ics?token=")
    assert everything.stdout.strip() != url
    no_url = subprocess.run(
        [sys.executable, "-m", "bot", "calendar-feed"], cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True
    )
    assert no_url.returncode == 2 and "set PUBLIC_URL" in no_url.stderr


async def test_calendar_feed_rotate_revokes_the_old_url(tmp_path: Path, aiohttp_client: ClientFactory) -> None:
    env = _env(tmp_path, PUBLIC_URL="https://bot.example.com")

    async def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "bot", "calendar-feed", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )

    old = (await cli("--repo", "octo-org/widgets")).stdout.strip()
    everything = (await cli()).stdout.strip()
    rotated = await cli("--repo", "octo-org/widgets", "--rotate")
    new = rotated.stdout.strip()
    assert new.startswith("https://bot.example.com/calendar.ics?repo=octo-org%2Fwidgets&token=") and new != old
    assert "revoked every earlier feed URL of octo-org/widgets" in rotated.stderr
    assert (await cli("--repo", "octo-org/widgets")).stdout.strip() == new  # stable again until the next rotation
    assert (await cli()).stdout.strip() == everything  # other feeds keep their URLs

    # The web process on the same data folder: the old URL is gone, the new one and the others work.
    key = (tmp_path / "data" / "secrets.key").read_text().strip()
    client = await aiohttp_client(make_app(Settings(data_dir=tmp_path / "data", secrets_keys=(key,))))
    for url, status in ((old, 404), (new, 200), (everything, 200)):
        parts = urlsplit(url)
        assert (await client.get(f"{parts.path}?{parts.query}")).status == status, url

    again = (await cli("--rotate")).stdout.strip()
    assert again != everything
    assert (await client.get(f"/calendar.ics?{urlsplit(everything).query}")).status == 404


def test_a_service_account_key_is_stored_encrypted_and_removed(tmp_path: Path) -> None:
    import json

    key = {
        "type": "service_account",
        "client_email": "release-bot@deploys.iam.gserviceaccount.com",
        "private_key": "-----BEGIN PRIVATE KEY-----\nnot-checked-here\n-----END PRIVATE KEY-----\n",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    (tmp_path / "key.json").write_text(json.dumps(key))
    (tmp_path / "bad.json").write_text('{"type": "authorized_user"}')
    env = _env(tmp_path)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bot", "google-service-account", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    stored = cli("key.json")
    assert stored.returncode == 0, stored.stderr
    assert "stored the key of release-bot@deploys.iam.gserviceaccount.com (encrypted)" in stored.stdout
    database = (tmp_path / "data" / "release-secretary.db").read_bytes()
    assert b"not-checked-here" not in database and b"release-bot@deploys" not in database
    bad = cli("bad.json")
    assert bad.returncode == 2 and "must be a service account key file" in bad.stderr
    assert cli().returncode == 2
    removed = cli("--remove")
    assert removed.returncode == 0 and "removed the stored service account key" in removed.stdout
    assert "no service account key was stored" in cli("--remove").stdout
