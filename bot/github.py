"""GitHub App plumbing: the App JWT, cached installation tokens, ETag caches and rate-limit pacing.

One `GitHubApp` per process owns the aiohttp session. Clients are cheap per-job objects that share, per
installation, the token, the conditional-request cache and the pacer (write spacing, rate limits). The App's
id and key come from `settings.credentials` at each use, so an App registered while the bot runs (the setup
page) is used at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
import cachetools
import gidgethub
import gidgethub.aiohttp
from gidgethub import sansio

from .config import Settings
from .credentials import AppCredentials

log = logging.getLogger(__name__)

USER_AGENT = "release-secretary"
TOKEN_REFRESH_MARGIN = 5 * 60  # refresh an installation token five minutes before it expires
_MAX_RATE_LIMIT_RETRIES = 3
_SAFE_METHODS = frozenset({"GET", "HEAD"})


class GitHubNotConfigured(RuntimeError):
    """The bot was asked to call GitHub as the App, but no App credentials are set."""


class RateLimitWaitTooLong(gidgethub.GitHubException):
    """GitHub asked us to wait longer than GITHUB_MAX_RETRY_WAIT; the job will be retried later."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        super().__init__(f"GitHub rate limit: retry in {seconds:.0f}s, longer than we wait inline")


@dataclass(frozen=True, slots=True)
class InstallationToken:
    token: str
    expires_at: float  # epoch seconds

    def __repr__(self) -> str:  # never print the token itself
        return f"InstallationToken(expires_at={self.expires_at})"


