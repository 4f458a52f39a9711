"""``Client.stream`` / ``AsyncClient.stream``: a streamed step over SSE, as ``Runtime.stream``."""

from __future__ import annotations

import asyncio

import pytest
from client_harness import Daemon

from runtime import InvalidInput, SessionNotFound
from runtime.client import AsyncClient, Client
from runtime.events import Committed, CustomEvent, StepError, StepStarted, TaskStarted, Token


def test_client_stream_yields_the_runtimes_event_objects(client: Client) -> None:
    sid = client.create_session("storyteller", context={"delay": 0})
    events = list(client.stream(sid, "Ada"))
    assert events[:2] == [StepStarted(sid, 0), TaskStarted("tell")]
    assert [e.data for e in events if isinstance(e, CustomEvent)] == [
        {"number": 1},
        {"number": 2},
        {"number": 3},
    ]
    committed = events[-1]
    assert isinstance(committed, Committed)
    assert "".join(e.text for e in events if isinstance(e, Token)) == committed.response
    assert client.get_session(sid).revision == committed.revision == 1


def test_client_stream_raises_before_the_stream_and_yields_an_error_after(
    client: Client,
) -> None:
    with pytest.raises(SessionNotFound):
        next(iter(client.stream("no-such-session")))
    sid = client.create_session("echo")
    with pytest.raises(InvalidInput):
        next(iter(client.stream(sid, mode="sideways")))  # type: ignore[arg-type]  # 422 first
    failing = client.create_session("boom")
    last = list(client.stream(failing))[-1]
    assert isinstance(last, StepError)
    assert "boom" in str(last.error)


def test_async_client_stream_yields_the_same_events(daemon: Daemon) -> None:
    async def main() -> list[object]:
        client = AsyncClient(daemon.url)
        try:
            sid = await client.create_session("echo")
            return [event async for event in client.stream(sid, "hi")]
        finally:
            await client.aclose()

    events = asyncio.run(main())
    assert isinstance(events[0], StepStarted)
    committed = events[-1]
    assert isinstance(committed, Committed)
    assert committed.response == "echo: hi"
