"""The context a task reads and writes: msgpack-safe values plus chat history."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from flow._errors import InvalidInput
from flow._events import (
    CustomEvent,
    StepEvents,
    Token,
    checked_event_size,
    checked_name,
    checked_token,
)
from flow._frozen import Frozen

if TYPE_CHECKING:
    from flow._timers import TimerBook

__all__ = ["DEFAULT_MAX_MESSAGES", "ChatHistory", "ChatMessage", "Context", "Role", "check_value"]

Role = Literal["user", "assistant", "system"]
ROLES: frozenset[str] = frozenset(("user", "assistant", "system"))
DEFAULT_MAX_MESSAGES = 1000


def check_value(key: str, value: Any, *, what: str = "context key") -> None:
    """Raise ``InvalidInput`` unless ``value`` is msgpack-safe.

    Safe values: None, bool, int (64-bit), float, str, bytes, list/tuple of safe
    values, dict with str keys and safe values, nested. ``what`` names ``key``
    in the message.
    """
    problem = _find_unsafe(value, key, 0)
    if problem is not None:
        path, bad = problem
        if bad is _TOO_DEEP:
            raise InvalidInput(
                f"{what} {key!r}: value at {path} is nested deeper than "
                f"{MAX_VALUE_DEPTH} lists/dicts, which could not be read back over HTTP"
            )
        raise InvalidInput(
            f"{what} {key!r}: value at {path} has type {type(bad).__name__}, "
            "which cannot be stored (allowed: None, bool, int, float, str, bytes, "
            "list, dict with str keys)"
        )


MAX_VALUE_DEPTH = 64
"""Most lists/dicts a context value may nest: the HTTP API's JSON depth limit, so
that whatever a session holds can always be read back (docs/security.md)."""

_TOO_DEEP = object()


def _find_unsafe(value: Any, path: str, depth: int) -> tuple[str, Any] | None:
    if value is None or isinstance(value, bool | str | bytes | float):
        return None
    if isinstance(value, int):
        if -(2**63) <= value < 2**64:
            return None
        return path, value
    if isinstance(value, list | tuple | dict) and depth >= MAX_VALUE_DEPTH:
        return path, _TOO_DEEP
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = _find_unsafe(item, f"{path}[{i}]", depth + 1)
            if found is not None:
                return found
        return None
    if isinstance(value, dict):
        for k, item in value.items():
            if not isinstance(k, str):
                return f"{path} (key {k!r})", k
            found = _find_unsafe(item, f"{path}[{k!r}]", depth + 1)
            if found is not None:
                return found
        return None
    return path, value


_second_stamp: tuple[int, str] = (-1, "")
"""The last whole second formatted (``YYYY-MM-DDTHH:MM:SS``): shared by every message of it."""


def _now_rfc3339() -> str:
    """The current UTC time as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``."""
    global _second_stamp  # a one-entry cache: swapping the tuple is atomic
    second, nanos = divmod(time.time_ns(), 1_000_000_000)
    cached_second, prefix = _second_stamp
    if cached_second != second:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second_stamp = (second, prefix)
    return f"{prefix}.{nanos // 1000:06d}Z"


class ChatMessage(Frozen, frozen=True, gc=False):
    """One chat message: role, content and a UTC RFC 3339 timestamp."""

    role: Role
    content: str
    timestamp: str
    # The snapshot codec's msgpack bytes of this message, kept once made: a message
    # never changes, and every later snapshot of its session holds it again.
    _packed: bytes | None = None  # a cache: not compared, not shown (``Frozen``)

    def to_dict(self) -> dict[str, str]:
        """Return the plain ``{"role", "content", "timestamp"}`` mapping."""
        return {"role": self.role, "content": self.content, "timestamp": self.timestamp}


class ChatHistory:
    """Chat history that keeps the newest ``max_messages`` messages (None: unbounded).

    ``total`` counts every message ever added, trimmed ones included: the
    session log numbers the whole conversation with it. While a step runs, the
    history also notes what it appended and whether it was cleared (``track``),
    so that the step's log record is made without comparing histories.

    A history decoded from a snapshot (``from_stored``) keeps each message as the
    stored ``(role, content, timestamp)`` tuple (checked when decoded) and makes
    its ``ChatMessage`` only when it is read: a step that only appends never
    builds the messages before it, so waking a long session costs little more
    than waking a short one.
    """

    __slots__ = ("_added", "_cleared_at", "_lazy", "_messages", "max_messages", "total")

    def __init__(
        self,
        messages: list[ChatMessage] | None = None,
        max_messages: int | None = DEFAULT_MAX_MESSAGES,
    ) -> None:
        if max_messages is not None and (
            isinstance(max_messages, bool) or not isinstance(max_messages, int) or max_messages < 1
        ):
            raise InvalidInput(f"max_messages must be an int >= 1 or None, got {max_messages!r}")
        self.max_messages = max_messages
        # ChatMessage, or a stored (role, content, timestamp) tuple not read yet
        self._messages: list[Any] = list(messages or [])
        self._lazy = False
        self.total = len(self._messages)
        self._added: list[ChatMessage] | None = None
        self._cleared_at: int | None = None
        self._trim()

    @classmethod
    def from_stored(
        cls, stored: list[tuple[str, str, str]], max_messages: int | None, total: int
    ) -> ChatHistory:
        """A history of stored ``(role, content, timestamp)`` tuples, already checked
        (the snapshot codec's), each made a ``ChatMessage`` when first read."""
        history = cls.__new__(cls)
        history.max_messages = max_messages
        history._messages = stored
        history._lazy = bool(stored)
        history.total = total
        history._added = None
        history._cleared_at = None
        return history

    def _read(self, start: int = 0) -> list[ChatMessage]:
        """The kept messages from index ``start`` on, made ``ChatMessage`` in place."""
        messages = self._messages
        if self._lazy:
            for i in range(max(0, start if start >= 0 else len(messages) + start), len(messages)):
                item = messages[i]
                if type(item) is tuple:
                    messages[i] = ChatMessage(item[0], item[1], item[2])
            if start == 0 or -start >= len(messages):
                self._lazy = False
        return messages[start:]

    def track(self) -> None:
        """Start noting appended messages and clears (a step's working copy does)."""
        self._added = []
        self._cleared_at = None

    def stop_tracking(self) -> None:
        """Stop noting (the step's record has been made): a live session keeps no list of
        its last step's messages, which the garbage collector would walk."""
        self._added = None
        self._cleared_at = None

    def changes(self) -> tuple[list[ChatMessage], int | None]:
        """The messages appended since ``track`` and how many of them came before the last clear.

        The second value is None when the history was not cleared.
        """
        return list(self._added or ()), self._cleared_at

    def _trim(self) -> None:
        if self.max_messages is not None and len(self._messages) > self.max_messages:
            del self._messages[: len(self._messages) - self.max_messages]

    def add(self, role: Role, content: str) -> ChatMessage:
        """Append a message with the current UTC time; returns it."""
        if role not in ROLES:
            raise InvalidInput(f"chat role must be one of user, assistant, system; got {role!r}")
        if not isinstance(content, str):
            raise InvalidInput(f"chat content must be str, got {type(content).__name__}")
        message = ChatMessage(role, content, _now_rfc3339())
        self._messages.append(message)
        self.total += 1
        if self._added is not None:
            self._added.append(message)
        self._trim()
        return message

    def add_user(self, content: str) -> ChatMessage:
        """Append a user message."""
        return self.add("user", content)

    def add_assistant(self, content: str) -> ChatMessage:
        """Append an assistant message."""
        return self.add("assistant", content)

    def add_system(self, content: str) -> ChatMessage:
        """Append a system message."""
        return self.add("system", content)

    def last_messages(self, n: int) -> list[ChatMessage]:
        """The newest ``n`` messages, oldest first."""
        return self._read(-n) if n > 0 else []

    @property
    def messages(self) -> list[ChatMessage]:
        """A copy of all kept messages, oldest first."""
        return self._read()

    def clear(self) -> None:
        """Remove every message (the session log still holds them)."""
        self._messages.clear()
        self._lazy = False
        if self._added is not None:
            self._cleared_at = len(self._added)

    def copy(self) -> ChatHistory:
        """An independent copy (messages are immutable, so a shallow list copy suffices).

        The copy does not track changes.
        """
        clone = ChatHistory.__new__(ChatHistory)
        clone.max_messages = self.max_messages
        clone._messages = list(self._messages)  # a stored tuple is never changed, only replaced
        clone._lazy = self._lazy
        clone.total = self.total
        clone._added = None
        clone._cleared_at = None
        return clone

    def __len__(self) -> int:
        return len(self._messages)

    def __iter__(self) -> Iterator[ChatMessage]:
        return iter(self._read())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ChatHistory):
            return NotImplemented
        return self.max_messages == other.max_messages and self._read() == other._read()

    def __repr__(self) -> str:
        return f"ChatHistory({len(self._messages)} messages, max={self.max_messages})"


