"""The dev agent's configuration: one YAML file, read and checked once at start, every problem listed."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

SKILLS = ("run_playbook", "tail_logs", "rollback_release")
DEFAULT_SKILL = "run_playbook"
DEFAULT_TIMEOUT_SECONDS = 600.0
# `{name}` in an argv element is a parameter; nothing else in it is special (no format specs, no shell).
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_PLAYBOOK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_PARAMETER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_TOP_KEYS = {"url", "listen", "bot", "push_urls", "playbooks"}
_BOT_KEYS = {"issuer", "jwks_url"}
_PLAYBOOK_KEYS = {"skill", "argv", "cwd", "env", "timeout_seconds", "repos", "parameters"}
_PARAMETER_KEYS = {"pattern", "required", "default"}


class ConfigError(Exception):
    """The file cannot be used; `problems` lists every reason, one per entry."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(f"invalid config {path}:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class Parameter:
    pattern: re.Pattern[str]
    required: bool
    default: str


@dataclass(frozen=True)
class Playbook:
    name: str
    skill: str
    argv: tuple[str, ...]
    cwd: Path
    env: Mapping[str, str]
    timeout_seconds: float
    repos: tuple[str, ...]  # fnmatch patterns on "owner/repo"
    parameters: Mapping[str, Parameter]


@dataclass(frozen=True)
class AgentConfig:
    url: str  # without a trailing slash: the JWT audience and the Agent Card's interface URL
    host: str
    port: int
    issuer: str
    jwks_url: str
    push_urls: tuple[str, ...]
    playbooks: Mapping[str, Playbook]

    @property
    def skills(self) -> list[str]:
        """The skills some playbook provides, in the protocol's order: the card offers only these."""
        provided = {playbook.skill for playbook in self.playbooks.values()}
        return [skill for skill in SKILLS if skill in provided]

    @property
    def rpc_path(self) -> str:
        return urlsplit(self.url).path or "/"


