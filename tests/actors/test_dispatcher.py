"""The shared-dispatcher actor type: scheduling, pykka semantics, stop and shutdown."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

import pykka
import pytest
from pykka._envelope import Envelope
from pykka.messages import _ActorStop

from actors.dispatcher import Dispatcher, DispatcherActor, mailbox_depth

WAIT = 10.0  # seconds: an upper bound for things that take milliseconds


@pytest.fixture
def make_dispatcher() -> Iterator[Callable[..., Dispatcher]]:
    """Create dispatchers for one test; every one of them is shut down afterwards."""
    created: list[Dispatcher] = []

    def make(threads: int = 4, name: str = "test") -> Dispatcher:
        dispatcher = Dispatcher(threads=threads, name=name)
        created.append(dispatcher)
        return dispatcher

    yield make
    for dispatcher in created:
        assert dispatcher.shutdown(timeout=WAIT), f"{dispatcher} did not shut down cleanly"


@pytest.fixture(autouse=True)
def _shut_down_default_dispatcher() -> Iterator[None]:
    """Tests that use ``SomeActor.start()`` leave no default dispatcher running."""
    yield
    default = Dispatcher._default
    if default is not None:
        assert default.shutdown(timeout=WAIT)


class EchoActor(DispatcherActor):
    """Answers every message with itself."""

    def on_receive(self, message: Any) -> Any:
        return message


class GateActor(DispatcherActor):
    """Blocks its worker on ``message`` when it is a threading.Event; records the rest."""

    def __init__(self, stops: list[str] | None = None) -> None:
        super().__init__()
        self.seen: list[Any] = []
        self.stops = stops if stops is not None else []

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, threading.Event):
            assert message.wait(WAIT), "the test never opened the gate"
            return "opened"
        self.seen.append(message)
        return message

    def on_stop(self) -> None:
        self.stops.append(self.actor_urn)


class OverlapActor(DispatcherActor):
    """Counts messages with a deliberately non-atomic check for concurrent runs."""

    throughput = 1  # every message its own turn: the actor hops between workers all the time

    def __init__(self) -> None:
        super().__init__()
        self.inside = False
        self.overlaps = 0
        self.count = 0
        self.threads: set[int] = set()

    def on_receive(self, message: Any) -> Any:
        if message == "report":
            return (self.count, self.overlaps, len(self.threads))
        if self.inside:
            self.overlaps += 1
        self.inside = True
        self.threads.add(threading.get_ident())
        time.sleep(0)  # give up the GIL inside the critical section, inviting any overlap
        self.count += 1
        self.inside = False
        return None


def test_overlap_check_detects_unsynchronized_calls() -> None:
    actor = OverlapActor()
    deadline = time.monotonic() + WAIT

    def hammer() -> None:
        for _ in range(2000):
            actor.on_receive("x")

    while actor.overlaps == 0 and time.monotonic() < deadline:
        threads = [threading.Thread(target=hammer) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert actor.overlaps > 0


def test_one_actor_never_runs_concurrently_with_itself(
    make_dispatcher: Callable[..., Dispatcher],
) -> None:
    dispatcher = make_dispatcher(threads=4)
    ref = dispatcher.spawn(OverlapActor)
    # More busy actors than workers keep the run queue non-empty: a worker ending a turn
    # of `ref` queues it behind others, and whichever worker is free next runs it.
    others = [dispatcher.spawn(OverlapActor) for _ in range(12)]
    start = threading.Barrier(16)

    def send(sender: int) -> None:
        start.wait(WAIT)
        for _ in range(625):
            ref.tell("x")
            others[sender % 12].tell("x")

    senders = [threading.Thread(target=send, args=(s,)) for s in range(16)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(WAIT)

    count, overlaps, threads = ref.ask("report", block=True, timeout=WAIT)
    assert (count, overlaps) == (10_000, 0)
    assert threads > 1, "the actor never moved between workers: the check proved nothing"
    reports = pykka.get_all([other.ask("report", block=False) for other in others], timeout=WAIT)
    assert sum(c for c, _, _ in reports) == 10_000
    assert [o for _, o, _ in reports] == [0] * 12


def test_no_message_is_stranded_when_the_mailbox_empties_and_refills_concurrently(
    make_dispatcher: Callable[..., Dispatcher],
) -> None:
    # Each sender waits for every answer, so the mailbox keeps going empty while
    # other senders append: a lost wakeup would leave an ask unanswered (Timeout).
    class OneAtATimeActor(EchoActor):
        throughput = 1

    ref = make_dispatcher(threads=4).spawn(OneAtATimeActor)
    answered = [0] * 8

    def ask_in_turn(sender: int) -> None:
        for i in range(1000):
            if ref.ask((sender, i), timeout=WAIT) == (sender, i):
                answered[sender] += 1

    senders = [threading.Thread(target=ask_in_turn, args=(s,)) for s in range(8)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(3 * WAIT)
    assert answered == [1000] * 8


def test_messages_from_one_sender_keep_their_order(
    make_dispatcher: Callable[..., Dispatcher],
) -> None:
    ref = make_dispatcher(threads=4).spawn(GateActor)

    def send(sender: int) -> None:
        for i in range(2000):
            ref.tell((sender, i))

    senders = [threading.Thread(target=send, args=(s,)) for s in range(4)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(WAIT)

    seen = ref.proxy().seen.get(timeout=WAIT)
    for s in range(4):
        assert [i for sender, i in seen if sender == s] == list(range(2000))


def test_a_chatty_actor_does_not_starve_the_others(
    make_dispatcher: Callable[..., Dispatcher],
) -> None:
    dispatcher = make_dispatcher(threads=1)
    chatty = dispatcher.spawn(GateActor)
    gate = threading.Event()
    chatty.tell(gate)  # holds the only worker until the gate opens
    for i in range(5000):
        chatty.tell(i)

    class DepthActor(DispatcherActor):
        def on_receive(self, message: Any) -> Any:
            return mailbox_depth(chatty)

    other = dispatcher.spawn(DepthActor)
    answer = other.ask("depth", block=False)
    gate.set()

    # The only worker ran one turn of `chatty` (at most `throughput` messages) before `other`.
    assert answer.get(timeout=WAIT) >= 5000 - GateActor.throughput
    assert chatty.ask("last", timeout=WAIT) == "last"


def test_stop_answers_earlier_asks_and_fails_later_ones(
    make_dispatcher: Callable[..., Dispatcher],
) -> None:
    stops: list[str] = []
    ref = make_dispatcher().spawn(GateActor, stops)
    gate = threading.Event()
    ref.tell(gate)
    before = [ref.ask(i, block=False) for i in range(3)]
    stopped = ref.stop(block=False)
    after = [ref.ask(i, block=False) for i in range(3)]
    gate.set()

    assert [f.get(timeout=WAIT) for f in before] == [0, 1, 2]
    assert stopped.get(timeout=WAIT) is True
    for future in after:
        with pytest.raises(pykka.ActorDeadError):
            future.get(timeout=WAIT)
    with pytest.raises(pykka.ActorDeadError):
        ref.ask("late", timeout=WAIT)
    with pytest.raises(pykka.ActorDeadError):
        ref.tell("late")
    assert ref.stop(timeout=WAIT) is False
    assert stops == [ref.actor_urn]


def test_a_message_racing_with_stop_gets_actor_dead_error(
    make_dispatcher: Callable[..., Dispatcher],
) -> None:
    ref = make_dispatcher().spawn(EchoActor)
    assert ref.stop(timeout=WAIT) is True
    # What a sender that checked is_alive() just before the stop would do next.
    future = EchoActor._create_future()
    ref.actor_inbox.put(Envelope("late", reply_to=future))
    with pytest.raises(pykka.ActorDeadError):
        future.get(timeout=WAIT)


def test_a_stopped_actor_is_freed_by_its_reference_count_alone(
    make_dispatcher: Callable[..., Dispatcher],
) -> None:
    # A passivated or hibernated session's actor and all it held must not wait for a
    # full collection (rare under actorflowd's thresholds) to give its memory back.
    ref = make_dispatcher(threads=1).spawn(EchoActor)
    freed = threading.Event()
    weakref.finalize(ref._actor_weakref(), freed.set)
    assert ref.ask("alive", timeout=WAIT) == "alive"
    gc.disable()
    try:
        assert ref.stop(timeout=WAIT) is True
        assert freed.wait(WAIT), "the stopped actor is still referenced (a cycle?)"
    finally:
        gc.enable()
    # its mailbox still answers what arrives late, as the actor's teardown would
    late = EchoActor._create_future()
    ref.actor_inbox.put(Envelope("late", reply_to=late))
    with pytest.raises(pykka.ActorDeadError, match=r"^EchoActor \(urn:uuid:.*\) stopped before"):
        late.get(timeout=WAIT)
    stop = EchoActor._create_future()
    ref.actor_inbox.put(Envelope(_ActorStop(), reply_to=stop))
    assert stop.get(timeout=WAIT) is None
    ref.actor_inbox.put(Envelope("told, not asked"))
    again = EchoActor._create_future()
    ref.actor_inbox.put(Envelope("asked after a tell", reply_to=again))
    with pytest.raises(pykka.ActorDeadError):
        again.get(timeout=WAIT)


def test_on_start_runs_on_a_worker_before_any_message(
    make_dispatcher: Callable[..., Dispatcher],
) -> None:
    class StartActor(DispatcherActor):
        def __init__(self) -> None:
            super().__init__()
            self.init_thread = threading.current_thread().name
            self.log: list[str] = []

        def on_start(self) -> None:
            self.log.append(f"start on {threading.current_thread().name}")

        def on_receive(self, message: Any) -> Any:
            self.log.append(message)
            return (self.init_thread, self.log)

    ref = make_dispatcher(name="starter").spawn(StartActor)
    answer: tuple[str, list[str]] = ref.ask("hello", block=True, timeout=WAIT)
    init_thread, log = answer
    assert init_thread == threading.current_thread().name
    assert log[0].startswith("start on starter-worker-")
    assert log[1:] == ["hello"]


def test_a_message_sent_during_init_is_handled_after_start(
    make_dispatcher: Callable[..., Dispatcher],
) -> None:
    handled = threading.Event()

    class SelfTellActor(DispatcherActor):
        def __init__(self) -> None:
            super().__init__()
            self.actor_ref.tell("from __init__")

        def on_receive(self, message: Any) -> Any:
            if message == "from __init__":
                handled.set()
            return None

    make_dispatcher().spawn(SelfTellActor)
    assert handled.wait(WAIT)


def test_an_actor_whose_on_start_raises_stops(
    make_dispatcher: Callable[..., Dispatcher],
) -> None:
    class BrokenStartActor(DispatcherActor):
        def on_start(self) -> None:
            raise RuntimeError("cannot start")

    dispatcher = make_dispatcher()
    ref = dispatcher.spawn(BrokenStartActor)
    queued = ref.ask("hello", block=False)
    with pytest.raises(pykka.ActorDeadError):
        queued.get(timeout=WAIT)
    assert not ref.is_alive()
    assert dispatcher.spawn(EchoActor).ask("still serving", timeout=WAIT) == "still serving"


def test_proxies_call_methods_and_get_and_set_attributes(
    make_dispatcher: Callable[..., Dispatcher],
) -> None:
    class CounterActor(DispatcherActor):
        def __init__(self) -> None:
            super().__init__()
            self.total = 0

        def add(self, n: int) -> int:
            self.total += n
            return self.total

    proxy = make_dispatcher().spawn(CounterActor).proxy()
    assert pykka.get_all([proxy.add(i) for i in range(1, 5)], timeout=WAIT) == [1, 3, 6, 10]
    proxy.total = 100
    assert proxy.total.get(timeout=WAIT) == 100
    assert proxy.add(1).get(timeout=WAIT) == 101


class Record:
    """What a RaisingActor's hooks saw, readable after the actor stopped."""

    def __init__(self) -> None:
        self.failed = threading.Event()
        self.failure: BaseException | None = None
        self.stopped_cleanly = False


