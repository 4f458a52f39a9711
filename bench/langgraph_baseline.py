"""The LangGraph side of the in-process benchmark: the same workload on SqliteSaver.

One step is one ``invoke`` of a one-node ``StateGraph`` that appends the input to
a message list and bumps a counter; state is checkpointed by ``SqliteSaver`` in a
SQLite file (WAL, the default ``synchronous=FULL``: every checkpoint is fsynced),
one ``thread_id`` per session. The saver shares one connection opened with
``check_same_thread=False``, as its documentation says, and serializes every
operation with its own lock.

``bench/inprocess.py`` drives it with the same client threads as actorflow and
prints the ratio. Run alone (``python bench/langgraph_baseline.py``) it prints
LangGraph's figures only.
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, TypedDict

try:
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.graph import END, START, StateGraph
except ImportError as exc:  # depends on the environment
    sys.exit(
        f"bench/langgraph_baseline.py needs LangGraph ({exc}): "
        "pip install -e '.[bench]' (langgraph, langgraph-checkpoint-sqlite)"
    )

__all__ = ["LangGraphBench", "LostUpdates", "lost_updates"]


class EchoState(TypedDict, total=False):
    """The graph state: this invoke's input, every input so far, and a counter."""

    input: str
    messages: list[str]
    count: int


def _append_and_count(state: EchoState) -> EchoState:
    """The one node: append the input to the messages and bump the counter."""
    messages = [*state.get("messages", []), state.get("input", "")]
    return {"messages": messages, "count": state.get("count", 0) + 1}


class LangGraphBench:
    """A compiled one-node graph checkpointed by SqliteSaver in a temporary directory.

    Use as a context manager; ``step(thread_id, text)`` runs one invoke and
    returns the counter it produced.
    """

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="langgraph-bench-")
        self.path = Path(self._tmp.name) / "checkpoints.sqlite"
        self._conn = sqlite3.connect(self.path, check_same_thread=False)
        saver = SqliteSaver(self._conn)
        saver.setup()
        builder = StateGraph(EchoState)
        builder.add_node("append", _append_and_count)
        builder.add_edge(START, "append")
        builder.add_edge("append", END)
        self._graph = builder.compile(checkpointer=saver)

    def step(self, thread_id: str, text: str) -> int:
        """One invoke on ``thread_id`` with ``text`` as input; returns the new counter."""
        config: Any = {"configurable": {"thread_id": thread_id}}
        result = self._graph.invoke({"input": text}, config)
        return int(result["count"])

    def count(self, thread_id: str) -> int:
        """The counter in the latest checkpoint of ``thread_id`` (0 when there is none)."""
        config: Any = {"configurable": {"thread_id": thread_id}}
        values = self._graph.get_state(config).values
        return int(values.get("count", 0))

    def close(self) -> None:
        """Close the connection and remove the temporary directory."""
        self._conn.close()
        self._tmp.cleanup()

    def __enter__(self) -> LangGraphBench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LostUpdates(TypedDict):
    """What ``lost_updates`` found: invokes sent and the counter they left."""

    threads: int
    invokes_per_thread: int
    sent: int
    counter: int
    lost: int


def lost_updates(threads: int = 8, invokes_per_thread: int = 25) -> LostUpdates:
    """Invoke one thread_id from ``threads`` threads at once; count the increments kept.

    Every invoke reads the latest checkpoint, adds one and writes a new checkpoint;
    nothing serializes invokes on one thread_id, so concurrent ones overwrite each
    other's increments.
    """
    start = threading.Barrier(threads)
    errors: list[Exception] = []
    with LangGraphBench() as bench:

        def client(index: int) -> None:
            start.wait()
            try:
                for i in range(invokes_per_thread):
                    bench.step("shared", f"client {index} message {i}")
            except Exception as exc:  # kept for the caller: a thread's error is otherwise lost
                errors.append(exc)

        workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        if errors:
            raise RuntimeError(f"{len(errors)} LangGraph clients failed") from errors[0]
        counter = bench.count("shared")
    sent = threads * invokes_per_thread
    return {
        "threads": threads,
        "invokes_per_thread": invokes_per_thread,
        "sent": sent,
        "counter": counter,
        "lost": sent - counter,
    }


def main() -> None:
    """Print LangGraph's steps/s at 8, 32 and 64 clients and its lost updates."""
    from inprocess import closed_loop, print_load  # the driver actorflow's side uses too

    with LangGraphBench() as bench:
        sessions = [f"thread-{i}" for i in range(64)]
        for clients in (8, 32, 64):
            result = closed_loop(
                clients, sessions, lambda sid, text: bench.step(sid, text), seconds=3.0
            )
            print_load(f"langgraph clients={clients}", result)
    found = lost_updates()
    print(
        f"langgraph lost updates: {found['threads']} threads x {found['invokes_per_thread']} "
        f"invokes on one thread_id -> counter {found['counter']} of {found['sent']} "
        f"({found['lost']} lost)"
    )


if __name__ == "__main__":
    main()
