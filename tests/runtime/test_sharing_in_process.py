"""Sharing in process: members are a revision of the session log, read back after
passivation and reopening, and checked on every request, live or stored."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from flow import SessionNotFound
from flow._record import encode_record
from flow._sharing import shared
from runtime import Runtime
from runtime.testing import wait_passivated


def test_members_are_one_revision_kept_across_passivation_and_reopening(
    open_runtime: Callable[..., Runtime],
) -> None:
    rt = open_runtime()
    sid = rt.create_session("echo", owner="alice")
    rt.step(sid, "hi", owner="alice")
    assert rt.share(sid, "bob", "write", owner="alice") == {"bob": "write"}
    [newest, *_] = rt.revisions(sid)
    assert newest.revision == 2
    assert newest.input is None
    assert newest.response is None
    assert rt.get_session(sid, owner="bob").context["count"] == 1  # unchanged state
    assert rt.passivate(sid)
    wait_passivated(rt, sid)
    assert rt.step(sid, "from bob", owner="bob").revision == 3  # checked at activation
    rt.close()
    reopened = open_runtime()
    assert reopened.get_session(sid, owner="bob").metadata.members == {"bob": "write"}
    reopened.unshare(sid, "bob")  # owner None: the host app (or an admin) may
    with pytest.raises(SessionNotFound):
        reopened.step(sid, "again", owner="bob")
    with pytest.raises(SessionNotFound):
        reopened.get_session(sid, owner="bob")


def test_a_membership_change_costs_the_same_on_a_long_session(
    open_runtime: Callable[..., Runtime],
) -> None:
    rt = open_runtime()
    short = rt.create_session("echo", owner="alice")
    long = rt.create_session("echo", owner="alice")
    for i in range(300):
        rt.step(long, f"message {i} " + "x" * 50, owner="alice")
    records = []
    for sid in (short, long):
        session = rt.store.load(sid)
        assert session is not None
        made = shared(session, "bob", "read", now=1.0)
        assert made is not None
        assert made[0].record is not None
        records.append(len(encode_record(made[0].record)))
        rt.share(sid, "bob", "read", owner="alice")
        [newest, *_] = rt.revisions(sid)
        assert newest.kind == "step"  # appended to the log, never a whole rewrite
    # a few bytes more for the long one's larger counters and times, never its 600 messages
    assert records[1] - records[0] < 32
    assert records[1] < 200


def test_only_the_owner_shares_and_a_reader_cannot_step(
    open_runtime: Callable[..., Runtime],
) -> None:
    rt = open_runtime()
    sid = rt.create_session("echo", owner="alice")
    rt.share(sid, "bob", "read", owner="alice")
    with pytest.raises(SessionNotFound):
        rt.share(sid, "carol", "read", owner="bob")
    with pytest.raises(SessionNotFound):
        rt.step(sid, "x", owner="bob")
    with pytest.raises(SessionNotFound):
        rt.delete_session(sid, owner="bob")
    assert rt.get_session(sid, owner="bob").revision == 1
