"""Running one skill on a dev agent to its end, durably.

A session is written to the store before anything is sent. Its task is looked for by the session's
context id before it is sent again (a crash mid-send), followed on the stream while it runs, resumed
with SubscribeToTask when the stream drops, and read with GetTask when the stream ends without a final
state. Push notifications (verified by `bot.app`, queued by the web process) feed the same `absorb`,
so the outcome reaches the release even when the worker that started it died."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import fields
from datetime import datetime
from typing import Any

import httpx
from a2a.utils.errors import A2AError, InternalError

from ..config import Settings
from ..secrets import Vault
from ..store import Store
from .client import Call, Update, open_call, task_updates
from .keys import AgentKeys
from .registry import Agent, AgentError, Registry, Session, shown

log = logging.getLogger(__name__)

PUSH_TOKEN = "a2a:push-token"  # noqa: S105 - the name of a stored secret, not one
FINAL_STATES = ("completed", "failed", "canceled", "rejected")
SKILL_RUN = "run_playbook"
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
        `on_start` is called once the session is stored, before anything is sent; a session that ended
        already gets its final update again (what followed it may have died before passing it on)."""
        agent = Agent(scope="", url=session.agent_url) if session else await self.agent_for(repo, skill)
        opened = session is None
        if session is None:
            session = await self.registry.open_session(
                agent,
                skill=skill,
                playbook=playbook,
                parameters=parameters,
                repo=repo,
                release=release,
                requested_by=requested_by,
                push_secret=secrets.token_urlsafe(24),  # replaced (and sent) when the task is sent
            )
            await on_start(session)
        if session.state in FINAL_STATES:
            await on_update(session, Update(task_id=session.task_id or "", state=session.state, final=True))
            return session
        card = await self.registry.require_skill(agent, skill)

        def connect(secret: str | None = None, token: str | None = None) -> Call:
            push = f"{self.issuer}/a2a/push" if secret else None
            return open_call(
                self.keys,
                card,
                issuer=self.issuer,
                audience=agent.url,
                skill=skill,
                repo=repo,
                release=release,
                push_url=push,
                push_secret=secret,
                push_token=token,
            )

        call = connect()
        try:
            task_id = session.task_id
            if task_id is None and not opened:
                found = await call.find(session.id)  # sent before a crash, perhaps
                task_id = found.id if found else None
            if task_id is None:
                await call.close()
                # Sent now: with a new push secret (only its hash is kept), so pushes can be checked.
                secret = secrets.token_urlsafe(24)
                session.token_hash = hashlib.sha256(secret.encode()).hexdigest()
                await self.registry.save(session)
                call = connect(secret, await self.push_token())
                data = {"skill": skill, "playbook": playbook, "parameters": parameters}
                stream = call.send(session.id, {**data, "repo": repo, "release": release})
            else:
                stream = call.resume(task_id)
            try:
                async for update in stream:
                    await self.absorb(session, update, on_update)
                    if session.state in FINAL_STATES:
                        break
            except (httpx.HTTPError, A2AError) as exc:
                if session.task_id is None and task_id is None:
                    # Refused (off the allowlist, a bad token) or unreachable before any task existed.
                    retry = not isinstance(exc, A2AError) or _transient(exc)
                    raise AgentError(
                        f"the dev agent at {shown(agent.url)} refused or failed: {_why(exc)}", retry=retry
                    ) from exc
                log.warning("following task %s stopped (%s); reading the task", session.task_id or task_id, _why(exc))
            if session.state not in FINAL_STATES:
                followed = session.task_id or task_id
                assert followed is not None
                try:
                    task = await call.get(followed)
                except A2AError as exc:
                    if _transient(exc):
                        raise AgentError(
                            f"the dev agent could not be asked about its task: {_why(exc)}", retry=True
                        ) from exc
                    raise AgentError(f"the dev agent no longer knows task {followed}: {_why(exc)}") from exc
                for update in task_updates(task):
                    await self.absorb(session, update, on_update)
            if session.state not in FINAL_STATES:
                # Still running and no stream to follow it: the job comes back to it later.
                raise AgentError(f"task {session.task_id} is still {session.state}", retry=True)
            return session
        finally:
            await call.close()

    async def absorb(self, session: Session, update: Update, on_update: OnUpdate) -> None:
        """One update from the stream or a push notification, applied once. Applies are serialised per
        session across processes (a lease) and start from the stored session, so a stream and queued
        pushes applied at once lose no line and never move a finished task back. A final update is
        passed on every time: what follows it is idempotent, and it may have been missed after a crash."""
        async with self._locked(session.id):
            stored = await self.registry.session(session.key)
            if stored is not None:
                for f in fields(Session):
                    setattr(session, f.name, getattr(stored, f.name))
            changed = False
            if session.task_id is None and update.task_id:
                session.task_id = update.task_id
                changed = self.registry.note(session, "working", f"task {update.task_id}")
            if update.line is not None and update.seq is not None:
                changed = session.add_line(update.seq, update.line) or changed
            elif update.final and session.state not in FINAL_STATES:
                session.result = update.text
                changed = self.registry.note(session, update.state, update.text) or changed
            elif (
                not update.final
                and update.state not in (session.state, "submitted")
                and session.state not in FINAL_STATES  # a late snapshot does not bring a finished task back
            ):
                changed = self.registry.note(session, update.state, update.text) or changed
            if changed:
                await self.registry.save(session)
        if changed or session.state in FINAL_STATES:
            await on_update(session, update)

    @contextlib.asynccontextmanager
    async def _locked(self, session_id: str) -> AsyncIterator[None]:
        name, owner = f"a2a-session:{session_id}", secrets.token_hex(8)
        for attempt in range(500):
            if await self.registry.store.acquire_lease(name, owner, now=self.clock(), seconds=30):
                break
            await asyncio.sleep(min(0.005 * (attempt + 1), 0.1))
        else:
            raise AgentError(f"agent session {session_id} stayed locked", retry=True)
        try:
            yield
        finally:
            await self.registry.store.release_lease(name, owner)

    async def refresh(self, session: Session, on_update: OnUpdate) -> None:
        """Read the session's task (GetTask) and apply what it says."""
        assert session.task_id is not None
        call = await self._call_for(session)
        try:
            task = await call.get(session.task_id)
        except (httpx.HTTPError, A2AError) as exc:
            raise AgentError(f"the dev agent could not be asked about task {session.task_id}: {_why(exc)}") from exc
        finally:
            await call.close()
        for update in task_updates(task):
            await self.absorb(session, update, on_update)

    async def _call_for(self, session: Session) -> Call:
        card = await self.registry.card(Agent(scope="", url=session.agent_url))
        return open_call(
            self.keys,
            card,
            issuer=self.issuer,
            audience=session.agent_url,
            skill=session.skill,
            repo=session.repo,
            release=session.release,
        )

    async def cancel(self, session: Session) -> None:
        """Ask the agent to stop the session's task (a deploy past its timeout)."""
        if not session.task_id or session.state in FINAL_STATES:
            return
        call = await self._call_for(session)
        try:
            await call.cancel(session.task_id)
        finally:
            await call.close()


def _why(exc: BaseException) -> str:
    """What went wrong, with the agent's own reason when it answered an HTTP error with one."""
    text = str(exc) or type(exc).__name__
    response = getattr(exc.__cause__, "response", None)
    if isinstance(response, httpx.Response):
        with contextlib.suppress(ValueError, AttributeError, httpx.ResponseNotRead):
            error = response.json().get("error") or {}
            if isinstance(error, dict) and error.get("message"):
                text = f"{response.status_code}: {error['message']}"
    return text[:300]


def _transient(exc: BaseException) -> bool:
    """An error worth retrying: the network, a 5xx, the agent's internal error; not a refusal."""
    if isinstance(exc, httpx.HTTPError | InternalError):
        return True
    response = getattr(exc.__cause__, "response", None)
    return (isinstance(response, httpx.Response) and response.status_code >= 500) or not isinstance(exc, A2AError)


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
