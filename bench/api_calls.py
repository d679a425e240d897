"""GitHub API cost: the requests one release makes from label to released, by endpoint, and what a
reconcile sweep over many idle PRs costs in rate-limit units.

Runs the real app and worker in this process against the fake GitHub of the test suite, which
answers conditional requests with 304 (free, as GitHub's are) and keeps each token's rate-limit use.

Lifecycle: the label, CI turning green, the T-15 check, the merge at T, a dispatched deploy workflow
and its completed run. Sweep: N released-later PRs all scheduled and idle; one sweep to fill the
caches, then one measured sweep.

    python bench/api_calls.py [--prs 1000]

Last line: JSON with requests_per_release, rate_limit_units_per_release, sweep_rate_limit_units.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.app import make_app  # noqa: E402
from bot.config import Settings  # noqa: E402
from bot.secrets import generate_key  # noqa: E402
from tests.fakes.github import FakeGitHub  # noqa: E402
from tests.fakes.keys import make_app_key  # noqa: E402
from tests.helpers import SECRET  # noqa: E402
from tests.scenario import REPO, Clock, Scenario, labeled, suite_completed, workflow_run  # noqa: E402

CONFIG = 'timezone: Europe/Berlin\nwindows:\n  - days: [mon-fri]\n    hours: "10:00-16:00"\n'


async def start(fake: FakeGitHub, tmp: Path) -> tuple[Scenario, TestClient]:  # type: ignore[type-arg]
    key = make_app_key()
    fake.add_app(4242, key.public_key_pem)
    fake.add_repo(REPO)
    fake.add_installation(99, "octo-org", repos=[REPO])
    settings = Settings(
        github_app_id=4242,
        github_private_key=key.rsa_private_key_pem.decode(),
        github_webhook_secret=SECRET,
        github_api_url=fake.url,
        data_dir=tmp,
        secrets_keys=(generate_key(),),
        github_write_interval=0.0,
        worker_poll_interval=0.05,
        reconcile_interval=0.0,
        calendar_sweep_interval=0.0,
        redelivery_sweep_interval=0.0,
    )
    clock = Clock()
    client = TestClient(TestServer(make_app(settings, clock=clock)))
    await client.start_server()
    return Scenario(client, settings, fake, clock), client


def tally(fake: FakeGitHub, first: int) -> tuple[Counter[str], int]:
    calls = fake.requests[first:]
    by_endpoint = Counter(f"{r.method} {r.operation_id}" for r in calls)
    units = sum(
        1 for r in calls if r.status not in (304,) and r.operation_id != "apps/create-installation-access-token"
    )
    return by_endpoint, units


async def lifecycle(tmp: Path) -> dict[str, Any]:
    fake = FakeGitHub()
    await fake.start()
    scenario, client = await start(fake, tmp / "one")
    try:
        head = "a" * 40
        fake.add_pull(REPO, 7, head_sha=head, title="Faster widgets", user_login="alice")
        fake.add_check_run(REPO, head, "ci/build", status="in_progress", conclusion=None)
        fake.set_permission(REPO, "alice", "write")
        fake.set_branch_protection(REPO, "main", ["ci/build"])
        fake.set_file(REPO, ".github/release-secretary.yml", CONFIG + "deploy:\n  workflow: deploy.yml\n")
        first = len(fake.requests)

        async def later(seconds: float) -> None:
            """Time passes as it would (the production debounce of progress edits applies)."""
            scenario.clock.now += timedelta(seconds=seconds)
            await scenario.settle()

        await scenario.deliver("pull_request", labeled(7, head, sender="alice"))
        await later(5)
        fake.add_check_run(REPO, head, "ci/build", status="completed", conclusion="success")
        await later(300)  # CI runs
        await scenario.deliver("check_suite", suite_completed(head))
        await later(5)
        release = await scenario.store.get_active_release(REPO, 7)
        assert release is not None and release.slot is not None
        scenario.clock.now = release.slot.start - timedelta(minutes=15)
        await later(5)
        scenario.clock.now = release.slot.start
        await later(5)
        releasing = await scenario.store.get_active_release(REPO, 7)
        assert releasing is not None and releasing.merge_sha and releasing.deploy_id, releasing
        run = int(releasing.deploy_id)  # the run GitHub created for the dispatch
        await later(180)  # the deploy runs
        await scenario.deliver("workflow_run", workflow_run(run, releasing.merge_sha, workflow="deploy.yml"))
        await later(5)
        done = await scenario.store.get_latest_release(REPO, 7)
        assert done is not None and done.state.value == "released", done
        by_endpoint, units = tally(fake, first)
        return {"by_endpoint": by_endpoint, "requests": sum(by_endpoint.values()), "units": units}
    finally:
        await client.close()
        await fake.close()


async def sweep(tmp: Path, prs: int) -> dict[str, Any]:
    fake = FakeGitHub()
    await fake.start()
    fake.rate_limit = 1_000_000  # setting up 1,000 releases would exhaust a real installation's 5,000
    scenario, client = await start(fake, tmp / "sweep")
    try:
        fake.set_permission(REPO, "alice", "write")
        fake.set_branch_protection(REPO, "main", ["ci/build"])
        # Every day, all day: one repository lane has room for 1,000 idle releases in 60 days.
        fake.set_file(
            REPO, ".github/release-secretary.yml", 'windows:\n  - days: [mon-sun]\n    hours: "00:00-23:59"\n'
        )
        for pr in range(1, prs + 1):
            head = f"{pr:040x}"
            fake.add_pull(REPO, pr, head_sha=head, title=f"Change {pr}", user_login="alice")
            fake.add_check_run(REPO, head, "ci/build", status="completed", conclusion="success")
            assert await scenario.send("pull_request", labeled(pr, head, sender="alice")) == 202
        await scenario.settle()
        tracked = len(await scenario.store.find_releases(limit=100_000))
        await scenario.worker.reconcile()  # fills the conditional-request caches
        first = len(fake.requests)
        started = time.perf_counter()
        found = await scenario.worker.reconcile()
        seconds = time.perf_counter() - started
        _, units = tally(fake, first)
        return {
            "tracked": tracked,
            "requests": len(fake.requests) - first,
            "units": units,
            "seconds": seconds,
            "found": found,
        }
    finally:
        await client.close()
        await fake.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prs", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rs-bench-api-") as tmp:
        life = asyncio.run(lifecycle(Path(tmp)))
        idle = asyncio.run(sweep(Path(tmp), args.prs))
    print("GitHub requests for one release (label -> green -> T-15 -> merge -> deploy run -> released):")
    for endpoint, count in sorted(life["by_endpoint"].items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {count:3d}  {endpoint}")
    print(f"  total {life['requests']} requests, {life['units']} rate-limit units (304s and token minting free)")
    print(
        f"reconcile sweep over {idle['tracked']} idle PRs: {idle['requests']} requests, "
        f"{idle['units']} rate-limit units, {idle['seconds']:.2f} s, changes found {idle['found'] or 'none'}"
    )
    print(
        json.dumps(
            {
                "requests_per_release": life["requests"],
                "rate_limit_units_per_release": life["units"],
                "sweep_prs": idle["tracked"],
                "sweep_requests": idle["requests"],
                "sweep_rate_limit_units": idle["units"],
                "sweep_seconds": round(idle["seconds"], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
