"""The one error table: every actorflow error maps to its documented status and type."""

from __future__ import annotations

import msgspec
import pytest

from flow import (
    ActorflowError,
    GraphNotFound,
    GraphVersionUnavailable,
    InvalidInput,
    MigrationFailed,
    RevisionConflict,
    RuntimeClosed,
    SessionBusy,
    SessionCompleted,
    SessionNotFound,
    StepTimeout,
    StoreUnavailable,
    TaskFailed,
    TaskNotFound,
)
from runtime.daemon._problems import TYPE_PREFIX, problem_for_error


@pytest.mark.parametrize(
    ("error", "status", "slug"),
    [
        (InvalidInput("bad"), 422, "invalid-request"),
        (SessionNotFound("s1"), 404, "session-not-found"),
        (GraphNotFound("g"), 404, "graph-not-found"),
        (GraphVersionUnavailable("s1", "g", "1", ["2"]), 409, "graph-version-unavailable"),
        (MigrationFailed("s1", "g", "1", ["2"], "raised"), 409, "graph-version-unavailable"),
        (SessionBusy("s1"), 409, "session-busy"),
        (SessionBusy("s1", mailbox_full=True), 429, "mailbox-full"),
        (SessionCompleted("s1"), 409, "session-completed"),
        (TaskFailed("t", ValueError("x"), "s1"), 500, "task-failed"),
        (TaskNotFound("t", "g"), 500, "task-failed"),
        (StepTimeout("s1", 1.5), 504, "step-timeout"),
        (StoreUnavailable("down"), 503, "store-unavailable"),
        (RevisionConflict("s1", 1, 2), 503, "store-unavailable"),
        (RuntimeClosed("closed"), 503, "runtime-closed"),
        (ActorflowError("something new"), 500, "internal-error"),
    ],
)
def test_error_maps_to_its_status_and_type(error: ActorflowError, status: int, slug: str) -> None:
    problem = problem_for_error(error, session_id="from-path")
    assert problem.status == status
    assert problem.type == TYPE_PREFIX + slug
    body = msgspec.json.decode(problem.body())
    assert body["status"] == status
    assert body["type"].endswith(slug)
    assert body["title"]
    assert body["detail"]
    assert problem.response_headers()["content-type"] == "application/problem+json"


def test_session_id_comes_from_the_error_before_the_path() -> None:
    assert problem_for_error(SessionNotFound("own"), "path").session_id == "own"
    assert problem_for_error(StoreUnavailable("x"), "path").session_id == "path"


def test_busy_errors_say_whether_the_mailbox_was_full() -> None:
    full = msgspec.json.decode(problem_for_error(SessionBusy("s", mailbox_full=True)).body())
    assert full["mailbox_full"] is True
    running = msgspec.json.decode(problem_for_error(SessionBusy("s")).body())
    assert running["mailbox_full"] is False


def test_retryable_statuses_carry_retry_after() -> None:
    for error in (SessionBusy("s", mailbox_full=True), StoreUnavailable("x"), RuntimeClosed()):
        assert int(problem_for_error(error).response_headers()["retry-after"]) >= 1
    assert "retry-after" not in problem_for_error(SessionNotFound("s")).response_headers()
