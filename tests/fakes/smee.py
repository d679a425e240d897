"""A local smee.io: channels that turn posted webhooks into server-sent events, as probot/smee.io does.

    smee = FakeSmee(ping_interval=0.2); await smee.start()
    channel = await create_channel(smee.url)          # GET /new -> 307 to /<id>
    ...                                               # a client listens: GET /<id>, Accept: text/event-stream
    await post_webhook(channel, body, headers)        # GitHub's side: POST /<id> fans out to the listeners

What it copies from smee.io (`lib/server.js`): the stream is served only when Accept is exactly
`text/event-stream` (anything else gets the channel's web page); the first event is `ready`, then a `ping`
every `ping_interval`; a delivery is a default-type (`message`) event whose data is
`JSON.stringify({...headers, body, query, timestamp})` with the headers' lower-cased names as the request
had them (host, content-length and all); a POST must carry a JSON object, a UUID `x-github-delivery` and a
`sha256=<64 hex>` `x-hub-signature-256` when present, or it is answered 400. Every event has an `id:`.

Where it is kinder than smee.io, on request: `resume=True` keeps each channel's events and replays those
after a `Last-Event-ID` (smee.io keeps nothing: what is posted while nobody listens is lost); `retry_ms`
sends a `retry:` line. Knobs for tests: `drop()` ends every stream, `refuse()` answers 503 until `accept()`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.server import LocalServer

_CHANNEL = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
_SIGNATURE = re.compile(r"^sha256=[a-f0-9]{64}$")


def stringify(value: Any) -> str:
    """JavaScript's JSON.stringify for the JSON GitHub sends (compact, non-ASCII raw, lower-case escapes)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@dataclass
class Channel:
    id: str
    events: list[tuple[int, str]] = field(default_factory=list)  # (id, the message's data)
    listeners: set[asyncio.Queue[tuple[int, str] | None]] = field(default_factory=set)  # None: hang up
    connections: int = 0  # streams opened, ever
    last_event_ids: list[str | None] = field(default_factory=list)  # the Last-Event-ID of each stream


class FakeSmee(LocalServer):
    def __init__(self, *, ping_interval: float | None = 5.0, resume: bool = False, retry_ms: int | None = None) -> None:
        self.ping_interval = ping_interval
        self.resume = resume
        self.retry_ms = retry_ms
        self.channels: dict[str, Channel] = {}
        self._ids = itertools.count(1)
        self._refusing = False
        self._changed = asyncio.Condition()

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/new", self._new)
        app.router.add_get("/{channel}", self._listen)
        app.router.add_post("/{channel}", self._post)

    def channel(self, url_or_id: str) -> Channel:
        return self.channels[url_or_id.rstrip("/").rsplit("/", 1)[-1]]

    def drop(self) -> None:
        """End every open stream (the server hangs up; listeners see the end of the response)."""
        for channel in self.channels.values():
            for queue in channel.listeners:
                queue.put_nowait(None)

    def refuse(self) -> None:
        """Answer streams 503 (a channel service that is down) until `accept()`."""
        self._refusing = True

    def accept(self) -> None:
        self._refusing = False

    async def wait_for_connections(self, channel: str, count: int, timeout: float = 5.0) -> None:
        """Until `count` streams have ever been opened on `channel` (and the last is listening)."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(
                lambda: (
                    (c := self.channels.get(channel.rstrip("/").rsplit("/", 1)[-1])) is not None
                    and c.connections >= count
                    and bool(c.listeners)
                )
            )

    async def close(self) -> None:
        self.drop()
        await super().close()

    async def _new(self, request: web.Request) -> web.Response:
        channel = secrets.token_urlsafe(12)
        self.channels[channel] = Channel(channel)
        raise web.HTTPTemporaryRedirect(f"{self.url}/{channel}")

    async def _listen(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["channel"]
        if not _CHANNEL.match(name):
            raise web.HTTPBadRequest(text="params/channel must match pattern")
        if request.headers.get("Accept") != "text/event-stream":
            return web.Response(text="<!doctype html><title>smee.io</title>", content_type="text/html")
        if self._refusing:
            raise web.HTTPServiceUnavailable(text="down for maintenance")
        channel = self.channels.setdefault(name, Channel(name))
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "Connection": "keep-alive",
                "x-no-compression": "1",
            }
        )
        queue: asyncio.Queue[tuple[int, str] | None] = asyncio.Queue()
        last_event_id = request.headers.get("Last-Event-ID")
        if self.resume and last_event_id is not None and last_event_id.isdigit():
            for event_id, data in channel.events:
                if event_id > int(last_event_id):
                    queue.put_nowait((event_id, data))
        # Registered before the headers go out: a client that sees the stream open is already listening.
        channel.listeners.add(queue)
        channel.connections += 1
        channel.last_event_ids.append(last_event_id)
        try:
            await response.prepare(request)
            if self.retry_ms is not None:
                await response.write(f"retry: {self.retry_ms}\n".encode())
            await response.write(f"id: {next(self._ids)}\nevent: ready\ndata: {{}}\n\n".encode())
            async with self._changed:
                self._changed.notify_all()
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), self.ping_interval)
                except TimeoutError:
                    await response.write(f"id: {next(self._ids)}\nevent: ping\ndata: {{}}\n\n".encode())
                    continue
                if item is None:
                    break
                event_id, data = item
                await response.write(f"id: {event_id}\ndata: {data}\n\n".encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            channel.listeners.discard(queue)
        return response

    async def _post(self, request: web.Request) -> web.Response:
        name = request.match_info["channel"]
        if not _CHANNEL.match(name):
            raise web.HTTPBadRequest(text="params/channel must match pattern")
        headers = {key.lower(): value for key, value in request.headers.items()}
        delivery = headers.get("x-github-delivery")
        signature = headers.get("x-hub-signature-256")
        if delivery is not None and not _UUID.match(delivery):
            raise web.HTTPBadRequest(text='headers/x-github-delivery must match format "uuid"')
        if signature is not None and not _SIGNATURE.match(signature):
            raise web.HTTPBadRequest(text="headers/x-hub-signature-256 must match pattern")
        try:
            body = json.loads(await request.read())
        except ValueError:
            raise web.HTTPBadRequest(text="Body is not valid JSON") from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="body must be object")
        data = stringify({**headers, "body": body, "query": dict(request.query), "timestamp": int(time.time() * 1000)})
        channel = self.channels.setdefault(name, Channel(name))
        event_id = next(self._ids)
        if self.resume:
            channel.events.append((event_id, data))
        for queue in channel.listeners:
            queue.put_nowait((event_id, data))
        return web.Response(status=200)
