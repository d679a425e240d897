"""Running one skill on a dev agent to its end, durably.

A session is written to the store before anything is sent. Its task is looked for by the session's
context id before it is sent again (a crash mid-send), followed on the stream while it runs, resumed
with SubscribeToTask when the stream drops, and read with GetTask when the stream ends without a final
state. Push notifications (verified by `bot.app`, queued by the web process) feed the same `absorb`,
so the outcome reaches the release even when the worker that started it died."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import httpx
from a2a.client import A2AClientError

from ..config import Settings
from ..secrets import Vault
from ..store import Store
from .client import Update, open_call, task_update
from .keys import AgentKeys
from .registry import MAX_LOG_LINES, Agent, AgentError, Registry, Session

log = logging.getLogger(__name__)

PUSH_TOKEN = "a2a:push-token"  # noqa: S105 - the name of a stored secret, not one
FINAL_STATES = ("completed", "failed", "canceled", "rejected")
SKILL_RUN = "run_playbook"
SKILL_TAIL = "tail_logs"
SKILL_ROLLBACK = "rollback_release"

OnUpdate = Callable[[Session, Update], Awaitable[None]]


class DevAgents:
    def __init__(self, store: Store, settings: Settings, clock: Callable[[], datetime], vault: Vault) -> None:
        self.settings = settings
        self.clock = clock
        self.vault = vault
        self.registry = Registry(store, clock)
        self.keys = AgentKeys(vault, clock)

    @property
    def issuer(self) -> str:
        if not self.settings.public_url:
            raise AgentError("PUBLIC_URL is not set: a dev agent checks the bot's tokens against its public JWKS")
        return self.settings.public_url.rstrip("/")

    async def push_token(self) -> str:
        """The bearer token dev agents send back with push notifications; made on first use."""
        token = await self.vault.get(PUSH_TOKEN)
        if token is None:
            token = secrets.token_urlsafe(32)
            await self.vault.put(PUSH_TOKEN, token, now=self.clock())
        return token

    async def agent_for(self, repo: str, skill: str) -> Agent:
        """The repository's dev agent, having checked that its card offers the skill."""
        agent = await self.registry.for_repo(repo)
        if agent is None:
            raise AgentError(
                f"no dev agent is registered for {repo}: an operator adds one with "
                f"`python -m bot agent add URL --scope {repo.split('/', 1)[0]}`"
            )
        await self.registry.require_skill(agent, skill)
        return agent

    async def run(
        self,
        session: Session | None,
        *,
        repo: str,
        release: str,
        skill: str,
        playbook: str,
        parameters: dict[str, str],
        requested_by: str,
        on_start: Callable[[Session], Awaitable[None]],
        on_update: OnUpdate,
    ) -> Session:
        """Run (or, given the session of an earlier attempt, follow) the skill to its final state.
        `on_start` is called once the session is stored, before anything is sent."""
        agent = Agent(scope="", url=session.agent_url) if session else await self.agent_for(repo, skill)
        card = await self.registry.require_skill(agent, skill)
        secret = secrets.token_urlsafe(24)
        if session is None:
            session = await self.registry.open_session(
                agent,
                skill=skill,
                playbook=playbook,
                parameters=parameters,
                repo=repo,
                release=release,
                requested_by=requested_by,
                push_secret=secret,
            )
            await on_start(session)
            fresh = True
        else:
            fresh = False
        call = open_call(
            self.keys,
            card,
            issuer=self.issuer,
            audience=agent.url,
            skill=skill,
            repo=repo,
            release=release,
            # A resumed session's push config is the one its first send registered (its secret is hashed).
            push_url=f"{self.issuer}/a2a/push" if fresh else None,
            push_secret=secret if fresh else None,
            push_token=await self.push_token() if fresh else None,
        )
        try:
            if session.state in FINAL_STATES:
                return session
            task_id = session.task_id
            if task_id is None and not fresh:
                found = await call.find(session.id)
                task_id = found.id if found else None
            data = {"skill": skill, "playbook": playbook, "parameters": parameters, "repo": repo, "release": release}
            stream = call.resume(task_id) if task_id else call.send(session.id, data)
            try:
                async for update in stream:
                    await self.absorb(session, update, on_update)
                    if session.state in FINAL_STATES:
                        break
            except (httpx.HTTPError, A2AClientError) as exc:
                if session.task_id is None:
                    raise AgentError(f"the dev agent at {agent.url} failed: {_why(exc)}", retry=True) from exc
                log.warning("the stream of task %s dropped (%s); reading the task", session.task_id, _why(exc))
            if session.state not in FINAL_STATES and session.task_id:
                await self.absorb(session, task_update(await call.get(session.task_id)), on_update)
            return session
        finally:
            await call.close()

    async def absorb(self, session: Session, update: Update, on_update: OnUpdate) -> None:
        """One update from the stream or a push notification, applied once (lines by sequence number)."""
        changed = False
        if session.task_id is None:
            session.task_id = update.task_id
            changed = self.registry.note(session, "working", f"task {update.task_id}")
        if update.line is not None and update.seq is not None:
            if update.seq <= session.seq:
                return  # seen already (the stream and the push notification both carry it)
            session.seq = update.seq
            session.log = [*session.log, update.line][-MAX_LOG_LINES:]
            changed = True
        elif update.final and session.state not in FINAL_STATES:
            session.result = update.text
            changed = self.registry.note(session, update.state, update.text)
        elif (
            not update.final and update.state not in (session.state, "submitted") and session.state not in FINAL_STATES
        ):
            # A late snapshot (a queued push notification) does not bring a finished task back.
            changed = self.registry.note(session, update.state, update.text)
        if changed:
            await self.registry.save(session)
            await on_update(session, update)

    async def cancel(self, session: Session) -> None:
        """Ask the agent to stop the session's task (a deploy past its timeout)."""
        if not session.task_id or session.state in FINAL_STATES:
            return
        card = await self.registry.card(Agent(scope="", url=session.agent_url))
        call = open_call(
            self.keys,
            card,
            issuer=self.issuer,
            audience=session.agent_url,
            skill=session.skill,
            repo=session.repo,
            release=session.release,
        )
        try:
            await call.cancel(session.task_id)
        finally:
            await call.close()


def _why(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__)[:300]


def session_summary(session: Session) -> dict[str, Any]:
    """The audit view of a session (the CLI prints these)."""
    return {
        "started_at": session.started_at,
        "release": session.release,
        "requested_by": session.requested_by,
        "agent": session.agent_url,
        "skill": session.skill,
        "playbook": session.playbook,
        "parameters": session.parameters,
        "task": session.task_id,
        "state": session.state,
        "result": session.result,
        "changes": session.changes,
    }
