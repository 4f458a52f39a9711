"""A thread pool of daemon threads for tasks that block.

``ThreadPoolExecutor`` joins its worker threads when the interpreter exits, so
one stuck task (a hung HTTP call inside a user's task) would keep a daemon that
has finished its drain from ever exiting. This pool's threads are daemon
threads: shutting it down cancels what has not started, and a task still
running at exit is abandoned, as the drain timeout promises.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from queue import Empty, SimpleQueue
from typing import Any, ParamSpec, TypeVar

__all__ = ["TaskPool"]

P = ParamSpec("P")
T = TypeVar("T")

_Work = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class TaskPool(Executor):
    """Up to ``threads`` daemon worker threads, started as work arrives.

    Args:
        threads: the most threads (at least 1).
        name: prefix of the threads' names.
    """

    def __init__(self, threads: int, name: str = "actorflow-task") -> None:
        if threads < 1:
            raise ValueError(f"a task pool needs at least 1 thread, got {threads}")
        self._max = threads
        self._name = name
        self._queue: SimpleQueue[_Work | None] = SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._closed = False

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Run ``fn(*args, **kwargs)`` on a worker; its future.

        Raises:
            RuntimeError: the pool is shut down.
        """
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot submit to a task pool that is shut down")
            self._queue.put((future, fn, args, kwargs))
            if not self._idle.acquire(blocking=False) and len(self._threads) < self._max:
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
        return future

    def _work(self) -> None:
        while (work := self._queue.get()) is not None:
            _run(*work)  # its arguments and result go with its frame
            # not held while the thread waits: the last task's session, or a loaded
            # batch of sessions, would stay in memory until its next piece of work
            work = None
            self._idle.release()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more work; cancel queued work if asked; join the workers if ``wait``."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        if cancel_futures:
            while True:
                try:
                    work = self._queue.get_nowait()
                except Empty:
                    break
                if work is not None:
                    work[0].cancel()
        for _ in threads:
            self._queue.put(None)
        if wait:
            for thread in threads:
                thread.join()


def _run(future: Future[Any], fn: Callable[..., Any], args: Any, kwargs: Any) -> None:
    """Run one piece of work and settle its future."""
    if future.set_running_or_notify_cancel():
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:  # the future carries whatever the task raised
            future.set_exception(exc)
        else:
            future.set_result(result)
