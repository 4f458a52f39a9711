"""One suite for the session log, run against every store (memory, SQLite, Redis, PostgreSQL).

A session is stored as bases and step records; these tests check what the
store promises about them: a step appends one record, load = base + records,
compaction keeps every retained revision byte for byte, retention names what
it keeps, the whole conversation stays readable, fork and rollback, and (with
hypothesis) that any mix of steps, rollbacks, forks and compactions gives, at
each revision, exactly what a plain whole-snapshot replay gives.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from labgraph import lab_graph
from testkit import replayed_bytes

from flow import (
    ChatHistory,
    ChatMessage,
    Context,
    GraphBuilder,
    InvalidInput,
    NextAction,
    RevisionConflict,
    RevisionNotFound,
    Session,
    SessionNotFound,
    TaskResult,
    encode,
    new_session,
    step,
)
from flow._history import forked, rolled_back
from flow._record import encode_record
from flow._task import FunctionTask
from flow.stores import MemoryStore, SessionStore, SqliteStore
from flow.stores._log import LogPolicy

MakeStore = Callable[[LogPolicy], SessionStore]


LAB = lab_graph()
_ids = itertools.count()


@pytest.fixture(params=["memory", "sqlite", "redis", "postgres"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeStore]:
    """Opens the store under test with a given log policy (closed at the end)."""
    opened: list[SessionStore] = []

    def make(policy: LogPolicy) -> SessionStore:
        store: SessionStore
        if request.param == "memory":
            store = MemoryStore(policy)
        elif request.param == "sqlite":
            store = SqliteStore(tmp_path / f"log{len(opened)}.db", "commit", policy=policy)
        elif request.param == "redis":
            from flow.stores._redis import RedisStore

            url = request.getfixturevalue("redis_url")
            store = RedisStore(url, key_prefix=f"t{len(opened)}:", policy=policy)
        else:
            from flow.stores._postgres import PostgresStore

            server = request.getfixturevalue("postgres_server")
            store = PostgresStore(server.fresh_url(), "commit", policy=policy)
        opened.append(store)
        return store

    try:
        yield make
    finally:
        for store in opened:
            store.close()


def started(store: SessionStore, **kwargs: object) -> Session:
    session = new_session(LAB, owner="alice", session_id=f"s{next(_ids)}", **kwargs)  # type: ignore[arg-type]
    store.save(session, None).result(timeout=10)
    return session


def stepped(store: SessionStore, session: Session, said: str) -> Session:
    new, _ = step(LAB, session, said)
    store.save(new, session.revision).result(timeout=10)
    return new


def settle(store: SessionStore) -> None:
    """Wait until the compactions the saves asked for have run."""
    store.flush()
    assert store.compactor.wait_idle(10)  # type: ignore[attr-defined]  # every store has one


def test_a_step_appends_its_record_and_load_replays_it(make_store: MakeStore) -> None:
    store = make_store(LogPolicy(compact_after=1000))
    session = started(store)
    for said in ("set a 1", "say hi; set b 2", "rm a", "go", "back"):
        session = stepped(store, session, said)

    loaded = store.load(session.session_id)
    assert loaded is not None
    assert encode(loaded) == encode(session)
    infos = store.revisions(session.session_id)
    assert [i.revision for i in infos] == [5, 4, 3, 2, 1, 0]
    assert [i.kind for i in infos] == ["step"] * 5 + ["base"]
    assert infos[0].input == "back"
    assert infos[0].response == "did back"


def test_a_records_bytes_do_not_grow_with_the_history(make_store: MakeStore) -> None:
    store = make_store(LogPolicy(compact_after=100_000))
    session = started(store)
    sizes = []
    for i in range(300):
        session = stepped(store, session, f"say {'x' * 80} {i % 10}")
        assert session.record is not None
        sizes.append(len(encode_record(session.record)))

    # only the counters' msgpack widths grow (revision, message number, request count)
    assert max(sizes[-10:]) <= max(sizes[:10]) + 8
    assert max(sizes) < 700  # the input appears five times: input, user_input, 2 messages, reply
    assert len(encode(session)) > 30 * max(sizes)  # what a whole snapshot would write


def test_an_append_over_a_stale_revision_is_a_conflict_and_changes_nothing(
    make_store: MakeStore,
) -> None:
    store = make_store(LogPolicy())
    session = started(store)
    first = stepped(store, session, "set a 1")
    rival, _ = step(LAB, session, "set a 2")

    with pytest.raises(RevisionConflict):
        store.save(rival, session.revision).result(timeout=10)

    loaded = store.load(session.session_id)
    assert loaded is not None
    assert encode(loaded) == encode(first)
    assert len(store.revisions(session.session_id)) == 2


def test_compaction_keeps_every_retained_revision_byte_identical(make_store: MakeStore) -> None:
    store = make_store(LogPolicy(keep_revisions=None, compact_after=3))
    session = started(store, max_messages=4)
    states = {0: encode(session)}
    for i in range(30):
        session = stepped(
            store, session, f"set k{i % 4} {i}; say {i}" + ("; clear" if i == 7 else "")
        )
        states[session.revision] = encode(session)
    settle(store)
    store.compact(session.session_id)

    span = store.history_range(session.session_id)
    assert span is not None
    assert (span.oldest, span.newest) == (0, 30)
    for revision, state in states.items():
        loaded = store.load(session.session_id, revision)
        assert loaded is not None
        assert encode(loaded) == state, revision


def test_retention_drops_old_revisions_and_a_missing_one_names_the_range(
    make_store: MakeStore,
) -> None:
    store = make_store(LogPolicy(keep_revisions=5, compact_after=2))
    session = started(store)
    states = {0: encode(session)}
    for i in range(40):
        session = stepped(store, session, f"set n {i}")
        states[session.revision] = encode(session)
        settle(store)  # compaction keeps up (the cut falls on a base)
    store.compact(session.session_id)

    span = store.history_range(session.session_id)
    assert span is not None
    assert span.newest == 40
    assert 30 <= span.oldest <= 36  # the last 5 are kept, back to a base
    for revision in range(span.oldest, 41):
        loaded = store.load(session.session_id, revision)
        assert loaded is not None
        assert encode(loaded) == states[revision]
    with pytest.raises(RevisionNotFound) as caught:
        store.load(session.session_id, 2)
    assert (caught.value.oldest, caught.value.newest) == (span.oldest, 40)
    assert f"{span.oldest} to 40" in str(caught.value)
    with pytest.raises(RevisionNotFound):
        store.load(session.session_id, 41)
    assert len(store.revisions(session.session_id, limit=1000)) == 41 - span.oldest


@pytest.mark.parametrize(
    ("keep_revisions", "oldest_young"),
    [(None, 21), (3, 21), (30, 1)],
    ids=["age", "age-and-count", "count-keeps-more"],
)
def test_retention_by_age_keeps_the_young_revisions_back_to_a_base(
    make_store: MakeStore, keep_revisions: int | None, oldest_young: int
) -> None:
    """``keep_seconds``: 20 steps an hour ago, then 6 now; a revision goes once it is
    outside both limits (an hour-old one inside ``keep_revisions`` stays)."""
    store = make_store(LogPolicy(keep_revisions=keep_revisions, keep_seconds=60, compact_after=2))
    now = time.time()
    session = started(store, now=now - 3601)
    states = {0: encode(session)}
    for i in range(26):
        new, _ = step(LAB, session, f"set n {i}", now=now - 3600 + i if i < 20 else now)
        store.save(new, session.revision).result(timeout=10)
        session = new
        states[session.revision] = encode(session)
        settle(store)
    store.compact(session.session_id)

    span = store.history_range(session.session_id)
    assert span is not None
    assert span.newest == 26
    assert oldest_young - 2 <= span.oldest <= oldest_young  # back to a base
    for revision in range(span.oldest, 27):
        loaded = store.load(session.session_id, revision)
        assert loaded is not None
        assert encode(loaded) == states[revision]
    if span.oldest > 0:
        with pytest.raises(RevisionNotFound):
            store.load(session.session_id, span.oldest - 1)


def test_the_whole_conversation_is_kept_and_read_page_by_page(make_store: MakeStore) -> None:
    store = make_store(LogPolicy(keep_revisions=3, compact_after=2))
    session = started(store, max_messages=4)
    for i in range(25):
        session = stepped(store, session, f"u{i}; say a{i}")
    settle(store)
    store.compact(session.session_id)

    assert len(session.context.chat_history) == 4  # the task sees the newest 4
    said: list[str] = []
    before: int | None = None
    while True:
        page = store.messages(session.session_id, limit=7, before=before)
        said = [m.content for _, m in page.items] + said
        if page.next_before is None:
            break
        before = page.next_before
    assert said == [text for i in range(25) for text in (f"u{i}; say a{i}", f"a{i}")]
    seqs = [seq for seq, _ in store.messages(session.session_id, limit=100).items]
    assert seqs == list(range(50))


def test_rollback_appends_a_revision_equal_to_the_old_one_and_can_be_undone(
    make_store: MakeStore,
) -> None:
    store = make_store(LogPolicy())
    session = started(store)
    session = stepped(store, session, "set a 1")
    session = stepped(store, session, "set a 2; go")
    past = store.load(session.session_id, 1)
    assert past is not None

    back = rolled_back(session, past)
    store.save(back, session.revision).result(timeout=10)
    undone_from = store.load(session.session_id, 2)
    assert undone_from is not None
    undo = rolled_back(back, undone_from)
    store.save(undo, back.revision).result(timeout=10)

    at3 = store.load(session.session_id, 3)
    assert at3 is not None
    assert at3.revision == 3
    assert (at3.context.get("a"), at3.current_task) == ({"v": "1", "n": 1}, "a")
    now = store.load(session.session_id)
    assert now is not None
    assert now.revision == 4
    assert (now.context.get("a"), now.current_task) == ({"v": "2", "n": 1}, "b")
    assert [i.kind for i in store.revisions(session.session_id, limit=2)] == ["base", "base"]


def test_a_fork_is_a_new_session_with_the_old_revisions_state(make_store: MakeStore) -> None:
    store = make_store(LogPolicy())
    session = started(store)
    session = stepped(store, session, "set a 1")
    session = stepped(store, session, "set a 2")
    past = store.load(session.session_id, 1)
    assert past is not None

    fork = forked(past, session_id="fork-1")
    store.save(fork, None).result(timeout=10)

    loaded = store.load("fork-1")
    assert loaded is not None
    assert (loaded.revision, loaded.metadata.owner) == (0, "alice")
    assert loaded.context.get("a") == {"v": "1", "n": 1}
    original = store.load(session.session_id)
    assert original is not None
    assert original.context.get("a") == {"v": "2", "n": 1}


def test_saving_the_stored_revision_again_adds_a_base_and_keeps_its_record(
    make_store: MakeStore,
) -> None:
    store = make_store(LogPolicy(compact_after=1000))
    session = started(store)
    session = stepped(store, session, "set a 1")

    store.save(session, session.revision).result(timeout=10)  # a snapshot on request

    [newest, _] = store.revisions(session.session_id)
    assert (newest.revision, newest.kind, newest.input) == (1, "step", "set a 1")
    loaded = store.load(session.session_id)
    assert loaded is not None
    assert encode(loaded) == encode(session)
    later = stepped(store, session, "set a 2")
    loaded = store.load(session.session_id)
    assert loaded is not None
    assert encode(loaded) == encode(later)


def _outweighed(store: SessionStore, session: Session) -> Session:
    """``session`` stepped until the records since its base outweigh the base."""
    for _ in range(200):
        session = stepped(store, session, f"say {'x' * 100}")
        settle(store)
        loaded = store.load(session.session_id)
        assert loaded is not None
        assert loaded.stored_size is not None
        base, bound = loaded.stored_size
        if bound - base >= base and session.revision >= 3:
            return session
    raise AssertionError("the records never outweighed the base")


def test_a_live_sessions_records_wait_for_min_tail_bytes_and_passivation_compacts_them(
    make_store: MakeStore,
) -> None:
    store = make_store(LogPolicy(min_tail_bytes=256 * 1024))
    session = _outweighed(store, started(store))
    assert replayed_bytes(store, session.session_id) > 0  # below min_tail_bytes: left while live

    store.passivated(session.session_id)
    settle(store)

    assert replayed_bytes(store, session.session_id) == 0
    loaded = store.load(session.session_id)
    assert loaded is not None
    assert encode(loaded) == encode(session)


def test_without_min_tail_bytes_records_that_outweigh_the_base_are_compacted_live(
    make_store: MakeStore,
) -> None:
    store = make_store(LogPolicy(min_tail_bytes=0))
    session = started(store)
    replayed = []
    for _ in range(30):
        session = stepped(store, session, f"say {'x' * 100}")
        settle(store)
        replayed.append(replayed_bytes(store, session.session_id))
    assert 0 in replayed[2:]  # a new base came while the session was live


def test_passivation_leaves_records_that_do_not_outweigh_the_base(make_store: MakeStore) -> None:
    store = make_store(LogPolicy())
    session = stepped(store, started(store, context={"pad": "x" * 4000}), "say hi")
    session = stepped(store, session, "say hi")
    settle(store)
    before = replayed_bytes(store, session.session_id)
    assert before > 0

    store.passivated(session.session_id)
    settle(store)

    assert replayed_bytes(store, session.session_id) == before


def test_min_tail_bytes_is_checked() -> None:
    with pytest.raises(InvalidInput, match="min_tail_bytes"):
        LogPolicy(min_tail_bytes=-1)


def test_delete_removes_the_whole_log(make_store: MakeStore) -> None:
    store = make_store(LogPolicy(compact_after=2))
    session = started(store)
    for i in range(6):
        session = stepped(store, session, f"set n {i}")
    settle(store)

    assert store.delete(session.session_id) is True

    assert store.load(session.session_id) is None
    assert store.history_range(session.session_id) is None
    with pytest.raises(SessionNotFound):
        store.revisions(session.session_id)
    with pytest.raises(SessionNotFound):
        store.messages(session.session_id)


_COMMANDS = st.sampled_from(
    ["set a x", "set b yy", "rm a", "clear", "say hi", "hclear", "go", "back", "set a z; rm b"]
)
_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("step"), st.lists(_COMMANDS, min_size=1, max_size=3).map("; ".join)),
        st.tuples(st.just("rollback"), st.integers(0, 40)),
        st.tuples(st.just("fork"), st.integers(0, 40)),
        st.tuples(st.just("compact"), st.just(0)),
    ),
    min_size=1,
    max_size=25,
)


@settings(
    max_examples=25,
    deadline=None,
    # too_slow: generating 25 op lists can pass its limit on a loaded 2-core machine
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=_OPS)
def test_any_mix_of_steps_rollbacks_forks_and_compactions_replays_like_whole_snapshots(
    make_store: MakeStore, ops: list[tuple[str, object]]
) -> None:
    store = make_store(LogPolicy(keep_revisions=6, compact_after=3))
    session = started(store, max_messages=3)
    model = {0: encode(session)}  # what a whole snapshot per revision would hold
    sessions = {0: session}
    for op, arg in ops:
        if op == "step":
            session = stepped(store, session, str(arg))
        elif op == "rollback":
            span = store.history_range(session.session_id)
            assert span is not None
            target = span.oldest + int(str(arg)) % (span.newest - span.oldest + 1)
            past = store.load(session.session_id, target)
            assert past is not None
            assert encode(past) == model[target]
            back = rolled_back(session, past, now=past.metadata.last_accessed)
            store.save(back, session.revision).result(timeout=10)
            session = back
        elif op == "fork":
            fork = forked(session, session_id=f"f{next(_ids)}")
            store.save(fork, None).result(timeout=10)
            loaded = store.load(fork.session_id)
            assert loaded is not None
            assert encode(loaded) == encode(fork)
        else:
            settle(store)
            store.compact(session.session_id)
        model[session.revision] = encode(session)
        sessions[session.revision] = session
    settle(store)
    store.compact(session.session_id)

    span = store.history_range(session.session_id)
    assert span is not None
    assert span.newest == session.revision
    assert span.oldest <= max(0, session.revision - 5)  # retention keeps the last 6
    for revision in range(span.oldest, span.newest + 1):
        loaded = store.load(session.session_id, revision)
        assert loaded is not None
        assert encode(loaded) == model[revision], revision


@pytest.mark.parametrize("max_messages", [1000, 50])
def test_a_task_that_replaces_the_chat_history_is_recorded_or_saved_whole(
    make_store: MakeStore, max_messages: int
) -> None:
    def replace_history(ctx: Context) -> TaskResult:
        fresh = [ChatMessage("system", "fresh start", "t")]
        ctx.chat_history = ChatHistory(fresh, max_messages=max_messages)
        return TaskResult("replaced", NextAction.WaitForInput)

    graph = GraphBuilder("lab").add_task(FunctionTask("a", replace_history, blocking=False)).build()
    store = make_store(LogPolicy())
    session = new_session(graph, owner="alice", session_id=f"s{next(_ids)}")
    store.save(session, None).result(timeout=10)

    new, _ = step(graph, session, "hi")
    store.save(new, session.revision).result(timeout=10)

    # the same window: recorded as a clear and the new messages; another window: whole
    assert (new.record is None) == (max_messages != 1000)
    assert new.context.chat_history.total == 2  # "hi", then the fresh start after it
    loaded = store.load(session.session_id)
    assert loaded is not None
    assert [m.content for m in loaded.context.chat_history] == ["fresh start"]