class RaisingActor(DispatcherActor):
    """Raises what it is told to raise; records on_failure and on_stop."""

    def __init__(self, record: Record) -> None:
        super().__init__()
        self.record = record

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, BaseException):
            raise message
        return message

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.record.failure = exception_value
        self.record.failed.set()

    def on_stop(self) -> None:
        self.record.stopped_cleanly = True


def test_an_ask_whose_handler_raises_gets_the_exception_and_the_actor_lives(
    make_dispatcher: Callable[..., Dispatcher],
) -> None:
    record = Record()
    ref = make_dispatcher().spawn(RaisingActor, record)
    with pytest.raises(ValueError, match="bad input"):
        ref.ask(ValueError("bad input"), timeout=WAIT)
    assert ref.ask("still here", timeout=WAIT) == "still here"
    assert not record.failed.is_set()


def test_a_tell_whose_handler_raises_calls_on_failure_and_stops_the_actor(
    make_dispatcher: Callable[..., Dispatcher],
) -> None:
    record = Record()
    dispatcher = make_dispatcher()
    ref = dispatcher.spawn(RaisingActor, record)
    ref.tell(ValueError("boom"))
    queued = ref.ask("after the failure", block=False)

    assert record.failed.wait(WAIT)
    assert isinstance(record.failure, ValueError)
    with pytest.raises(pykka.ActorDeadError):
        queued.get(timeout=WAIT)
    assert not ref.is_alive()
    assert not record.stopped_cleanly, "pykka calls on_failure instead of on_stop"
    assert dispatcher.live_actors() == 0


