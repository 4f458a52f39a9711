"""What the Redis store and the lease manager share: the client, Lua scripts, errors.

A Redis call either answers or fails fast: connections time out after a second,
a failed call is retried once after a few milliseconds, and every redis-py
error becomes ``StoreUnavailable`` naming the server, so a caller never waits
long on a Redis that is down and redis-py reconnects on the next call once it
is back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio as aredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from flow._errors import StoreUnavailable

__all__ = ["LuaScript", "connect", "connect_async", "describe", "unavailable"]

CONNECT_TIMEOUT = 1.0
SOCKET_TIMEOUT = 5.0


def connect(url: str) -> redis.Redis:
    """A redis-py client for ``url`` (``redis://host:port/db``) with a short, bounded retry.

    Raises:
        ValueError: the URL is not a Redis URL.
    """
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=SOCKET_TIMEOUT,
        retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), retries=1),
        health_check_interval=30,
    )


def connect_async(url: str) -> aredis.Redis:
    """An asyncio redis-py client for ``url``, with ``connect``'s timeouts and retry."""
    return aredis.Redis.from_url(
        url,
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=SOCKET_TIMEOUT,
        retry=AsyncRetry(ExponentialBackoff(cap=0.05, base=0.01), retries=1),
    )


def describe(client: redis.Redis) -> str:
    """``host:port/db`` of the server ``client`` talks to, for error messages."""
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"


def unavailable(client: redis.Redis, what: str, exc: BaseException) -> StoreUnavailable:
    """A ``StoreUnavailable`` saying what failed against which server, chained to ``exc``."""
    error = StoreUnavailable(
        f"redis at {describe(client)}: {what} failed: {type(exc).__name__}: {exc}"
    )
    error.__cause__ = exc
    return error


class LuaScript:
    """A Lua script run by EVALSHA, loaded again when the server has forgotten it.

    Redis forgets loaded scripts when it restarts; ``run`` and the pipeline
    helpers load the script on ``NOSCRIPT`` and try once more.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def run(self, client: redis.Redis, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run the script once, loading it first if the server does not know it."""
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            client.script_load(self.source)
            return client.evalsha(self.sha, len(keys), *keys, *args)

    async def run_async(
        self, client: aredis.Redis, keys: Sequence[Any], args: Sequence[Any]
    ) -> Any:
        """``run`` on an asyncio client."""
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            await client.script_load(self.source)
            return await client.evalsha(self.sha, len(keys), *keys, *args)

    def queue(self, pipe: Any, keys: Sequence[Any], args: Sequence[Any]) -> None:
        """Queue one EVALSHA of the script on a pipeline."""
        pipe.evalsha(self.sha, len(keys), *keys, *args)

    def run_many(
        self, client: redis.Redis, calls: Sequence[tuple[Sequence[Any], Sequence[Any]]]
    ) -> list[Any]:
        """Run the script once per ``(keys, args)`` in one pipeline, in order.

        Returns one entry per call: the script's answer or the ``ResponseError``
        it raised. Calls refused with ``NOSCRIPT`` (none of them ran) are run
        again, in order, after loading the script.

        Raises:
            redis.exceptions.RedisError: the connection failed.
        """
        results = self._pipeline(client, calls)
        missing = [
            i for i, r in enumerate(results) if isinstance(r, redis.exceptions.NoScriptError)
        ]
        if missing:
            client.script_load(self.source)
            again = self._pipeline(client, [calls[i] for i in missing])
            for i, result in zip(missing, again, strict=True):
                results[i] = result
        return results

    def _pipeline(
        self, client: redis.Redis, calls: Sequence[tuple[Sequence[Any], Sequence[Any]]]
    ) -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for keys, args in calls:
            self.queue(pipe, keys, args)
        return list(pipe.execute(raise_on_error=False))
