"""The GitHub App a process acts as, changeable while it runs: the environment's, else the one registered
through the setup page (GitHub's App manifest flow, bot/web/setup.py), kept encrypted in the store.

Settings are frozen and handed out at start, so the credentials that can change live in one holder per
process, `settings.credentials`, and everything that needs them asks it each time: the webhook intake
(the secret), `GitHubApp` (the JWT and installation tokens), the handlers and the release service (which
check runs are the bot's own), the calendar link flow (the OAuth client). Environment values win, each on
its own: GITHUB_APP_ID with the private key, GITHUB_WEBHOOK_SECRET, GITHUB_CLIENT_ID with its secret. A
registered App fills in only what the environment leaves unset, and never when the environment names an
App of its own (the setup page then refuses to register another).

A process that did not run the flow (the worker next to `python -m bot web`, a second web instance) reads
the stored App at start, and again when a request needs an App it does not have yet (`refresh`), so a
registration elsewhere is picked up without a restart.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .secrets import SecretBox, SecretsKeyMissing, SecretUnreadable, Vault

if TYPE_CHECKING:
    from .secrets import SecretStore

log = logging.getLogger(__name__)

STORED_APP = "github:app"  # the vault name of the registered App
REFRESH_INTERVAL = 1.0  # seconds: how often a process without an App looks for one in the store


@dataclass(frozen=True)
class RegisteredApp:
    """What GitHub handed over, once, when the manifest flow created the App."""

    app_id: int
    slug: str
    owner: str  # the login of the account (user or organization) that owns the App
    html_url: str
    private_key: str = field(repr=False)
    webhook_secret: str | None = field(repr=False)
    client_id: str | None
    client_secret: str | None = field(repr=False)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RegisteredApp:
        data: dict[str, Any] = json.loads(text)
        return cls(
            app_id=int(data["app_id"]),
            slug=str(data["slug"]),
            owner=str(data.get("owner") or ""),
            html_url=str(data.get("html_url") or ""),
            private_key=str(data["private_key"]),
            webhook_secret=data.get("webhook_secret"),
            client_id=data.get("client_id"),
            client_secret=data.get("client_secret"),
        )


class AppCredentials:
    """The App's id, key, webhook secret and OAuth client as this process should use them right now."""

    def __init__(
        self,
        *,
        app_id: int | None = None,
        private_key: str | None = None,
        webhook_secret: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._env_app = (app_id, private_key) if app_id is not None and private_key is not None else None
        self._env_webhook_secret = webhook_secret
        self._env_client = (client_id, client_secret) if client_id is not None and client_secret is not None else None
        self.registered: RegisteredApp | None = None
        self.problem: str | None = None  # why a stored App could not be read, for the start page
        self._vault: Vault | None = None
        self._clock = clock
        self._looked_at: float | None = None
        self.refresh_interval = REFRESH_INTERVAL

    def __repr__(self) -> str:  # never the key or the secrets
        return f"AppCredentials(app_id={self.app_id}, from_environment={self.from_environment})"

    @property
    def from_environment(self) -> bool:
        """The environment names the App (GITHUB_APP_ID and the key): registering another is refused."""
        return self._env_app is not None

    @property
    def _stored(self) -> RegisteredApp | None:
        return None if self._env_app is not None else self.registered

    @property
    def app_id(self) -> int | None:
        if self._env_app is not None:
            return self._env_app[0]
        return self.registered.app_id if self.registered is not None else None

    @property
    def private_key(self) -> str | None:
        if self._env_app is not None:
            return self._env_app[1]
        return self.registered.private_key if self.registered is not None else None

    @property
    def webhook_secret(self) -> str | None:
        if self._env_webhook_secret is not None:
            return self._env_webhook_secret
        stored = self._stored
        return stored.webhook_secret if stored is not None else None

    @property
    def client_id(self) -> str | None:
        if self._env_client is not None:
            return self._env_client[0]
        stored = self._stored
        return stored.client_id if stored is not None and stored.client_secret else None

    @property
    def client_secret(self) -> str | None:
        if self._env_client is not None:
            return self._env_client[1]
        stored = self._stored
        return stored.client_secret if stored is not None and stored.client_id else None

    @property
    def configured(self) -> bool:
        """The bot can act as an App: it has an App id and the App's private key."""
        return self.app_id is not None and self.private_key is not None

    def use(self, app: RegisteredApp) -> None:
        """Act as `app` from now on (wherever the environment does not say otherwise)."""
        self.registered = app
        self.problem = None

    def attach(self, vault: Vault | None) -> None:
        """Where the registered App is kept; without a vault nothing is read or stored."""
        self._vault = vault

    async def load(self) -> RegisteredApp | None:
        """Read the registered App from the store now (nothing to read while the environment names one)."""
        self._looked_at = self._clock()
        if self._vault is None or self._env_app is not None:
            return None
        try:
            text = await self._vault.get(STORED_APP)
        except (SecretUnreadable, SecretsKeyMissing) as exc:
            self.problem = f"the registered GitHub App is stored but cannot be read: {exc}"
            log.error("%s", self.problem)
            return None
        if text is None:
            return self.registered
        try:
            app = RegisteredApp.from_json(text)
        except (ValueError, KeyError, TypeError) as exc:
            self.problem = f"the registered GitHub App is stored but malformed ({type(exc).__name__})"
            log.error("%s", self.problem)
            return None
        if self.registered is None or self.registered.app_id != app.app_id:
            log.info("acting as GitHub App %s (id %d), registered through the setup page", app.slug, app.app_id)
        self.use(app)
        return app

    async def refresh(self) -> None:
        """When no App is configured, look in the store again (at most once a `refresh_interval`): another
        process may have registered one since. Cheap to call on every request that needs an App."""
        if self.configured or self._vault is None:
            return
        if self._looked_at is not None and self._clock() - self._looked_at < self.refresh_interval:
            return
        try:
            await self.load()
        except Exception as exc:  # noqa: BLE001 - the caller answers "not configured"; the next call tries again
            log.warning("could not read the registered GitHub App: %s: %s", type(exc).__name__, exc)

    async def register(self, app: RegisteredApp, *, now: datetime) -> None:
        """Keep `app` encrypted in the store, and act as it from now on."""
        if self._vault is None:
            raise SecretsKeyMissing
        await self._vault.put(STORED_APP, app.to_json(), now=now)
        self.use(app)


async def load_registered_app(credentials: AppCredentials, store: SecretStore, keys: tuple[str, ...]) -> None:
    """At start: attach the store's vault (when SECRETS_KEY is set) and read the App registered there."""
    if not keys:
        return
    credentials.attach(Vault(store, SecretBox(keys)))
    await credentials.load()