def test_a_base_exception_in_an_actor_stops_it_but_not_the_workers(
    make_dispatcher: Callable[..., Dispatcher],
) -> None:
    dispatcher = make_dispatcher(threads=1)
    ref = dispatcher.spawn(RaisingActor, Record())
    with pytest.raises(SystemExit):
        ref.ask(SystemExit(3), timeout=WAIT)
    assert not ref.is_alive()
    assert dispatcher.spawn(EchoActor).ask("alive", timeout=WAIT) == "alive"


def test_ten_thousand_actors_on_four_threads_all_answer(
    make_dispatcher: Callable[..., Dispatcher],
) -> None:
    dispatcher = make_dispatcher(threads=4)
    refs = [dispatcher.spawn(EchoActor) for _ in range(10_000)]
    futures = [ref.ask(i, block=False) for i, ref in enumerate(refs)]
    assert pykka.get_all(futures, timeout=WAIT) == list(range(10_000))
    assert dispatcher.live_actors() == 10_000


def test_shutdown_stops_every_actor_and_joins_the_workers() -> None:
    dispatcher = Dispatcher(threads=3, name="closing")
    stops: list[str] = []
    refs = [dispatcher.spawn(GateActor, stops) for _ in range(100)]
    gate = threading.Event()
    refs[0].tell(gate)
    queued = [refs[0].ask("queued", block=False) for _ in range(3)]
    # the actor its worker is blocked in, behind the gate
    blocked = next(a for a in dispatcher._actors if a.actor_urn == refs[0].actor_urn)
    stop_now = blocked._dispatch_stop_now

    def stop_then_open() -> Any:
        # the gate opens once the stop is requested (a timer could open it first)
        stopping = stop_now()
        gate.set()
        return stopping

    blocked._dispatch_stop_now = stop_then_open  # type: ignore[method-assign]

    assert dispatcher.shutdown(timeout=WAIT) is True

    assert sorted(stops) == sorted(ref.actor_urn for ref in refs)
    assert not any(ref.is_alive() for ref in refs)
    for future in queued:
        with pytest.raises(pykka.ActorDeadError):
            future.get(timeout=WAIT)
    assert dispatcher.live_actors() == 0
    assert not [t for t in threading.enumerate() if t.name.startswith("closing-worker-")]
    with pytest.raises(RuntimeError, match="shut down"):
        dispatcher.spawn(EchoActor)
    assert dispatcher.shutdown(timeout=WAIT) is True


