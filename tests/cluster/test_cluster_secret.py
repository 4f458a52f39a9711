"""The cluster's secret in PostgreSQL: made once, whoever asks first, however many at once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from flow.stores._postgres import PostgresStore
from runtime._cluster import _postgres_secret

pytestmark = pytest.mark.postgres

DAEMONS = 8


def test_daemons_reading_the_secret_for_the_first_time_at_once_all_get_the_same(
    postgres_url: str,
) -> None:
    # CREATE TABLE IF NOT EXISTS run at the same moment by two connections fails in
    # one of them (a unique violation in the catalog): two daemons forwarding for the
    # first time at once lost a request that way, and it waited out the forward timeout
    stores = [PostgresStore(postgres_url) for _ in range(DAEMONS)]
    try:
        start = threading.Barrier(DAEMONS)

        def first_read(store: PostgresStore) -> bytes:
            start.wait()
            return _postgres_secret(store)

        with ThreadPoolExecutor(DAEMONS) as pool:
            secrets = list(pool.map(first_read, stores))
    finally:
        for store in stores:
            store.close()
    assert len(set(secrets)) == 1
    assert len(secrets[0]) == 64  # 32 random bytes in hex
