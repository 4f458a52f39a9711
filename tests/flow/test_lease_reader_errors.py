"""The forwarder's asyncio lease reader turns every failure to reach Redis into
StoreUnavailable (503), never an unhandled error (500).

During a Redis outage redis-py's asyncio connection can write to a transport
uvloop has already closed, which raises RuntimeError rather than a RedisError; a
full-suite run of the store-outage cluster test answered one step 500 that way.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import pytest
import redis

from flow import StoreUnavailable
from flow.stores._lease import AsyncLeaseReader, LeaseManager
from flow.stores._redis_client import LuaScript

CLOSED = RuntimeError("unable to perform operation on <TCPTransport closed=True>")


@pytest.mark.parametrize("failure", [CLOSED, redis.exceptions.ConnectionError("refused")])
def test_a_lookup_that_cannot_reach_redis_is_store_unavailable(
    monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> None:
    async def failing(self: LuaScript, client: Any, keys: Any, args: Any) -> Any:
        raise failure

    monkeypatch.setattr(LuaScript, "run_async", failing)
    leases = cast(LeaseManager, SimpleNamespace(key_prefix="af:"))
    reader = AsyncLeaseReader(leases, "redis://127.0.0.1:1/0")
    reader._client = cast(Any, object())  # never used: the script call fails first
    with pytest.raises(StoreUnavailable, match="lease lookup on 's1'"):
        asyncio.run(reader.holder("s1"))
