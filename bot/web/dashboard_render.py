"""The dashboard's HTML: Jinja2 templates (autoescaped) and its two static files, served by the bot itself."""

from __future__ import annotations

import functools
import hashlib
import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import jinja2
from aiohttp import web
from markupsafe import Markup

from ..config import Settings
from ..release import State
from ..store import Store
from . import dashboard_views as views
from .auth import security_headers

TEMPLATES: Final = Path(__file__).resolve().parent / "templates"
STATIC: Final = TEMPLATES / "static"
STATIC_PATH: Final = "/dashboard/static"
STATIC_TYPES: Final = {"dashboard.css": "text/css", "dashboard.js": "text/javascript"}
_CODE = re.compile(r"`([^`]+)`")


@dataclass(frozen=True, slots=True)
class Wiring:
    """What the pages need from the application make_app built."""

    settings: Settings
    store: Store
    clock: Callable[[], datetime]


def wiring(request: web.Request) -> Wiring:
    # Imported here, not at the top: bot.app imports this package to add its routes.
    from ..app import CLOCK, SETTINGS, STORE

    app = request.app
    return Wiring(app[SETTINGS], app[STORE], app[CLOCK])


def code_spans(text: str) -> Markup:
    """Plain text with `backticks` (the PR comment's command hints) shown as code, everything escaped."""
    escaped = html.escape(text, quote=False)
    return Markup(_CODE.sub(lambda m: f"<code>{m.group(1)}</code>", escaped))  # noqa: S704 - escaped above


def iso(at: datetime) -> str:
    return at.isoformat(timespec="seconds")


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(code=code_spans, iso=iso, short=views.short, link=views.link)
    env.globals.update(
        State=State,
        state_word=views.state_word,
        window_text=views.window_text,
        step=views.step,
        why=views.why,
        deploy_status=views.deploy_status,
        moment=views.moment,
        moment_iso=views.moment_iso,
        zone_of=views.zone_of,
        check_words=views.CHECK_WORDS,
        check_icons=views.CHECK_ICONS,
        log_lines_shown=views.LOG_LINES_SHOWN,
        static=static_url,
    )
    return env


@functools.cache
def _static(name: str) -> tuple[bytes, str]:
    body = (STATIC / name).read_bytes()
    return body, hashlib.sha256(body).hexdigest()[:12]


def static_url(root: str, name: str) -> str:
    """The file's URL with its content hash: cached for a year, a new version is a new URL."""
    return f"{root}{STATIC_PATH}/{name}?v={_static(name)[1]}"


def render(request: web.Request, template: str, *, status: int = 200, **context: Any) -> web.Response:
    """A page of ours, with the security headers (strict CSP: only our own script and style)."""
    wired = wiring(request)
    settings = wired.settings
    body = (
        environment()
        .get_template(template)
        .render(now=wired.clock(), github_url=settings.github_url.rstrip("/"), **context)
    )
    return web.Response(
        status=status, text=body, content_type="text/html", charset="utf-8", headers=security_headers(settings)
    )


async def static_file(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    kind = STATIC_TYPES.get(name)
    if kind is None:
        raise web.HTTPNotFound
    body, version = _static(name)
    headers = security_headers(wiring(request).settings)
    fresh = request.query.get("v") == version
    headers["Cache-Control"] = "public, max-age=31536000, immutable" if fresh else "no-cache"
    headers["ETag"] = f'"{version}"'
    if request.headers.get("If-None-Match") == f'"{version}"':
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type=kind, charset="utf-8", headers=headers)
