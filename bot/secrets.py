"""Encryption at rest for credentials (Fernet with rotating keys), and the local key for the laptop path."""

from __future__ import annotations

import logging
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Protocol

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

log = logging.getLogger(__name__)

LOCAL_KEY_FILE = "secrets.key"


class SecretStore(Protocol):
    async def put_secret(self, name: str, ciphertext: bytes, *, now: datetime) -> None: ...

    async def get_secret(self, name: str) -> bytes | None: ...


class SecretsKeyMissing(RuntimeError):
    """A secret has to be stored or read but no SECRETS_KEY is configured."""

    def __init__(self) -> None:
        super().__init__(
            "SECRETS_KEY is not set, so secrets cannot be stored or read. Set SECRETS_KEY to one or "
            "more comma-separated Fernet keys (make one with: python -m bot keygen); the first "
            "encrypts, all decrypt, so keys can rotate."
        )


class SecretUnreadable(RuntimeError):
    """A stored secret does not decrypt with any configured key."""


class SecretBox:
    """Encrypts with the first key, decrypts with any: rotation is prepending a new key."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        self._fernet = MultiFernet([Fernet(k.encode()) for k in keys]) if keys else None

    @property
    def configured(self) -> bool:
        return self._fernet is not None

    def encrypt(self, plaintext: str) -> bytes:
        if self._fernet is None:
            raise SecretsKeyMissing
        return self._fernet.encrypt(plaintext.encode())

    def decrypt(self, token: bytes, *, name: str = "secret") -> str:
        if self._fernet is None:
            raise SecretsKeyMissing
        try:
            return self._fernet.decrypt(token).decode()
        except InvalidToken:
            raise SecretUnreadable(f"{name} does not decrypt with any key in SECRETS_KEY: was a key removed?") from None

    def rotate(self, token: bytes) -> bytes:
        """Re-encrypt a token under the current first key."""
        if self._fernet is None:
            raise SecretsKeyMissing
        return self._fernet.rotate(token)


def generate_key() -> str:
    return Fernet.generate_key().decode()


def load_or_create_local_key(data_dir: Path) -> tuple[str, bool]:
    """Return the key kept in data_dir (mode 0600), creating it on first start; and whether it is new.

    Web and worker may start together on a fresh folder: the key is written to a private temporary
    file and linked into place atomically, so both end up with the same complete key.
    """
    path = data_dir / LOCAL_KEY_FILE
    try:
        return path.read_text().strip(), False
    except FileNotFoundError:
        pass
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=data_dir, prefix=".secrets-")  # created with mode 0600
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(generate_key() + "\n")
        os.link(tmp, path)
    except FileExistsError:
        return path.read_text().strip(), False
    finally:
        os.unlink(tmp)
    return path.read_text().strip(), True


class Vault:
    """Named secrets in the store, encrypted on the way in and decrypted on the way out."""

    def __init__(self, store: SecretStore, box: SecretBox) -> None:
        self.store = store
        self.box = box

    async def put(self, name: str, value: str, *, now: datetime) -> None:
        await self.store.put_secret(name, self.box.encrypt(value), now=now)

    async def get(self, name: str) -> str | None:
        token = await self.store.get_secret(name)
        return None if token is None else self.box.decrypt(token, name=name)
