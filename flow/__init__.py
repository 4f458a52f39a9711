"""actorflow's engine: graphs, tasks, context, sessions, the step function and the codec.

Build a graph with ``GraphBuilder``, start a session with ``new_session`` and
advance it with ``step`` (or ``astep`` from asyncio); ``encode``/``decode`` turn a
session into snapshot bytes and back. Stores live in ``flow.stores``; the demo
graphs in ``flow.demo``. A graph's versions, and migrations between them, live
in ``GraphRegistry`` and ``Migration``; ``edit`` repairs a session from outside.
"""

from flow._codec import decode, encode
from flow._context import ChatHistory, ChatMessage, Context
from flow._edit import edit
from flow._errors import (
    ActorflowError,
    GraphInvalid,
    GraphNotFound,
    GraphVersionUnavailable,
    IdempotencyKeyReused,
    InvalidInput,
    MigrationFailed,
    Misdirected,
    RevisionConflict,
    RevisionNotFound,
    RuntimeClosed,
    SessionBusy,
    SessionCompleted,
    SessionNotFound,
    SessionQuotaExceeded,
    SessionTooLarge,
    SnapshotDecodeError,
    StepTimeout,
    StoreUnavailable,
    TaskFailed,
    TaskNotFound,
    TooManyWatchers,
)
from flow._fanout import FanOutTask
from flow._graph import Graph, GraphBuilder
from flow._session import Session, SessionMetadata, SessionStatus
from flow._step import StepResult, astep, new_session, step
from flow._task import FunctionTask, NextAction, Task, TaskResult, is_async_task, task
from flow._versions import GraphRegistry, Migration, MigrationState, upgrade

__all__ = [
    "ActorflowError",
    "ChatHistory",
    "ChatMessage",
    "Context",
    "FanOutTask",
    "FunctionTask",
    "Graph",
    "GraphBuilder",
    "GraphInvalid",
    "GraphNotFound",
    "GraphRegistry",
    "GraphVersionUnavailable",
    "IdempotencyKeyReused",
    "InvalidInput",
    "Migration",
    "MigrationFailed",
    "MigrationState",
    "Misdirected",
    "NextAction",
    "RevisionConflict",
    "RevisionNotFound",
    "RuntimeClosed",
    "Session",
    "SessionBusy",
    "SessionCompleted",
    "SessionMetadata",
    "SessionNotFound",
    "SessionQuotaExceeded",
    "SessionStatus",
    "SessionTooLarge",
    "SnapshotDecodeError",
    "StepResult",
    "StepTimeout",
    "StoreUnavailable",
    "Task",
    "TaskFailed",
    "TaskNotFound",
    "TaskResult",
    "TooManyWatchers",
    "astep",
    "decode",
    "edit",
    "encode",
    "is_async_task",
    "new_session",
    "step",
    "task",
    "upgrade",
]
