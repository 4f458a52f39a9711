"""Two in-process runtimes on one Redis: one's expiry sweep never deletes a session the
other holds live and keeps refreshing (each daemon on a shared store runs the sweep)."""

from __future__ import annotations

from pathlib import Path

import pytest
from testkit import wait_until

from flow.demo import echo
from runtime import Runtime, RuntimeConfig, SessionNotFound
from runtime.testing import ManualClock

pytestmark = pytest.mark.redis

TTL = 3600.0


def open_node(tmp_path: Path, redis_url: str, name: str, clock: ManualClock) -> Runtime:
    config = RuntimeConfig(
        store=redis_url,
        node_id=name,
        advertise=f"http://{name}",
        lease_ttl=2.0,
        session_ttl=TTL,
        clock=clock,
    )
    return Runtime.open(data_dir=tmp_path / name, graphs=[echo], config=config)


def test_a_sweep_on_another_daemon_keeps_a_session_live_here_and_deletes_it_once_idle(
    tmp_path: Path, redis_url: str
) -> None:
    a_clock, b_clock = ManualClock(), ManualClock()
    with (
        open_node(tmp_path, redis_url, "a", a_clock) as a,
        open_node(tmp_path, redis_url, "b", b_clock) as b,
    ):
        sid = a.create_session("echo", owner="u")
        a.step(sid, "one")
        # b's clock runs past the session's expiry: by b, the stored session expired
        b_clock.advance(TTL + 60)
        b.sweep_now()
        # a holds it live: b's sweep left it, and a's next step commits
        assert a.step(sid, "two").response == "echo: two"
        assert a.get_session(sid).context["count"] == 2

        # refreshed by a's clock since: still not expired for b's sweep
        a_clock.advance(TTL - 1)
        a.step(sid, "three")
        assert a.passivate(sid) is True
        b_clock.advance(1)  # b: a little past a's first expiry, before the refreshed one
        b.sweep_now()
        a.step(sid, "four")
        assert a.get_session(sid).context["count"] == 4

        # idle past its expiry by everyone's clock: b's sweep deletes it once a has
        # released the lease (at its next renewal)
        assert a.passivate(sid) is True
        b_clock.advance(2 * TTL)

        def deleted() -> bool:
            b.sweep_now()
            return sid not in {s.session_id for s in b.list_sessions(None).items}

        wait_until(deleted, what="b's sweep deleting the idle, expired session")
        with pytest.raises(SessionNotFound):
            a.step(sid, "five")
