"""A real worker process whose `installation` handler hangs after saying so: the victim of the SIGKILL test.

Run as `python tests/crash_worker.py MARKER_PATH` with the bot's usual environment.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from gidgethub import routing, sansio
from gidgethub.abc import GitHubAPI

from bot.config import Settings
from bot.context import HandlerContext
from bot.store import make_store
from bot.worker import Worker


async def main(marker: Path) -> None:
    router = routing.Router()

    @router.register("installation")
    async def hang(event: sansio.Event, gh: GitHubAPI, *, ctx: HandlerContext) -> None:
        marker.write_text(event.delivery_id)
        await asyncio.sleep(3600)

    settings = Settings.from_env()
    store = make_store(settings)
    await store.open()
    await Worker(store, settings, router, None).run(asyncio.Event())


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
