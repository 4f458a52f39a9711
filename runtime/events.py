"""What ``Runtime.stream``/``tail`` (and SSE) deliver: typed, frozen step events.

A step streams ``StepStarted``; per task ``TaskStarted``, its ``Token`` and
``CustomEvent`` emits (``ctx.emit_token``, ``ctx.emit``) and ``TaskFinished``;
then ``Committed`` once the step is durable, or ``StepError`` (the session is
as it was). A reader that falls behind gets ``Overflow`` and is dropped. Each
is a ``msgspec.Struct`` tagged with its kind: ``msgspec.json.encode(event)``
gives ``{"event": "token", ...}``.
"""

from actors._event_hub import StreamStats
from flow._events import (
    MAX_EVENT_BYTES,
    MAX_TOKEN_CHARS,
    Committed,
    CustomEvent,
    Overflow,
    StepError,
    StepEvent,
    StepStarted,
    TaskFinished,
    TaskStarted,
    Token,
)
from runtime._streams import AsyncEventStream, EventStream

__all__ = [
    "MAX_EVENT_BYTES",
    "MAX_TOKEN_CHARS",
    "AsyncEventStream",
    "Committed",
    "CustomEvent",
    "EventStream",
    "Overflow",
    "StepError",
    "StepEvent",
    "StepStarted",
    "StreamStats",
    "TaskFinished",
    "TaskStarted",
    "Token",
]
