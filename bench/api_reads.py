"""API read latency: `GET /api/v1/repos/{owner}/{name}/prs/{n}` (get_pr) and `GET /api/v1/prs` (list_prs) over
1,000 tracked PRs, each at a steady rate, and the GitHub requests they cost (none: reads come from the store).

The bot runs for real (`python -m bot serve`: web and worker, SQLite, production intervals) against the fake
GitHub of the test suite, which runs in this process and records every request. Before it starts, its store
is seeded as webhooks would have left it: 1,000 PRs over ten repositories of one installation, with commits,
reviews, labels and their history, and the latest check runs and statuses of every head.

Open loop: requests leave on schedule whether or not earlier ones came back, and each is timed from the moment
it was due, so a server that falls behind is charged for it. list_prs asks for first pages, pages after a
random PR (as a cursor from an earlier page does) and label filters, each with limit=50.

    python bench/api_reads.py [--prs 1000] [--rate 200] [--seconds 10]

Last line: JSON with get_pr_ms_p50/p99, list_prs_ms_p50/p99, the achieved rates and github_requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.api.tokens import ApiTokens  # noqa: E402
from bot.config import Settings  # noqa: E402
from bot.prstate import CheckRunInfo, CommitInfo, LabelEvent, PullState, ReviewInfo, ShaChecks, StatusInfo  # noqa: E402
from bot.secrets import generate_key  # noqa: E402
from bot.store import make_store  # noqa: E402
from bot.store.base import Installation, encode_cursor  # noqa: E402
from tests.fakes.github import FakeGitHub  # noqa: E402
from tests.fakes.keys import AppKey, make_app_key  # noqa: E402
from tests.helpers import SECRET  # noqa: E402

APP_ID = 4242
INSTALLATION = 77
OWNER = "acme"
REPOS = [f"{OWNER}/service-{i}" for i in range(10)]
LABELS = ["bug", "enhancement", "Ready for Prod", "needs-review", "dependencies", "hotfix", "docs", "blocked"]
PEOPLE = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]
CHECK_NAMES = ["ci/build", "ci/test", "ci/lint", "security/codeql", "deploy/preview", "coverage"]
STATUS_CONTEXTS = ["ci/jenkins", "license/cla", "codecov/patch"]
WORDS = [
    "fix",
    "add",
    "remove",
    "refactor",
    "widget",
    "cache",
    "retry",
    "parser",
    "handler",
    "timeout",
    "flaky",
    "docs",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sha(rng: random.Random) -> str:
    return f"{rng.getrandbits(160):040x}"


def sentence(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high))).capitalize()


def make_pull(rng: random.Random, repo: str, number: int, now: datetime) -> tuple[PullState, ShaChecks]:
    """A PR as webhooks leave it: a few commits (now and then dozens), reviews, labels with their history."""
    created = now - timedelta(days=rng.uniform(0.5, 60))
    commits = []
    at = created
    for _ in range(min(60, 1 + int(rng.expovariate(1 / 5)))):
        at += timedelta(minutes=rng.uniform(5, 600))
        message = sentence(rng, 3, 9) + ("\n\n" + sentence(rng, 10, 40) if rng.random() < 0.4 else "")
        commits.append(CommitInfo(sha=sha(rng), message=message, author=rng.choice(PEOPLE), authored_at=at))
    head = commits[-1].sha
    reviews = [
        ReviewInfo(
            id=number * 100 + i,
            login=rng.choice(PEOPLE),
            state=rng.choice(["APPROVED", "CHANGES_REQUESTED", "COMMENTED"]),
            commit_id=rng.choice(commits).sha,
            submitted_at=created + timedelta(hours=rng.uniform(1, 48)),
        )
        for i in range(rng.choice([0, 0, 1, 1, 2, 3, 4]))
    ]
    labels = tuple(rng.sample(LABELS, rng.choice([0, 1, 1, 2, 2, 3])))
    events = [
        LabelEvent(at=created + timedelta(hours=i + 1), action="labeled", label=label, actor=rng.choice(PEOPLE))
        for i, label in enumerate(labels)
    ]
    state = rng.choices(["open", "merged", "closed"], weights=[80, 12, 8])[0]
    pull = PullState(
        repo=repo,
        number=number,
        installation_id=INSTALLATION,
        title=sentence(rng, 3, 10),
        author=rng.choice(PEOPLE),
        state=state,
        draft=rng.random() < 0.1,
        base="main",
        head_sha=head,
        labels=labels,
        commits=tuple(commits),
        reviews=tuple(sorted(reviews, key=lambda r: (r.submitted_at or created, r.id))),
        label_events=tuple(events),
        required_checks=("ci/build", "ci/test"),
        created_at=created,
        updated_at=max(at, created),
        synced_at=now,  # just synced: the worker's reconcile sweep has nothing stale to re-read
    )
    runs = tuple(
        CheckRunInfo(
            id=number * 1000 + i,
            name=name,
            status="completed",
            conclusion=rng.choices(["success", "failure", "neutral"], weights=[85, 10, 5])[0],
            app="github-actions",
            details_url=f"https://github.com/{repo}/actions/runs/{number * 1000 + i}",
            started_at=at + timedelta(minutes=1),
            completed_at=at + timedelta(minutes=rng.uniform(2, 30)),
        )
        for i, name in enumerate(sorted(rng.sample(CHECK_NAMES, rng.randint(2, 6))))
    )
    statuses = tuple(
        StatusInfo(
            context=context,
            state=rng.choice(["success", "success", "pending", "failure"]),
            description=sentence(rng, 2, 6),
            target_url=f"https://ci.example/{repo}/{number}/{context}",
            updated_at=at + timedelta(minutes=3),
            id=number * 10 + i,
        )
        for i, context in enumerate(sorted(rng.sample(STATUS_CONTEXTS, rng.randint(0, 3))))
    )
    return pull, ShaChecks(repo=repo, sha=head, check_runs=runs, statuses=statuses, synced_at=now)


async def seed(settings: Settings, prs: int, rng: random.Random) -> tuple[str, list[PullState]]:
    """The store as webhooks would have left it, and a read token for the whole organisation."""
    now = datetime.now(UTC)
    store = make_store(settings)
    await store.open()
    try:
        await store.save_installation(
            Installation(id=INSTALLATION, account_login=OWNER, account_type="Organization", repositories=tuple(REPOS))
        )
        pulls = []
        for i in range(prs):
            repo = REPOS[i % len(REPOS)]
            pull, checks = make_pull(rng, repo, 1 + i // len(REPOS), now)
            pulls.append(await store.save_pull_state(pull))
            await store.save_sha_checks(checks)
        token, _ = await ApiTokens(store, lambda: now).create(
            name="bench", login="alice", repos=[f"{OWNER}/*"], scopes=["read"]
        )
    finally:
        await store.close()
    return token, pulls


async def wait_ready(port: int) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            try:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError("the bot did not start")


async def steady(
    session: aiohttp.ClientSession, base: str, next_path: Callable[[], str], rate: int, seconds: float
) -> tuple[list[float], float, int]:
    """Open loop at `rate` per second: latencies (ms, from when each was due), responses per second, failures."""
    latencies: list[float] = []
    failures = 0
    interval = 1.0 / rate
    total = int(rate * seconds)

    async def one(path: str, due: float) -> None:
        nonlocal failures
        async with session.get(base + path) as response:
            await response.read()
            if response.status != 200:
                failures += 1
        latencies.append((time.perf_counter() - due) * 1000)

    tasks = []
    start = time.perf_counter() + 0.05
    for n in range(total):
        due = start + n * interval
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(next_path(), due)))
    await asyncio.gather(*tasks)
    return latencies, len(latencies) / (time.perf_counter() - start), failures


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux), to tell queueing from work."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    fake = FakeGitHub()
    await fake.start()
    key = make_app_key()
    fake.add_app(APP_ID, key.public_key_pem)
    for repo in REPOS:
        fake.add_repo(repo)
    fake.add_installation(INSTALLATION, OWNER, repos=REPOS, app_id=APP_ID)

    with tempfile.TemporaryDirectory(prefix="rs-bench-reads-") as name:
        try:
            return await measure(args, fake, key, Path(name), rng)
        finally:
            await fake.close()


async def measure(
    args: argparse.Namespace, fake: FakeGitHub, key: AppKey, tmp: Path, rng: random.Random
) -> dict[str, Any]:
    """Seed the store, start the bot on it, then time each operation in turn."""
    (tmp / "app.pem").write_bytes(key.rsa_private_key_pem)
    data = tmp / "data"
    token, pulls = await seed(Settings(github_webhook_secret=SECRET, data_dir=data), args.prs, rng)
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "DATA_DIR": str(data),
        "GITHUB_APP_ID": str(APP_ID),
        "GITHUB_PRIVATE_KEY_PATH": str(tmp / "app.pem"),
        "GITHUB_WEBHOOK_SECRET": SECRET,
        "GITHUB_API_URL": fake.url,
        "LOG_LEVEL": "WARNING",
        "SECRETS_KEY": generate_key(),
    }
    bot = subprocess.Popen([sys.executable, "-m", "bot", "serve"], env=env, cwd=tmp)  # noqa: ASYNC220
    results: dict[str, Any] = {"prs": len(pulls), "rate_per_s": args.rate, "seconds": args.seconds}
    try:
        await wait_ready(port)
        await asyncio.sleep(1.0)  # the worker's start-up sweeps (redelivery, reconcile) run before we measure
        results["github_requests_at_start"] = len(fake.requests)
        base = f"http://127.0.0.1:{port}/api/v1"
        headers = {"Authorization": f"Bearer {token}"}
        keys = [(p.repo, p.number) for p in pulls]

        def get_pr() -> str:
            repo, number = rng.choice(keys)
            return f"/repos/{repo}/prs/{number}"

        def list_prs() -> str:
            repo = rng.choice(REPOS)
            kind = rng.random()
            if kind < 0.4:
                return f"/prs?repo={repo}&limit=50"
            if kind < 0.8:  # a later page: the cursor after a random PR, as the page before it returned
                return f"/prs?repo={repo}&limit=50&cursor={encode_cursor(repo, rng.randint(2, 100))}"
            label = rng.choice(LABELS).replace(" ", "%20")
            return f"/prs?repo={repo}&limit=50&label={label}"

        connector = aiohttp.TCPConnector(limit=256)
        async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
            for name, path in (("get_pr", get_pr), ("list_prs", list_prs)):
                await steady(session, base, path, args.rate, 1.0)  # warm-up: connections, caches
                first = len(fake.requests)
                cpu = cpu_seconds(bot.pid)
                latencies, achieved, failures = await steady(session, base, path, args.rate, args.seconds)
                cpu_after = cpu_seconds(bot.pid)
                if cpu is not None and cpu_after is not None:
                    results[f"{name}_bot_cpu_ms_per_request"] = round((cpu_after - cpu) * 1000 / len(latencies), 2)
                calls = Counter(f"{r.method} {r.operation_id or r.path}" for r in fake.requests[first:])
                if failures:
                    raise RuntimeError(f"{failures} {name} requests did not answer 200")
                results[f"{name}_ms_p50"] = percentile(latencies, 0.50)
                results[f"{name}_ms_p99"] = percentile(latencies, 0.99)
                results[f"{name}_ms_max"] = round(max(latencies), 2)
                results[f"{name}_req_per_s"] = round(achieved, 1)
                results[f"{name}_github_requests"] = sum(calls.values())
                if calls:
                    results[f"{name}_github_calls"] = dict(calls)
        results["github_requests"] = results["get_pr_github_requests"] + results["list_prs_github_requests"]
        results["violations"] = len(fake.violations)
    finally:
        bot.send_signal(signal.SIGTERM)
        await asyncio.to_thread(bot.wait, 30)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prs", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=200, help="requests per second, for each operation in turn")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per operation")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    results = asyncio.run(run(args))
    for name in ("get_pr", "list_prs"):
        print(
            f"{name} at {args.rate}/s over {results['prs']} PRs: {results[f'{name}_req_per_s']} answered/s, "
            f"p50 {results[f'{name}_ms_p50']} ms, p99 {results[f'{name}_ms_p99']} ms, "
            f"max {results[f'{name}_ms_max']} ms, GitHub requests {results[f'{name}_github_requests']} "
            f"(target: p99 < 20 ms, no GitHub requests)"
        )
    for name in ("get_pr", "list_prs"):
        calls = results.pop(f"{name}_github_calls", None)
        if calls:
            print(f"GitHub requests during {name}: {calls}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
