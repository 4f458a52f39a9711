"""No lost updates on one session, and isolation between sessions."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

from runtime_helpers import counting_graph

from runtime import AsyncRuntime, Runtime, RuntimeConfig


def _hammer(rt: Runtime, sid: str, threads: int, steps: int) -> dict[int, list[int]]:
    """``threads`` threads each send ``steps`` inputs ``"t<i>-<n>"``; revisions per thread."""
    start = threading.Barrier(threads)
    revisions: dict[int, list[int]] = {}
    errors: list[BaseException] = []

    def client(i: int) -> None:
        start.wait()
        mine = []
        try:
            for n in range(steps):
                mine.append(rt.step(sid, f"t{i}-{n}").revision)
        except BaseException as exc:
            errors.append(exc)
        revisions[i] = mine

    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert not errors, errors
    return revisions


def _assert_in_thread_order(inputs: list[str], threads: int) -> None:
    for i in range(threads):
        mine = [int(x.split("-")[1]) for x in inputs if x.startswith(f"t{i}-")]
        assert mine == sorted(mine), f"thread {i}'s inputs are out of order"


def test_concurrent_steps_on_one_echo_session_lose_nothing(
    open_runtime: Callable[..., Runtime],
) -> None:
    rt = open_runtime()
    sid = rt.create_session("echo", owner="alice")
    revisions = _hammer(rt, sid, threads=16, steps=100)
    view = rt.get_session(sid)
    assert view.context["count"] == 1600
    assert view.revision == 1600
    every = sorted(r for mine in revisions.values() for r in mine)
    assert every == list(range(1, 1601)), "each step got its own revision"
    for mine in revisions.values():
        assert mine == sorted(mine)
    users = [m["content"] for m in view.chat_history if m["role"] == "user"]
    assert users, "the history keeps the newest messages"
    _assert_in_thread_order(users, 16)


def test_concurrent_steps_survive_reopen_with_every_input_in_order(tmp_path: Path) -> None:
    graph = counting_graph("counter", blocking=False)
    with Runtime.open(data_dir=tmp_path, graphs=[graph]) as rt:
        sid = rt.create_session("counter", owner="alice")
        _hammer(rt, sid, threads=8, steps=50)
    with Runtime.open(data_dir=tmp_path, graphs=[graph]) as rt:
        view = rt.get_session(sid)
    assert view.context["count"] == 400
    assert len(view.context["log"]) == 400
    _assert_in_thread_order(view.context["log"], 8)


def test_concurrent_steps_with_a_blocking_sleeping_task_lose_nothing(
    open_runtime: Callable[..., Runtime],
) -> None:
    rt = open_runtime([counting_graph("sleepy", sleep=0.001)])
    sid = rt.create_session("sleepy", owner="alice")
    _hammer(rt, sid, threads=8, steps=25)
    view = rt.get_session(sid)
    assert view.context["count"] == 200
    _assert_in_thread_order(view.context["log"], 8)


def test_concurrent_steps_with_an_async_task_lose_nothing(
    open_runtime: Callable[..., Runtime],
) -> None:
    rt = open_runtime([counting_graph("async", sleep=0.001, is_async=True)])
    sid = rt.create_session("async", owner="alice")
    _hammer(rt, sid, threads=8, steps=25)
    view = rt.get_session(sid)
    assert view.context["count"] == 200
    _assert_in_thread_order(view.context["log"], 8)


def test_a_thousand_concurrent_asyncio_steps_on_one_session_lose_nothing(tmp_path: Path) -> None:
    graph = counting_graph("counter", blocking=False)

    async def main() -> tuple[list[int], dict[str, object]]:
        config = RuntimeConfig(max_pending=2000)
        async with AsyncRuntime.open(data_dir=tmp_path, graphs=[graph], config=config) as rt:
            sid = await rt.create_session("counter", owner="alice")
            results = await asyncio.gather(*(rt.step(sid, f"t{i}-0") for i in range(1000)))
            view = await rt.get_session(sid)
            return [r.revision for r in results], view.context

    revisions, context = asyncio.run(main())
    assert sorted(revisions) == list(range(1, 1001))
    assert context["count"] == 1000
    assert sorted(context["log"]) == sorted(f"t{i}-0" for i in range(1000))  # type: ignore[arg-type]


def test_concurrent_asyncio_steps_with_an_async_task_lose_nothing(tmp_path: Path) -> None:
    graph = counting_graph("async", sleep=0.001, is_async=True)

    async def main() -> dict[str, object]:
        config = RuntimeConfig(max_pending=500)
        async with AsyncRuntime.open(data_dir=tmp_path, graphs=[graph], config=config) as rt:
            sid = await rt.create_session("async", owner="alice")
            await asyncio.gather(*(rt.step(sid, f"t{i}-0") for i in range(200)))
            return (await rt.get_session(sid)).context

    context = asyncio.run(main())
    assert context["count"] == 200


def test_two_hundred_sessions_stepped_concurrently_each_see_only_their_own_context(
    open_runtime: Callable[..., Runtime],
) -> None:
    rt = open_runtime([counting_graph("counter", blocking=False)])
    sids = [rt.create_session("counter", owner=f"user{i}") for i in range(200)]
    errors: list[BaseException] = []

    def client(chunk: list[str]) -> None:
        try:
            for _ in range(3):
                for sid in chunk:
                    rt.step(sid, sid)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=client, args=(sids[i::8],)) for i in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert not errors, errors
    for i, sid in enumerate(sids):
        view = rt.get_session(sid, owner=f"user{i}")
        assert view.context["count"] == 3
        assert view.context["log"] == [sid, sid, sid]
