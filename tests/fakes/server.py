"""The life cycle every fake server shares: an aiohttp app on a free port of 127.0.0.1."""

from __future__ import annotations

from typing import Self

from aiohttp import web


class LocalServer:
    """Subclasses add their routes in `routes`; `start()` serves them and returns the base URL."""

    url: str = ""
    _runner: web.AppRunner | None = None

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def make_app(self) -> web.Application:
        return web.Application()

    async def start(self) -> str:
        app = self.make_app()
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
