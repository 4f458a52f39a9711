"""`LiveIndex` keeps awake and hibernated entries apart and still answers in use order.

The awake entries sit in a use-ordered map and the hibernated ones in a plain
dict of their own (which the garbage collector then untracks); the sweeps and
eviction read both, merged by last use, and a wake or a removal moves an entry
between them.
"""

from __future__ import annotations

import gc
from typing import Any, cast

import pykka

from actors._live_index import HibernatedEntry, LiveEntry, LiveIndex


class _Inbox:
    @staticmethod
    def empty() -> bool:
        return True


class _Ref:
    """What the index reads of an actor ref: its mailbox, and ``tell``."""

    actor_inbox = _Inbox()

    def __init__(self) -> None:
        self.told: list[Any] = []

    def tell(self, message: Any) -> None:
        self.told.append(message)


def _ref() -> pykka.ActorRef[Any]:
    return cast("pykka.ActorRef[Any]", _Ref())


def _index(used: dict[str, float]) -> LiveIndex:
    index = LiveIndex()
    for sid, at in used.items():
        index.add(
            LiveEntry(
                session_id=sid,
                incarnation=1,
                owner="o",
                graph_id="g",
                last_used=at,
                status="waiting_for_input",
                current_task="t",
                revision=1,
                request_count=1,
                expires_at=None,
                activated_at=0.0,
                reason="test",
                ref=_ref(),
            )
        )
    return index


def _hibernate(index: LiveIndex, sid: str) -> None:
    entry = index.get(sid)
    assert entry is not None
    assert entry.ref is not None
    assert index.hibernate(entry, entry.ref, b"frozen " + sid.encode(), entry.last_used)


def _ids(entries: list[LiveEntry]) -> list[str]:
    return [e.session_id for e in entries]


def test_awake_and_hibernated_entries_are_read_in_use_order() -> None:
    index = _index({"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0, "e": 5.0})
    _hibernate(index, "a")
    _hibernate(index, "c")
    assert (len(index), index.hibernated_count()) == (5, 2)
    assert type(index.get("a")) is HibernatedEntry
    assert type(index.get("b")) is LiveEntry
    assert _ids(index.entries()) == ["a", "c", "b", "d", "e"], "hibernated, then awake"
    assert _ids(index.least_recent(3.5)) == ["a", "b", "c"]
    assert _ids(index.eviction_candidates(2)) == ["a", "b"]
    assert _ids(index.awake_since(4.5)) == ["b", "d"]


def test_an_entry_that_hibernated_late_is_still_listed_and_swept() -> None:
    index = _index({"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0})
    _hibernate(index, "c")
    _hibernate(index, "a")  # its actor put it off: it hibernated after one used later
    assert sorted(_ids(index.entries())) == ["a", "b", "c", "d"]
    assert sorted(_ids(index.least_recent(3.5))) == ["a", "b", "c"]
    assert sorted(_ids(index.eviction_candidates(4))) == ["a", "b", "c", "d"]


def test_a_step_never_reaches_a_hibernated_entry_and_bumps_only_the_awake_one() -> None:
    index = _index({"a": 1.0, "b": 2.0})
    _hibernate(index, "a")
    assert index.send("a", "hello", now=9.0, step=True, max_pending=8) is None
    sent = index.send("b", "hello", now=9.0, step=True, max_pending=8)
    assert sent is not None
    assert sent.pending == 1
    assert cast("_Ref", sent.ref).told == ["hello"]
    assert _ids(index.entries()) == ["a", "b"]


def test_a_wake_and_a_removal_move_entries_between_the_maps() -> None:
    index = _index({"a": 1.0, "b": 2.0, "c": 3.0})
    _hibernate(index, "a")
    _hibernate(index, "b")
    hibernated = index.hibernated("a")
    assert hibernated is not None
    assert hibernated.frozen == b"frozen a"
    woken = index.waking(hibernated)
    ref = _ref()
    index.wake(woken, ref, incarnation=7)
    assert index.get("a") is woken
    assert (woken.ref, woken.incarnation, woken.frozen) == (ref, 7, None)
    assert index.hibernated("a") is None
    assert index.hibernated_count() == 1
    removed = index.remove("b", when=lambda _: True)
    assert removed is not None
    assert removed.frozen == b"frozen b"
    assert index.stopping("b")
    assert index.is_live("b"), "stopping counts as live until it has stopped"
    assert (len(index), index.hibernated_count()) == (2, 0)


def test_the_map_of_hibernated_entries_is_left_out_of_collections() -> None:
    index = _index({f"s{i}": float(i) for i in range(100)})
    for i in range(100):
        _hibernate(index, f"s{i}")
    gc.collect()
    entry = index.get("s5")
    assert entry is not None
    assert not gc.is_tracked(entry)
    assert not any(isinstance(r, dict) for r in gc.get_referrers(entry))