def test_a_late_message_after_shutdown_is_answered_with_actor_dead_error() -> None:
    dispatcher = Dispatcher(threads=1)
    ref = dispatcher.spawn(EchoActor)
    assert dispatcher.shutdown(timeout=WAIT)
    future = EchoActor._create_future()
    ref.actor_inbox.put(Envelope("late", reply_to=future))
    with pytest.raises(pykka.ActorDeadError):
        future.get(timeout=WAIT)


def test_start_uses_the_default_dispatcher_and_nothing_enters_the_registry(
    make_dispatcher: Callable[..., Dispatcher],
) -> None:
    before = pykka.ActorRegistry.get_all()
    ref = EchoActor.start()
    spawned = make_dispatcher().spawn(EchoActor)
    assert ref.ask("hi", timeout=WAIT) == "hi"
    assert Dispatcher.default().live_actors() == 1
    assert pykka.ActorRegistry.get_all() == before

    Dispatcher.default().shutdown(timeout=WAIT)
    assert not ref.is_alive()
    assert spawned.is_alive()
    assert EchoActor.start().ask("again", timeout=WAIT) == "again"


def test_mailbox_depth_counts_waiting_messages_for_both_actor_types(
    make_dispatcher: Callable[..., Dispatcher],
) -> None:
    class ThreadGateActor(pykka.ThreadingActor):
        def on_receive(self, message: Any) -> Any:
            if isinstance(message, threading.Event):
                message.wait(WAIT)
            return message

    dispatcher_ref = make_dispatcher().spawn(GateActor)
    threading_ref = ThreadGateActor.start()
    try:
        gate = threading.Event()
        for ref in (dispatcher_ref, threading_ref):
            ref.tell(gate)
            for i in range(7):
                ref.tell(i)
        # Each actor is now blocked on the gate, or about to take it: wait for that.
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline and (
            mailbox_depth(dispatcher_ref) != 7 or mailbox_depth(threading_ref) != 7
        ):
            time.sleep(0.001)  # polling a depth: there is no event for "took the message"
        assert (mailbox_depth(dispatcher_ref), mailbox_depth(threading_ref)) == (7, 7)
        gate.set()
        assert dispatcher_ref.ask("done", timeout=WAIT) == "done"
        assert mailbox_depth(dispatcher_ref) == 0
    finally:
        gate.set()
        threading_ref.stop(timeout=WAIT)


