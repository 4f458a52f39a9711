"""Fixtures for the flow tests: sessions built directly, without a graph."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from flow._context import Context
from flow._session import Session, SessionMetadata, SessionStatus, new_session_id


def build_session(
    session_id: str | None = None,
    *,
    owner: str = "alice",
    revision: int = 0,
    expires_at: float | None = None,
    data: dict[str, Any] | None = None,
) -> Session:
    """A waiting session of graph ``g`` with a little context and chat history."""
    context = Context(data if data is not None else {"count": revision, "note": "héllo"})
    context.chat_history.add_user("hello")
    context.chat_history.add_assistant(f"echo: hello #{revision}")
    now = time.time()
    return Session(
        session_id=session_id or new_session_id(),
        graph_id="g",
        graph_version="v1",
        current_task="echo",
        status=SessionStatus.WAITING_FOR_INPUT,
        context=context,
        metadata=SessionMetadata(owner, now, now, revision, "127.0.0.1", expires_at),
        revision=revision,
    )


@pytest.fixture
def make_session() -> Callable[..., Session]:
    """A factory of sessions: ``make_session(id, owner=..., revision=..., expires_at=...)``."""
    return build_session
