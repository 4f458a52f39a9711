"""The asyncio twins: the same tests against ``AsyncRuntime`` and ``AsyncClient``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from client_graphs import GRAPHS as TEST_GRAPHS
from client_harness import Daemon

from flow import SessionStatus
from flow.demo import GRAPHS as DEMO_GRAPHS
from runtime import AsyncRuntime, SessionNotFound, TaskFailed
from runtime.client import AsyncClient, AsyncSessionAPI
from runtime.events import Committed, Token

OWNER = "local"
Scenario = Callable[[AsyncSessionAPI], Awaitable[None]]


@pytest.fixture(params=["runtime", "client"])
def run_on(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[Scenario], None]:
    """Runs a scenario on an ``AsyncRuntime`` or on an ``AsyncClient`` of the daemon."""

    async def with_side(scenario: Scenario) -> None:
        side: AsyncSessionAPI
        if request.param == "runtime":
            side = await AsyncRuntime.open(tmp_path / "data", graphs=[*DEMO_GRAPHS, *TEST_GRAPHS])
        else:
            daemon: Daemon = request.getfixturevalue("daemon")
            side = AsyncClient(daemon.url)
        try:
            await scenario(side)
        finally:
            await side.aclose()

    if request.param == "client":
        request.getfixturevalue("daemon")  # started outside the event loop
    return lambda scenario: asyncio.run(with_side(scenario))


def test_concurrent_steps_on_one_session_are_all_applied(
    run_on: Callable[[Scenario], None],
) -> None:
    async def scenario(api: AsyncSessionAPI) -> None:
        sid = await api.create_session("echo", owner=OWNER)
        results = await asyncio.gather(*(api.step(sid, n) for n in range(20)))
        assert sorted(r.revision for r in results) == list(range(1, 21))
        assert all(r.status is SessionStatus.WAITING_FOR_INPUT for r in results)
        view = await api.get_session(sid, owner=OWNER)
        assert view.context["count"] == 20

    run_on(scenario)


def test_errors_and_deletes_match(run_on: Callable[[Scenario], None]) -> None:
    async def scenario(api: AsyncSessionAPI) -> None:
        boom = await api.create_session("boom", owner=OWNER)
        with pytest.raises(TaskFailed):
            await api.step(boom)
        page = await api.list_sessions(OWNER)
        assert boom in {info.session_id for info in page.items}
        await api.delete_session(boom)
        with pytest.raises(SessionNotFound):
            await api.get_session(boom)

    run_on(scenario)


def test_stream_yields_the_steps_events_in_order(run_on: Callable[[Scenario], None]) -> None:
    async def scenario(api: AsyncSessionAPI) -> None:
        sid = await api.create_session("storyteller", owner=OWNER, context={"delay": 0})
        events = [event async for event in api.stream(sid, "Ada", owner=OWNER)]
        assert type(events[0]).__name__ == "StepStarted"
        committed = events[-1]
        assert isinstance(committed, Committed)
        tokens = "".join(e.text for e in events if isinstance(e, Token))
        assert tokens == committed.response
        assert (await api.get_session(sid)).revision == committed.revision == 1

    run_on(scenario)


def test_a_tail_sees_a_step_made_by_another_call(run_on: Callable[[Scenario], None]) -> None:
    async def scenario(api: AsyncSessionAPI) -> None:
        sid = await api.create_session("storyteller", owner=OWNER, context={"delay": 0})
        tail = await api.tail(sid, owner=OWNER)
        try:
            result = await api.step(sid, "Ada", owner=OWNER)
            events = []
            async for event in tail:
                events.append(event)
                if isinstance(event, Committed):
                    break
        finally:
            await tail.aclose()
        tokens = "".join(e.text for e in events if isinstance(e, Token))
        assert tokens == result.response
        assert isinstance(events[-1], Committed)
        assert events[-1].revision == result.revision == 1
        assert [event async for event in tail] == []

    run_on(scenario)