class Pacer:
    """Per-installation pacing: mutating requests spaced apart, and waiting out an exhausted quota."""

    def __init__(self, write_interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.write_interval = write_interval
        self._clock = clock
        self._next_write = 0.0
        self._lock = asyncio.Lock()
        self.rate_limit: sansio.RateLimit | None = None
        self.requests = 0
        self.waited = 0.0

    async def before(self, method: str, max_wait: float) -> None:
        self.requests += 1
        limit = self.rate_limit
        if limit is not None and limit.remaining <= 0:
            wait = limit.reset_datetime.timestamp() - time.time()
            if wait > max_wait:
                raise RateLimitWaitTooLong(wait)
            if wait > 0:
                await self._sleep(wait)
        if method in _SAFE_METHODS or self.write_interval <= 0:
            return
        async with self._lock:
            wait = self._next_write - self._clock()
            if wait > 0:
                await self._sleep(wait)
            self._next_write = self._clock() + self.write_interval

    def write_wait(self) -> float:
        """Seconds until a write may go (0: now); a lower bound, as writers queue up meanwhile."""
        if self.write_interval <= 0:
            return 0.0
        return max(0.0, self._next_write - self._clock())

    async def _sleep(self, seconds: float) -> None:
        self.waited += seconds
        await asyncio.sleep(seconds)

    def observe(self, headers: Mapping[str, str]) -> None:
        limit = sansio.RateLimit.from_http(headers)
        if limit is not None:
            self.rate_limit = limit


class GitHubClient(gidgethub.aiohttp.GitHubAPI):
    """gidgethub's aiohttp client with our pacing and rate-limit retries wired into its hooks."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        pacer: Pacer,
        max_retry_wait: float,
        on_unauthorized: Callable[[], None] | None = None,
        token_provider: Callable[[], Awaitable[InstallationToken]] | None = None,
        probes: cachetools.LRUCache[tuple[int | str, str], str] | None = None,
        probe_key: int | str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(session, USER_AGENT, **kwargs)
        self._probes = probes
        self._probe_key = probe_key
        self._pending: dict[tuple[int | str, str], str] = {}
        self._pacer = pacer
        self._max_retry_wait = max_retry_wait
        self._on_unauthorized = on_unauthorized
        self._token_provider = token_provider

    async def _make_request(self, *args: Any, **kwargs: Any) -> Any:
        # The installation token is fetched on the first call, so a job that makes none costs none
        # (and an `installation.deleted` event never asks for a token GitHub would refuse).
        if self.oauth_token is None and self._token_provider is not None:
            self.oauth_token = (await self._token_provider()).token
        return await super()._make_request(*args, **kwargs)

    async def unchanged(self, url: str) -> bool:
        """A conditional GET that keeps only the ETag, not the body: True when GitHub answers 304,
        which costs no rate limit. For sweeps over thousands of idle PRs, where a full response cache
        would not fit; the caller already knows what it saw last time. A changed answer's ETag is
        kept aside until the caller says it handled the change (`settle`): a failure in between must
        not make the next probe say "unchanged"."""
        if self._probes is None:
            return False
        if self.oauth_token is None and self._token_provider is not None:
            self.oauth_token = (await self._token_provider()).token
        full = sansio.format_url(url, {}, base_url=self.base_url)
        headers = sansio.create_headers(self.requester, accept=sansio.accept_format(), oauth_token=self.oauth_token)
        key = (self._probe_key, full)
        etag = self._probes.get(key)
        if etag is not None:
            headers["if-none-match"] = etag
        await self.manage_rate_limit(method="GET", url=full)
        status, response_headers, _ = await self._request("GET", full, headers)
        if status == 200 and response_headers.get("etag"):
            self._pending[key] = response_headers["etag"]
        return status == 304

    def settle(self) -> None:
        """The changes the last probes saw were handled: remember their ETags."""
        if self._probes is not None:
            self._probes.update(self._pending)
        self._pending.clear()

    async def manage_rate_limit(self, *, method: str, url: str) -> None:
        # Minting an installation token is a POST but creates no content: spacing it would make the
        # first event of 200 installations wait 200 seconds.
        paced_method = "GET" if url.endswith("/access_tokens") else method
        await self._pacer.before(paced_method, self._max_retry_wait)

    async def _request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes = b""
    ) -> tuple[int, Mapping[str, str], bytes]:
        started = time.perf_counter()
        status, response_headers, data = await super()._request(method, url, headers, body)
        self._pacer.observe(response_headers)
        log.debug(
            "github %s %s -> %s",
            method,
            url,
            status,
            extra={"ms": round((time.perf_counter() - started) * 1000, 1)},
        )
        if status == 401 and self._on_unauthorized is not None:
            self._on_unauthorized()
        return status, response_headers, data

    async def handle_rate_limit_error(
        self, *, method: str, url: str, exception: gidgethub.HTTPException, attempt: int
    ) -> bool:
        wait = retry_delay(exception, attempt)
        if wait is None or attempt > _MAX_RATE_LIMIT_RETRIES:
            return False
        if wait > self._max_retry_wait:
            raise RateLimitWaitTooLong(wait) from exception
        log.warning(
            "github rate limited %s %s: waiting %.1fs (attempt %d)",
            method,
            url,
            wait,
            attempt,
            extra={"status": exception.status_code},
        )
        await self._pacer._sleep(wait)
        return True


def retry_delay(exc: gidgethub.HTTPException, attempt: int) -> float | None:
    """How long GitHub asks us to wait before retrying, or None if the error is not a rate limit.

    Follows GitHub's guidance: honour Retry-After; with no quota left wait for X-RateLimit-Reset;
    a secondary limit without either means at least a minute, growing with each attempt.
    """
    if exc.status_code not in (403, 429):
        return None
    headers = {k.lower(): v for k, v in exc.headers.items()}
    retry_after = headers.get("retry-after")
    if retry_after is not None:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            return 60.0
    if headers.get("x-ratelimit-remaining") == "0" and "x-ratelimit-reset" in headers:
        try:
            return max(0.0, float(headers["x-ratelimit-reset"]) - time.time()) + 1.0
        except ValueError:
            return 60.0
    message = " ".join(str(a) for a in exc.args).lower()
    if exc.status_code == 429 or "secondary rate limit" in message or "abuse" in message:
        return 60.0 * 2.0 ** (attempt - 1)
    return None


class GitHubApp:
    """Everything the process needs to talk to GitHub as the App and as its installations."""

    def __init__(self, settings: Settings, session: aiohttp.ClientSession) -> None:
        self.settings = settings
        self.credentials: AppCredentials = settings.credentials
        self.session = session
        # Tokens live until shortly before GitHub expires them (TLRU: per-item time to use).
        self._tokens: cachetools.TLRUCache[int, InstallationToken] = cachetools.TLRUCache(
            maxsize=10_000,
            ttu=lambda _key, value, _now: value.expires_at - TOKEN_REFRESH_MARGIN,
            timer=time.time,
        )
        self._token_locks: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._etag_caches: cachetools.LRUCache[int | str, cachetools.LRUCache[Any, Any]] = cachetools.LRUCache(
            maxsize=2_000
        )
        self._pacers: dict[int | str, Pacer] = {}
        # ETags alone (no bodies) for the reconcile sweep's probes: 3 per tracked PR, ~0.5 kB each.
        self._probes: cachetools.LRUCache[tuple[int | str, str], str] = cachetools.LRUCache(maxsize=60_000)
        self.token_requests = 0

    @property
    def configured(self) -> bool:
        return self.credentials.configured

    @property
    def app_id(self) -> int | None:
        """The id of the App the bot acts as now (None: no App yet)."""
        return self.credentials.app_id

    def pacer(self, key: int | str) -> Pacer:
        pacer = self._pacers.get(key)
        if pacer is None:
            pacer = self._pacers[key] = Pacer(self.settings.github_write_interval)
        return pacer

    def _cache(self, key: int | str) -> cachetools.LRUCache[Any, Any]:
        cache = self._etag_caches.get(key)
        if cache is None:
            cache = self._etag_caches[key] = cachetools.LRUCache(maxsize=512)
        return cache

    def app_client(self) -> GitHubClient:
        """A client that authenticates as the App itself (JWT), for /app endpoints."""
        app_id, private_key = self.credentials.app_id, self.credentials.private_key
        if app_id is None or private_key is None:
            raise GitHubNotConfigured(
                "no GitHub App configured: register one on the start page, or set GITHUB_APP_ID and GITHUB_PRIVATE_KEY"
            )
        return GitHubClient(
            self.session,
            pacer=self.pacer("app"),
            max_retry_wait=self.settings.github_max_retry_wait,
            app_id=str(app_id),
            private_key=private_key,
            cache=self._cache("app"),
            base_url=self.settings.github_api_url,
        )

    async def installation_token(self, installation_id: int) -> InstallationToken:
        cached = self._tokens.get(installation_id)
        if cached is not None:
            return cached
        # One refresh at a time per installation: concurrent jobs wait for the same token.
        async with self._token_locks[installation_id]:
            cached = self._tokens.get(installation_id)
            if cached is not None:
                return cached
            self.token_requests += 1
            await self.credentials.refresh()  # another process may have registered the App meanwhile
            data = await self.app_client().post(
                "/app/installations/{installation_id}/access_tokens",
                {"installation_id": installation_id},
                data=b"",
            )
            token = InstallationToken(
                token=data["token"],
                expires_at=datetime.fromisoformat(data["expires_at"].replace("Z", "+00:00")).timestamp(),
            )
            self._tokens[installation_id] = token
            log.info(
                "installation token issued",
                extra={"installation": installation_id, "expires_at": data["expires_at"]},
            )
            return token

    def forget_token(self, installation_id: int) -> None:
        self._tokens.pop(installation_id, None)

    def installation_client(self, installation_id: int) -> GitHubClient:
        """A client acting as the installation; its token is fetched (or reused) on first use."""
        return GitHubClient(
            self.session,
            pacer=self.pacer(installation_id),
            max_retry_wait=self.settings.github_max_retry_wait,
            on_unauthorized=lambda: self.forget_token(installation_id),
            token_provider=lambda: self.installation_token(installation_id),
            cache=self._cache(installation_id),
            probes=self._probes,
            probe_key=installation_id,
            base_url=self.settings.github_api_url,
        )

    def anonymous_client(self) -> GitHubClient:
        """For events that carry no installation (repository webhooks): reads of public data only."""
        return GitHubClient(
            self.session,
            pacer=self.pacer("anonymous"),
            max_retry_wait=self.settings.github_max_retry_wait,
            base_url=self.settings.github_api_url,
        )
