"""Thread ownership of actor fields: the rule, and a debug-mode check of it.

The rule (Erlang's and Akka's): an actor's fields are read and written only
inside its own turn, on whichever dispatcher worker runs that turn. Every other
thread (the store writer, the store pool, the task pool, the event loop, the
timer thread) either sends the actor a message or calls a free function over
objects that are thread-safe by construction: a caller's reply, the live
index, the counters, an actor ref.

`DispatcherActor._dispatch_turn` records which actor the current thread is
running (`turn_begins` / `turn_ends`). With checks enabled (`enable_checks`,
done by the test suite's conftest), every read or write of an owned field of
an `Owned` actor outside that actor's turn raises `OwnershipError` and is
recorded in `violations()`, so a violation on a thread whose exceptions are
swallowed (a future's callback) still fails the test that caused it.

Checks cost an attribute hook per field access, so they are off by default.
The fields pykka and the dispatcher share across threads by design
(`SHARED_FIELDS`) are exempt; an actor's ownership begins with its first turn
(its constructor runs on the spawning thread).
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = [
    "SHARED_FIELDS",
    "Owned",
    "OwnershipError",
    "checks_enabled",
    "clear_violations",
    "current_actor",
    "enable_checks",
    "turn_begins",
    "turn_ends",
    "violations",
]

_turn = threading.local()
_violations: list[str] = []
_violations_lock = threading.Lock()
_enabled = False

#: Fields of ``pykka.Actor`` and `DispatcherActor` that other threads may touch.
SHARED_FIELDS = frozenset(
    {
        "_actor_ref",
        "_dispatcher",
        "_dispatch_started",
        "_dispatch_halt",
        "_owned_armed",
    }
)


class OwnershipError(AssertionError):
    """An actor field was touched outside the actor's own turn."""


def current_actor() -> object | None:
    """The actor whose turn the calling thread is running, or None."""
    return getattr(_turn, "actor", None)


def turn_begins(actor: object) -> object | None:
    """Mark the calling thread as running ``actor``'s turn; returns the previous actor."""
    previous = getattr(_turn, "actor", None)
    _turn.actor = actor
    if _enabled:
        object.__setattr__(actor, "_owned_armed", True)
    return previous


def turn_ends(previous: object | None) -> None:
    """End the turn begun by `turn_begins` (``previous`` is what it returned)."""
    _turn.actor = previous


def violations() -> list[str]:
    """Every ownership violation recorded since `clear_violations`."""
    with _violations_lock:
        return list(_violations)


def clear_violations() -> None:
    """Forget recorded violations (a test fixture calls this before each test)."""
    with _violations_lock:
        _violations.clear()


def checks_enabled() -> bool:
    """Whether `enable_checks` has been called."""
    return _enabled


def _check(actor: object, name: str, verb: str) -> None:
    if name in SHARED_FIELDS or name[:1] != "_" or name[:2] == "__":
        return
    fields = object.__getattribute__(actor, "__dict__")
    if name not in fields or not fields.get("_owned_armed"):
        return  # a method, a class attribute, or an actor before its first turn
    if getattr(_turn, "actor", None) is actor:
        return
    what = (
        f"{verb} {type(actor).__name__}.{name} on thread {threading.current_thread().name!r}, "
        "outside the actor's turn"
    )
    with _violations_lock:
        _violations.append(what)
    raise OwnershipError(what)


def _checked_getattribute(self: Any, name: str) -> Any:
    _check(self, name, "read")
    return object.__getattribute__(self, name)


def _checked_setattr(self: Any, name: str, value: Any) -> None:
    _check(self, name, "wrote")
    object.__setattr__(self, name, value)


class Owned:
    """Mixin for actors whose fields `enable_checks` guards."""


def enable_checks() -> None:
    """Check every field access of `Owned` actors from now on (tests; not reversible)."""
    global _enabled
    _enabled = True
    Owned.__getattribute__ = _checked_getattribute  # type: ignore[method-assign]
    Owned.__setattr__ = _checked_setattr  # type: ignore[method-assign]
