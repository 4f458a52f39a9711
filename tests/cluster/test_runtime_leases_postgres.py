"""Two in-process runtimes on one PostgreSQL database (``RuntimeConfig(store="postgresql://...")``):
a session is live in one of them at a time, and moves once passivated."""

from __future__ import annotations

from pathlib import Path

import pytest
from testkit import wait_until

from flow.demo import echo
from flow.stores._lease import LeaseHeldElsewhere
from runtime import Runtime, RuntimeConfig, StoreUnavailable

pytestmark = pytest.mark.postgres


def open_node(tmp_path: Path, url: str, name: str) -> Runtime:
    config = RuntimeConfig(store=url, node_id=name, advertise=f"http://{name}", lease_ttl=5.0)
    return Runtime.open(data_dir=tmp_path / name, graphs=[echo], config=config)


def test_a_session_is_live_in_one_runtime_and_moves_after_passivation(
    tmp_path: Path, postgres_url: str
) -> None:
    with open_node(tmp_path, postgres_url, "a") as a, open_node(tmp_path, postgres_url, "b") as b:
        assert a.cluster is not None
        sid = a.create_session("echo", owner="u")
        assert a.step(sid, "one").response == "echo: one"
        with pytest.raises(LeaseHeldElsewhere) as info:
            b.step(sid, "two")
        assert isinstance(info.value, StoreUnavailable)
        assert (info.value.holder.node_id, info.value.holder.advertise) == ("a", "http://a")
        assert a.passivate(sid) is True

        def step_on_b() -> bool:
            try:
                b.step(sid, "two")
            except LeaseHeldElsewhere:
                return False  # a releases the lease at its next renewal
            return True

        wait_until(step_on_b, timeout=20, what="the session served by b")
        session = b.get_session(sid)
        assert [m["content"] for m in session.chat_history if m["role"] == "user"] == ["one", "two"]
        assert session.revision == 2
