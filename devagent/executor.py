"""A playbook run told over A2A: the Task first, then each output line as a WORKING update and a piece of the
"log" artifact, then the end state with the exit code (and, on failure, the last lines)."""

from __future__ import annotations

import signal
from collections import deque

from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.tasks import TaskUpdater
from a2a.types import Part, Task, TaskState, TaskStatus

from .handler import authorized_plan
from .policy import RunPlan
from .runner import Outcome, PlaybookProcess

LOG_ARTIFACT = "log"
TAIL_LINES = 20


class PlaybookExecutor(AgentExecutor):
    """Runs the plan the handler authorized for this request, and nothing else."""

    def __init__(self) -> None:
        self._running: dict[str, PlaybookProcess] = {}

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        plan = authorized_plan(context.call_context)
        task_id, context_id = _ids(context)
        updater = TaskUpdater(event_queue, task_id, context_id)
        await event_queue.enqueue_event(
            Task(
                id=task_id,
                context_id=context_id,
                status=TaskStatus(state=TaskState.TASK_STATE_WORKING),
                history=[context.message] if context.message else [],
                metadata=plan.task_metadata(),
            )
        )
        process = PlaybookProcess(plan)
        log = _Log(updater)
        self._running[task_id] = process
        try:
            outcome = await process.run(log.line)
            if not outcome.canceled:  # cancel() reports CANCELED itself, after the last line
                state, text, metadata = ending(outcome, plan, list(log.tail))
                await updater.update_status(state, message=updater.new_agent_message([Part(text=text)], metadata))
        finally:
            del self._running[task_id]

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        task_id, context_id = _ids(context)
        process = self._running.get(task_id)
        if process is None or not await process.cancel():
            return  # it ended on its own: that end state stands
        updater = TaskUpdater(event_queue, task_id, context_id)
        await updater.cancel(updater.new_agent_message([Part(text="canceled")]))


class _Log:
    """Numbers the lines across both streams (`seq` from 1) and keeps the last few for the failure message."""

    def __init__(self, updater: TaskUpdater) -> None:
        self.updater = updater
        self.seq = 0
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)

    async def line(self, stream: str, text: str) -> None:
        self.seq += 1
        self.tail.append(text)
        metadata = {"stream": stream, "seq": self.seq}
        message = self.updater.new_agent_message([Part(text=text)], metadata)
        await self.updater.update_status(TaskState.TASK_STATE_WORKING, message=message)
        await self.updater.add_artifact(
            [Part(text=text, metadata=metadata)], artifact_id=LOG_ARTIFACT, name=LOG_ARTIFACT, append=self.seq > 1
        )


def ending(outcome: Outcome, plan: RunPlan, tail: list[str]) -> tuple[TaskState, str, dict[str, object]]:
    """The end state, its message text and metadata, for an outcome that was not a cancel."""
    took = f"after {outcome.seconds:.1f}s"
    if outcome.start_error is not None:
        return TaskState.TASK_STATE_FAILED, f"could not start {outcome.start_error}", {}
    if outcome.timed_out:
        text = f"timed out after {plan.timeout_seconds:g} s"
        return TaskState.TASK_STATE_FAILED, "\n".join([text, *tail]), {}
    code = outcome.returncode
    if code == 0:
        return TaskState.TASK_STATE_COMPLETED, f"exit 0 {took}", {"exit_code": 0}
    head = f"killed by {_signal_name(-code)} {took}" if code is not None and code < 0 else f"exit {code} {took}"
    return TaskState.TASK_STATE_FAILED, "\n".join([head, *tail]), {"exit_code": code}


def _ids(context: RequestContext) -> tuple[str, str]:
    if not context.task_id or not context.context_id:
        raise RuntimeError("the SDK called the executor without a task id and context id")
    return context.task_id, context.context_id


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
