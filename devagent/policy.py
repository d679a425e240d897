"""What a verified token may do: requests checked against the allowlist, with no I/O; every refusal says why."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .config import PLACEHOLDER, AgentConfig, Playbook

# Patterns come from the operator, values from the network: a bound keeps every match cheap.
MAX_VALUE_LENGTH = 1024


@dataclass(frozen=True)
class Scope:
    """The claims of a verified token that decide what it may touch."""

    skill: str
    repo: str
    release: str


class Refusal(Exception):
    """A request the allowlist does not allow; `unsupported` when the agent lacks the skill altogether."""

    def __init__(self, message: str, *, unsupported: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.unsupported = unsupported


@dataclass(frozen=True)
class RunPlan:
    """An authorized run: exactly what will be executed, and the scope its task keeps for later calls."""

    playbook: str
    scope: Scope
    argv: tuple[str, ...]
    cwd: Path
    env: Mapping[str, str]
    timeout_seconds: float

    def task_metadata(self) -> dict[str, str]:
        return {
            "skill": self.scope.skill,
            "repo": self.scope.repo,
            "release": self.scope.release,
            "playbook": self.playbook,
        }


def plan_run(config: AgentConfig, scope: Scope, data: Mapping[str, Any]) -> RunPlan:
    """Check a request's data part (skill, playbook, parameters, repo, release) against the token and the
    allowlist, in the order a person would look: the token, the skill, the playbook, the repo, the values."""
    skill = _field(data, "skill")
    name = _field(data, "playbook")
    repo = _field(data, "repo")
    release = _field(data, "release")
    parameters = data.get("parameters", {})
    if not isinstance(parameters, Mapping):
        raise Refusal("data.parameters must be a JSON object of parameter names to string values")
    if skill != scope.skill:
        raise Refusal(f"the token's skill claim is {scope.skill!r} but the request asks for skill {skill!r}")
    if repo != scope.repo:
        raise Refusal(f"the token's repo claim is {scope.repo!r} but the request is for repo {repo!r}")
    if release != scope.release:
        raise Refusal(f"the token's release claim is {scope.release!r} but the request is for release {release!r}")
    if skill not in config.skills:
        offered = ", ".join(config.skills)
        raise Refusal(f"this agent has no skill {skill!r} (it offers: {offered})", unsupported=True)
    playbook = config.playbooks.get(name)
    if playbook is None:
        raise Refusal(f"playbook {name!r} is not on this agent's allowlist")
    if playbook.skill != skill:
        raise Refusal(f"playbook {name!r} provides skill {playbook.skill!r}, not {skill!r}")
    if not repo_allowed(repo, playbook.repos):
        raise Refusal(f"repo {repo!r} may not run playbook {name!r}")
    values = _values(playbook, parameters)
    return RunPlan(
        playbook=name,
        scope=scope,
        argv=tuple(PLACEHOLDER.sub(lambda m: values[m.group(1)], arg) for arg in playbook.argv),
        cwd=playbook.cwd,
        env=playbook.env,
        timeout_seconds=playbook.timeout_seconds,
    )


def check_task_scope(scope: Scope, task_id: str, task_metadata: Mapping[str, Any]) -> None:
    """A task is touched only with a token for its own skill, repo and release. The refusal names the
    token's claim, never the task's: a caller learns nothing about a task it may not see."""
    if task_metadata.get("skill") != scope.skill:
        raise Refusal(f"task {task_id} was not started for the token's skill claim {scope.skill!r}")
    if task_metadata.get("repo") != scope.repo:
        raise Refusal(f"task {task_id} was not started for the token's repo claim {scope.repo!r}")
    if task_metadata.get("release") != scope.release:
        raise Refusal(f"task {task_id} was not started for the token's release claim {scope.release!r}")


def check_push_url(url: str, allowed: Sequence[str]) -> None:
    if not push_url_allowed(url, allowed):
        raise Refusal(f"push URL {_show(url)} is not under any of this agent's push_urls")


def push_url_allowed(url: str, allowed: Sequence[str]) -> bool:
    """A prefix match that stops at a boundary: `https://bot/a2a/push` allows `.../push/7` but not
    `.../pushy`, and `https://bot` never allows `https://bot.evil.test`; dot segments are refused outright."""
    if any(segment in (".", "..") for segment in urlsplit(url).path.split("/")):
        return False
    for prefix in allowed:
        if url == prefix:
            return True
        if url.startswith(prefix) and (prefix.endswith("/") or url[len(prefix)] in "/?#"):
            return True
    return False


def repo_allowed(repo: str, patterns: Sequence[str]) -> bool:
    """GitHub compares repository names without case, so the allowlist does too."""
    return any(fnmatch.fnmatchcase(repo.lower(), pattern.lower()) for pattern in patterns)


def _values(playbook: Playbook, given: Mapping[str, Any]) -> dict[str, str]:
    problems = []
    undeclared = sorted(set(given) - set(playbook.parameters))
    for name in undeclared:
        declared = ", ".join(sorted(playbook.parameters)) or "none"
        problems.append(f"parameter {name!r} is not declared by playbook {playbook.name!r} (declared: {declared})")
    values = {}
    for name, parameter in playbook.parameters.items():
        if name not in given:
            if parameter.required:
                problems.append(f"parameter {name!r} is required by playbook {playbook.name!r}")
            values[name] = parameter.default
            continue
        value = given[name]
        if not isinstance(value, str):
            problems.append(f"parameter {name!r} must be a string")
        elif len(value) > MAX_VALUE_LENGTH:
            problems.append(f"parameter {name!r} is longer than {MAX_VALUE_LENGTH} characters")
        elif not parameter.pattern.fullmatch(value):
            problems.append(f"parameter {name!r} value {_show(value)} does not match {parameter.pattern.pattern}")
        else:
            values[name] = value
    if problems:
        raise Refusal("; ".join(problems))
    return values


def _field(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise Refusal(f"data.{name} must be a non-empty string")
    return value


def _show(value: str, limit: int = 80) -> str:
    """Quoted and cut short: values from the network end up in answers and in the log."""
    return repr(value if len(value) <= limit else value[:limit] + "...")
