"""The bot's two A2A pages: its JWKS (what dev agents verify the bot's tokens with) and `/a2a/push`,
where agents send task updates.

A push is accepted only with the bot's push token (`Authorization: Bearer`), the per-task secret the
bot gave when it sent the task (`X-A2A-Notification-Token`, compared with its hash) and a task (or
context) id of a session the bot started. It is then queued (stored) before the 200: the worker applies
it, so the outcome of a task reaches its release across restarts of either side."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging

from aiohttp import web

from .runner import DevAgents

log = logging.getLogger(__name__)

AGENTS = web.AppKey("dev_agents", DevAgents)
JWKS_PATH = "/.well-known/jwks.json"
PUSH_PATH = "/a2a/push"
MAX_PUSH_BYTES = 1024 * 1024


def add_routes(app: web.Application) -> None:
    app.router.add_get(JWKS_PATH, jwks_page)
    app.router.add_post(PUSH_PATH, push_page)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def jwks_page(request: web.Request) -> web.Response:
    agents = request.app.get(AGENTS)
    if agents is None:
        return _error(503, "the dev agent bridge needs SECRETS_KEY: its signing keys are stored encrypted")
    response = web.json_response(await agents.keys.jwks())
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


async def push_page(request: web.Request) -> web.Response:
    agents = request.app.get(AGENTS)
    if agents is None:
        return _error(503, "the dev agent bridge needs SECRETS_KEY")
    expected = f"Bearer {await agents.push_token()}"
    if not hmac.compare_digest(request.headers.get("Authorization", "").encode(), expected.encode()):
        log.warning("push notification refused: missing or wrong bearer token")
        return _error(401, "a push notification needs the bot's push token (Authorization: Bearer)")
    secret = request.headers.get("X-A2A-Notification-Token", "")
    if not secret:
        return _error(401, "a push notification needs its task's X-A2A-Notification-Token")
    if request.content_length is not None and request.content_length > MAX_PUSH_BYTES:
        return _error(413, f"a push notification may be at most {MAX_PUSH_BYTES} bytes")
    raw = await request.content.read(MAX_PUSH_BYTES + 1)
    if len(raw) > MAX_PUSH_BYTES:
        return _error(413, f"a push notification may be at most {MAX_PUSH_BYTES} bytes")
    try:
        body = json.loads(raw)
    except ValueError as exc:
        return _error(400, f"the push notification is not JSON: {exc}")
    task_id, context_id = _ids(body)
    if not task_id:
        return _error(
            400, "the push notification names no task (task.id, statusUpdate.taskId or artifactUpdate.taskId)"
        )
    registry = agents.registry
    session = await registry.session_for_task(task_id)
    if session is None and context_id:
        session = await registry.session_for_context(context_id)
    if session is None or not session.secret_matches(secret) or session.task_id not in (None, task_id):
        log.warning("push notification refused: no session of this bot has task %s with that secret", task_id[:64])
        return _error(401, "no task of this bot has that id and notification token")
    digest = hashlib.sha256(raw).hexdigest()[:24]
    await registry.store.schedule_job(
        f"agent-push:{session.id}:{digest}",
        "agent-push",
        {"session": session.key, "event": body},
        due_at=agents.clock(),
        once=True,
    )
    return web.json_response({"ok": True})


def _ids(body: object) -> tuple[str, str]:
    if not isinstance(body, dict):
        return "", ""
    task = body.get("task")
    if isinstance(task, dict):
        return str(task.get("id") or ""), str(task.get("contextId") or "")
    for name in ("statusUpdate", "artifactUpdate"):
        event = body.get(name)
        if isinstance(event, dict):
            return str(event.get("taskId") or ""), str(event.get("contextId") or "")
    return "", ""
