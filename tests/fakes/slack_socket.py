"""Slack's Socket Mode for the fake Slack: single-use WebSocket URLs, `hello`, envelopes out, acks back.

Follows Slack's "Using Socket Mode" docs and what slack_sdk's aiohttp SocketModeClient does against it:
`apps.connections.open` hands out a URL whose ticket is spent by one connection; on connect the server sends
`{"type": "hello", "num_connections": n, "debug_info": ..., "connection_info": {"app_id": ...}}`; envelopes
are `{"envelope_id", "type", "payload", "accepts_response_payload"}` (events also carry `retry_attempt` and
`retry_reason`); the app acks with `{"envelope_id", "payload"?}` within 3 seconds; a `disconnect` message asks
the app to open a new connection. The client pings (`sdk-ping-pong:<time>`) and the server pongs the same bytes
(aiohttp's autoping). Acks that Slack would drop (unknown or repeated envelope ids, later than 3 s, not JSON)
land in `violations`.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlencode

from aiohttp import WSMsgType, web

SocketKind = Literal["slash_commands", "interactive", "events_api"]
SOCKET_PATH = "/socket-mode"
ACK_DEADLINE = 3.0  # seconds Slack waits for an ack before it retries an event or tells the user it failed
# Interactive payloads whose ack may carry an answer (a view's response_action, a select's options).
_INTERACTIVE_WITH_RESPONSE = frozenset({"view_submission", "block_suggestion"})


@dataclass
class Envelope:
    """One envelope the fake sent, and the ack it got."""

    envelope_id: str
    type: SocketKind
    payload: dict[str, Any]
    accepts_response_payload: bool
    sent_at: float
    ack: dict[str, Any] | None = None
    acked_at: float | None = None
    acked: asyncio.Event = field(default_factory=asyncio.Event)


class SocketMode:
    """Mixin for FakeSlack: the Socket Mode half. The host provides `url`, `app_id`, `violations`,
    `_changed()`, `wait_for(...)` and `_slash_command_answer(...)`."""

    url: str
    app_id: str
    violations: list[str]

    def _init_socket_mode(self) -> None:
        self._tickets: dict[str, bool] = {}  # ticket -> spent
        self._sockets: list[web.WebSocketResponse] = []
        self.socket_connections = 0  # connections accepted so far
        self.envelopes: dict[str, Envelope] = {}

    def _changed(self) -> None:
        raise NotImplementedError

    async def wait_for(self, predicate: Callable[[], object], timeout: float = 5.0, what: str = "") -> None:
        raise NotImplementedError

    def _slash_command_answer(self, command: dict[str, Any], answer: dict[str, Any], source: str) -> None:
        raise NotImplementedError

    @property
    def socket_open(self) -> int:
        """How many Socket Mode connections are open now."""
        return sum(1 for ws in self._sockets if not ws.closed)

    def _issue_socket_url(self) -> str:
        ticket = uuid.uuid4().hex
        self._tickets[ticket] = False
        ws_base = self.url.replace("http://", "ws://", 1)
        return f"{ws_base}{SOCKET_PATH}?{urlencode({'ticket': ticket, 'app_id': self.app_id})}"

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets or self._tickets[ticket]:
            why = "unknown ticket" if ticket not in self._tickets else "ticket already used"
            self.violations.append(f"socket mode: connection refused ({why}); call apps.connections.open first")
            return web.json_response({"ok": False, "error": "invalid_auth"}, status=401)
        self._tickets[ticket] = True
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.append(ws)
        self.socket_connections += 1
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": self.socket_open,
                "debug_info": {
                    "host": "applink-fake-1",
                    "build_number": 1,
                    "approximate_connection_time": 18060,
                },
                "connection_info": {"app_id": self.app_id},
            }
        )
        self._changed()
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    self._on_socket_text(message.data)
                elif message.type == WSMsgType.BINARY:
                    self.violations.append("socket mode: binary frame (Slack reads only text frames)")
        finally:
            self._sockets.remove(ws)
            self._changed()
        return ws

    def _on_socket_text(self, data: str) -> None:
        try:
            ack = json.loads(data)
        except ValueError:
            self.violations.append(f"socket mode: a message that is not JSON: {data[:80]!r}")
            return
        envelope = self.envelopes.get(ack.get("envelope_id", "")) if isinstance(ack, dict) else None
        if envelope is None:
            self.violations.append(f"socket mode: ack for an unknown envelope: {data[:120]}")
            return
        if envelope.ack is not None:
            self.violations.append(f"socket mode: envelope {envelope.envelope_id} acked twice")
            return
        now = asyncio.get_running_loop().time()
        envelope.ack, envelope.acked_at = ack, now
        if now - envelope.sent_at > ACK_DEADLINE:
            late = now - envelope.sent_at
            self.violations.append(f"socket mode: envelope {envelope.envelope_id} acked after {late:.1f}s (> 3s)")
        answer = ack.get("payload")
        if answer and envelope.accepts_response_payload and envelope.type == "slash_commands":
            self._slash_command_answer(envelope.payload, answer, "socket_ack")
        envelope.acked.set()
        self._changed()

    async def socket_send(
        self,
        kind: SocketKind,
        payload: dict[str, Any],
        *,
        timeout: float = 5.0,
        retry_attempt: int = 0,
        retry_reason: str = "",
    ) -> str:
        """Push an envelope to the newest open connection (waiting up to `timeout` for one); its envelope id."""
        if kind not in ("slash_commands", "interactive", "events_api"):
            raise ValueError(f"unknown envelope type {kind!r}")
        if kind == "slash_commands" and not {"command", "user_id", "channel_id", "response_url"} <= payload.keys():
            raise ValueError("a slash command payload needs command, user_id, channel_id, response_url")
        if kind == "events_api" and payload.get("type") != "event_callback":
            raise ValueError("an events_api payload is an Events API envelope (see event_callback)")
        if kind == "interactive" and "type" not in payload:
            raise ValueError("an interactive payload has a type (block_actions, view_submission, ...)")
        await self.wait_for(lambda: self.socket_open > 0, timeout, "an open Socket Mode connection")
        ws = [s for s in self._sockets if not s.closed][-1]
        accepts = kind == "slash_commands" or (kind == "interactive" and payload["type"] in _INTERACTIVE_WITH_RESPONSE)
        envelope_id = str(uuid.uuid4())
        message: dict[str, Any] = {
            "envelope_id": envelope_id,
            "payload": payload,
            "type": kind,
            "accepts_response_payload": accepts,
        }
        if kind == "events_api":
            message |= {"retry_attempt": retry_attempt, "retry_reason": retry_reason}
        now = asyncio.get_running_loop().time()
        self.envelopes[envelope_id] = Envelope(envelope_id, kind, payload, accepts, now)
        await ws.send_json(message)
        return envelope_id

    async def socket_ack(self, envelope_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """The app's ack for an envelope (`{"envelope_id", "payload"?}`), waiting up to `timeout` seconds."""
        envelope = self.envelopes[envelope_id]
        try:
            await asyncio.wait_for(envelope.acked.wait(), timeout)
        except TimeoutError:
            raise TimeoutError(f"no ack for envelope {envelope_id} ({envelope.type}) in {timeout}s") from None
        assert envelope.ack is not None
        return envelope.ack

    async def socket_disconnect(self, reason: str = "refresh_requested") -> None:
        """Send `disconnect` on every open connection, as Slack does before it refreshes one."""
        for ws in [s for s in self._sockets if not s.closed]:
            await ws.send_json({"type": "disconnect", "reason": reason, "debug_info": {"host": "applink-fake-1"}})

    async def _close_sockets(self) -> None:
        for ws in list(self._sockets):
            await ws.close(code=1001, message=b"fake slack closing")
