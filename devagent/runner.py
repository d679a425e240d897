"""One playbook run: an argv (never a shell) in its own process group, its output read line by line, and the
whole group stopped on timeout, on cancel and when the playbook exits leaving children behind."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from .policy import RunPlan

INHERITED_ENV = ("PATH", "HOME", "LANG")
MAX_LINE_CHARS = 4000
KILL_GRACE_SECONDS = 5.0  # between SIGTERM and SIGKILL
DRAIN_SECONDS = 5.0  # for the last output once the group is gone
_CHUNK = 65536
_MAX_PENDING = 65536  # a line longer than this is passed on in pieces
_POLL_SECONDS = 0.05

LineHandler = Callable[[str, str], Awaitable[None]]  # (stream name, line)


@dataclass(frozen=True)
class Outcome:
    returncode: int | None  # None when it timed out, was canceled or never started
    seconds: float
    timed_out: bool = False
    canceled: bool = False
    start_error: str | None = None


def environment(plan: RunPlan) -> dict[str, str]:
    """A minimal environment: the agent's own secrets and settings never reach a playbook."""
    inherited = {name: os.environ[name] for name in INHERITED_ENV if name in os.environ}
    return {**inherited, **plan.env}


class PlaybookProcess:
    """Runs once. `run()` returns when the process and its output are done; `cancel()` stops it from another
    task and returns once `run()` has finished, so every line is out before the caller reports CANCELED."""

    def __init__(self, plan: RunPlan) -> None:
        self.plan = plan
        self._proc: asyncio.subprocess.Process | None = None
        self._canceled = False
        self._finished = asyncio.Event()

    async def run(self, on_line: LineHandler) -> Outcome:
        started = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.plan.argv,
                cwd=self.plan.cwd,
                env=environment(self.plan),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            self._finished.set()
            return Outcome(None, time.monotonic() - started, start_error=f"{self.plan.argv[0]}: {exc.strerror}")
        self._proc = proc
        pump = asyncio.create_task(_pump(proc, on_line))
        timed_out = False
        try:
            try:
                async with asyncio.timeout(self.plan.timeout_seconds):
                    if not self._canceled:  # a cancel() that came while the process was starting
                        await proc.wait()
            except TimeoutError:
                timed_out = True
            await stop_group(proc)
            # Output still in the pipes is read to the end; only a process that left the group can hold
            # a pipe open now, and it must not hold the task open with it.
            done, _ = await asyncio.wait({pump}, timeout=DRAIN_SECONDS)
            if done:
                pump.result()  # a failure to hand a line on is the run's failure
        finally:
            if proc.returncode is None:  # this task itself was cancelled (agent shutdown)
                await stop_group(proc)
            pump.cancel()
            self._finished.set()
        canceled = self._canceled
        return Outcome(
            None if timed_out or canceled else proc.returncode,
            time.monotonic() - started,
            timed_out=timed_out and not canceled,
            canceled=canceled,
        )

    async def cancel(self) -> bool:
        """Stop the run; False when it had already finished on its own (then its own outcome stands)."""
        if self._finished.is_set():
            return False
        self._canceled = True
        if self._proc is not None:
            await stop_group(self._proc)
        await self._finished.wait()
        return True


async def stop_group(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM to the process group, SIGKILL to what is left of it after `KILL_GRACE_SECONDS`; at once when
    the group is already empty."""
    pgid = proc.pid  # start_new_session: the leader's pid is the group id
    if not group_alive(pgid):
        await proc.wait()
        return
    _signal_group(pgid, signal.SIGTERM)
    # Polled: nothing signals the end of a grandchild.
    for _ in range(round(KILL_GRACE_SECONDS / _POLL_SECONDS)):
        await asyncio.sleep(_POLL_SECONDS)
        if not group_alive(pgid):
            break
    else:
        _signal_group(pgid, signal.SIGKILL)
    await proc.wait()


def group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs. `killpg(pgid, 0)` alone is not enough: in a container
    without an init, orphaned children stay zombies, which count as members but hold nothing open."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc_dir = Path("/proc")
    if not proc_dir.is_dir():
        return True
    for stat in proc_dir.glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        state, _ppid, group = text[text.rfind(")") + 2 :].split()[:3]
        if group == str(pgid) and state not in ("Z", "X"):
            return True
    return False


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


async def _pump(proc: asyncio.subprocess.Process, on_line: LineHandler) -> None:
    """Both streams into one queue, so lines are handed on in the order they were read, one at a time; the
    bounded queue makes a playbook that writes faster than its lines are sent wait on its pipe."""
    queue: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue(maxsize=1000)
    assert proc.stdout is not None and proc.stderr is not None
    readers = [
        asyncio.create_task(_read_lines(proc.stdout, "stdout", queue)),
        asyncio.create_task(_read_lines(proc.stderr, "stderr", queue)),
    ]
    try:
        open_streams = len(readers)
        while open_streams:
            item = await queue.get()
            if item is None:
                open_streams -= 1
                continue
            name, raw = item
            await on_line(name, decode_line(raw))
    finally:
        for reader in readers:
            reader.cancel()


async def _read_lines(stream: asyncio.StreamReader, name: str, queue: asyncio.Queue[tuple[str, bytes] | None]) -> None:
    pending = b""
    while chunk := await stream.read(_CHUNK):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            await queue.put((name, line))
        if len(pending) > _MAX_PENDING:
            await queue.put((name, pending))
            pending = b""
    if pending:
        await queue.put((name, pending))
    await queue.put(None)


def decode_line(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").removesuffix("\r")[:MAX_LINE_CHARS]
