"""The dev agent as a real process on 127.0.0.1 (`python -m devagent`), with the bot played by the tests: its
JWKS and push receiver are aiohttp servers, its calls go through the a2a-sdk client, or as raw JSON-RPC where
the exact error body matters. The playbooks are the scripts in tests/devagent/."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import pytest_asyncio
import yaml
from a2a.client import A2ACardResolver, A2AClientError, Client, ClientCallContext, ClientConfig, ClientFactory
from a2a.helpers import get_message_text, new_data_part
from a2a.types import (
    AuthenticationInfo,
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    Message,
    Role,
    SendMessageRequest,
    StreamResponse,
    SubscribeToTaskRequest,
    TaskPushNotificationConfig,
    TaskState,
)
from a2a.utils.errors import InvalidParamsError
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf.json_format import MessageToDict

from tests.devagent.bot import ISSUER, KID, BotKey, JwksServer, PushReceiver

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROOT = Path(__file__).resolve().parent.parent
PLAYBOOKS = Path(__file__).resolve().parent / "devagent"
A2A_VERSION = {"A2A-Version": "1.0"}
SHA = "0123456789abcdef0123456789abcdef01234567"
WEBSHOP = "octo-org/webshop"


def agent_config(url: str, jwks_url: str, push_url: str) -> dict[str, Any]:
    everyone = ["octo-org/*"]
    return {
        "url": url,
        "bot": {"issuer": ISSUER, "jwks_url": jwks_url},
        "push_urls": [push_url],
        "playbooks": {
            "print-lines": {
                "argv": ["./lines.sh", "{count}"],
                "cwd": str(PLAYBOOKS),
                "repos": everyone,
                "parameters": {"count": {"pattern": "[0-9]{1,3}", "required": True}},
            },
            "fail": {"argv": ["./fail.sh"], "cwd": str(PLAYBOOKS), "repos": [WEBSHOP]},
            "sleep-with-child": {"argv": ["./sleeper.sh"], "cwd": str(PLAYBOOKS), "repos": everyone},
            "slow": {"argv": ["./sleeper.sh"], "cwd": str(PLAYBOOKS), "repos": everyone, "timeout_seconds": 1},
            "stubborn": {"argv": ["./stubborn.sh"], "cwd": str(PLAYBOOKS), "repos": everyone, "timeout_seconds": 1},
            "deploy-web": {
                "argv": ["./args.sh", "{environment}", "{sha}"],
                "cwd": str(PLAYBOOKS),
                "env": {"DEPLOY_ENV": "prod"},
                "repos": [WEBSHOP, "octo-org/*"],
                "parameters": {
                    "environment": {"pattern": "^[a-z][a-z0-9-]{0,30}$", "required": True},
                    "sha": {"pattern": "^[0-9a-f]{40}$", "required": False, "default": ""},
                },
            },
            "recent-logs": {
                "skill": "tail_logs",
                "argv": ["./lines.sh", "3"],
                "cwd": str(PLAYBOOKS),
                "repos": everyone,
            },
        },
    }


@dataclass
class Agent:
    url: str
    log_path: Path
    process: asyncio.subprocess.Process

    def log(self) -> str:
        return self.log_path.read_text()

    def assert_refusal_logged(
        self, method: str, reason: str, *, repo: str = WEBSHOP, skill: str = "run_playbook"
    ) -> None:
        assert f"WARNING devagent refused {method}: {reason} (repo={repo!r}, skill={skill!r})" in self.log()


@asynccontextmanager
async def running_agent(tmp: Path, jwks: JwksServer, receiver: PushReceiver) -> AsyncIterator[Agent]:
    """`python -m devagent` on a free port, its output in `agent.log`; stopped with SIGTERM at the end."""
    url = f"http://127.0.0.1:{_free_port()}"
    config = tmp / "agent.yml"
    config.write_text(
        yaml.safe_dump(agent_config(url, f"{jwks.url}/.well-known/jwks.json", f"{receiver.url}/a2a/push"))
    )
    log_path = tmp / "agent.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "devagent", "--config", str(config)),
            cwd=ROOT,
            stdout=log,
            stderr=log,
            env={**os.environ, "AGENT_SECRET": "the agent's own secret"},
        )
    try:
        await _wait_for_card(url, process, log_path)
        yield Agent(url, log_path, process)
    finally:
        if process.returncode is None:
            process.terminate()
            await asyncio.wait_for(process.wait(), 15)


@pytest.fixture(scope="module")
def key() -> BotKey:
    return BotKey()


@pytest.fixture(scope="module")
def es256_key() -> BotKey:
    return BotKey(kid="bot-key-es256", private=ec.generate_private_key(ec.SECP256R1()))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def jwks(key: BotKey, es256_key: BotKey) -> AsyncIterator[JwksServer]:
    async with JwksServer({"keys": [*key.jwks()["keys"], *es256_key.jwks()["keys"]]}) as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def receiver() -> AsyncIterator[PushReceiver]:
    async with PushReceiver() as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def agent(
    key: BotKey, jwks: JwksServer, receiver: PushReceiver, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Agent]:
    """One agent for the module (starting one takes about a second)."""
    async with running_agent(tmp_path_factory.mktemp("devagent"), jwks, receiver) as started:
        key.audience = started.url
        yield started


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(headers=A2A_VERSION, timeout=30) as client:
        yield client


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(agent: Agent, http: httpx.AsyncClient) -> AsyncIterator[Client]:
    card = await A2ACardResolver(http, agent.url).get_agent_card()
    sdk_client = ClientFactory(ClientConfig(httpx_client=http, streaming=True)).create(card)
    yield sdk_client
    await sdk_client.close()


# --- helpers -------------------------------------------------------------------------------------------------


def as_bot(key: BotKey, **claims: Any) -> ClientCallContext:
    """A call context carrying a fresh token, as the bot sends one per request."""
    return ClientCallContext(service_parameters={"Authorization": f"Bearer {key.token(**claims)}"})


def run_request(
    playbook: str,
    parameters: dict[str, str] | None = None,
    *,
    skill: str = "run_playbook",
    repo: str = WEBSHOP,
    push: TaskPushNotificationConfig | None = None,
) -> SendMessageRequest:
    data = {
        "skill": skill,
        "playbook": playbook,
        "parameters": parameters or {},
        "repo": repo,
        "release": f"{repo}#7/1",
    }
    message = Message(role=Role.ROLE_USER, message_id=uuid.uuid4().hex, parts=[new_data_part(data)])
    request = SendMessageRequest(message=message)
    if push is not None:
        request.configuration.task_push_notification_config.CopyFrom(push)
    return request


@dataclass
class Run:
    events: list[StreamResponse]

    @property
    def task_id(self) -> str:
        return self.events[0].task.id

    def lines(self) -> list[tuple[str, int, str]]:
        """(stream, seq, text) of every output line, in the order the stream brought them."""
        found = []
        for event in self.events:
            status = event.status_update.status
            if event.HasField("status_update") and status.state == TaskState.TASK_STATE_WORKING:
                metadata = MessageToDict(status.message.metadata)
                found.append((metadata["stream"], int(metadata["seq"]), get_message_text(status.message)))
        return found

    def texts(self, stream: str = "stdout") -> list[str]:
        return [text for name, _, text in self.lines() if name == stream]

    @property
    def end(self) -> tuple[int, str]:
        status = self.events[-1].status_update.status
        return status.state, get_message_text(status.message)


async def run(client: Client, key: BotKey, request: SendMessageRequest) -> Run:
    data = MessageToDict(request.message.parts[0].data)
    events = [
        event
        async for event in client.send_message(request, context=as_bot(key, skill=data["skill"], repo=data["repo"]))
    ]
    return Run(events)


async def rpc(
    http: httpx.AsyncClient, agent: Agent, method: str, params: dict[str, Any], authorization: str | None
) -> httpx.Response:
    headers = {"Authorization": authorization} if authorization is not None else {}
    body = {"jsonrpc": "2.0", "id": "req-1", "method": method, "params": params}
    return await http.post(f"{agent.url}/", json=body, headers=headers)


async def until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)


def alive(pid: int) -> bool:
    """Running: a zombie (an orphan no init reaps, in a container) is dead for this purpose."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def pids(lines: list[str]) -> list[int]:
    return [int(line.split()[1]) for line in lines if line.startswith(("child ", "leader "))]


