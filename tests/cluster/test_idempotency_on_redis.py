"""Idempotency keys with Redis: a retry reaching another runtime after the session moved
there is answered from the key table the session's log rebuilt, not run again."""

from __future__ import annotations

from pathlib import Path

import pytest
from testkit import wait_until

from flow.demo import echo
from flow.stores._lease import LeaseHeldElsewhere
from runtime import IdempotencyKeyReused, Runtime, RuntimeConfig, StepResult

pytestmark = pytest.mark.redis


def open_node(tmp_path: Path, redis_url: str, name: str) -> Runtime:
    config = RuntimeConfig(store=redis_url, node_id=name, advertise=f"http://{name}", lease_ttl=1.0)
    return Runtime.open(data_dir=tmp_path / name, graphs=[echo], config=config)


def test_a_retry_on_the_runtime_the_session_moved_to_is_replayed(
    tmp_path: Path, redis_url: str
) -> None:
    with (
        open_node(tmp_path, redis_url, "a") as a,
        open_node(tmp_path, redis_url, "b") as b,
    ):
        sid = a.create_session("echo", owner="u")
        first = a.step(sid, "one", request_id="moving-key")
        for n in range(3):
            a.step(sid, f"later {n}", request_id=f"later-{n}")
        assert a.passivate(sid) is True
        replies: list[StepResult] = []

        def retry_on_b() -> bool:
            try:
                replies.append(b.step(sid, "one", request_id="moving-key"))
            except LeaseHeldElsewhere:
                return False  # a has not released the lease yet
            return True

        wait_until(retry_on_b)
        with pytest.raises(IdempotencyKeyReused):
            b.step(sid, "two", request_id="later-2")
        view = b.get_session(sid)
    assert replies == [first]
    assert replies[0].replayed is True
    assert view.context["count"] == 4
    assert view.revision == 4
