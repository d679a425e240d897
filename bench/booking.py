"""Booking latency: from a `/ship` comment to the release's event existing in the calendar.

The bot runs for real (`python -m bot serve`, SQLite); the fake GitHub and the fake Google run in
this process. Two rounds over the same number of PRs, each in its own repository and installation:
the built-in calendar (done when the release records its event id), and Google Calendar through
google-api-python-client (done when the `events.insert` request reaches the fake Google). Every PR
asks for the next free slot; in the Google round they all share one calendar, so each booking also
shows that the slot search saw the bookings before it (every PR gets a slot of its own).

    python bench/booking.py [--prs 100]

Last line: JSON with p50/p99 per round and the Google requests per booking.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.comment_latency import APP_ID, TimedFake, free_port, repo_of, retarget, wait_ready  # noqa: E402
from tests.fakes.google_calendar import FakeGoogle  # noqa: E402
from tests.fakes.keys import make_app_key  # noqa: E402
from tests.helpers import SECRET, webhook_headers  # noqa: E402
from tests.scenario import pr_comment  # noqa: E402

DEPLOYS = "deploys@group.calendar.google.com"
WEEKDAYS = 'timezone: Europe/Berlin\nwindows:\n  - days: [mon-fri]\n    hours: "08:00-20:00"\n'


async def run_round(prs: int, *, google: bool) -> dict[str, Any]:
    fake = TimedFake()
    await fake.start()
    gfake = FakeGoogle()
    await gfake.start()
    key = make_app_key()
    fake.add_app(APP_ID, key.public_key_pem)
    robot = gfake.add_service_account()
    gfake.add_calendar(DEPLOYS, acl={robot.email: "writer"}, time_zone="Europe/Berlin")
    config = WEEKDAYS + (f"calendar:\n  id: {DEPLOYS}\n" if google else "")
    for i in range(prs):
        repo = repo_of(i)
        fake.add_repo(repo)
        fake.add_installation(1000 + i, f"org{i}", repos=[repo], app_id=APP_ID)
        fake.add_pull(repo, 1, head_sha=f"{i:040x}", title=f"Change {i}", user_login="alice")
        fake.set_permission(repo, "alice", "write")
        fake.set_branch_protection(repo, "main", ["ci/build"])
        fake.add_check_run(repo, f"{i:040x}", "ci/build", status="completed", conclusion="success")
        fake.set_file(repo, ".github/release-secretary.yml", config)

    tmp = Path(tempfile.mkdtemp(prefix="rs-bench-booking-"))
    (tmp / "app.pem").write_bytes(key.rsa_private_key_pem)
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "DATA_DIR": str(tmp / "data"),
        "GITHUB_APP_ID": str(APP_ID),
        "GITHUB_PRIVATE_KEY_PATH": str(tmp / "app.pem"),
        "GITHUB_WEBHOOK_SECRET": SECRET,
        "GITHUB_API_URL": fake.url,
        "PUBLIC_URL": f"http://127.0.0.1:{port}",
        "LOG_LEVEL": "WARNING",
        "REDELIVERY_SWEEP_INTERVAL": "0",
        "CALENDAR_SWEEP_INTERVAL": "0",
    }
    if google:
        env["GOOGLE_SERVICE_ACCOUNT_JSON"] = robot.key_json
        env["GOOGLE_CALENDAR_API_URL"] = gfake.url
    bot = subprocess.Popen([sys.executable, "-m", "bot", "serve"], env=env, cwd=tmp)  # noqa: ASYNC220
    latencies: list[float] = []
    try:
        await wait_ready(port)
        db = sqlite3.connect(tmp / "data" / "release-secretary.db")
        async with aiohttp.ClientSession() as session:
            for i in range(prs):
                comment_id = fake.add_comment(repo_of(i), 1, "/ship", user_login="alice")
                comment = pr_comment(1, "/ship", sender="alice", comment_id=comment_id, repo=repo_of(i))
                payload = retarget(comment, i)
                body = json.dumps(payload).encode()
                sent = time.perf_counter()
                headers = webhook_headers("issue_comment", body, delivery=str(uuid.uuid4()))
                async with session.post(f"http://127.0.0.1:{port}/webhooks/github", data=body, headers=headers) as r:
                    assert r.status == 202, await r.text()
                done = await booked(db, gfake, repo_of(i), google=google)
                latencies.append((done - sent) * 1000)
        db.close()
    finally:
        bot.send_signal(signal.SIGTERM)
        await asyncio.to_thread(bot.wait, 30)
        await fake.close()
        await gfake.close()
    starts = sorted(e["start"]["dateTime"] for e in gfake.calendars[DEPLOYS].events.values()) if google else []
    calls = Counter(f"{r.method} {r.path.split('/')[-1] if 'freeBusy' in r.path else 'events'}" for r in gfake.requests)
    # The first booking of a process pays for start-up (an installation token, Google's discovery
    # document and service account token): reported on its own, the rest are the steady state.
    first = latencies.pop(0)
    latencies.sort()
    return {
        "first_ms": round(first, 1),
        "p50_ms": round(latencies[len(latencies) // 2], 1),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 1),
        "max_ms": round(latencies[-1], 1),
        "distinct_slots": len(set(starts)) if google else None,
        "google_requests_per_booking": round(sum(calls.values()) / prs, 2) if google else 0,
        "violations": len(fake.violations) + len(gfake.violations),
    }


async def booked(db: sqlite3.Connection, gfake: FakeGoogle, repo: str, *, google: bool) -> float:
    deadline = time.perf_counter() + 30
    while time.perf_counter() < deadline:
        if google:
            for r in gfake.requests:
                body = r.json or {}
                if r.method == "POST" and r.path.endswith("/events") and repo in json.dumps(body):
                    return time.perf_counter()
        else:
            row = db.execute("SELECT doc FROM releases WHERE repo = ?", (repo,)).fetchone()
            if row is not None and json.loads(row[0]).get("event_id"):
                return time.perf_counter()
        await asyncio.sleep(0.002)
    jobs = db.execute("SELECT key, kind, status, attempts, last_error FROM jobs WHERE key LIKE ?", (f"%{repo}%",))
    deliveries = db.execute("SELECT status, attempts, last_error FROM deliveries ORDER BY received_at DESC LIMIT 1")
    raise RuntimeError(f"{repo} was not booked in time: jobs {jobs.fetchall()}, last delivery {deliveries.fetchall()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prs", type=int, default=100)
    args = parser.parse_args()
    embedded = asyncio.run(run_round(args.prs, google=False))
    google = asyncio.run(run_round(args.prs, google=True))
    print(
        f"built-in calendar: /ship -> event booked p50 {embedded['p50_ms']} ms, p99 {embedded['p99_ms']} ms "
        f"(first {embedded['first_ms']} ms)"
    )
    print(
        f"Google Calendar (fake, real client): p50 {google['p50_ms']} ms, p99 {google['p99_ms']} ms "
        f"(first {google['first_ms']} ms); "
        f"{google['google_requests_per_booking']} Google requests per booking; "
        f"{google['distinct_slots']} distinct slots for {args.prs} PRs"
    )
    print(
        json.dumps(
            {
                "prs": args.prs,
                "embedded_p50_ms": embedded["p50_ms"],
                "embedded_p99_ms": embedded["p99_ms"],
                "embedded_first_ms": embedded["first_ms"],
                "google_p50_ms": google["p50_ms"],
                "google_p99_ms": google["p99_ms"],
                "google_first_ms": google["first_ms"],
                "google_requests_per_booking": google["google_requests_per_booking"],
                "google_distinct_slots": google["distinct_slots"],
                "violations": embedded["violations"] + google["violations"],
            }
        )
    )


if __name__ == "__main__":
    main()