# --- the card ------------------------------------------------------------------------------------------------


async def test_agent_card_is_public_and_offers_only_configured_skills(agent: Agent) -> None:
    async with httpx.AsyncClient() as anonymous:
        response = await anonymous.get(f"{agent.url}/.well-known/agent-card.json")
    assert response.status_code == 200
    card = response.json()
    assert card["name"] == "Release Secretary dev agent"
    assert [skill["id"] for skill in card["skills"]] == ["run_playbook", "tail_logs"]  # no rollback playbook
    assert card["capabilities"] == {"streaming": True, "pushNotifications": True}
    assert card["supportedInterfaces"] == [{"url": agent.url, "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}]
    [(name, scheme)] = card["securitySchemes"].items()
    assert scheme["httpAuthSecurityScheme"]["scheme"].lower() == "bearer"
    assert scheme["httpAuthSecurityScheme"]["bearerFormat"] == "JWT"
    assert card["securityRequirements"] == [{"schemes": {name: {}}}]
    assert "deploy-web" not in response.text  # playbooks are not advertised


# --- runs ----------------------------------------------------------------------------------------------------


async def test_lines_arrive_in_order_then_the_task_completes(client: Client, key: BotKey) -> None:
    result = await run(client, key, run_request("print-lines", {"count": "40"}))

    assert result.events[0].task.status.state == TaskState.TASK_STATE_WORKING
    assert result.texts("stdout") == [f"line {i}" for i in range(1, 41)]
    assert result.texts("stderr") == ["done, on stderr"]
    assert [seq for _, seq, _ in result.lines()] == list(range(1, 42))
    state, text = result.end
    assert state == TaskState.TASK_STATE_COMPLETED
    assert re.fullmatch(r"exit 0 after \d+\.\ds", text)

    task = await client.get_task(GetTaskRequest(id=result.task_id), context=as_bot(key))
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    [log] = task.artifacts
    assert log.name == "log"
    assert [part.text for part in log.parts] == [text for _, _, text in result.lines()]
    assert MessageToDict(task.metadata) == {
        "skill": "run_playbook",
        "repo": WEBSHOP,
        "release": f"{WEBSHOP}#7/1",
        "playbook": "print-lines",
    }


async def test_a_failing_playbook_reports_its_exit_code_and_last_lines(client: Client, key: BotKey) -> None:
    result = await run(client, key, run_request("fail"))

    state, text = result.end
    assert state == TaskState.TASK_STATE_FAILED
    head, *tail = text.split("\n")
    assert re.fullmatch(r"exit 1 after \d+\.\ds", head)
    assert tail == [f"step {i}" for i in range(11, 31)]


async def test_parameters_become_argv_elements_in_a_minimal_environment(client: Client, key: BotKey) -> None:
    given = await run(client, key, run_request("deploy-web", {"environment": "production", "sha": SHA}))
    defaulted = await run(client, key, run_request("deploy-web", {"environment": "staging"}))

    assert given.texts() == ["arg [production]", f"arg [{SHA}]", "DEPLOY_ENV=prod", "AGENT_SECRET=unset"]
    assert defaulted.texts()[:2] == ["arg [staging]", "arg []"]


async def test_cancel_stops_the_whole_process_group(client: Client, key: BotKey) -> None:
    events: list[StreamResponse] = []

    async def follow() -> None:
        request = run_request("sleep-with-child")
        async for event in client.send_message(request, context=as_bot(key)):
            events.append(event)

    following = asyncio.create_task(follow())
    await until(lambda: len(pids(Run(events).texts())) == 2)
    child, leader = pids(Run(events).texts())
    assert alive(child) and alive(leader)

    started = time.monotonic()
    task = await client.cancel_task(CancelTaskRequest(id=Run(events).task_id), context=as_bot(key))

    assert task.status.state == TaskState.TASK_STATE_CANCELED
    assert time.monotonic() - started < 4  # sleep dies at SIGTERM: no wait for the SIGKILL
    assert not alive(child) and not alive(leader)
    await asyncio.wait_for(following, 10)
    again = await client.get_task(GetTaskRequest(id=task.id), context=as_bot(key))
    assert again.status.state == TaskState.TASK_STATE_CANCELED


async def test_a_playbook_that_outlives_its_timeout_fails_and_its_group_is_stopped(client: Client, key: BotKey) -> None:
    started = time.monotonic()
    result = await run(client, key, run_request("slow"))

    state, text = result.end
    assert state == TaskState.TASK_STATE_FAILED
    assert text.split("\n")[0] == "timed out after 1 s"
    assert time.monotonic() - started < 4
    assert not any(alive(pid) for pid in pids(result.texts()))


@pytest.mark.slow
async def test_a_group_that_ignores_sigterm_is_killed_after_the_grace_period(client: Client, key: BotKey) -> None:
    started = time.monotonic()
    result = await run(client, key, run_request("stubborn"))

    state, text = result.end
    assert state == TaskState.TASK_STATE_FAILED
    assert text.split("\n")[0] == "timed out after 1 s"
    assert 1 + 5 <= time.monotonic() - started < 10  # the timeout, then 5 s of grace before SIGKILL
    [leader] = pids(result.texts())
    assert not alive(leader)


async def test_stopping_the_agent_stops_its_running_playbooks(
    key: BotKey, jwks: JwksServer, receiver: PushReceiver, tmp_path: Path, http: httpx.AsyncClient
) -> None:
    async with running_agent(tmp_path, jwks, receiver) as other:
        card = await A2ACardResolver(http, other.url).get_agent_card()
        sdk_client = ClientFactory(ClientConfig(httpx_client=http, streaming=True)).create(card)
        events: list[StreamResponse] = []

        async def follow() -> None:
            context = as_bot(key, aud=other.url)
            with contextlib.suppress(A2AClientError):  # the stream ends with the agent
                async for event in sdk_client.send_message(run_request("sleep-with-child"), context=context):
                    events.append(event)

        following = asyncio.create_task(follow())
        await until(lambda: len(pids(Run(events).texts())) == 2)
        other.process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(other.process.wait(), 15)
        await asyncio.wait_for(following, 10)
        await sdk_client.close()

    assert other.process.returncode == -signal.SIGTERM  # uvicorn's orderly exit: the signal re-raised
    assert not any(alive(pid) for pid in pids(Run(events).texts()))


# --- authentication ------------------------------------------------------------------------------------------

Header = Callable[[BotKey], str | None]
TOKEN_REFUSALS = [
    pytest.param(lambda key: None, "missing bearer token (send Authorization: Bearer <JWT>)", id="no-token"),
    pytest.param(lambda key: "Basic Ym90OmJvdA==", "the Authorization header is not 'Bearer <JWT>'", id="not-bearer"),
    pytest.param(lambda key: "Bearer not-a-jwt", "the bearer token is not a JWT: Not enough segments", id="not-a-jwt"),
    pytest.param(lambda key: f"Bearer {key.token(issued=time.time() - 120)}", "token expired", id="expired"),
    pytest.param(
        lambda key: f"Bearer {key.token(aud='http://127.0.0.1:1')}",
        "audience is 'http://127.0.0.1:1', expected '{url}'",
        id="wrong-audience",
    ),
    pytest.param(
        lambda key: f"Bearer {key.token(iss='https://evil.example.test')}",
        f"issuer is 'https://evil.example.test', expected {ISSUER!r}",
        id="wrong-issuer",
    ),
    pytest.param(
        lambda key: f"Bearer {BotKey(audience=key.audience).token()}",  # same kid, a key not in the JWKS
        f"token signature does not verify with the bot's key {KID!r}",
        id="wrong-key",
    ),
    pytest.param(
        lambda key: f"Bearer {BotKey(audience=key.audience, kid='other').token()}",
        "unknown kid 'other': no such key in the bot's JWKS",
        id="unknown-kid",
    ),
    pytest.param(
        lambda key: f"Bearer {key.token(lifetime=3600)}",
        "token lifetime is 3600 s, at most 60 s is accepted",
        id="too-long-lived",
    ),
    pytest.param(
        lambda key: f"Bearer {key.token(issued=time.time() + 600)}",
        "token issued in the future, beyond the 30 s of clock skew accepted",
        id="issued-in-the-future",
    ),
    pytest.param(lambda key: f"Bearer {key.token(release=None)}", "token lacks the 'release' claim", id="no-release"),
    pytest.param(
        lambda key: (
            "Bearer "
            + jwt.encode({"aud": key.audience}, "a shared secret of at least 32 bytes", "HS256", headers={"kid": KID})
        ),
        "token alg 'HS256' is not accepted (use EdDSA or ES256)",
        id="hs256",
    ),
]


@pytest.mark.parametrize(("header", "reason"), TOKEN_REFUSALS)
async def test_a_request_without_a_good_token_is_refused_with_the_reason(
    agent: Agent, http: httpx.AsyncClient, key: BotKey, header: Header, reason: str
) -> None:
    authorization = header(key)
    reason = reason.replace("{url}", agent.url)
    response = await rpc(http, agent, "GetTask", {"id": "no-such-task"}, authorization)

    assert response.status_code == 401
    assert response.json() == {"jsonrpc": "2.0", "id": "req-1", "error": {"code": -32000, "message": reason}}
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    claimed = (
        jwt.decode(authorization.split()[1], options={"verify_signature": False}) if "." in str(authorization) else {}
    )
    agent.assert_refusal_logged("GetTask", reason, repo=claimed.get("repo", "-"), skill=claimed.get("skill", "-"))
    if authorization is not None:
        assert authorization.split()[1] not in agent.log()


async def test_an_es256_token_is_accepted_too(
    agent: Agent, http: httpx.AsyncClient, key: BotKey, es256_key: BotKey
) -> None:
    es256_key.audience = key.audience
    response = await rpc(http, agent, "GetTask", {"id": "no-such-task"}, f"Bearer {es256_key.token()}")

    assert response.status_code == 200
    assert response.json()["error"]["code"] == -32001  # past the token: the task does not exist


async def test_a_replayed_token_is_refused(agent: Agent, http: httpx.AsyncClient, key: BotKey) -> None:
    authorization = f"Bearer {key.token()}"
    first = await rpc(http, agent, "GetTask", {"id": "no-such-task"}, authorization)
    second = await rpc(http, agent, "GetTask", {"id": "no-such-task"}, authorization)

    assert first.status_code == 200
    assert first.json()["error"]["code"] == -32001  # past the token: the task does not exist
    assert second.status_code == 401
    assert second.json()["error"] == {"code": -32000, "message": "jti replayed"}
    agent.assert_refusal_logged("GetTask", "jti replayed")


# --- authorization -------------------------------------------------------------------------------------------

INVALID_PARAMS = -32602
UNSUPPORTED_OPERATION = -32004
REQUEST_REFUSALS = [
    pytest.param(
        {"skill": "tail_logs"},
        run_request("deploy-web", {"environment": "production"}),
        INVALID_PARAMS,
        "the token's skill claim is 'tail_logs' but the request asks for skill 'run_playbook'",
        id="skill-claim-mismatch",
    ),
    pytest.param(
        {"repo": "octo-org/other"},
        run_request("deploy-web", {"environment": "production"}),
        INVALID_PARAMS,
        "the token's repo claim is 'octo-org/other' but the request is for repo 'octo-org/webshop'",
        id="repo-claim-mismatch",
    ),
    pytest.param(
        {},
        run_request("rm-rf"),
        INVALID_PARAMS,
        "playbook 'rm-rf' is not on this agent's allowlist",
        id="playbook-off-the-allowlist",
    ),
    pytest.param(
        {},
        run_request("deploy-web", {"environment": "production", "force": "yes"}),
        INVALID_PARAMS,
        "parameter 'force' is not declared by playbook 'deploy-web' (declared: environment, sha)",
        id="undeclared-parameter",
    ),
    pytest.param(
        {},
        run_request("deploy-web", {"environment": "Prod; rm -rf /"}),
        INVALID_PARAMS,
        "parameter 'environment' value 'Prod; rm -rf /' does not match ^[a-z][a-z0-9-]{0,30}$",
        id="bad-parameter-value",
    ),
    pytest.param(
        {},
        run_request("deploy-web"),
        INVALID_PARAMS,
        "parameter 'environment' is required by playbook 'deploy-web'",
        id="missing-parameter",
    ),
    pytest.param(
        {"repo": "evil-org/webshop", "release": "evil-org/webshop#7/1"},
        run_request("deploy-web", {"environment": "production"}, repo="evil-org/webshop"),
        INVALID_PARAMS,
        "repo 'evil-org/webshop' may not run playbook 'deploy-web'",
        id="repo-not-allowed",
    ),
    pytest.param(
        {"release": "octo-org/webshop#8/1"},
        run_request("deploy-web", {"environment": "production"}),
        INVALID_PARAMS,
        "the token's release claim is 'octo-org/webshop#8/1' but the request is for release 'octo-org/webshop#7/1'",
        id="release-claim-mismatch",
    ),
    pytest.param(
        {"skill": "tail_logs"},
        run_request("deploy-web", {"environment": "production"}, skill="tail_logs"),
        INVALID_PARAMS,
        "playbook 'deploy-web' provides skill 'run_playbook', not 'tail_logs'",
        id="playbook-of-another-skill",
    ),
    pytest.param(
        {"skill": "rollback_release"},
        run_request("deploy-web", skill="rollback_release"),
        UNSUPPORTED_OPERATION,
        "this agent has no skill 'rollback_release' (it offers: run_playbook, tail_logs)",
        id="skill-the-agent-lacks",
    ),
]


@pytest.mark.parametrize(("claims", "request_", "code", "reason"), REQUEST_REFUSALS)
async def test_a_request_off_the_allowlist_is_refused_with_the_reason(
    agent: Agent,
    http: httpx.AsyncClient,
    key: BotKey,
    claims: dict[str, str],
    request_: SendMessageRequest,
    code: int,
    reason: str,
) -> None:
    token = key.token(**claims)
    response = await rpc(http, agent, "SendMessage", MessageToDict(request_), f"Bearer {token}")

    assert response.status_code == 200
    error = response.json()["error"]
    assert (error["code"], error["message"]) == (code, reason)
    claimed = {"repo": WEBSHOP, "skill": "run_playbook", **claims}
    agent.assert_refusal_logged("SendMessage", reason, repo=claimed["repo"], skill=claimed["skill"])
    assert token not in agent.log()


async def test_the_sdk_client_gets_a_refused_stream_as_invalid_params(client: Client, key: BotKey) -> None:
    request = run_request("deploy-web", {"environment": "Prod"})
    with pytest.raises(InvalidParamsError, match=r"parameter 'environment' value 'Prod' does not match"):
        async for _ in client.send_message(request, context=as_bot(key)):
            pass


async def test_a_task_is_touched_only_with_a_token_for_its_repo_and_skill(
    agent: Agent, client: Client, key: BotKey
) -> None:
    task_id = (await run(client, key, run_request("print-lines", {"count": "1"}))).task_id
    other_repo = f"task {task_id} was not started for the token's repo claim 'octo-org/other'"
    other_skill = f"task {task_id} was not started for the token's skill claim 'tail_logs'"

    with pytest.raises(InvalidParamsError, match=re.escape(other_repo)):
        await client.get_task(GetTaskRequest(id=task_id), context=as_bot(key, repo="octo-org/other"))
    with pytest.raises(InvalidParamsError, match=re.escape(other_skill)):
        await client.cancel_task(CancelTaskRequest(id=task_id), context=as_bot(key, skill="tail_logs"))
    with pytest.raises(InvalidParamsError, match=re.escape(other_repo)):
        async for _ in client.subscribe(SubscribeToTaskRequest(id=task_id), context=as_bot(key, repo="octo-org/other")):
            pass
    agent.assert_refusal_logged("GetTask", other_repo, repo="octo-org/other")
    agent.assert_refusal_logged("CancelTask", other_skill, skill="tail_logs")
    agent.assert_refusal_logged("SubscribeToTask", other_repo, repo="octo-org/other")
    # Another release of the same repository may not touch it either.
    other_release = f"task {task_id} was not started for the token's release claim 'octo-org/webshop#8/1'"
    with pytest.raises(InvalidParamsError, match=re.escape(other_release)):
        await client.cancel_task(CancelTaskRequest(id=task_id), context=as_bot(key, release="octo-org/webshop#8/1"))
    assert (await client.get_task(GetTaskRequest(id=task_id), context=as_bot(key))).id == task_id


async def test_tasks_are_listed_per_session_and_only_in_the_tokens_scope(
    agent: Agent, client: Client, key: BotKey
) -> None:
    started = await run(client, key, run_request("print-lines", {"count": "1"}))
    session = ListTasksRequest(context_id=started.events[0].task.context_id)

    mine = await client.list_tasks(session, context=as_bot(key))
    theirs = await client.list_tasks(session, context=as_bot(key, repo="octo-org/other"))

    assert [task.id for task in mine.tasks] == [started.task_id]
    assert (list(theirs.tasks), theirs.total_size) == ([], 0)
    reason = "ListTasks needs a context_id: a token lists one session's tasks"
    with pytest.raises(InvalidParamsError, match=reason):
        await client.list_tasks(ListTasksRequest(), context=as_bot(key))
    agent.assert_refusal_logged("ListTasks", reason)


# --- push notifications --------------------------------------------------------------------------------------


def push_config(url: str) -> TaskPushNotificationConfig:
    return TaskPushNotificationConfig(
        url=url, token="per-task-secret", authentication=AuthenticationInfo(scheme="Bearer", credentials="bot-token")
    )


async def test_push_notifications_reach_the_bot_with_its_token_and_credentials(
    client: Client, key: BotKey, receiver: PushReceiver
) -> None:
    result = await run(
        client, key, run_request("print-lines", {"count": "3"}, push=push_config(f"{receiver.url}/a2a/push"))
    )

    # Each event is pushed (and answered) before the stream carries it: the last push is in already.
    pushes = receiver.for_task(result.task_id)
    assert pushes[-1].body["statusUpdate"]["status"]["state"] == "TASK_STATE_COMPLETED"
    assert {push.path for push in pushes} == {"/a2a/push"}
    assert all(push.headers["X-A2A-Notification-Token"] == "per-task-secret" for push in pushes)
    assert all(push.headers["Authorization"] == "Bearer bot-token" for push in pushes)
    assert "task" in pushes[0].body
    pushed_lines = [
        push.body["statusUpdate"]["status"]["message"]["parts"][0]["text"]
        for push in pushes
        if "statusUpdate" in push.body and push.body["statusUpdate"]["status"]["state"] == "TASK_STATE_WORKING"
    ]
    assert sorted(pushed_lines) == ["done, on stderr", "line 1", "line 2", "line 3"]


@pytest.mark.parametrize("path", ["/elsewhere", "/a2a/pushy"])
async def test_a_push_url_outside_push_urls_is_refused_and_gets_nothing(
    agent: Agent, client: Client, key: BotKey, receiver: PushReceiver, path: str
) -> None:
    url = f"{receiver.url}{path}"
    reason = f"push URL {url!r} is not under any of this agent's push_urls"
    request = run_request("print-lines", {"count": "1"}, push=push_config(url))

    with pytest.raises(InvalidParamsError, match=re.escape(reason)):
        await run(client, key, request)
    await asyncio.sleep(0.2)
    assert not [push for push in receiver.received if push.path == path]
    agent.assert_refusal_logged("SendStreamingMessage", reason)


# --- configuration -------------------------------------------------------------------------------------------


async def test_an_invalid_config_stops_the_agent_listing_every_problem(tmp_path: Path) -> None:
    config = tmp_path / "agent.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "bot": {"issuer": ISSUER, "jwks_url": "ftp://bot.example.test/jwks.json"},
                "playbooks": {
                    "deploy": {
                        "skill": "deploy_everything",
                        "argv": ["./deploy.sh", "{environment}"],
                        "parameters": {"sha": {"pattern": "[0-9a-f"}},
                    }
                },
            }
        )
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "devagent", "--config", str(config), cwd=ROOT, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 30)

    assert process.returncode == 2
    for problem in (
        "url: required, an http(s) URL",
        "bot.jwks_url: 'ftp://bot.example.test/jwks.json' is not an http(s) URL",
        "playbooks.deploy.skill: 'deploy_everything' is not one of run_playbook, tail_logs, rollback_release",
        "playbooks.deploy.parameters.sha.pattern: not a valid regular expression",
        "playbooks.deploy.argv[1]: placeholder {environment} is not a declared parameter",
        "playbooks.deploy.repos: required, a non-empty list",
    ):
        assert problem in stderr.decode()


# --- plumbing ------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _wait_for_card(url: str, process: asyncio.subprocess.Process, log_path: Path) -> None:
    deadline = time.monotonic() + 20
    async with httpx.AsyncClient() as probe:
        while time.monotonic() < deadline:
            assert process.returncode is None, f"the agent exited:\n{log_path.read_text()}"
            try:
                if (await probe.get(f"{url}/.well-known/agent-card.json")).status_code == 200:
                    return
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    raise AssertionError(f"the agent did not answer within 20 s:\n{log_path.read_text()}")
