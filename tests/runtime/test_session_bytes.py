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


def test_a_refused_keyed_step_leaves_no_key_behind(tmp_path: Path) -> None:
    with open_test_runtime(tmp_path, max_session_bytes=LIMIT) as rt:
        sid = rt.create_session("echo", owner="alice")
        refused_key = None
        for n in range(10):
            try:
                rt.step(sid, CHUNK, owner="alice", request_id=f"k{n}")
            except SessionTooLarge:
                refused_key = f"k{n}"
                break
        assert refused_key is not None

        # the key of the refused step was never remembered: new input under it runs
        result = rt.step(sid, "small", owner="alice", request_id=refused_key)
        assert result.response == "echo: small"
        assert result.replayed is False


def test_a_steps_record_is_encoded_once_for_the_size_guard_and_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flow._record

    packers = []
    real = flow._record._packer

    def counted() -> object:
        packers.append(1)
        return real()

    with open_test_runtime(tmp_path, max_session_bytes=LIMIT) as rt:
        sid = rt.create_session("echo", owner="alice")
        rt.step(sid, "warm up", owner="alice")  # the guard measures the whole session once
        monkeypatch.setattr(flow._record, "_packer", counted)
        rt.step(sid, "hello", owner="alice", request_id="k")
        rt.step(sid, "again", owner="alice")
        assert rt.revisions(sid, owner="alice", limit=1)[0].input == "again"

    assert len(packers) == 2  # one encoding per step's record