class Context:
    """A task's view of the session's data: string keys to msgpack-safe values.

    ``get`` of a missing key gives the default (None); ``set`` rejects a value that
    could not be snapshotted, naming the key and the type; ``input`` is the current
    step's input (also stored under ``user_input``, graph-flow's convention);
    ``timer`` names the timer that woke this step (None for a step an input made).

    While a step runs, ``emit_token`` and ``emit`` stream partial output to
    whoever watches the session (``Runtime.stream``, SSE); with nobody watching
    they only check their arguments.
    """

    __slots__ = (
        "_chat_history",
        "_cleared",
        "_data",
        "_events",
        "_task",
        "_timers",
        "_touched",
        "input",
        "session_id",
        "timer",
    )

    def __init__(
        self,
        data: dict[str, Any] | None = None,
        chat_history: ChatHistory | None = None,
        *,
        session_id: str | None = None,
    ) -> None:
        self._data: dict[str, Any] = {}
        self._touched: dict[str, bool] | None = None
        self._cleared = False
        for key, value in (data or {}).items():
            self.set(key, value)
        self._chat_history = chat_history if chat_history is not None else ChatHistory()
        self.input: Any = None
        self.session_id = session_id
        self._events: StepEvents | None = None
        self._task = ""
        self.timer: str | None = None
        self._timers: TimerBook | None = None

    @property
    def chat_history(self) -> ChatHistory:
        """The conversation (its newest ``max_messages`` messages; the log keeps them all)."""
        return self._chat_history

    @chat_history.setter
    def chat_history(self, history: ChatHistory) -> None:
        """Replace the conversation (e.g. with a summary): as if the old one were cleared
        and the new one's messages added, so the log numbers them after every message
        so far and a step records the change instead of saving the session whole."""
        if not isinstance(history, ChatHistory):
            raise InvalidInput(f"chat_history must be a ChatHistory, got {type(history).__name__}")
        old = self._chat_history
        if history is old:
            return
        history.total = old.total + len(history._messages)
        if old._added is not None and history.max_messages == old.max_messages:
            history._added = [*old._added, *history._read()]
            history._cleared_at = len(old._added)
        else:
            history._added = None  # not noted: the step saves the session whole
            history._cleared_at = None
        self._chat_history = history

    def emit_token(self, text: str) -> None:
        """Stream ``text`` as partial response text of the running task.

        Never blocks on a slow reader (one that falls behind is dropped).

        Raises:
            InvalidInput: ``text`` is not a str, or longer than ``MAX_TOKEN_CHARS``.
        """
        checked_token(text)
        events = self._events
        if events is not None and events.wanted():
            events.publish(Token(self._task, text), len(text))

    def emit(self, name: str, data: Any = None) -> None:
        """Stream a custom progress event ``name`` carrying ``data`` (msgpack-safe).

        Raises:
            InvalidInput: ``name`` is not a str of 1 to 128 characters, ``data`` is
                not msgpack-safe, or it is larger than ``MAX_EVENT_BYTES`` packed.
        """
        checked_name(name)
        check_value(name, data, what="event")
        size = checked_event_size(name, data)
        events = self._events
        if events is not None and events.wanted():
            events.publish(CustomEvent(self._task, name, _normalized(data)), size)

    def schedule(self, after: timedelta | float, input: Any = None, name: str | None = None) -> str:
        """Fire a timer ``after`` (a timedelta or seconds) from now: a step of its own.

        That step runs the session's current task with ``ctx.timer == name`` and
        ``ctx.input == input``. A timer of the same name is replaced. The timer is
        saved with this step (a failed step sets none). Returns the timer's name
        (a fresh one when ``name`` is None).

        Raises:
            InvalidInput: no step is running, or a bad delay, name or input, or
                the session already holds ``flow._timers.MAX_TIMERS`` timers.
        """
        return self._book().schedule(after, input, name)

    def cancel_schedule(self, name: str) -> bool:
        """Cancel the pending timer ``name``; False if there was none."""
        return self._book().cancel(name)

    def _book(self) -> TimerBook:
        if self._timers is None:
            raise InvalidInput("timers can only be scheduled or cancelled while a step runs")
        return self._timers

    def get(self, key: str, default: Any = None) -> Any:
        """A copy of the value under ``key``, or ``default`` when it is missing.

        Lists and dicts come out as copies (as graph-flow's ``get`` deserializes a
        clone), so a value can only change through ``set``, which checks it.
        """
        if key not in self._data:
            return default
        return _copied(self._data[key])

    def set(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key``; raises ``InvalidInput`` if it is not msgpack-safe.

        Tuples are stored as lists, as a snapshot reads them back: a session reads
        the same whether or not it was passivated in between.
        """
        if not isinstance(key, str):
            raise InvalidInput(f"context keys must be str, got {type(key).__name__}")
        check_value(key, value)
        self._data[key] = _normalized(value)
        if self._touched is not None:
            self._touched.setdefault(key, False)

    def remove(self, key: str) -> Any:
        """Remove ``key``; returns its old value (None when it was missing)."""
        if self._touched is not None:
            self._touched[key] = True
        return self._data.pop(key, None)

    def contains(self, key: str) -> bool:
        """Whether ``key`` is set."""
        return key in self._data

    def keys(self) -> list[str]:
        """The keys, in insertion order."""
        return list(self._data)

    def clear(self) -> None:
        """Remove every key; the chat history is kept (as graph-flow does)."""
        self._data.clear()
        if self._touched is not None:
            self._touched.clear()
            self._cleared = True

    def track(self) -> None:
        """Start noting the keys set and removed, and the history's appends (a step does)."""
        self._touched = {}
        self._cleared = False
        self.chat_history.track()

    def stop_tracking(self) -> None:
        """Stop noting changes (the step's record has been made)."""
        self._touched = None
        self._cleared = False
        self.chat_history.stop_tracking()

    def changes(self) -> tuple[bool, list[str], list[tuple[str, Any, bool]]]:
        """What changed since ``track``: cleared, keys removed, keys set.

        Keys set come in the map's order as ``(key, value, moved)``; ``moved``
        says the key was removed (or cleared) and set again, so that it now
        sits at the end of the map. Costs the number of keys, never the history.
        """
        touched = self._touched or {}
        removed = [k for k in touched if k not in self._data]
        if not touched:
            return self._cleared, removed, []
        data = self._data
        cleared = self._cleared
        set_ = [(k, data[k], cleared or touched[k]) for k in data if k in touched]
        return cleared, removed, set_

    def to_dict(self) -> dict[str, Any]:
        """A deep copy of the plain key → value map."""
        return copy.deepcopy(self._data)

    def copy(self) -> Context:
        """An independent copy (data and chat history), keeping ``input``.

        The key map is copied, its values are shared: a stored value is never
        changed in place (``set`` stores a copy of what it is given, and every
        read hands out a copy of a container), so the two contexts cannot see
        each other's changes.
        """
        clone = Context.__new__(Context)
        clone._data = dict(self._data)
        clone._touched = None
        clone._cleared = False
        clone._chat_history = self._chat_history.copy()
        clone.input = self.input
        clone.session_id = self.session_id
        clone._events = self._events
        clone._task = self._task
        clone.timer = None
        clone._timers = None
        return clone

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __getitem__(self, key: str) -> Any:
        return _copied(self._data[key])

    def __setitem__(self, key: str, value: Any) -> None:
        self.set(key, value)

    def __len__(self) -> int:
        return len(self._data)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Context):
            return NotImplemented
        return _same(self._data, other._data) and self.chat_history == other.chat_history

    def __repr__(self) -> str:
        return f"Context(keys={self.keys()!r}, history={len(self.chat_history)})"


def _copied(value: Any) -> Any:
    """A deep copy of a container value; scalars are immutable and returned as is."""
    return copy.deepcopy(value) if isinstance(value, list | dict | tuple) else value


def _normalized(value: Any) -> Any:
    """A deep copy of ``value`` with every tuple turned into a list (msgpack's reading)."""
    if isinstance(value, list | tuple):
        return [_normalized(item) for item in value]
    if isinstance(value, dict):
        return {k: _normalized(item) for k, item in value.items()}
    return value


def _same(a: Any, b: Any) -> bool:
    """Equality that treats NaN as equal to itself (for round-trip checks)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b) and type(a) is type(b)
