"""Slot search with busy time: how long `resolve_when` takes with a calendar's worth of busy intervals.

Europe/Berlin, Mon-Fri 09:00-17:00, 30-minute slots; 50 one-day freezes spread over a year and 500
busy intervals (seeded, random) over the next month. Each call gets the busy list as a caller would
pass it (unsorted), so the per-call sort is part of what is timed. `now` is fixed, so runs compare.

    python bench/slot_search.py [--calls 2000] [--busy 500] [--freezes 50] [--seed 7]

Last line: JSON with search_ms_p50, search_ms_p99, search_ms_max, busy_intervals, freezes, calls.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.policy import Busy, Freeze, Policy, Slot, Window, resolve_when  # noqa: E402

BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)  # a Wednesday, 10:00 in Berlin
WORDS = ("friday", "next tuesday afternoon", None, "tomorrow morning", "asap")


def build_policy(freezes: int, rng: random.Random) -> Policy:
    start = NOW.date()
    # One day in every year/freezes, jittered, so a few land inside the searched month.
    step = 365 / freezes
    days = sorted({start + timedelta(days=int(i * step) + rng.randrange(3)) for i in range(freezes)})
    return Policy(
        BERLIN,
        (Window(frozenset(range(5)), clock(9), clock(17)),),
        tuple(Freeze(day, day, f"freeze {i}") for i, day in enumerate(days)),
        slot=timedelta(minutes=30),
    )


def build_busy(count: int, rng: random.Random) -> list[Busy]:
    month = 31 * 24 * 60
    busy = []
    for i in range(count):
        start = NOW + timedelta(minutes=5 * rng.randrange(month // 5))
        busy.append(Busy(start, start + timedelta(minutes=rng.choice((15, 30, 30, 45, 60, 90, 120))), f"busy {i}"))
    return busy


def build_requests(calls: int, rng: random.Random) -> list[str | None]:
    requests: list[str | None] = []
    for _ in range(calls):
        if rng.random() < 0.5:
            requests.append(rng.choice(WORDS))
        else:
            day: date = NOW.date() + timedelta(days=rng.randrange(1, 30))
            requests.append(f"{day:%Y-%m-%d} {rng.randrange(9, 17):02d}:{rng.choice((0, 30)):02d}")
    return requests


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--busy", type=int, default=500)
    parser.add_argument("--freezes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    policy = build_policy(args.freezes, rng)
    busy = build_busy(args.busy, rng)
    requests = build_requests(args.calls, rng)

    first = time.perf_counter()
    resolve_when("friday", now=NOW, policy=policy, busy=busy)
    cold_ms = (time.perf_counter() - first) * 1000

    timings: list[float] = []
    outcomes: Counter[str] = Counter()
    for text in requests:
        started = time.perf_counter()
        result = resolve_when(text, now=NOW, policy=policy, busy=busy)
        timings.append((time.perf_counter() - started) * 1000)
        outcomes["slot" if isinstance(result, Slot) else "refused"] += 1

    p50, p99 = percentile(timings, 0.50), percentile(timings, 0.99)
    print(f"policy: Europe/Berlin Mon-Fri 09:00-17:00, 30-minute slots, {len(policy.freezes)} freezes")
    print(f"busy: {len(busy)} intervals over the month after {NOW:%Y-%m-%d}")
    print(f"first call (cold caches): {cold_ms:.2f} ms")
    print(f"{args.calls} calls: p50 {p50:.3f} ms, p99 {p99:.3f} ms, max {max(timings):.3f} ms")
    print(f"mean {statistics.fmean(timings):.3f} ms; outcomes: {dict(outcomes)}")
    result = {
        "search_ms_p50": round(p50, 4),
        "search_ms_p99": round(p99, 4),
        "search_ms_max": round(max(timings), 4),
        "search_ms_cold": round(cold_ms, 4),
        "busy_intervals": len(busy),
        "freezes": len(policy.freezes),
        "calls": args.calls,
        "slots": outcomes["slot"],
        "refused": outcomes["refused"],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
