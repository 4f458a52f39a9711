"""`StopSignals`: what SIGTERM and SIGINT do to a daemon, single or the ``--workers`` front.

The first signal drains (``drain``), or with a drain delay first announces the
stop (``announce``: ``/readyz`` answers 503 while everything else is served)
and drains once the delay has passed. A signal during the delay drains at
once; a signal once the drain began exits now (``exit_now``).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

import structlog

__all__ = ["StopSignals"]

_log = structlog.get_logger("actorflowd")


class StopSignals:
    """The handler of SIGTERM and SIGINT (see the module docstring).

    Args:
        loop: the daemon's event loop (the delay is one of its timers).
        announce: called when a delay begins.
        drain: called with the signal's number when the drain begins.
        exit_now: called when a signal arrives after that (it does not return).

    Attributes:
        delay: seconds between the first signal and the drain (0: none). The
            ``--workers`` front sets it once it serves: before, a signal drains at once.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        announce: Callable[[], None],
        drain: Callable[[int], None],
        exit_now: Callable[[], None],
        delay: float = 0.0,
    ) -> None:
        self.delay = delay
        self._loop = loop
        self._announce = announce
        self._drain = drain
        self._exit_now = exit_now
        self._delayed: asyncio.TimerHandle | None = None
        self._draining = False

    def install(self) -> None:
        """Handle SIGTERM and SIGINT on the loop."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(signum, self, signum)

    def __call__(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self._draining:
            _log.warning("second_signal_exiting_now", signal=name)
            self._exit_now()
            return
        if self._delayed is not None:  # a second signal cuts the delay
            self._delayed.cancel()
            self._begin_drain(signum)
            return
        if self.delay > 0:
            _log.info("drain_delay", signal=name, seconds=self.delay)
            self._announce()
            self._delayed = self._loop.call_later(self.delay, self._begin_drain, signum)
            return
        self._begin_drain(signum)

    def _begin_drain(self, signum: int) -> None:
        self._draining = True
        self._drain(signum)
