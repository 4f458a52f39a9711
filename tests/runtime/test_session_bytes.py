"""max_session_bytes: a step whose session would pass the cap fails and changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime import SessionView
from runtime.errors import InvalidInput, SessionTooLarge
from runtime.testing import open_test_runtime

LIMIT = 64 * 1024
CHUNK = "x" * (20 * 1024)


def _same_state(a: SessionView, b: SessionView) -> bool:
    return (a.revision, a.context, a.chat_history) == (b.revision, b.context, b.chat_history)


def test_a_step_past_max_session_bytes_fails_and_leaves_the_session_as_it_was(
    tmp_path: Path,
) -> None:
    with open_test_runtime(tmp_path, max_session_bytes=LIMIT) as rt:
        sid = rt.create_session("echo", owner="alice")
        other = rt.create_session("echo", owner="bob")
        accepted = 0
        refused: SessionTooLarge | None = None
        while refused is None and accepted < 10:  # input and echo: each step adds 2 * CHUNK
            try:
                rt.step(sid, CHUNK, owner="alice")
                accepted += 1
            except SessionTooLarge as exc:
                refused = exc
        assert isinstance(refused, InvalidInput)
        assert "max_session_bytes" in str(refused)
        assert 1 <= accepted < 4
        before = rt.get_session(sid, owner="alice")
        assert before.revision == accepted
        with pytest.raises(SessionTooLarge):
            rt.step(sid, CHUNK, owner="alice")
        after = rt.get_session(sid, owner="alice")
        assert _same_state(before, after)
        assert rt.revisions(sid, owner="alice", limit=1)[0].revision == accepted
        # a small step still fits, and another user's session is untouched by all this
        assert rt.step(sid, "small", owner="alice").response is not None
        assert rt.step(other, CHUNK, owner="bob").response is not None


def test_max_session_bytes_must_be_positive(tmp_path: Path) -> None:
    with (
        pytest.raises(InvalidInput, match="max_session_bytes"),
        open_test_runtime(tmp_path, max_session_bytes=0),
    ):
        pass
