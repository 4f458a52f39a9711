"""Idempotency keys in process: a retried step with a known key never runs twice."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from runtime_helpers import FlakyStore, counting_graph, wait_until

from flow import SnapshotDecodeError, decode, encode
from flow._idempotency import MAX_KEYS
from runtime import (
    IdempotencyKeyReused,
    InvalidInput,
    Runtime,
    StepResult,
    StoreUnavailable,
    TaskFailed,
)
from runtime.testing import wait_passivated

OpenRuntime = Callable[..., Runtime]


def count_of(rt: Runtime, sid: str) -> int:
    return int(rt.get_session(sid).context.get("count", 0))


def test_a_retry_with_a_committed_key_gets_the_recorded_result_without_running(
    open_runtime: OpenRuntime,
) -> None:
    rt = open_runtime([counting_graph("counter", blocking=False)])
    sid = rt.create_session("counter", owner="u")
    first = rt.step(sid, "a", request_id="k1")
    again = rt.step(sid, "a", request_id="k1")
    assert count_of(rt, sid) == 1
    assert again == first
    assert (first.replayed, again.replayed) == (False, True)
    assert rt.step(sid, "b", request_id="k2").revision == 2
    assert rt.step(sid, "a", request_id="k1").revision == 1  # still the first step's answer
    assert count_of(rt, sid) == 2


def test_sixteen_threads_sending_one_key_at_once_make_one_run_and_sixteen_equal_results(
    open_runtime: OpenRuntime,
) -> None:
    gate = threading.Event()
    rt = open_runtime([counting_graph("gated", gate=gate)])
    sid = rt.create_session("gated", owner="u")
    start = threading.Barrier(16)

    def send() -> StepResult:
        start.wait(10)
        return rt.step(sid, "once", request_id="same-key")

    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(send) for _ in range(16)]
        wait_until(lambda: rt.inspect(sid)["pending"] == 16)  # all queued or running
        gate.set()
        results = [f.result(timeout=30) for f in futures]
    assert count_of(rt, sid) == 1
    assert rt.get_session(sid).context["log"] == ["once"]
    assert all(r == results[0] for r in results)
    assert sorted(r.replayed for r in results) == [False] + [True] * 15


def test_the_same_key_with_another_input_or_mode_is_refused_and_runs_nothing(
    open_runtime: OpenRuntime,
) -> None:
    rt = open_runtime([counting_graph("counter", blocking=False)])
    sid = rt.create_session("counter", owner="u")
    rt.step(sid, "a", request_id="k")
    with pytest.raises(IdempotencyKeyReused) as info:
        rt.step(sid, "b", request_id="k")
    assert isinstance(info.value, InvalidInput)
    assert "'k'" in str(info.value)
    with pytest.raises(IdempotencyKeyReused):
        rt.step(sid, "a", mode="run", request_id="k")
    assert count_of(rt, sid) == 1


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "a\nb"])
def test_a_malformed_key_is_invalid_input(open_runtime: OpenRuntime, key: str) -> None:
    rt = open_runtime([counting_graph("counter", blocking=False)])
    sid = rt.create_session("counter", owner="u")
    with pytest.raises(InvalidInput, match="idempotency key"):
        rt.step(sid, "a", request_id=key)
    assert count_of(rt, sid) == 0


def test_a_failed_step_is_not_remembered_and_its_retry_runs(open_runtime: OpenRuntime) -> None:
    rt = open_runtime([counting_graph("counter", blocking=False)])
    sid = rt.create_session("counter", owner="u")
    with pytest.raises(TaskFailed):
        rt.step(sid, "boom", request_id="k")
    with pytest.raises(TaskFailed):
        rt.step(sid, "boom", request_id="k")  # ran again: nothing was committed
    assert rt.step(sid, "fine", request_id="k2").replayed is False
    assert count_of(rt, sid) == 1


def test_a_step_whose_commit_failed_runs_again_on_retry(
    open_runtime: OpenRuntime, tmp_path: Path
) -> None:
    store = FlakyStore(tmp_path / "flaky.db")
    rt = open_runtime([counting_graph("counter", blocking=False)], store=store)
    sid = rt.create_session("counter", owner="u")
    store.fail_saves(1)
    with pytest.raises(StoreUnavailable):
        rt.step(sid, "a", request_id="k")
    retried = rt.step(sid, "a", request_id="k")
    assert retried.replayed is False
    assert count_of(rt, sid) == 1
    assert rt.step(sid, "a", request_id="k").replayed is True
    store.inner.close()


@pytest.mark.parametrize("durability", ["fsync", "passivate"])
def test_keys_survive_passivation_and_a_restart(open_runtime: OpenRuntime, durability: str) -> None:
    rt = open_runtime([counting_graph("counter", blocking=False)], durability=durability)
    sid = rt.create_session("counter", owner="u")
    first = rt.step(sid, "a", request_id="k1")
    rt.step(sid, "b", request_id="k2")
    assert rt.passivate(sid)
    wait_passivated(rt, sid, 10)
    assert rt.step(sid, "a", request_id="k1") == first
    rt.close()
    rt = open_runtime([counting_graph("counter", blocking=False)], durability=durability)
    again = rt.step(sid, "a", request_id="k1")
    assert (again, again.replayed) == (first, True)
    with pytest.raises(IdempotencyKeyReused):
        rt.step(sid, "other", request_id="k2")
    assert count_of(rt, sid) == 2


def test_the_table_keeps_the_last_keys_and_is_rebuilt_from_base_and_records(
    open_runtime: OpenRuntime,
) -> None:
    rt = open_runtime([counting_graph("counter", blocking=False)])
    sid = rt.create_session("counter", owner="u")
    steps = MAX_KEYS + 40
    for n in range(steps):
        rt.step(sid, n, request_id=f"k{n}")
    rt.store.flush()
    rt.close()
    rt = open_runtime([counting_graph("counter", blocking=False)])
    newest = rt.step(sid, steps - 1, request_id=f"k{steps - 1}")
    oldest_kept = rt.step(sid, 40, request_id="k40")
    assert (newest.replayed, newest.revision) == (True, steps)
    assert (oldest_kept.replayed, oldest_kept.revision) == (True, 41)
    assert count_of(rt, sid) == steps
    forgotten = rt.step(sid, 39, request_id="k39")  # the 257th newest: runs again
    assert forgotten.replayed is False
    assert count_of(rt, sid) == steps + 1


def test_a_key_is_never_remembered_beyond_the_history_retention(
    open_runtime: OpenRuntime,
) -> None:
    rt = open_runtime([counting_graph("counter", blocking=False)], history_retention="3")
    sid = rt.create_session("counter", owner="u")
    rt.step(sid, "a", request_id="old")
    for n in range(3):
        rt.step(sid, n)
    assert rt.step(sid, "a", request_id="old").replayed is False  # outside 3 revisions
    assert count_of(rt, sid) == 5


def test_the_key_table_is_in_the_snapshot_and_a_fork_starts_without_keys(
    open_runtime: OpenRuntime,
) -> None:
    rt = open_runtime([counting_graph("counter", blocking=False)])
    sid = rt.create_session("counter", owner="u")
    rt.step(sid, "a", request_id="k")
    assert rt.passivate(sid)
    wait_passivated(rt, sid, 10)
    stored = rt.store.load(sid)
    assert stored is not None
    assert stored.keys is not None
    assert [e.key for e in stored.keys] == ["k"]
    assert decode(encode(stored)).keys is not None
    fork = rt.fork(sid)
    assert rt.step(fork, "a", request_id="k").replayed is False
    assert count_of(rt, sid) == 1


def test_a_snapshot_with_a_malformed_key_table_is_a_decode_error(
    open_runtime: OpenRuntime,
) -> None:
    rt = open_runtime([counting_graph("counter", blocking=False)])
    sid = rt.create_session("counter", owner="u")
    rt.step(sid, "a", request_id="k")
    session = rt.store.load(sid)
    assert session is not None
    assert session.keys is not None
    raw = encode(session).replace(b"\xa1k", b"\xc0\xc0", 1)  # the key is now nil
    with pytest.raises(SnapshotDecodeError):
        decode(raw)
