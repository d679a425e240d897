"""Which dev agent serves a repository, what its Agent Card says, and the audit log of every session.

Agents are registered per repository (`owner/repo`), per organisation (`owner`) or for all (`*`); the
most specific wins. The card is fetched from `/.well-known/agent-card.json` and kept for ten minutes.
Each call to an agent is a session: who asked, for which release, which skill and parameters, each
state change and the result, kept in the store and readable with `python -m bot agent-sessions`."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import httpx
from a2a.client import A2ACardResolver
from a2a.types import AgentCard
from google.protobuf.json_format import MessageToDict, ParseDict

from ..store import Store

CARD_TTL = timedelta(minutes=10)
_AGENT = "a2a:agent:"
_CARD = "a2a:card:"
_SESSION = "a2a:session:"
_TASK = "a2a:task:"
_CONTEXT = "a2a:context:"
MAX_LOG_LINES = 40  # kept per session: the failure message quotes the last of them
MAX_CHANGES = 200


class AgentError(Exception):
    """The dev agent cannot do what the release needs: `message` says what, for the PR and the requester."""

    def __init__(self, message: str, *, retry: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.retry = retry


@dataclass(frozen=True, slots=True)
class Agent:
    scope: str  # "owner/repo", "owner" or "*"
    url: str


@dataclass
class Session:
    """One call to a dev agent, as the audit log keeps it."""

    id: str
    agent_url: str
    skill: str
    playbook: str
    parameters: dict[str, str]
    repo: str
    release: str
    requested_by: str
    started_at: str
    token_hash: str  # the per-task push secret, hashed
    task_id: str | None = None
    state: str = "sending"
    result: str = ""
    changes: list[dict[str, str]] = field(default_factory=list)  # each state change, with its time
    # The last lines the playbook printed, by sequence number (as text: a JSON object's keys): the stream
    # and the push notifications both carry them, in whatever order they are applied.
    lines: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{_SESSION}{self.started_at}:{self.id}"

    def outcome(self, how: str = "") -> str:
        """How it ended, for a person: `deploy-web on the dev agent failed: exit 1 after 0.3s · last lines: ...`."""
        tail = " / ".join(self.log[-5:])
        text = f"{self.playbook} on the dev agent {self.state}{f' {how}' if how else ''}: {self.result or 'no result'}"
        return text + (f" · last lines: {tail}" if tail else "")

    def secret_matches(self, token: str) -> bool:
        """The per-task push secret, compared in constant time with its stored hash."""
        return hmac.compare_digest(hashlib.sha256(token.encode()).hexdigest(), self.token_hash)

    @property
    def log(self) -> list[str]:
        return [self.lines[k] for k in sorted(self.lines, key=int)]

    def add_line(self, seq: int, line: str) -> bool:
        """Keep a line (the latest MAX_LOG_LINES by number); False when it was kept already or is too old."""
        key = str(seq)
        if key in self.lines:
            return False
        numbers = sorted(int(k) for k in self.lines)
        if len(numbers) >= MAX_LOG_LINES and seq < numbers[0]:
            return False
        self.lines[key] = line
        for old in numbers[: max(0, len(numbers) + 1 - MAX_LOG_LINES)]:
            del self.lines[str(old)]
        return True

    @classmethod
    def from_json(cls, value: str) -> Session:
        doc = json.loads(value)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in known})


class Registry:
    def __init__(self, store: Store, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.clock = clock

    # Agents.

    async def add(self, scope: str, url: str) -> Agent:
        agent = Agent(scope=scope, url=url.rstrip("/"))
        await self.store.set_value(_AGENT + scope, json.dumps(asdict(agent)), now=self.clock())
        return agent

    async def remove(self, scope: str) -> bool:
        return await self.store.delete_value(_AGENT + scope)

    async def agents(self) -> list[Agent]:
        return [Agent(**json.loads(value)) for _, value in await self.store.list_values(_AGENT)]

    async def for_repo(self, repo: str) -> Agent | None:
        owner = repo.split("/", 1)[0]
        for scope in (repo, owner, "*"):
            value = await self.store.get_value(_AGENT + scope)
            if value is not None:
                return Agent(**json.loads(value))
        return None

    async def card(self, agent: Agent, *, fresh: bool = False) -> AgentCard:
        """The agent's card, from the store when fetched in the last ten minutes."""
        now = self.clock()
        cached = await self.store.get_value(_CARD + agent.url)
        if cached and not fresh:
            doc = json.loads(cached)
            if now - datetime.fromisoformat(doc["fetched_at"]) < CARD_TTL:
                return ParseDict(doc["card"], AgentCard(), ignore_unknown_fields=True)
        try:
            async with httpx.AsyncClient(timeout=10.0) as http:
                card = await A2ACardResolver(http, agent.url).get_agent_card()
        except Exception as exc:  # unreachable, refused, not a card: all the same to a release
            raise AgentError(
                f"the dev agent at {shown(agent.url)} could not be reached: {_why(exc)}", retry=True
            ) from exc
        doc = {"fetched_at": now.isoformat(), "card": MessageToDict(card)}
        await self.store.set_value(_CARD + agent.url, json.dumps(doc), now=now)
        return card

    async def require_skill(self, agent: Agent, skill: str) -> AgentCard:
        card = await self.card(agent)
        if not any(s.id == skill for s in card.skills):
            card = await self.card(agent, fresh=True)  # it may have been given the skill since
            if not any(s.id == skill for s in card.skills):
                have = ", ".join(s.id for s in card.skills) or "none"
                raise AgentError(f"the dev agent at {shown(agent.url)} has no skill {skill} (its skills: {have})")
        return card

    # Sessions.

    async def open_session(
        self,
        agent: Agent,
        *,
        skill: str,
        playbook: str,
        parameters: dict[str, str],
        repo: str,
        release: str,
        requested_by: str,
        push_secret: str,
    ) -> Session:
        session = Session(
            id=uuid.uuid4().hex,
            agent_url=agent.url,
            skill=skill,
            playbook=playbook,
            parameters=parameters,
            repo=repo,
            release=release,
            requested_by=requested_by,
            started_at=self.clock().isoformat(),
            token_hash=hashlib.sha256(push_secret.encode()).hexdigest(),
        )
        session.changes.append({"at": session.started_at, "state": "sending", "text": f"{skill} {playbook}"})
        await self.save(session)
        await self.store.set_value(_CONTEXT + session.id, session.key, now=self.clock())
        return session

    async def save(self, session: Session) -> None:
        await self.store.set_value(session.key, json.dumps(asdict(session)), now=self.clock())
        if session.task_id:
            await self.store.set_value(_TASK + session.task_id, session.key, now=self.clock())

    async def session(self, key: str) -> Session | None:
        value = await self.store.get_value(key)
        return Session.from_json(value) if value else None

    async def session_for_task(self, task_id: str) -> Session | None:
        key = await self.store.get_value(_TASK + task_id)
        return await self.session(key) if key else None

    async def session_for_context(self, context_id: str) -> Session | None:
        """The session whose message opened that context (its id): a push may come before the task id."""
        key = await self.store.get_value(_CONTEXT + context_id)
        return await self.session(key) if key else None

    async def sessions(self, *, limit: int = 50) -> list[Session]:
        rows = await self.store.list_values(_SESSION, limit=limit)
        return [Session.from_json(value) for _, value in rows]

    def note(self, session: Session, state: str, text: str = "") -> bool:
        """Record a state change (not a repeat of the last one); True when it was one."""
        last = session.changes[-1] if session.changes else None
        if last is not None and last["state"] == state and last["text"] == text[:500]:
            return False
        session.state = state
        session.changes.append({"at": self.clock().isoformat(), "state": state, "text": text[:500]})
        del session.changes[:-MAX_CHANGES]  # an agent that chatters in status texts cannot grow it for ever
        return True


def shown(url: str) -> str:
    """An agent URL as PR comments may show it: no user name or password."""
    parts = urlsplit(url)
    return (
        urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))
        if parts.hostname
        else url
    )


def _why(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:300]
