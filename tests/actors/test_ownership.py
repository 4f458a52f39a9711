"""Thread ownership: an actor's fields are touched only in its turn (checked in tests).

The suite's conftest enables the debug-mode check; these tests show it catches
an off-turn access, and the pure pieces of the supervisor (sweep decisions,
restart intensity) behave as their docstrings say.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

import pytest
from actor_helpers import Harness

from actors import LiveEntry, Settings
from actors._ownership import (
    OwnershipError,
    checks_enabled,
    clear_violations,
    current_actor,
    violations,
)
from actors._restarts import RestartIntensity
from actors._sweeps import expired_and_unused, idle_passivations, still_idle

MakeHarness = Callable[..., Harness]


@pytest.fixture
def _expect_violation() -> Iterator[None]:
    """This test provokes a violation on purpose: forget it before the suite's check."""
    yield
    clear_violations()


@pytest.mark.usefixtures("_expect_violation")
def test_reading_a_session_actors_field_off_its_turn_raises_and_is_recorded(
    make_harness: MakeHarness,
) -> None:
    assert checks_enabled()
    harness = make_harness()
    sid = harness.create()
    harness.step(sid, "hello")
    entry = harness.index.get(sid)
    assert entry is not None
    assert entry.ref is not None
    actor = entry.ref._actor_weakref()  # the actor object itself, only to provoke the check
    with pytest.raises(OwnershipError, match=r"SessionActor\._session"):
        actor._session  # noqa: B018
    with pytest.raises(OwnershipError, match=r"wrote SessionActor\._dirty"):
        actor._dirty = True
    assert any("SessionActor._session" in v for v in violations())
    assert current_actor() is None


@pytest.mark.usefixtures("_expect_violation")
def test_an_off_turn_access_on_another_thread_is_recorded_even_if_swallowed(
    make_harness: MakeHarness,
) -> None:
    harness = make_harness()
    harness.step(harness.create(), "hello")  # the supervisor has had a turn: it is armed
    actor = harness.supervisor._actor_weakref()

    def touch() -> None:
        with contextlib.suppress(OwnershipError):  # as a future's callback would swallow it
            actor._loading  # noqa: B018

    thread = threading.Thread(target=touch)
    thread.start()
    thread.join(5)
    assert any("SupervisorActor._loading" in v for v in violations())


def _entry(sid: str, *, last_used: float, status: str = "waiting_for_input") -> LiveEntry:
    return LiveEntry(
        session_id=sid,
        incarnation=1,
        owner="o",
        graph_id="g",
        last_used=last_used,
        status=status,
        current_task="t",
        revision=1,
        request_count=1,
        expires_at=1000.0,
        activated_at=0.0,
        reason="test",
    )


def test_idle_passivations_pick_completed_waiting_and_idle_sessions_with_their_reason() -> None:
    settings = Settings(idle_timeout=100.0, wait_timeout=10.0)
    entries = [
        _entry("done", last_used=99.0, status="completed"),
        _entry("waited", last_used=50.0),
        _entry("fresh", last_used=95.0),
        _entry("idle", last_used=0.0, status="running"),
        _entry("busy", last_used=50.0, status="running"),
    ]
    decisions = idle_passivations(entries, 101.0, settings)
    assert [(d.session_id, d.reason) for d in decisions] == [
        ("done", "completed"),
        ("waited", "waiting for input"),
        ("idle", "idle"),
    ]


def test_a_removal_condition_fails_once_a_request_lands() -> None:
    entry = _entry("s", last_used=5.0)
    assert still_idle(5.0, entry)
    assert expired_and_unused(2000.0, entry)
    entry.pending = 1  # a step was sent under the lock
    assert not still_idle(5.0, entry)
    assert not expired_and_unused(2000.0, entry)
    entry.pending = 0
    entry.expires_at = 3000.0  # the step refreshed the expiry
    assert not expired_and_unused(2000.0, entry)
    entry.last_used = 6.0
    assert not still_idle(5.0, entry)


def test_restart_intensity_allows_max_restarts_per_window_then_refuses() -> None:
    limit = RestartIntensity(max_restarts=2, window=10.0)
    assert limit.allow("s", 0.0) == (True, 1)
    assert limit.allow("s", 1.0) == (True, 2)
    assert limit.allow("other", 1.0) == (True, 1)
    assert limit.allow("s", 2.0) == (False, 2)
    assert limit.allow("s", 3.0) == (True, 1)  # a refusal forgets the history
    assert limit.allow("s", 20.0) == (True, 1)  # the old crash left the window
    assert RestartIntensity(max_restarts=0, window=10.0).allow("s", 0.0) == (False, 0)
