"""The default calendar: events in the bot's own store, published as an iCalendar feed.

With no Google credentials this is where releases are booked, with the same semantics as Google:
one event per release (its id derived from the release key), edited in place, cancelled (kept, but
left out of busy time and the feed) when the release is. Each lane ("owner/repo production") is one
calendar, so busy time in a lane comes from that lane's events alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime

from ..store import Store
from . import Booking, CalendarEvent, FreeBusy, event_id


class EmbeddedCalendar:
    def __init__(self, store: Store, clock: Callable[[], datetime], feed_url: str | None = None) -> None:
        self.store = store
        self.clock = clock
        self.feed_url = feed_url

    @property
    def account(self) -> str:
        return "embedded"

    async def free_busy(self, calendars: Sequence[str], start: datetime, end: datetime) -> FreeBusy:
        busy: dict[str, list[tuple[datetime, datetime]]] = {}
        for calendar in calendars:
            events = await self.store.list_calendar_events(calendar, start=start, end=end)
            busy[calendar] = [(e.start, e.end) for e in events]
        return FreeBusy(busy=busy)

    async def events(
        self, calendar: str, start: datetime, end: datetime, *, include_free: bool = False
    ) -> list[CalendarEvent]:
        return await self.store.list_calendar_events(calendar, start=start, end=end)

    async def get(self, calendar: str, event_id: str) -> CalendarEvent | None:
        return await self.store.get_calendar_event(calendar, event_id)

    async def book(self, calendar: str, booking: Booking) -> CalendarEvent:
        wanted = CalendarEvent(
            id=event_id(booking.release),
            calendar=calendar,
            start=booking.start,
            end=booking.end,
            summary=booking.title,
            description=booking.description,
            release=booking.release,
            lane=booking.lane,
            outcome=booking.outcome,
            link=self.feed_url,
        )
        current = await self.store.get_calendar_event(calendar, wanted.id)
        if current is not None and replace(current, updated=None) == wanted:
            return current  # already up to date: no write
        event = replace(wanted, updated=self.clock())
        await self.store.save_calendar_event(event)
        return event

    async def cancel(self, calendar: str, event_id: str) -> None:
        current = await self.store.get_calendar_event(calendar, event_id)
        if current is None or current.cancelled:
            return
        await self.store.save_calendar_event(replace(current, cancelled=True, updated=self.clock()))

    def link(self, calendar: str) -> str | None:
        return self.feed_url
