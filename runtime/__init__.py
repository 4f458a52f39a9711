"""actorflow runtime: the host-facing Runtime facade, daemon, admin socket and shell.

Host applications use ``Runtime`` (sync) or ``AsyncRuntime`` (asyncio)::

    from flow.demo import echo
    from runtime import Runtime

    with Runtime.open(data_dir="var", graphs=[echo]) as rt:
        sid = rt.create_session("echo", owner="alice")
        print(rt.step(sid, "hi").response)

Everything public is re-exported here; errors also live in ``runtime.errors``.
"""

from flow._step import StepResult
from flow._versions import Migration, MigrationState
from flow.stores._log import MessagePage, RevisionInfo
from flow.stores._protocol import SessionPage, StoredSessionInfo
from runtime._config import Durability, RuntimeConfig
from runtime._live_page import LivePage
from runtime._runtime import AsyncRuntime, Runtime
from runtime._views import LiveSessionInfo, RuntimeStats, SessionMetadataView, SessionView
from runtime.errors import (
    ActorflowError,
    GraphInvalid,
    GraphNotFound,
    GraphVersionUnavailable,
    IdempotencyKeyReused,
    InvalidInput,
    MigrationFailed,
    RevisionConflict,
    RevisionNotFound,
    RuntimeClosed,
    SessionBusy,
    SessionCompleted,
    SessionNotFound,
    SnapshotDecodeError,
    StepTimeout,
    StoreUnavailable,
    TaskFailed,
    TaskNotFound,
    TooManyWatchers,
)

__all__ = [
    "ActorflowError",
    "AsyncRuntime",
    "Durability",
    "GraphInvalid",
    "GraphNotFound",
    "GraphVersionUnavailable",
    "IdempotencyKeyReused",
    "InvalidInput",
    "LivePage",
    "LiveSessionInfo",
    "MessagePage",
    "Migration",
    "MigrationFailed",
    "MigrationState",
    "RevisionConflict",
    "RevisionInfo",
    "RevisionNotFound",
    "Runtime",
    "RuntimeClosed",
    "RuntimeConfig",
    "RuntimeStats",
    "SessionBusy",
    "SessionCompleted",
    "SessionMetadataView",
    "SessionNotFound",
    "SessionPage",
    "SessionView",
    "SnapshotDecodeError",
    "StepResult",
    "StepTimeout",
    "StoreUnavailable",
    "StoredSessionInfo",
    "TaskFailed",
    "TaskNotFound",
    "TooManyWatchers",
]
