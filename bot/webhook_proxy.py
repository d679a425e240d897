"""Webhooks on a laptop: read a smee.io-style channel (WEBHOOK_PROXY_URL) and replay each delivery into our intake.

GitHub posts to the channel; the channel re-sends each request to its listeners as a server-sent event whose
`data` is JSON: the request's headers under their lower-cased names, `body` (the parsed JSON), `query` and
`timestamp` (probot/smee.io `lib/server.js`). Between deliveries come `ready` (on connect) and `ping` (every
30 s) events. The proxy posts each delivery to the bot's own `/webhooks/github`, where it is verified and
deduplicated exactly like one GitHub posted directly: the proxy never decides what is accepted.

The signature is over GitHub's exact bytes, and the channel only has the body parsed and re-serialised
(smee.io does `JSON.stringify` on what it parsed). GitHub serialises compactly (no spaces, no trailing newline,
non-ASCII as raw UTF-8, `/`, `<`, `>` and `&` unescaped), which is also what `JSON.stringify` writes, with
one known difference: GitHub writes the `\\uXXXX` escapes of control characters in upper-case hex, JavaScript
in lower case (octokit/webhooks.js#71 and #72: for years @octokit/webhooks verified `JSON.stringify(payload)`
with exactly that fix-up, which is the evidence for the rest). Numbers JavaScript cannot round-trip (1.0,
integers past 2**53) and keys that look like integers (JavaScript moves them first) break it for smee-client
too, and no proxy can repair them. So the body is the event's own `JSON.stringify` text of `body`, cut out of
`data` unchanged (no Python re-encoding of numbers or strings), with escapes upper-cased. Given the webhook
secret, the proxy sends whichever candidate matches the signature (a channel's `rawdata`, the upper-cased
text, the text exactly as smee-client would post it); the intake verifies it all the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self
from urllib.parse import urljoin, urlsplit

import aiohttp

log = logging.getLogger(__name__)

DEFAULT_CHANNEL_SERVICE = "https://smee.io"
INTAKE_PATH = "/webhooks/github"
# A webhook is at most 25 MB; its event line also carries the headers and the JSON escaping of the body.
MAX_EVENT_BYTES = 64 * 1024 * 1024
# smee.io pings every 30 s: three missed pings mean the connection is dead (a laptop that slept, a NAT
# that forgot us) even though no error was ever seen.
DEFAULT_IDLE_TIMEOUT = 90.0
CHANNEL_TIMEOUT = 10.0  # seconds to get a new channel's address
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# The headers GitHub's intake contract is made of. The rest describe the hop to the channel (host,
# content-length, connection, x-forwarded-*) and would be wrong, or harmful, on the hop to us.
_FORWARDED_HEADER = re.compile(r"^(x-github-[a-z0-9-]+|x-hub-signature(-256)?|user-agent)$")
# A \uXXXX escape: preceded by an even run of backslashes (so not the text "\\u0041" in a string).
_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u([0-9a-fA-F]{4})")
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


class WebhookProxyError(Exception):
    """Something about the channel; the typed base callers catch."""


class ChannelError(WebhookProxyError):
    """The channel service could not create a channel, or a channel cannot be listened to."""


class MalformedMessage(WebhookProxyError):
    """An event's data is not a smee-style delivery (no JSON object, no `body` object)."""


# -- server-sent events, sans I/O ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SseEvent:
    type: str
    data: str
    id: str | None  # the stream's last event id when this event was dispatched