def load_config(path: Path) -> AgentConfig:
    """Read and check `path`; relative `cwd`s are taken from the file's directory (and so is the default)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(path, [f"cannot read the file: {exc.strerror}"]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(path, [f"not valid YAML: {exc}"]) from exc
    problems: list[str] = []
    config = _parse(data, path.resolve().parent, problems)
    if problems or config is None:
        raise ConfigError(path, problems)
    return config


def _parse(data: object, base_dir: Path, problems: list[str]) -> AgentConfig | None:
    if not isinstance(data, dict):
        problems.append("the file must hold a mapping (url, bot, push_urls, playbooks)")
        return None
    _unknown_keys(data, _TOP_KEYS, "", problems)
    url = _http_url(data.get("url"), "url", problems)
    host, port = _listen(data.get("listen"), url, problems)
    bot = data.get("bot")
    issuer = jwks_url = ""
    if not isinstance(bot, dict):
        problems.append("bot: required, a mapping with issuer and jwks_url")
    else:
        _unknown_keys(bot, _BOT_KEYS, "bot.", problems)
        issuer = _string(bot.get("issuer"), "bot.issuer", problems)
        jwks_url = _http_url(bot.get("jwks_url"), "bot.jwks_url", problems)
    push_urls = tuple(
        _http_url(item, f"push_urls[{i}]", problems)
        for i, item in enumerate(_list(data.get("push_urls"), "push_urls", problems))
    )
    playbooks = _playbooks(data.get("playbooks"), base_dir, problems)
    if problems:
        return None
    return AgentConfig(
        url=url.rstrip("/"),
        host=host,
        port=port,
        issuer=issuer,
        jwks_url=jwks_url,
        push_urls=push_urls,
        playbooks=playbooks,
    )


def _playbooks(value: object, base_dir: Path, problems: list[str]) -> dict[str, Playbook]:
    if not isinstance(value, dict) or not value:
        problems.append("playbooks: required, a mapping of at least one playbook name to its definition")
        return {}
    playbooks = {}
    for name, spec in value.items():
        where = f"playbooks.{name}"
        if not isinstance(name, str) or not _PLAYBOOK_NAME.fullmatch(name):
            problems.append(f"{where}: a playbook name is letters, digits, '.', '_' and '-'")
            continue
        if not isinstance(spec, dict):
            problems.append(f"{where}: must be a mapping (argv, repos, parameters, ...)")
            continue
        playbook = _playbook(name, spec, base_dir, problems)
        if playbook is not None:
            playbooks[name] = playbook
    return playbooks


def _playbook(name: str, spec: dict[Any, Any], base_dir: Path, problems: list[str]) -> Playbook | None:
    where = f"playbooks.{name}"
    before = len(problems)
    _unknown_keys(spec, _PLAYBOOK_KEYS, f"{where}.", problems)
    skill = spec.get("skill", DEFAULT_SKILL)
    if skill not in SKILLS:
        problems.append(f"{where}.skill: {skill!r} is not one of {', '.join(SKILLS)}")
    parameters = _parameters(spec.get("parameters", {}), where, problems)
    argv = _argv(spec.get("argv"), where, parameters, problems)
    cwd = _cwd(spec.get("cwd"), base_dir, where, problems)
    env = spec.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        problems.append(f"{where}.env: must map names to strings (quote numbers)")
        env = {}
    timeout = spec.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        problems.append(f"{where}.timeout_seconds: must be a positive number of seconds")
        timeout = DEFAULT_TIMEOUT_SECONDS
    repos = _list(spec.get("repos"), f"{where}.repos", problems, required=True)
    for i, pattern in enumerate(repos):
        if not isinstance(pattern, str) or "/" not in pattern:
            problems.append(f"{where}.repos[{i}]: must be an owner/repo pattern such as 'octo-org/*'")
    if len(problems) > before:
        return None
    return Playbook(
        name=name,
        skill=str(skill),
        argv=argv,
        cwd=cwd,
        env=dict(env),
        timeout_seconds=float(timeout),
        repos=tuple(repos),
        parameters=parameters,
    )


def _parameters(value: object, where: str, problems: list[str]) -> dict[str, Parameter]:
    if not isinstance(value, dict):
        problems.append(f"{where}.parameters: must be a mapping of parameter names to {{pattern, required}}")
        return {}
    parameters = {}
    for name, spec in value.items():
        here = f"{where}.parameters.{name}"
        if not isinstance(name, str) or not _PARAMETER_NAME.fullmatch(name):
            problems.append(f"{here}: a parameter name is letters, digits and '_', not starting with a digit")
            continue
        if not isinstance(spec, dict):
            problems.append(f"{here}: must be a mapping with a pattern")
            continue
        _unknown_keys(spec, _PARAMETER_KEYS, f"{here}.", problems)
        raw = spec.get("pattern")
        if not isinstance(raw, str):
            problems.append(f"{here}.pattern: required, a regular expression every value must match in full")
            continue
        try:
            pattern = re.compile(raw)
        except re.error as exc:
            problems.append(f"{here}.pattern: not a valid regular expression: {exc}")
            continue
        required = spec.get("required", False)
        default = spec.get("default", "")
        if not isinstance(required, bool):
            problems.append(f"{here}.required: must be true or false")
        if not isinstance(default, str):
            problems.append(f"{here}.default: must be a string (quote it)")
        parameters[name] = Parameter(pattern=pattern, required=required is True, default=str(default))
    return parameters


def _argv(value: object, where: str, parameters: Mapping[str, Parameter], problems: list[str]) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(arg, str) for arg in value):
        problems.append(f"{where}.argv: required, a non-empty list of strings (the program, then its arguments)")
        return ()
    if not value[0] or PLACEHOLDER.search(value[0]):
        problems.append(f"{where}.argv[0]: the program must be fixed, not empty and without placeholders")
    for i, arg in enumerate(value):
        for placeholder in PLACEHOLDER.findall(arg):
            if placeholder not in parameters:
                problems.append(f"{where}.argv[{i}]: placeholder {{{placeholder}}} is not a declared parameter")
    return tuple(value)


def _cwd(value: object, base_dir: Path, where: str, problems: list[str]) -> Path:
    if value is None:
        return base_dir
    if not isinstance(value, str) or not value:
        problems.append(f"{where}.cwd: must be a directory path")
        return base_dir
    cwd = (base_dir / value).resolve()
    if not cwd.is_dir():
        problems.append(f"{where}.cwd: {cwd} is not a directory")
    return cwd


def _listen(value: object, url: str, problems: list[str]) -> tuple[str, int]:
    if value is None:
        if not url:
            return "", 0
        parts = urlsplit(url)
        return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    if not isinstance(value, str) or ":" not in value:
        problems.append("listen: must be host:port, such as 127.0.0.1:8700")
        return "", 0
    host, _, port = value.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536 or not host:
        problems.append(f"listen: {value!r} is not host:port with a port from 1 to 65535")
        return "", 0
    return host.strip("[]"), int(port)


def _http_url(value: object, where: str, problems: list[str]) -> str:
    if not isinstance(value, str):
        problems.append(f"{where}: required, an http(s) URL")
        return ""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        problems.append(f"{where}: {value!r} is not an http(s) URL with a host (and no query or fragment)")
        return ""
    return value


def _string(value: object, where: str, problems: list[str]) -> str:
    if not isinstance(value, str) or not value:
        problems.append(f"{where}: required, a non-empty string")
        return ""
    return value


def _list(value: object, where: str, problems: list[str], *, required: bool = False) -> list[Any]:
    if value is None and not required:
        return []
    if not isinstance(value, list) or (required and not value):
        problems.append(f"{where}: {'required, a non-empty list' if required else 'must be a list'}")
        return []
    return value


def _unknown_keys(mapping: dict[Any, Any], known: set[str], prefix: str, problems: list[str]) -> None:
    for key in mapping:
        if key not in known:
            problems.append(f"{prefix}{key}: unknown key (known: {', '.join(sorted(known))})")
