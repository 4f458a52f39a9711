"""max_sessions_per_user: creating or forking past it fails; other owners are not counted."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.errors import InvalidInput, SessionQuotaExceeded
from runtime.testing import open_test_runtime


def test_creating_past_max_sessions_per_user_fails_until_one_is_deleted(tmp_path: Path) -> None:
    with open_test_runtime(tmp_path, max_sessions_per_user=3) as rt:
        mine = [rt.create_session("echo", owner="alice") for _ in range(3)]
        with pytest.raises(SessionQuotaExceeded, match="max_sessions_per_user 3"):
            rt.create_session("echo", owner="alice")
        with pytest.raises(SessionQuotaExceeded):
            rt.fork(mine[0], owner="alice")
        assert len(rt.list_sessions("alice").items) == 3
        assert rt.create_session("echo", owner="bob")  # another user is not alice's quota
        rt.delete_session(mine[0], owner="alice")
        assert rt.fork(mine[1], owner="alice")
        with pytest.raises(SessionQuotaExceeded):
            rt.create_session("echo", owner="alice")


def test_the_count_is_seeded_from_the_store(tmp_path: Path) -> None:
    with open_test_runtime(tmp_path) as rt:
        for _ in range(2):
            rt.create_session("echo", owner="alice")
    with (
        open_test_runtime(tmp_path, max_sessions_per_user=2) as rt,
        pytest.raises(SessionQuotaExceeded),
    ):
        rt.create_session("echo", owner="alice")


def test_max_sessions_per_user_must_not_be_negative(tmp_path: Path) -> None:
    with (
        pytest.raises(InvalidInput, match="max_sessions_per_user"),
        open_test_runtime(tmp_path, max_sessions_per_user=-1),
    ):
        pass
