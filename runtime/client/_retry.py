"""When a request may be sent again, and how long to wait first.

The decision is made per failure by ``Retrier``, a stamina backoff hook
(exponential backoff with jitter, bounded by attempts and a total deadline):

- a failure before the request reached the daemon (connection refused, connect
  or pool timeout), and any 429 or 503 answer that says nothing ran (429,
  ``overloaded``, ``draining``), is retried for every request;
- a failure after the request may have reached the daemon (connection reset or
  closed mid-request, read timeout) and any other 503 is retried for reads and
  deletes, for steps only once the daemon honours their ``Idempotency-Key``,
  and never for creates;
- 503 ``outcome-unknown`` (a cluster's holder stopped answering a forwarded
  step) is never retried: it raises ``OutcomeUnknown`` and the caller reads the
  session first (docs/cluster.md); a 421 ``misdirected`` is not retried either;
- the wait is exponential with jitter (``RetryPolicy``), cut to end by the
  deadline; ``Retry-After`` sets it where the daemon sends one, and a wait
  that would end past the deadline is not taken. stamina runs the loop and
  counts the attempts; this hook chooses the waits so that it can bound them.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from runtime.client._calls import Replay
from runtime.client._errors import problem_slug

__all__ = ["NEVER_SENT", "Retrier", "RetryPolicy", "RetryStatus", "retry_after"]

#: failures that prove the request never reached the daemon
NEVER_SENT: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)
#: failures after which the request may or may not have run
MAYBE_SENT: tuple[type[Exception], ...] = (
    httpx.NetworkError,
    httpx.TimeoutException,
    httpx.RemoteProtocolError,
)
#: 503 problem types the daemon answers before it hands the request to the runtime
NOTHING_RAN_503 = frozenset({"overloaded", "draining"})
#: problem types a caller must look into before sending the request again
NEVER_RETRIED = frozenset({"outcome-unknown"})
RETRY_STATUSES = frozenset({429, 503})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a client retries (see the module docstring for what it retries).

    Attributes:
        deadline: seconds from a call's first failed attempt after which no retry starts.
        attempts: most attempts per call, the first included (1: never retry).
        wait_initial: the first backoff, in seconds; it doubles on each retry...
        wait_max: ...up to this.
        wait_jitter: up to this many seconds added at random to each backoff.
    """

    deadline: float = 30.0
    attempts: int = 10
    wait_initial: float = 0.1
    wait_max: float = 5.0
    wait_jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be at least 1, got {self.attempts}")
        for name in ("deadline", "wait_initial", "wait_max", "wait_jitter"):
            if getattr(self, name) < 0:
                raise ValueError(f"RetryPolicy.{name} must not be negative")


class RetryStatus(Exception):
    """An answer (429 or 503) that may call for a retry; raised inside the retry loop."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def retry_after(response: httpx.Response) -> float | None:
    """The seconds ``Retry-After`` asks to wait (delta-seconds or an HTTP date), or None."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Retrier:
    """The backoff hook of one call: says whether (and how long after) to retry a failure.

    Attributes:
        maybe_sent: set once an attempt failed after it may have reached the daemon.
    """

    def __init__(
        self, replay: Replay, keys_honoured: Callable[[], bool], policy: RetryPolicy
    ) -> None:
        self.replay = replay
        self.keys_honoured = keys_honoured
        self.policy = policy
        self.deadline_at = time.monotonic() + policy.deadline
        self.maybe_sent = False
        self.retries = 0

    def _backoff(self) -> float:
        """Exponential backoff with jitter (as stamina's), cut to end by the deadline."""
        policy = self.policy
        wait = min(policy.wait_max, policy.wait_initial * 2.0**self.retries)
        wait += random.uniform(0.0, policy.wait_jitter)
        self.retries += 1
        return max(0.0, min(wait, self.remaining()))

    def remaining(self) -> float:
        """Seconds left before the deadline."""
        return self.deadline_at - time.monotonic()

    def _replayable(self) -> bool:
        if self.replay is Replay.KEYED:
            return self.keys_honoured()
        return self.replay is not Replay.ONCE

    def _status_retryable(self, response: httpx.Response) -> bool:
        if response.status_code == 429:
            return True
        slug = problem_slug(response)
        if slug in NEVER_RETRIED:
            return False
        return slug in NOTHING_RAN_503 or self._replayable()

    def __call__(self, exc: Exception) -> bool | float:
        if isinstance(exc, MAYBE_SENT) and not isinstance(exc, NEVER_SENT):
            self.maybe_sent = True
        remaining = self.remaining()
        if remaining <= 0:
            return False
        if isinstance(exc, RetryStatus):
            if not self._status_retryable(exc.response):
                return False
            wait = retry_after(exc.response)
            if wait is None:
                return self._backoff()
            if wait > remaining:
                return False
            # a little jitter, so that clients told the same wait do not come back together
            return wait + random.uniform(0.0, min(0.5, wait * 0.1))
        if isinstance(exc, NEVER_SENT) or (isinstance(exc, MAYBE_SENT) and self._replayable()):
            return self._backoff()
        return False
