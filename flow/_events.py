"""What a step tells its watchers while it runs: typed, frozen event objects.

A step streams, in order: ``step_started``; per task (each task of a
ContinueAndExecute chain or of ``mode="run"``, and each child of a
``FanOutTask``) ``task_started``, any ``token`` and ``event`` the task emits
(``ctx.emit_token`` / ``ctx.emit``), ``task_finished``; and finally
``committed`` (sent only once the step is durable) or ``error`` (the session is
as it was). A reader that falls behind gets ``overflow`` and is dropped.

The engine only builds the events when someone listens: ``step`` is handed a
``StepEvents`` sink (the runtime's event hub provides one) and asks it
``wanted()`` first, so a step nobody watches pays one check per task.

Each event is a ``msgspec.Struct`` tagged with its kind (``event`` in JSON), so
``msgspec.json.encode(ev)`` is the ``data:`` line of a Server-Sent Event.
"""

from __future__ import annotations

from typing import Any, Final, Protocol

import msgspec

from flow._errors import InvalidInput

__all__ = [
    "MAX_EVENT_BYTES",
    "MAX_EVENT_NAME",
    "MAX_TOKEN_CHARS",
    "Committed",
    "CustomEvent",
    "Overflow",
    "StepError",
    "StepEvent",
    "StepEvents",
    "StepStarted",
    "TaskFinished",
    "TaskStarted",
    "Token",
    "checked_event_size",
    "checked_name",
    "checked_token",
]

#: The longest text one ``emit_token`` call may send (characters).
MAX_TOKEN_CHARS: Final = 64 * 1024
#: The largest ``data`` one ``emit`` call may send (bytes of msgpack).
MAX_EVENT_BYTES: Final = 64 * 1024
#: The longest event name (characters).
MAX_EVENT_NAME: Final = 128


class StepStarted(msgspec.Struct, frozen=True, tag_field="event", tag="step_started"):
    """A step of ``session_id`` began; ``revision`` is the session's before it."""

    session_id: str
    revision: int


class TaskStarted(msgspec.Struct, frozen=True, tag_field="event", tag="task_started"):
    """Task ``task`` began."""

    task: str


class Token(msgspec.Struct, frozen=True, tag_field="event", tag="token"):
    """Partial response text from task ``task`` (``ctx.emit_token``)."""

    task: str
    text: str


class CustomEvent(msgspec.Struct, frozen=True, tag_field="event", tag="event"):
    """A custom progress event ``name`` from task ``task`` (``ctx.emit``)."""

    task: str
    name: str
    data: Any


class TaskFinished(msgspec.Struct, frozen=True, tag_field="event", tag="task_finished"):
    """Task ``task`` returned ``response`` and ``next_action`` (a ``NextAction`` kind;
    ``goto`` names its target)."""

    task: str
    response: str | None
    next_action: str
    goto: str | None = None


class Committed(msgspec.Struct, frozen=True, tag_field="event", tag="committed"):
    """The step is durable: the session is at ``revision``.

    ``replayed`` is True when an idempotency key named a step committed earlier
    (nothing ran: this is its recorded result).
    """

    session_id: str
    revision: int
    response: str | None
    responses: list[str]
    status: str
    next_task: str
    status_message: str | None
    replayed: bool = False


class StepError(msgspec.Struct, frozen=True, tag_field="event", tag="error"):
    """The step failed; the session is as it was. ``error`` is the exception
    ``Runtime.step`` would have raised (over HTTP: its problem+json document)."""

    error: BaseException


class Overflow(msgspec.Struct, frozen=True, tag_field="event", tag="overflow"):
    """This reader fell ``buffered`` events behind and was disconnected; the step goes on."""

    buffered: int


StepEvent = (
    StepStarted
    | TaskStarted
    | Token
    | CustomEvent
    | TaskFinished
    | Committed
    | StepError
    | Overflow
)
"""Every kind of event a stream yields."""


class StepEvents(Protocol):
    """Where a step sends its events (implemented by the runtime's event hub).

    Called from whichever thread runs the task (a dispatcher worker, the task
    pool, the event loop, a fan-out thread): an implementation is thread-safe
    and never blocks on a reader.
    """

    def wanted(self) -> bool:
        """Whether anyone listens now (the engine builds no event otherwise)."""

    def publish(self, event: StepEvent, size: int) -> None:
        """Deliver ``event`` (``size``: its payload's bytes, for the readers' budgets)."""


def checked_token(text: object) -> str:
    """``text`` if it can be sent as a token; else ``InvalidInput``."""
    if not isinstance(text, str):
        raise InvalidInput(f"emit_token needs a str, got {type(text).__name__}")
    if len(text) > MAX_TOKEN_CHARS:
        raise InvalidInput(
            f"emit_token got {len(text)} characters; one token may carry at most {MAX_TOKEN_CHARS}"
        )
    return text


def checked_name(name: object) -> str:
    """``name`` if it can name an event; else ``InvalidInput``."""
    if not isinstance(name, str) or not name or len(name) > MAX_EVENT_NAME:
        raise InvalidInput(
            f"an event name must be a str of 1 to {MAX_EVENT_NAME} characters, got {name!r:.80}"
        )
    return name


_pack = msgspec.msgpack.Encoder().encode


def checked_event_size(name: str, data: Any) -> int:
    """The msgpack size of ``data`` (already checked msgpack-safe); ``InvalidInput`` past
    ``MAX_EVENT_BYTES``."""
    size = len(_pack(data))
    if size > MAX_EVENT_BYTES:
        raise InvalidInput(
            f"event {name!r}: data is {size} bytes of msgpack; one event may carry at most "
            f"{MAX_EVENT_BYTES}"
        )
    return size