class SseParser:
    """The WHATWG event-stream grammar, fed bytes as they arrive; `feed` returns the complete events.

    Lines end in CR, LF or CRLF; a blank line dispatches; `:` starts a comment; `id` (without NUL) and
    `retry` (digits, milliseconds) persist across events. A line longer than `max_event_bytes` drops the
    event it belongs to (counted in `dropped`) instead of growing the buffer without bound."""

    def __init__(self, *, last_event_id: str | None = None, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self.last_event_id = last_event_id
        self.retry: float | None = None  # seconds
        self.dropped = 0
        self._max = max_event_bytes
        self._buffer = bytearray()
        self._scanned = 0  # how much of the buffer is known to hold no line end
        self._skip_lf = False  # the previous chunk ended in CR: an LF starting this one belongs to it
        self._first = True
        self._discarding = False  # inside an oversized event: ignore lines up to the blank one
        self._tail = False  # the buffer was cut mid-line: the next line end closes that line, not a blank one
        self._type = ""
        self._data: list[str] = []
        self._size = 0

    def feed(self, chunk: bytes) -> list[SseEvent]:
        if self._first and chunk:
            self._first = False
            chunk = chunk.removeprefix(b"\xef\xbb\xbf")
        if self._skip_lf and chunk:
            self._skip_lf = False
            chunk = chunk.removeprefix(b"\n")
        self._buffer += chunk
        events: list[SseEvent] = []
        start = 0
        while True:
            cr = self._buffer.find(b"\r", max(start, self._scanned))
            lf = self._buffer.find(b"\n", max(start, self._scanned))
            ends = [i for i in (cr, lf) if i != -1]
            if not ends:
                break
            end = min(ends)
            line = bytes(self._buffer[start:end])
            if self._buffer[end] == 0x0D:
                if end + 1 < len(self._buffer):
                    start = end + 2 if self._buffer[end + 1] == 0x0A else end + 1
                else:
                    start, self._skip_lf = end + 1, True
            else:
                start = end + 1
            if self._tail:
                self._tail = False
                continue
            event = self._line(line)
            if event is not None:
                events.append(event)
        del self._buffer[:start]
        self._scanned = len(self._buffer)
        if len(self._buffer) + self._size > self._max:
            self._buffer.clear()
            self._scanned = 0
            self._tail = True
            self._drop()
        return events

    def _drop(self) -> None:
        if not self._discarding:
            self.dropped += 1
        self._discarding = True
        self._type, self._data, self._size = "", [], 0

    def _line(self, raw: bytes) -> SseEvent | None:
        if not raw:
            return self._dispatch()
        if self._discarding:
            return None
        if self._size + len(raw) > self._max:
            self._drop()
            return None
        line = raw.decode("utf-8", errors="replace")
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._size += len(raw)
        elif name == "event":
            self._type = value
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value) / 1000
        return None

    def _dispatch(self) -> SseEvent | None:
        data, kind = self._data, self._type
        self._type, self._data, self._size = "", [], 0
        if self._discarding:
            self._discarding = False
            return None
        if not data:
            return None
        return SseEvent(type=kind or "message", data="\n".join(data), id=self.last_event_id)


# -- smee messages, sans I/O --------------------------------------------------------------------------


@dataclass(frozen=True)
class ProxiedDelivery:
    """One delivery taken off the channel: the headers to forward and the candidate bodies, best first."""

    delivery_id: str | None
    event: str | None
    headers: Mapping[str, str]
    bodies: tuple[bytes, ...]

    @property
    def body(self) -> bytes:
        return self.bodies[0]

    def body_for(self, secret: str | None) -> tuple[bytes, bool | None]:
        """The candidate whose HMAC matches the signature header, and whether one did (None: no secret)."""
        signature = self.headers.get("x-hub-signature-256", "")
        if secret is None or not signature.startswith("sha256="):
            return self.body, None
        key = secret.encode()
        for body in self.bodies:
            digest = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
            if hmac.compare_digest(digest.encode(), signature.encode("utf-8", errors="replace")):
                return body, True
        return self.body, False


def upper_case_escapes(text: str) -> str:
    """Write every `\\uxxxx` escape of a JSON text with upper-case hex digits, as GitHub does."""
    if "\\u" not in text:
        return text
    return _ESCAPE.sub(lambda m: f"{m.group(1)}\\u{m.group(2).upper()}", text)


def parse_message(data: str) -> ProxiedDelivery:
    """A smee `message` event's data -> the delivery to replay. Raises MalformedMessage."""
    try:
        fields = _members(data)
    except ValueError as exc:
        raise MalformedMessage(f"event data is not a JSON object: {exc}") from None
    if "body" not in fields or not isinstance(fields["body"][0], dict):
        raise MalformedMessage("event data has no JSON object under `body`")
    _, start, end = fields["body"]
    stringified = data[start:end]  # the channel's JSON.stringify(body), byte for byte
    candidates: list[str] = []
    raw = fields.get("rawdata", (None, 0, 0))[0]
    if isinstance(raw, str) and raw:
        candidates.append(raw)  # the request's raw text, from channels that keep it (smee.io's express server did)
    candidates += [upper_case_escapes(stringified), stringified]
    bodies = tuple(dict.fromkeys(c.encode("utf-8", errors="surrogatepass") for c in candidates))
    headers = {"content-type": "application/json"}
    for name, (value, _, _) in fields.items():
        if isinstance(value, str) and _FORWARDED_HEADER.match(name) and value.isascii() and value.isprintable():
            headers[name] = value
    return ProxiedDelivery(
        delivery_id=headers.get("x-github-delivery"),
        event=headers.get("x-github-event"),
        headers=headers,
        bodies=bodies,
    )


