"""LoopWakes: readers of one event loop woken with one cross-thread call per batch."""

from __future__ import annotations

import asyncio
import threading

from runtime._streams import LoopWakes, async_waker


def test_wakes_from_another_thread_share_one_cross_thread_call() -> None:
    async def main() -> tuple[int, list[bool]]:
        loop = asyncio.get_running_loop()
        events = [asyncio.Event() for _ in range(64)]
        wakers = [async_waker(loop, event) for event in events]
        calls = 0
        real = loop.call_soon_threadsafe

        def counting(*args: object, **kwargs: object) -> asyncio.Handle:
            nonlocal calls
            calls += 1
            return real(*args, **kwargs)  # type: ignore[arg-type]

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        # every wake is requested before the loop gets a turn to run the first
        thread = threading.Thread(target=lambda: [wake() for wake in wakers])
        thread.start()
        thread.join()
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), 5)
        return calls, [e.is_set() for e in events]

    calls, woken = asyncio.run(main())
    assert all(woken)
    assert calls == 1


def test_wakes_from_an_emitting_loop_go_out_at_the_end_of_its_turn() -> None:
    reader = asyncio.new_event_loop()
    emitter = asyncio.new_event_loop()
    try:
        event = asyncio.Event()
        wakes = LoopWakes.of(reader)
        assert LoopWakes.of(reader) is wakes
        sent: list[str] = []
        real = reader.call_soon_threadsafe

        def counting(*args: object, **kwargs: object) -> asyncio.Handle:
            sent.append("sent")
            return real(*args, **kwargs)  # type: ignore[arg-type]

        reader.call_soon_threadsafe = counting  # type: ignore[method-assign]

        async def emit() -> list[str]:
            for _ in range(10):
                wakes.request(event)
            seen = list(sent)  # nothing crossed yet: it waits for this turn's end
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            return [*seen, "turn", *sent]

        assert emitter.run_until_complete(emit()) == ["turn", "sent"]

        async def woken() -> bool:
            await asyncio.wait_for(event.wait(), 5)
            return event.is_set()

        assert reader.run_until_complete(woken())
    finally:
        emitter.close()
        reader.close()


def test_a_wake_on_the_readers_own_loop_sets_the_event_at_once() -> None:
    """An async task on the reader's loop (the daemon's server loop) wakes its reader
    without a callback in between: the event is set when ``request`` returns."""

    async def main() -> tuple[bool, int]:
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        scheduled = 0
        real = loop.call_soon

        def counting(*args: object, **kwargs: object) -> asyncio.Handle:
            nonlocal scheduled
            scheduled += 1
            return real(*args, **kwargs)  # type: ignore[arg-type]

        loop.call_soon = counting  # type: ignore[method-assign]
        LoopWakes.of(loop).request(event)
        set_at_once = event.is_set()
        loop.call_soon = real  # type: ignore[method-assign]
        return set_at_once, scheduled

    assert asyncio.run(main()) == (True, 0)
