"""The embedded calendar as an iCalendar feed people subscribe to (Google Calendar, Outlook, Apple).

A feed URL carries its own token: `/calendar.ics?repo=owner/repo&token=...` shows one repository's
releases, and the token is an HMAC of that scope under a secret kept encrypted in the store, so the
link posted on a PR reveals nothing beyond what that PR's readers already see. The all-repositories
feed (`scope` "*") is printed by `python -m bot calendar-feed` for operators only. A leaked link is
revoked by rotating its scope (`calendar-feed --rotate`): the scope's version, kept in the store's
values and part of the HMAC input, goes up, so every earlier link of that scope stops working.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable
from urllib.parse import urlencode

import icalendar
import orjson

from ..secrets import Vault
from . import CalendarEvent, Outcome

ALL = "*"
_SECRET_NAME = "calendar:feed-secret"  # noqa: S105 - the name it is stored under
_VERSION_KEY = "calendar:feed-version:"  # + scope: how many times that scope's links were revoked
PAST = timedelta(days=30)
AHEAD = timedelta(days=400)
_SEQUENCE_EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
PRODID = "-//Release Secretary//Release calendar//EN"


@runtime_checkable
class ValueStore(Protocol):
    async def get_value(self, key: str) -> str | None: ...

    async def set_value(self, key: str, value: str, *, now: datetime) -> None: ...


class FeedTokens:
    """Feed links per scope (a repository, or ALL), and their revocation.

    `values` keeps each scope's version; it defaults to the vault's store, which is the bot's store."""

    def __init__(self, vault: Vault, clock: Callable[[], datetime], *, values: ValueStore | None = None) -> None:
        if values is None:
            if not isinstance(vault.store, ValueStore):
                raise TypeError("FeedTokens needs a store with values (get_value/set_value) for link versions")
            values = vault.store
        self.vault = vault
        self.clock = clock
        self.values = values
        self._secret: bytes | None = None

    async def _key(self) -> bytes:
        if self._secret is None:
            stored = await self.vault.get(_SECRET_NAME)
            if stored is None:
                stored = secrets.token_urlsafe(32)
                await self.vault.put(_SECRET_NAME, stored, now=self.clock())
                # Two processes racing here: read back, so both use whichever was written last.
                stored = await self.vault.get(_SECRET_NAME) or stored
            self._secret = stored.encode()
        return self._secret

    async def version(self, scope: str) -> int:
        # Read every time, never cached: a rotation by the CLI must revoke links in running processes.
        stored = await self.values.get_value(_VERSION_KEY + scope)
        return 0 if stored is None else int(stored)

    async def rotate(self, scope: str) -> int:
        """Revoke every link of the scope issued so far; the new version, for the links from now on."""
        version = await self.version(scope) + 1
        await self.values.set_value(_VERSION_KEY + scope, str(version), now=self.clock())
        return version

    async def token(self, scope: str) -> str:
        version = await self.version(scope)
        # Version 0 keeps the original input, so links posted before versions existed stay valid;
        # later ones are JSON, which no scope can forge from the other shape (it starts with "[").
        message = f"calendar-feed:{scope}" if version == 0 else orjson.dumps(["calendar-feed", scope, version]).decode()
        mac = hmac.new(await self._key(), message.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac[:24]).decode().rstrip("=")

    async def verify(self, scope: str, token: str) -> bool:
        return hmac.compare_digest((await self.token(scope)).encode(), token.encode("utf-8", errors="replace"))

    async def url(self, base_url: str, scope: str) -> str:
        token = await self.token(scope)
        query = {"token": token} if scope == ALL else {"repo": scope, "token": token}
        return f"{base_url.rstrip('/')}/calendar.ics?{urlencode(query)}"


def render_feed(events: Sequence[CalendarEvent], *, name: str, now: datetime) -> bytes:
    """An RFC 5545 calendar of the events (cancelled ones are left out: they are gone for people)."""
    cal = icalendar.Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("method", "PUBLISH")
    cal.add("x-wr-calname", name)
    # How often subscribers should look again (RFC 7986, and the Outlook/Apple spelling).
    cal.add("refresh-interval", timedelta(minutes=15), parameters={"VALUE": "DURATION"})
    cal.add("x-published-ttl", "PT15M")
    for event in events:
        if event.cancelled:
            continue
        vevent = icalendar.Event()
        vevent.add("uid", f"{event.id}@release-secretary")
        vevent.add("dtstamp", event.updated or now)
        vevent.add("dtstart", event.start)
        vevent.add("dtend", event.end)
        vevent.add("summary", event.summary)
        if event.description:
            vevent.add("description", event.description)
        # Each edit must raise SEQUENCE so clients replace their copy: seconds since 2020 do (and fit
        # the 32-bit integer clients expect until 2088).
        vevent.add("sequence", max(0, int(((event.updated or now) - _SEQUENCE_EPOCH).total_seconds())))
        vevent.add("status", "CONFIRMED")
        vevent.add("transp", "OPAQUE")
        if event.lane:
            vevent.add("categories", [event.lane])
        if event.outcome is Outcome.FAILED:
            vevent.add("color", "tomato")
        elif event.outcome is Outcome.DONE:
            vevent.add("color", "green")
        cal.add_component(vevent)
    return bytes(cal.to_ical())