def _members(text: str) -> dict[str, tuple[Any, int, int]]:
    """A JSON object's top-level members: name -> (value, start, end) with the value's span in `text`."""

    def skip(i: int) -> int:
        match = _WHITESPACE.match(text, i)
        return match.end() if match else i

    i = skip(0)
    if text[i : i + 1] != "{":
        raise ValueError("expected an object")
    i = skip(i + 1)
    members: dict[str, tuple[Any, int, int]] = {}
    if text[i : i + 1] == "}":
        i += 1
    else:
        while True:
            if text[i : i + 1] != '"':
                raise ValueError(f"expected a member name at {i}")
            name, i = _DECODER.raw_decode(text, i)
            i = skip(i)
            if text[i : i + 1] != ":":
                raise ValueError(f"expected ':' at {i}")
            start = skip(i + 1)
            value, end = _DECODER.raw_decode(text, start)
            members[name] = (value, start, end)
            i = skip(end)
            if text[i : i + 1] == ",":
                i = skip(i + 1)
            elif text[i : i + 1] == "}":
                i += 1
                break
            else:
                raise ValueError(f"expected ',' or '}}' at {i}")
    if skip(i) != len(text):
        raise ValueError("data after the object")
    return members


def redact_channel(url: str) -> str:
    """The channel URL is a capability (whoever has it reads every payload): log only its start."""
    parts = urlsplit(url)
    path = parts.path.strip("/")
    return f"{parts.scheme}://{parts.netloc}/{path[:4]}…" if path else f"{parts.scheme}://{parts.netloc}"


def local_intake_url(host: str, port: int) -> str:
    """Our own intake, as the proxy reaches it: a wildcard bind address is reached on loopback."""
    if host in ("", "0.0.0.0"):  # noqa: S104 - comparing, not binding
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}{INTAKE_PATH}"


# -- I/O ----------------------------------------------------------------------------------------------


async def create_channel(
    base: str = DEFAULT_CHANNEL_SERVICE,
    *,
    session: aiohttp.ClientSession | None = None,
) -> str:
    """Ask a smee-style service for a new channel: `GET {base}/new` answers a redirect to it."""
    new = base.rstrip("/") + "/new"
    owned = session is None
    client = session or aiohttp.ClientSession()
    try:
        async with client.get(
            new, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=CHANNEL_TIMEOUT)
        ) as response:
            location = response.headers.get("Location")
            if response.status not in _REDIRECTS or not location:
                raise ChannelError(f"{new} answered {response.status} without a channel to redirect to")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ChannelError(f"could not reach {new}: {exc or type(exc).__name__}") from exc
    finally:
        if owned:
            await client.close()
    channel = urljoin(new, location)
    parts = urlsplit(channel)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/") in ("", "new"):
        raise ChannelError(f"{new} redirected to {channel!r}, which is not a channel URL")
    return channel


