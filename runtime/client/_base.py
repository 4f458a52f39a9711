"""What ``Client`` and ``AsyncClient`` share: settings, owner checks, reading answers."""

from __future__ import annotations

from typing import TypeVar

import httpx
import msgspec

from runtime.client._calls import Call, Replay
from runtime.client._errors import DaemonUnavailable, UnexpectedResponse, error_for_response
from runtime.client._retry import RETRY_STATUSES, Retrier, RetryPolicy, RetryStatus
from runtime.errors import InvalidInput

__all__ = ["DEFAULT_LIMITS", "DEFAULT_TIMEOUT", "LOCAL_USER", "ClientBase"]

T = TypeVar("T")

#: connect fast; wait for a step longer than the daemon's default --step-timeout (300 s),
#: so that its 504 arrives before the client gives up
DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=310.0, write=30.0, pool=30.0)
#: httpx's pool defaults, but idle connections are dropped after 4 s: before uvicorn's
#: 5 s keep-alive timeout closes them under a request that cannot then be retried
DEFAULT_LIMITS = httpx.Limits(
    max_connections=100, max_keepalive_connections=20, keepalive_expiry=4.0
)
#: the user of every request to a daemon without a tokens file
LOCAL_USER = "local"
USER_AGENT = "actorflow-client/0.1"


class ClientBase:
    """Settings and the sync/async-neutral parts of a client."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        user: str | None,
        retry: RetryPolicy | None,
        idempotent_server: bool | None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.user = user if user is not None else (LOCAL_USER if token is None else None)
        self.retry = retry if retry is not None else RetryPolicy()
        self._keys_fixed = idempotent_server is not None
        self._keys_honoured = bool(idempotent_server)
        self._headers = {"user-agent": USER_AGENT}
        if token is not None:
            self._headers["authorization"] = f"Bearer {token}"

    @property
    def idempotent_server(self) -> bool:
        """True once the daemon is known to honour ``Idempotency-Key`` (steps then retry
        after any failure): said at construction, or seen in a step's answer."""
        return self._keys_honoured

    def _keys(self) -> bool:
        return self._keys_honoured

    def _retrier(self, call: Call[T]) -> Retrier:
        return Retrier(call.replay, self._keys, self.retry)

    def _owner_matches(self, owner: str | None) -> bool:
        """Whether sessions of ``owner`` are this client's (None: no check asked)."""
        if owner is None:
            return True
        if self.user is None:
            raise InvalidInput(
                f"owner={owner!r} needs to know whose token this client has: "
                "pass user= to the client (the daemon takes the owner from the token)"
            )
        return owner == self.user

    def _check_creator(self, owner: str | None) -> None:
        if not self._owner_matches(owner):
            raise InvalidInput(
                f"this client creates sessions as {self.user!r}, its token's user, not "
                f"{owner!r}: use a client with {owner!r}'s token"
            )

    @staticmethod
    def _raise_if_retryable(response: httpx.Response) -> httpx.Response:
        if response.status_code in RETRY_STATUSES:
            raise RetryStatus(response)
        return response

    def _read(self, call: Call[T], response: httpx.Response, retrier: Retrier | None) -> T:
        status = response.status_code
        if status < 400:
            if (
                call.replay is Replay.KEYED
                and not self._keys_fixed
                and "idempotent-replayed" in response.headers
            ):
                self._keys_honoured = True
            try:
                return call.decode(response)
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
                raise UnexpectedResponse(
                    f"unreadable answer to {call.method} {call.path} (HTTP {status}): {exc}",
                    status,
                ) from None
        if (
            status == 404
            and call.replay is Replay.DELETE
            and retrier is not None
            and retrier.maybe_sent
        ):
            return call.decode(response)  # an earlier attempt deleted it; its answer was lost
        raise error_for_response(response, session_id=call.session_id, graph_id=call.graph_id)

    @staticmethod
    def _unavailable(call: Call[T], exc: Exception, retrier: Retrier) -> DaemonUnavailable:
        maybe = retrier.maybe_sent
        outcome = "it may have run" if maybe else "it did not reach the daemon"
        return DaemonUnavailable(
            f"{call.method} {call.path}: no answer ({type(exc).__name__}: {exc}); {outcome}",
            maybe_applied=maybe,
        )
