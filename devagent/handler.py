"""The SDK's request handler with the allowlist in front: a run is authorized (and planned) before the SDK
sees it, a task is touched only with a token for its skill and repo, and every refusal is logged once."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import NoReturn, TypeVar

from a2a.server.agent_execution import AgentExecutor
from a2a.server.context import ServerCallContext
from a2a.server.events import Event
from a2a.server.request_handlers import DefaultRequestHandler, validate_request_params
from a2a.server.tasks import PushNotificationConfigStore, PushNotificationSender, TaskStore
from a2a.types import (
    AgentCard,
    CancelTaskRequest,
    DeleteTaskPushNotificationConfigRequest,
    GetTaskPushNotificationConfigRequest,
    GetTaskRequest,
    ListTaskPushNotificationConfigsRequest,
    ListTaskPushNotificationConfigsResponse,
    ListTasksRequest,
    ListTasksResponse,
    Message,
    Role,
    SendMessageRequest,
    SubscribeToTaskRequest,
    Task,
    TaskPushNotificationConfig,
)
from a2a.utils.errors import InvalidParamsError, UnsupportedOperationError
from google.protobuf.json_format import MessageToDict

from .config import AgentConfig
from .policy import Refusal, RunPlan, Scope, check_push_url, check_task_scope, plan_run

SCOPE_KEY = "devagent.scope"  # the verified token's claims, put in the call context by the app
PLAN_KEY = "devagent.plan"  # the authorized run, handed on to the executor

logger = logging.getLogger("devagent")
T = TypeVar("T")


def log_refusal(method: str, reason: str, *, repo: str, skill: str) -> None:
    """The one log line of a refusal: reason, method and the claimed repo and skill (never the token)."""
    logger.warning("refused %s: %s (repo=%r, skill=%r)", method, reason, repo, skill)


def authorized_plan(context: ServerCallContext) -> RunPlan:
    plan = context.state.get(PLAN_KEY)
    if not isinstance(plan, RunPlan):
        raise RuntimeError("no authorized plan for this request: the executor only runs what the handler allowed")
    return plan


class GuardedRequestHandler(DefaultRequestHandler):
    def __init__(
        self,
        *,
        config: AgentConfig,
        agent_executor: AgentExecutor,
        task_store: TaskStore,
        agent_card: AgentCard,
        push_config_store: PushNotificationConfigStore,
        push_sender: PushNotificationSender,
        push_url_validator: Callable[[str], Awaitable[bool]],
    ) -> None:
        super().__init__(
            agent_executor=agent_executor,
            task_store=task_store,
            agent_card=agent_card,
            push_config_store=push_config_store,
            push_sender=push_sender,
            push_url_validator=push_url_validator,
        )
        self.config = config
        self._tasks = task_store

    @validate_request_params
    async def on_message_send(self, params: SendMessageRequest, context: ServerCallContext) -> Message | Task:
        self._authorize_run(params, context)
        result: Message | Task = await super().on_message_send(params, context)
        return result

    @validate_request_params
    async def on_message_send_stream(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event, None]:
        self._authorize_run(params, context)
        async with aclosing(super().on_message_send_stream(params, context)) as events:
            async for event in events:
                yield event

    @validate_request_params
    async def on_get_task(self, params: GetTaskRequest, context: ServerCallContext) -> Task | None:
        await self._authorize_task(params.id, context)
        task: Task | None = await super().on_get_task(params, context)
        return task

    @validate_request_params
    async def on_cancel_task(self, params: CancelTaskRequest, context: ServerCallContext) -> Task | None:
        await self._authorize_task(params.id, context)
        task: Task | None = await super().on_cancel_task(params, context)
        return task

    @validate_request_params
    async def on_subscribe_to_task(
        self, params: SubscribeToTaskRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event, None]:
        await self._authorize_task(params.id, context)
        async with aclosing(super().on_subscribe_to_task(params, context)) as events:
            async for event in events:
                yield event

    @validate_request_params
    async def on_list_tasks(self, params: ListTasksRequest, context: ServerCallContext) -> ListTasksResponse:
        """One session's tasks (the bot looks for the task it started before a crash), those of the token's
        skill and repo only. The context id keeps the listing to a page, so leaving out the others does not
        break the paging."""
        if not params.context_id:
            self._refuse(context, "ListTasks needs a context_id: a token lists one session's tasks", InvalidParamsError)
        page: ListTasksResponse = await super().on_list_tasks(params, context)
        scope = _scope(context)
        mine = [task for task in page.tasks if _in_scope(scope, task)]
        page.total_size -= len(page.tasks) - len(mine)
        del page.tasks[:]
        page.tasks.extend(mine)
        return page

    @validate_request_params
    async def on_create_task_push_notification_config(
        self, params: TaskPushNotificationConfig, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        await self._authorize_task(params.task_id, context)
        self._check(context, lambda: check_push_url(params.url, self.config.push_urls))
        config: TaskPushNotificationConfig = await super().on_create_task_push_notification_config(params, context)
        return config

    @validate_request_params
    async def on_get_task_push_notification_config(
        self, params: GetTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        await self._authorize_task(params.task_id, context)
        config: TaskPushNotificationConfig = await super().on_get_task_push_notification_config(params, context)
        return config

    @validate_request_params
    async def on_list_task_push_notification_configs(
        self, params: ListTaskPushNotificationConfigsRequest, context: ServerCallContext
    ) -> ListTaskPushNotificationConfigsResponse:
        await self._authorize_task(params.task_id, context)
        configs: ListTaskPushNotificationConfigsResponse = await super().on_list_task_push_notification_configs(
            params, context
        )
        return configs

    @validate_request_params
    async def on_delete_task_push_notification_config(
        self, params: DeleteTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> None:
        await self._authorize_task(params.task_id, context)
        await super().on_delete_task_push_notification_config(params, context)

    def _authorize_run(self, params: SendMessageRequest, context: ServerCallContext) -> None:
        def plan() -> RunPlan:
            message = params.message
            if message.role != Role.ROLE_USER:
                raise Refusal("the message must have role user")
            if message.task_id:
                raise Refusal("message.task_id must be empty: every playbook run is a new task")
            data = [MessageToDict(part.data) for part in message.parts if part.HasField("data")]
            if len(data) != 1 or not isinstance(data[0], dict):
                raise Refusal("the message needs exactly one data part holding a JSON object")
            if params.configuration.HasField("task_push_notification_config"):
                check_push_url(params.configuration.task_push_notification_config.url, self.config.push_urls)
            return plan_run(self.config, _scope(context), data[0])

        context.state[PLAN_KEY] = self._check(context, plan)

    async def _authorize_task(self, task_id: str, context: ServerCallContext) -> None:
        task = await self._tasks.get(task_id, context)
        if task is not None:  # else the SDK answers TaskNotFound
            self._check(context, lambda: check_task_scope(_scope(context), task_id, MessageToDict(task.metadata)))

    def _check(self, context: ServerCallContext, check: Callable[[], T]) -> T:
        try:
            return check()
        except Refusal as refusal:
            error = UnsupportedOperationError if refusal.unsupported else InvalidParamsError
            self._refuse(context, refusal.message, error)

    def _refuse(
        self, context: ServerCallContext, reason: str, error: type[InvalidParamsError | UnsupportedOperationError]
    ) -> NoReturn:
        scope = _scope(context)
        log_refusal(str(context.state.get("method", "?")), reason, repo=scope.repo, skill=scope.skill)
        raise error(message=reason)


def _in_scope(scope: Scope, task: Task) -> bool:
    try:
        check_task_scope(scope, task.id, MessageToDict(task.metadata))
    except Refusal:
        return False
    return True


def _scope(context: ServerCallContext) -> Scope:
    scope = context.state.get(SCOPE_KEY)
    if not isinstance(scope, Scope):
        raise RuntimeError("no verified token in the call context: the app checks every request first")
    return scope
