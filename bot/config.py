"""Typed settings, read from the environment once in main() and validated with one message per bad value."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from .credentials import AppCredentials

DEFAULT_GITHUB_API_URL = "https://api.github.com"
DEFAULT_GITHUB_URL = "https://github.com"
DEFAULT_GOOGLE_CALENDAR_API_URL = "https://www.googleapis.com"
DEFAULT_GOOGLE_AUTH_URL = "https://accounts.google.com/o/oauth2/v2/auth"
DEFAULT_GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL, not a secret
DEFAULT_SLACK_API_URL = "https://slack.com/api/"
DEFAULT_TELEGRAM_API_URL = "https://api.telegram.org"

# The fields that make up the App's credentials (see `Settings.credentials`).
_CREDENTIAL_FIELDS = frozenset(
    {"github_app_id", "github_private_key", "github_webhook_secret", "github_client_id", "github_client_secret"}
)


class SettingsError(Exception):
    """One or more settings are missing or malformed; `problems` says which and why."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid settings:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class Settings:
    # The GitHub App as the environment names it. What the bot acts as at run time is `credentials`, which
    # adds the App registered through the setup page (bot/credentials.py); read that, not these.
    github_app_id: int | None = None
    github_private_key: str | None = field(default=None, repr=False)
    github_webhook_secret: str | None = field(default=None, repr=False)
    github_api_url: str = DEFAULT_GITHUB_API_URL
    github_url: str = DEFAULT_GITHUB_URL
    # The App's OAuth client: its user authorization confirms who opens a calendar link.
    github_client_id: str | None = None
    github_client_secret: str | None = field(default=None, repr=False)
    public_url: str | None = None
    host: str = "0.0.0.0"  # noqa: S104 - a web service must be reachable by GitHub
    port: int = 3000
    data_dir: Path = Path("data")
    database_path: Path | None = None
    mongodb_uri: str | None = field(default=None, repr=False)
    secrets_keys: tuple[str, ...] = field(default=(), repr=False)
    log_level: str = "INFO"
    log_format: str = "text"
    event_loop: str = "auto"  # auto: uvloop when installed, else asyncio
    # GitHub asks integrators to space mutating requests; per installation.
    github_write_interval: float = 1.0
    github_max_retry_wait: float = 60.0
    worker_concurrency: int = 64
    worker_lease_seconds: float = 60.0
    worker_max_attempts: int = 8
    worker_poll_interval: float = 1.0
    worker_retry_base: float = 2.0
    redelivery_sweep_interval: float = 300.0  # 0 turns the sweep off
    sticky_debounce: float = 3.0  # at most one edit of a PR's progress comment per this many seconds
    # Google Calendar: with neither a service account nor an OAuth client the embedded calendar is used.
    google_calendar_api_url: str = DEFAULT_GOOGLE_CALENDAR_API_URL
    google_service_account: str | None = field(default=None, repr=False)  # the key file's JSON
    google_client_id: str | None = None
    google_client_secret: str | None = field(default=None, repr=False)
    google_auth_url: str = DEFAULT_GOOGLE_AUTH_URL
    google_token_url: str = DEFAULT_GOOGLE_TOKEN_URL
    calendar_sweep_interval: float = 300.0  # how often booked Google events are checked for edits; 0: never
    reconcile_interval: float = 300.0  # how often tracked PRs are re-read for what webhooks missed; 0: never
    # Chat: Slack (Events API over HTTP, or Socket Mode with an app token) and Telegram (webhook or polling).
    slack_api_url: str = DEFAULT_SLACK_API_URL
    slack_bot_token: str | None = field(default=None, repr=False)
    slack_signing_secret: str | None = field(default=None, repr=False)
    slack_app_token: str | None = field(default=None, repr=False)
    telegram_api_url: str = DEFAULT_TELEGRAM_API_URL
    telegram_bot_token: str | None = field(default=None, repr=False)
    telegram_webhook_secret: str | None = field(default=None, repr=False)
    chat_edit_interval: float = 3.0  # at most one edit of a chat message per this many seconds
    # MCP over streamable HTTP on its own port (None: off); stdio needs no port.
    mcp_port: int | None = None
    # A smee.io-style channel to read webhooks from when GitHub cannot reach the bot (a laptop). Whoever has
    # this URL can read every delivery: kept out of repr like a secret.
    webhook_proxy_url: str | None = field(default=None, repr=False)
    # GitHub logins that may use the setup pages besides the registered App's owner (ADMIN_LOGINS).
    admin_logins: tuple[str, ...] = ()
    # The chat platforms ("slack", "telegram") whose tokens came from the setup page's vault at start, not
    # from the environment (bot.web.integrations.with_stored_chat).
    stored_chat: frozenset[str] = frozenset()
    # The App this process acts as now: the fields above, and what the manifest flow registered while it
    # runs. One mutable holder per process, outside the frozen value (neither compared nor printed).
    credentials: AppCredentials = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        credentials = AppCredentials(
            app_id=self.github_app_id,
            private_key=self.github_private_key,
            webhook_secret=self.github_webhook_secret,
            client_id=self.github_client_id,
            client_secret=self.github_client_secret,
        )
        object.__setattr__(self, "credentials", credentials)

    @property
    def slack_configured(self) -> bool:
        return self.slack_bot_token is not None

    @property
    def telegram_configured(self) -> bool:
        return self.telegram_bot_token is not None

    @property
    def chat_configured(self) -> bool:
        return self.slack_configured or self.telegram_configured

    @property
    def app_configured(self) -> bool:
        """The bot can act as a GitHub App: from the environment, or registered through the setup page."""
        return self.credentials.configured

    @property
    def sqlite_path(self) -> Path:
        return self.database_path or self.data_dir / "release-secretary.db"

    @property
    def store_kind(self) -> str:
        return "mongo" if self.mongodb_uri else "sqlite"

    def missing_for_github(self) -> list[str]:
        """What an operator still has to set before the bot can talk to GitHub (the setup page's
        registration sets all of it)."""
        credentials = self.credentials
        missing = []
        if credentials.app_id is None:
            missing.append("GITHUB_APP_ID")
        if credentials.private_key is None:
            missing.append("GITHUB_PRIVATE_KEY or GITHUB_PRIVATE_KEY_PATH")
        if credentials.webhook_secret is None:
            missing.append("GITHUB_WEBHOOK_SECRET")
        return missing

    def replace(self, **changes: object) -> Settings:
        """A copy with `changes`. It shares this one's `credentials` (the same process, other knobs), unless
        the changes name other App credentials: then it starts from those."""
        copy = dataclasses.replace(self, **changes)  # type: ignore[arg-type]
        if not _CREDENTIAL_FIELDS & changes.keys():
            object.__setattr__(copy, "credentials", self.credentials)
        return copy

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables; raise SettingsError listing every problem."""
        env = os.environ if env is None else env
        reader = _Reader(env)
        app_id = reader.integer("GITHUB_APP_ID", None, minimum=1)
        private_key = reader.private_key()
        secret = reader.text("GITHUB_WEBHOOK_SECRET")
        if (app_id is None) != (private_key is None) and not reader.failed("GITHUB_APP_ID", "GITHUB_PRIVATE_KEY"):
            have, need = (
                ("GITHUB_APP_ID", "GITHUB_PRIVATE_KEY or GITHUB_PRIVATE_KEY_PATH")
                if app_id is not None
                else ("GITHUB_PRIVATE_KEY", "GITHUB_APP_ID")
            )
            reader.problems.append(f"{have} is set but {need} is not: a GitHub App needs both")
        if (app_id is not None or private_key is not None) and secret is None:
            reader.problems.append(
                "GITHUB_WEBHOOK_SECRET is required when a GitHub App is configured: without it "
                "anyone could post forged webhooks (set the same secret in the App's settings)"
            )
        keys = tuple(k.strip() for k in env.get("SECRETS_KEY", "").split(",") if k.strip())
        for i, key in enumerate(keys):
            if not _is_fernet_key(key):
                reader.problems.append(
                    f"SECRETS_KEY entry {i + 1} is not a Fernet key (32 url-safe base64-encoded "
                    "bytes); make one with: python -m bot keygen"
                )
        settings = cls(
            github_app_id=app_id,
            github_private_key=private_key,
            github_webhook_secret=secret,
            github_api_url=reader.url("GITHUB_API_URL", DEFAULT_GITHUB_API_URL),
            github_url=reader.url("GITHUB_URL", DEFAULT_GITHUB_URL),
            github_client_id=reader.text("GITHUB_CLIENT_ID"),
            github_client_secret=reader.text("GITHUB_CLIENT_SECRET"),
            public_url=reader.optional_url("PUBLIC_URL"),
            host=env.get("HOST", "0.0.0.0") or "0.0.0.0",  # noqa: S104
            port=reader.integer("PORT", 3000, minimum=1, maximum=65535) or 3000,
            data_dir=Path(env.get("DATA_DIR") or "data"),
            database_path=Path(env["DATABASE_PATH"]) if env.get("DATABASE_PATH") else None,
            mongodb_uri=reader.mongo_uri(),
            secrets_keys=keys,
            log_level=reader.choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR"), upper=True),
            log_format=reader.choice("LOG_FORMAT", "text", ("text", "json")),
            event_loop=reader.choice("EVENT_LOOP", "auto", ("auto", "asyncio", "uvloop")),
            github_write_interval=reader.number("GITHUB_WRITE_INTERVAL", 1.0),
            github_max_retry_wait=reader.number("GITHUB_MAX_RETRY_WAIT", 60.0),
            worker_concurrency=reader.integer("WORKER_CONCURRENCY", 64, minimum=1) or 64,
            worker_lease_seconds=reader.number("WORKER_LEASE_SECONDS", 60.0, minimum=1.0),
            worker_max_attempts=reader.integer("WORKER_MAX_ATTEMPTS", 8, minimum=1) or 8,
            worker_poll_interval=reader.number("WORKER_POLL_INTERVAL", 1.0, minimum=0.01),
            redelivery_sweep_interval=reader.number("REDELIVERY_SWEEP_INTERVAL", 300.0),
            sticky_debounce=reader.number("STICKY_DEBOUNCE_SECONDS", 3.0),
            google_calendar_api_url=reader.url("GOOGLE_CALENDAR_API_URL", DEFAULT_GOOGLE_CALENDAR_API_URL),
            google_service_account=reader.service_account(),
            google_client_id=reader.text("GOOGLE_CLIENT_ID"),
            google_client_secret=reader.text("GOOGLE_CLIENT_SECRET"),
            google_auth_url=reader.url("GOOGLE_AUTH_URL", DEFAULT_GOOGLE_AUTH_URL),
            google_token_url=reader.url("GOOGLE_TOKEN_URL", DEFAULT_GOOGLE_TOKEN_URL),
            calendar_sweep_interval=reader.number("CALENDAR_SWEEP_INTERVAL", 300.0),
            reconcile_interval=reader.number("RECONCILE_INTERVAL", 300.0),
            slack_api_url=reader.url("SLACK_API_URL", DEFAULT_SLACK_API_URL).rstrip("/") + "/",
            slack_bot_token=reader.text("SLACK_BOT_TOKEN"),
            slack_signing_secret=reader.text("SLACK_SIGNING_SECRET"),
            slack_app_token=reader.text("SLACK_APP_TOKEN"),
            telegram_api_url=reader.url("TELEGRAM_API_URL", DEFAULT_TELEGRAM_API_URL),
            telegram_bot_token=reader.text("TELEGRAM_BOT_TOKEN"),
            telegram_webhook_secret=reader.text("TELEGRAM_WEBHOOK_SECRET"),
            chat_edit_interval=reader.number("CHAT_EDIT_INTERVAL", 3.0),
            mcp_port=reader.integer("MCP_PORT", None, minimum=1, maximum=65535),
            webhook_proxy_url=reader.optional_url("WEBHOOK_PROXY_URL"),
            admin_logins=tuple(n.strip() for n in env.get("ADMIN_LOGINS", "").split(",") if n.strip()),
        )
        _chat_problems(settings, reader.problems)
        if settings.webhook_proxy_url and urlsplit(settings.webhook_proxy_url).path.strip("/") in ("", "new"):
            reader.problems.append("WEBHOOK_PROXY_URL must be a channel URL such as https://smee.io/AbC123")
        if (settings.google_client_id is None) != (settings.google_client_secret is None):
            reader.problems.append(
                "GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET go together (the OAuth client that links "
                "people's calendars): set both or neither"
            )
        if (settings.github_client_id is None) != (settings.github_client_secret is None):
            reader.problems.append(
                "GITHUB_CLIENT_ID and GITHUB_CLIENT_SECRET go together (the GitHub App's OAuth client, which "
                "confirms who opens a calendar link; both are on the App's settings page): set both or neither"
            )
        if reader.problems:
            raise SettingsError(reader.problems)
        return settings


def _chat_problems(settings: Settings, problems: list[str]) -> None:
    """Chat settings that cannot work together, each said once (fail closed: no unsigned intake)."""
    if settings.slack_bot_token is not None and not settings.slack_bot_token.startswith("xoxb-"):
        problems.append("SLACK_BOT_TOKEN must be the app's bot token (xoxb-...), from its OAuth & Permissions page")
    if settings.slack_app_token is not None and not settings.slack_app_token.startswith("xapp-"):
        problems.append("SLACK_APP_TOKEN must be an app-level token (xapp-...) with connections:write")
    if settings.slack_bot_token is not None and settings.slack_app_token is None and not settings.slack_signing_secret:
        problems.append(
            "SLACK_SIGNING_SECRET is required with SLACK_BOT_TOKEN when SLACK_APP_TOKEN (Socket Mode) is not set: "
            "without it anyone could post forged Slack requests (it is on the app's Basic Information page)"
        )
    if (settings.slack_signing_secret or settings.slack_app_token) and settings.slack_bot_token is None:
        problems.append("SLACK_SIGNING_SECRET or SLACK_APP_TOKEN is set but SLACK_BOT_TOKEN is not: Slack needs it")
    secret = settings.telegram_webhook_secret
    if secret is not None and (not 1 <= len(secret) <= 256 or not all(c.isalnum() or c in "_-" for c in secret)):
        problems.append("TELEGRAM_WEBHOOK_SECRET must be 1-256 characters of A-Z, a-z, 0-9, _ and - (Telegram's rule)")
    if secret is not None and settings.telegram_bot_token is None:
        problems.append("TELEGRAM_WEBHOOK_SECRET is set but TELEGRAM_BOT_TOKEN is not")
    if secret is not None and settings.telegram_bot_token is not None and not settings.public_url:
        problems.append(
            "TELEGRAM_WEBHOOK_SECRET is set (webhook mode) but PUBLIC_URL is not: Telegram needs the bot's public "
            "https address; unset the secret to poll for updates instead"
        )


def service_account_problem(text: str, source: str) -> str | None:
    """Why `text` is not a Google service account key file, or None when it is one."""
    try:
        info = json.loads(text)
    except ValueError:
        return f"{source} is not JSON: use the key file Google Cloud gave for the service account"
    missing = [k for k in ("client_email", "private_key", "token_uri") if not isinstance(info, dict) or k not in info]
    if not isinstance(info, dict) or info.get("type") != "service_account" or missing:
        what = f"; it lacks {', '.join(missing)}" if missing else ""
        return f"{source} must be a service account key file (type service_account){what}"
    return None


def _is_fernet_key(key: str) -> bool:
    import base64
    import binascii

    try:
        return len(base64.urlsafe_b64decode(key.encode())) == 32
    except (binascii.Error, ValueError):
        return False


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def failed(self, *names: str) -> bool:
        return any(p.startswith(n) for p in self.problems for n in names)

    def text(self, name: str) -> str | None:
        # A secret pasted from a file or a secret manager often ends in a newline GitHub never sent.
        value = self.env.get(name, "").strip()
        return value or None

    def integer(
        self,
        name: str,
        default: int | None,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int | None:
        raw = self.env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            self.problems.append(f"{name} must be a whole number, got {raw!r}")
            return default
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            bounds = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            self.problems.append(f"{name} must be {bounds}, got {value}")
            return default
        return value

    def number(self, name: str, default: float, *, minimum: float = 0.0) -> float:
        raw = self.env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            self.problems.append(f"{name} must be a number of seconds, got {raw!r}")
            return default
        if value < minimum:
            self.problems.append(f"{name} must be >= {minimum}, got {value}")
            return default
        return value

    def choice(self, name: str, default: str, allowed: tuple[str, ...], *, upper: bool = False) -> str:
        raw = self.env.get(name, "").strip()
        if not raw:
            return default
        value = raw.upper() if upper else raw.lower()
        if value not in allowed:
            self.problems.append(f"{name} must be one of {', '.join(allowed)}, got {raw!r}")
            return default
        return value

    def url(self, name: str, default: str) -> str:
        return self.optional_url(name) or default

    def optional_url(self, name: str) -> str | None:
        raw = self.env.get(name, "").strip()
        if not raw:
            return None
        parts = urlsplit(raw)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            self.problems.append(f"{name} must be an http(s) URL such as https://example.com, got {raw!r}")
            return None
        return raw.rstrip("/")

    def service_account(self) -> str | None:
        """GOOGLE_SERVICE_ACCOUNT_JSON (the key file's content) or GOOGLE_SERVICE_ACCOUNT_FILE (its path)."""
        inline = self.text("GOOGLE_SERVICE_ACCOUNT_JSON")
        path = self.text("GOOGLE_SERVICE_ACCOUNT_FILE")
        if inline and path:
            self.problems.append("GOOGLE_SERVICE_ACCOUNT_JSON and GOOGLE_SERVICE_ACCOUNT_FILE are both set: keep one")
            return None
        source = "GOOGLE_SERVICE_ACCOUNT_JSON"
        if path:
            source = "GOOGLE_SERVICE_ACCOUNT_FILE"
            try:
                inline = Path(path).expanduser().read_text()
            except OSError as exc:
                self.problems.append(f"GOOGLE_SERVICE_ACCOUNT_FILE: cannot read {path}: {exc.strerror}")
                return None
        if not inline:
            return None
        problem = service_account_problem(inline, source)
        if problem is not None:
            self.problems.append(problem)
            return None
        return inline

    def mongo_uri(self) -> str | None:
        raw = self.text("MONGODB_URI")
        if raw is not None and not raw.startswith(("mongodb://", "mongodb+srv://")):
            self.problems.append("MONGODB_URI must start with mongodb:// or mongodb+srv://")
            return None
        return raw

    def private_key(self) -> str | None:
        inline = self.text("GITHUB_PRIVATE_KEY")
        path = self.text("GITHUB_PRIVATE_KEY_PATH")
        if inline and path:
            self.problems.append("GITHUB_PRIVATE_KEY and GITHUB_PRIVATE_KEY_PATH are both set: keep one")
            return None
        source = "GITHUB_PRIVATE_KEY"
        if path:
            source = "GITHUB_PRIVATE_KEY_PATH"
            try:
                inline = Path(path).expanduser().read_text()
            except OSError as exc:
                self.problems.append(f"GITHUB_PRIVATE_KEY_PATH: cannot read {path}: {exc.strerror}")
                return None
        if not inline:
            return None
        # Platforms that cannot hold multi-line values get the PEM with literal \n.
        pem = inline.replace("\\n", "\n").strip() + "\n"
        try:
            key = load_pem_private_key(pem.encode(), password=None)
        except (ValueError, TypeError):
            self.problems.append(
                f"{source} is not a PEM private key: paste the whole .pem file GitHub gave you, "
                "from -----BEGIN RSA PRIVATE KEY----- to the END line"
            )
            return None
        if not isinstance(key, rsa.RSAPrivateKey):
            self.problems.append(f"{source} must be the App's RSA key; this is another kind of key")
            return None
        return pem