def test_spawn_refuses_what_is_not_a_dispatcher_actor(
    make_dispatcher: Callable[..., Dispatcher],
) -> None:
    class ForgotSuperActor(DispatcherActor):
        def __init__(self) -> None:
            pass

    dispatcher = make_dispatcher()
    with pytest.raises(TypeError, match="DispatcherActor subclass"):
        dispatcher.spawn(pykka.ThreadingActor)  # type: ignore[type-var]
    with pytest.raises(TypeError, match=r"did not call super\(\).__init__"):
        dispatcher.spawn(ForgotSuperActor)
    with pytest.raises(ValueError, match="at least 1 worker"):
        Dispatcher(threads=0)


def test_waiting_on_actor_stopped_wakes_when_the_actor_stops(
    make_dispatcher: Callable[..., Dispatcher],
) -> None:
    ref = make_dispatcher().spawn(EchoActor)
    assert ref.actor_stopped.wait(timeout=0.01) is False
    woke = threading.Event()

    def wait_for_stop() -> None:
        if ref.actor_stopped.wait(timeout=WAIT):
            woke.set()

    waiter = threading.Thread(target=wait_for_stop)
    waiter.start()
    ref.stop(timeout=WAIT)
    waiter.join(WAIT)
    assert woke.is_set()
    assert ref.actor_stopped.wait() is True


def test_shutdown_from_an_actor_of_the_same_dispatcher_is_refused(
    make_dispatcher: Callable[..., Dispatcher],
) -> None:
    dispatcher = make_dispatcher()

    class ShutdownActor(DispatcherActor):
        def on_receive(self, message: Any) -> Any:
            if message == "shut down":
                return dispatcher.shutdown(timeout=WAIT)
            return message

    ref = dispatcher.spawn(ShutdownActor)
    with pytest.raises(RuntimeError, match="its own worker thread"):
        ref.ask("shut down", timeout=WAIT)
    assert not dispatcher.closed
    assert ref.ask("still running", timeout=WAIT) == "still running"


def test_shutdown_reports_an_actor_that_does_not_stop_in_time() -> None:
    dispatcher = Dispatcher(threads=2, name="stuck")
    ref = dispatcher.spawn(GateActor)
    gate = threading.Event()
    busy = ref.ask(gate, block=False)
    deadline = time.monotonic() + WAIT
    while mailbox_depth(ref) and time.monotonic() < deadline:
        time.sleep(0.001)  # polling until the actor took the gate: there is no event for it
    assert dispatcher.shutdown(timeout=0.2) is False
    assert ref.is_alive()

    gate.set()
    assert busy.get(timeout=WAIT) == "opened"
    assert dispatcher.shutdown(timeout=WAIT) is True
    assert not ref.is_alive()
    assert not [t for t in threading.enumerate() if t.name.startswith("stuck-worker-")]


def test_an_on_stop_that_raises_still_stops_the_actor(
    make_dispatcher: Callable[..., Dispatcher],
) -> None:
    class BadStopActor(EchoActor):
        def on_stop(self) -> None:
            raise RuntimeError("cleanup failed")

    dispatcher = make_dispatcher(threads=1)
    ref = dispatcher.spawn(BadStopActor)
    assert ref.stop(timeout=WAIT) is True
    assert not ref.is_alive()
    assert dispatcher.live_actors() == 0
    assert dispatcher.spawn(EchoActor).ask("serving", timeout=WAIT) == "serving"


def test_a_stopped_actor_is_not_kept_alive_by_the_worker_that_ran_its_last_turn(
    make_dispatcher: Callable[..., Dispatcher],
) -> None:
    """A worker must not hold the last actor it ran until its next turn: a passivated
    session actor (and the session it held) would stay in memory meanwhile."""
    import gc
    import weakref

    dispatcher = make_dispatcher(threads=1)
    ref = dispatcher.spawn(EchoActor)
    assert ref.ask("hello", timeout=WAIT) == "hello"
    gone = weakref.ref(next(iter(dispatcher._actors)))
    ref.stop(timeout=WAIT)
    del ref
    deadline = time.monotonic() + WAIT
    while gone() is not None and time.monotonic() < deadline:
        gc.collect()  # the actor and its mailbox refer to each other
        time.sleep(0.01)  # the worker ends its turn after answering the stop
    assert gone() is None
    assert dispatcher.live_actors() == 0
