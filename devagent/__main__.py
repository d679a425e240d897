"""`python -m devagent --config PATH`: check the config (exit 2 listing every problem), then serve under uvicorn."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import uvicorn

from .app import build_app
from .config import ConfigError, load_config

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
SHUTDOWN_GRACE_SECONDS = 5
# httpx and the push sender would log every output line twice; the JSON-RPC dispatcher logs request
# bodies at DEBUG, and a body carries the task's push secret and the bot's push token.
QUIET_LOGGERS = ("httpx", "a2a.server.tasks.base_push_notification_sender", "a2a.server.routes.jsonrpc_dispatcher")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devagent", description=__doc__)
    parser.add_argument("--config", required=True, type=Path, help="the agent's YAML configuration")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format=LOG_FORMAT, stream=sys.stderr)
    # One line per request, and a playbook line is two events pushed: only their failures are worth a line.
    for noisy in QUIET_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        sys.stderr.write(f"devagent: {exc}\n")
        return 2
    logging.getLogger("devagent").info(
        "serving %s at %s: skills %s, playbooks %s",
        args.config,
        config.url,
        ", ".join(config.skills),
        ", ".join(sorted(config.playbooks)),
    )
    uvicorn.run(
        build_app(config),
        host=config.host,
        port=config.port,
        log_config=None,  # the root logger's format for uvicorn's lines too
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
