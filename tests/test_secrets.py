"""Secrets at rest: encrypted with the first key, readable with any, a clear error without a key."""

from __future__ import annotations

import pytest

from bot.secrets import SecretBox, SecretsKeyMissing, SecretUnreadable, generate_key


def test_round_trip_and_ciphertext_hides_plaintext() -> None:
    box = SecretBox((generate_key(),))
    token = box.encrypt("xoxb-slack-token")
    assert b"xoxb" not in token
    assert box.decrypt(token) == "xoxb-slack-token"


def test_rotation_old_tokens_still_read_and_rotate_to_new_key() -> None:
    old, new = generate_key(), generate_key()
    token = SecretBox((old,)).encrypt("v1")
    rotated_box = SecretBox((new, old))
    assert rotated_box.decrypt(token) == "v1"
    rotated = rotated_box.rotate(token)
    assert SecretBox((new,)).decrypt(rotated) == "v1"
    with pytest.raises(SecretUnreadable, match="does not decrypt with any key"):
        SecretBox((new,)).decrypt(token, name="slack bot token")


def test_missing_key_is_a_clear_error() -> None:
    box = SecretBox(())
    assert not box.configured
    with pytest.raises(SecretsKeyMissing, match="SECRETS_KEY is not set"):
        box.encrypt("x")


async def test_vault_keeps_only_ciphertext_in_the_store(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    from bot.secrets import Vault
    from bot.store.sqlite import SqliteStore

    store = SqliteStore(tmp_path / "vault.db")
    await store.open()
    try:
        vault = Vault(store, SecretBox((generate_key(),)))
        await vault.put("telegram_bot_token", "110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw", now=datetime.now(UTC))
        assert await vault.get("telegram_bot_token") == "110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
        raw = (tmp_path / "vault.db").read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("vault.db-wal"))
        assert b"AAHdqTcv" not in raw
        assert await vault.get("missing") is None
        with pytest.raises(SecretsKeyMissing):
            await Vault(store, SecretBox(())).put("x", "y", now=datetime.now(UTC))
    finally:
        await store.close()