class WebhookProxy:
    """Listen to `source` (the channel) and replay each delivery into `target` (our intake).

    `start()` runs it in the background until `close()`; `async with` does both. Drops reconnect after the
    channel's `retry:` (else `reconnect_delay`), doubling while connecting keeps failing, up to
    `max_reconnect_delay`; a stream silent for `idle_timeout` counts as dropped. Deliveries are replayed in
    order, one at a time; a refused delivery is logged and skipped, an unreachable or failing intake is
    retried `post_attempts` times (the bot's own server may still be starting)."""

    def __init__(
        self,
        source: str,
        target: str,
        *,
        secret: str | None = None,
        session: aiohttp.ClientSession | None = None,
        reconnect_delay: float = 1.0,
        max_reconnect_delay: float = 60.0,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        post_attempts: int = 5,
        post_retry_delay: float = 0.5,
        post_timeout: float = 30.0,
    ) -> None:
        self.source = source
        self.target = target
        self.connected = asyncio.Event()
        self.last_event_id: str | None = None
        self._secret = secret
        self._session = session
        self._owns_session = session is None
        self._reconnect_delay = reconnect_delay
        self._max_reconnect_delay = max_reconnect_delay
        self._idle_timeout = idle_timeout
        self._post_attempts = max(1, post_attempts)
        self._post_retry_delay = post_retry_delay
        self._post_timeout = post_timeout
        self._retry: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._healthy = False

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self.run(), name="webhook-proxy")

    async def close(self) -> None:
        """Stop listening (an in-flight replay is abandoned: GitHub's log still has the delivery)."""
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.connected.clear()
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def run(self) -> None:
        """Listen and replay until cancelled or closed."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        failures = 0
        channel = redact_channel(self.source)
        while not self._stopping:
            self._healthy = False
            try:
                await self._listen(self._session)
                log.info("webhook proxy: channel %s closed the stream; reconnecting", channel)
            except (aiohttp.ClientError, TimeoutError, WebhookProxyError) as exc:
                log.warning(
                    "webhook proxy: channel %s: %s", channel, self._scrub(exc), extra={"error": type(exc).__name__}
                )
            except Exception:  # the listener must outlive any one bad connection or message
                log.exception("webhook proxy: unexpected error on channel %s", channel)
            finally:
                self.connected.clear()
            # Healthy means the channel said something: a server that accepts and hangs up at once backs off.
            failures = 0 if self._healthy else failures + 1
            base = self._retry if self._retry is not None else self._reconnect_delay
            delay = min(self._max_reconnect_delay, base * 2 ** max(0, failures - 1))
            # Jitter: many bots on one channel service do not come back in the same instant.
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    def _scrub(self, exc: BaseException) -> str:
        """An error's text without the channel's path (aiohttp puts request URLs in some messages)."""
        text = str(exc) or type(exc).__name__
        path = urlsplit(self.source).path
        return text.replace(path, "/…") if len(path) > 1 else text

    async def _listen(self, session: aiohttp.ClientSession) -> None:
        """One connection, until the channel ends it or it fails."""
        # smee.io streams only when Accept is exactly text/event-stream; anything else gets its web page.
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = self.last_event_id
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=self._idle_timeout)
        async with session.get(self.source, headers=headers, timeout=timeout) as response:
            if response.status != 200:
                raise ChannelError(f"answered {response.status} instead of an event stream")
            if response.content_type != "text/event-stream":
                raise ChannelError(
                    f"answered {response.content_type!r}, not text/event-stream: is WEBHOOK_PROXY_URL a channel URL?"
                )
            self.connected.set()
            log.info("webhook proxy: listening to %s, replaying into %s", redact_channel(self.source), self.target)
            parser = SseParser(last_event_id=self.last_event_id)
            async for chunk in response.content.iter_any():
                dropped = parser.dropped
                for event in parser.feed(chunk):
                    self._healthy = True
                    await self._handle(event, session)
                    # Only once handled: a reconnection resumes after the last event actually replayed.
                    self.last_event_id = event.id
                if parser.retry is not None:
                    self._retry = max(parser.retry, 1.0)  # `retry: 0` must not make a hot reconnect loop
                if parser.dropped != dropped:
                    log.warning("webhook proxy: skipped an event over %d bytes", MAX_EVENT_BYTES)

    async def _handle(self, event: SseEvent, session: aiohttp.ClientSession) -> None:
        if event.type == "message":
            await self.replay(event.data, session)
        elif event.type == "ready":
            log.debug("webhook proxy: channel ready")
        elif event.type != "ping":
            log.debug("webhook proxy: ignored a %r event", event.type)

    async def replay(self, data: str, session: aiohttp.ClientSession) -> int | None:
        """Post one smee message's delivery to the intake; the intake's status, or None if it was not reached."""
        try:
            delivery = parse_message(data)
        except MalformedMessage as exc:
            log.warning("webhook proxy: skipped a message that is not a webhook delivery: %s", exc)
            return None
        extra: dict[str, object] = {"delivery": delivery.delivery_id, "gh_event": delivery.event}
        body, matched = delivery.body_for(self._secret)
        if matched is False:
            # Forwarded anyway: the intake is the one place that decides, and it logs the refusal too.
            log.warning("webhook proxy: no reconstruction of the body matches its signature", extra=extra)
        timeout = aiohttp.ClientTimeout(total=self._post_timeout)
        for attempt in range(1, self._post_attempts + 1):
            try:
                async with session.post(self.target, data=body, headers=delivery.headers, timeout=timeout) as response:
                    status, answer = response.status, await response.text()
            except (aiohttp.ClientError, TimeoutError) as exc:
                status, answer = None, str(exc) or type(exc).__name__
            if status is not None and status < 400:
                log.info("webhook proxy: delivered to the intake", extra={**extra, "status": status})
                return status
            if status is not None and status not in _RETRY_STATUSES:
                log.warning(
                    "webhook proxy: the intake refused a delivery: %s",
                    _reason(answer),
                    extra={**extra, "status": status},
                )
                return status
            if attempt < self._post_attempts:
                await asyncio.sleep(self._post_retry_delay * 2 ** (attempt - 1))
        log.error(
            "webhook proxy: could not deliver to the intake after %d attempts: %s",
            self._post_attempts,
            _reason(answer),
            extra={**extra, "status": status},
        )
        return status


def _reason(answer: str) -> str:
    """The intake's `error` text (it never echoes the signature), short enough for a log line."""
    with contextlib.suppress(ValueError, AttributeError):
        answer = str(json.loads(answer).get("error", answer))
    return answer[:300]
