"""Calls to a dev agent over A2A 1.0 with the official a2a-sdk client (httpx, JSON-RPC + SSE).

Every HTTP request carries a fresh token (`AgentAuth` mints one per request: single-use `jti`, 60 s,
scoped to the skill, the repository and the release) and `A2A-Version: 1.0`. A task is sent once:
its message's `context_id` is the session id, so after a crash the bot looks for the task by that
context before it would send it again. Progress comes as `StreamResponse`s, turned into `Update`s."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass
from typing import Any

import httpx
from a2a.client import ClientConfig, ClientFactory
from a2a.client.client import Client
from a2a.types import (
    AgentCard,
    AuthenticationInfo,
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    StreamResponse,
    SubscribeToTaskRequest,
    Task,
    TaskPushNotificationConfig,
    TaskState,
    TaskStatus,
)
from google.protobuf.json_format import MessageToDict, ParseDict
from google.protobuf.struct_pb2 import Value

from .keys import AgentKeys

FINAL = {
    TaskState.TASK_STATE_COMPLETED: "completed",
    TaskState.TASK_STATE_FAILED: "failed",
    TaskState.TASK_STATE_CANCELED: "canceled",
    TaskState.TASK_STATE_REJECTED: "rejected",
}
STATE_NAMES = {
    **FINAL,
    TaskState.TASK_STATE_SUBMITTED: "submitted",
    TaskState.TASK_STATE_WORKING: "working",
    TaskState.TASK_STATE_INPUT_REQUIRED: "input-required",
    TaskState.TASK_STATE_AUTH_REQUIRED: "auth-required",
}


@dataclass(frozen=True, slots=True)
class Update:
    """What one event of the task said: its state, a log line (with its sequence number) or a final text."""

    task_id: str
    state: str
    line: str | None = None
    seq: int | None = None
    text: str = ""
    final: bool = False


class AgentAuth(httpx.Auth):
    """A new token for every request, scoped to one session."""

    def __init__(self, keys: AgentKeys, *, issuer: str, audience: str, skill: str, repo: str, release: str) -> None:
        self.keys = keys
        self.claims = {"issuer": issuer, "audience": audience, "skill": skill, "repo": repo, "release": release}

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError("the dev agent client is asynchronous")

    async def async_auth_flow(self, request: httpx.Request) -> AsyncIterator[httpx.Request]:  # type: ignore[override]
        token = await self.keys.mint(**self.claims)
        request.headers["Authorization"] = f"Bearer {token}"
        yield request


@dataclass
class Call:
    """One session's connection to the agent: a client whose requests are signed for that session."""

    client: Client
    http: httpx.AsyncClient
    card: AgentCard
    push: TaskPushNotificationConfig | None = None

    async def close(self) -> None:
        await self.client.close()
        await self.http.aclose()

    async def send(self, context_id: str, data: dict[str, Any]) -> AsyncIterator[Update]:
        message = Message(message_id=context_id, context_id=context_id, role=Role.ROLE_USER)
        message.parts.append(Part(data=ParseDict(data, Value())))
        request = SendMessageRequest(message=message, configuration=SendMessageConfiguration())
        if self.push is not None:
            request.configuration.task_push_notification_config.CopyFrom(self.push)
        async for response in self.client.send_message(request):
            for update in updates(response):
                yield update

    async def find(self, context_id: str) -> Task | None:
        """The task this session already started, if the agent has it (after a crash mid-send)."""
        found = await self.client.list_tasks(ListTasksRequest(context_id=context_id, page_size=5))
        return found.tasks[0] if found.tasks else None

    async def resume(self, task_id: str) -> AsyncIterator[Update]:
        async for response in self.client.subscribe(SubscribeToTaskRequest(id=task_id)):
            for update in updates(response):
                yield update

    async def get(self, task_id: str) -> Task:
        return await self.client.get_task(GetTaskRequest(id=task_id))

    async def cancel(self, task_id: str) -> Task:
        return await self.client.cancel_task(CancelTaskRequest(id=task_id))


def open_call(
    keys: AgentKeys,
    card: AgentCard,
    *,
    issuer: str,
    audience: str,
    skill: str,
    repo: str,
    release: str,
    push_url: str | None = None,
    push_secret: str | None = None,
    push_token: str | None = None,
    timeout: float = 30.0,
) -> Call:
    auth = AgentAuth(keys, issuer=issuer, audience=audience, skill=skill, repo=repo, release=release)
    # Reads of an SSE stream may be far apart (a quiet playbook): no read timeout on the stream.
    http = httpx.AsyncClient(auth=auth, timeout=httpx.Timeout(timeout, read=None))
    try:
        client = ClientFactory(ClientConfig(streaming=True, httpx_client=http)).create(card)
    except BaseException:
        # A card the SDK cannot use (no JSON-RPC interface, say): the client must not leak.
        _close_later(http)
        raise
    push = None
    if push_url and push_secret and push_token:
        push = TaskPushNotificationConfig(
            url=push_url,
            token=push_secret,
            authentication=AuthenticationInfo(scheme="Bearer", credentials=push_token),
        )
    return Call(client=client, http=http, card=card, push=push)


def _close_later(http: httpx.AsyncClient) -> None:
    with contextlib.suppress(RuntimeError):  # no running loop: nothing was opened yet either
        task = asyncio.get_running_loop().create_task(http.aclose())
        _CLOSING.add(task)
        task.add_done_callback(_CLOSING.discard)


_CLOSING: set[asyncio.Task[None]] = set()


def updates(response: StreamResponse) -> list[Update]:
    """A stream (or push) event as updates: a task snapshot gives its state and its final text."""
    if response.HasField("task"):
        return task_updates(response.task)
    if response.HasField("status_update"):
        event = response.status_update
        return [_status_update(event.task_id, event.status, MessageToDict(event.metadata))]
    if response.HasField("artifact_update"):
        return []  # the same lines as the status updates, kept by the agent as its log artifact
    return []


def task_updates(task: Task) -> list[Update]:
    """A task snapshot (GetTask, or the first event of a stream): the numbered lines of its artifacts
    (the agent's log; lines a lost stream or lost pushes never delivered), then its state."""
    lines = []
    for artifact in task.artifacts:
        for part in artifact.parts:
            seq = MessageToDict(part.metadata).get("seq")
            if part.text and seq is not None:
                lines.append(Update(task_id=task.id, state="working", line=part.text, seq=int(seq)))
    return [*lines, _status_update(task.id, task.status, {})]


def _status_update(task_id: str, status: TaskStatus, metadata: dict[str, Any]) -> Update:
    state = STATE_NAMES.get(status.state, "unknown")
    text = "\n".join(p.text for p in status.message.parts if p.text) if status.HasField("message") else ""
    final = status.state in FINAL
    meta = dict(metadata)
    if status.HasField("message"):
        meta.update(MessageToDict(status.message.metadata))
    seq = meta.get("seq")
    if not final and text and seq is not None:
        return Update(task_id=task_id, state=state, line=text, seq=int(seq))
    return Update(task_id=task_id, state=state, text=text, final=final)
