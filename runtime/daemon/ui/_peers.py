"""The dashboard on a worker of ``actorflowd --workers N``: figures and lists of every worker.

The front sends a session's pages to the worker that owns it and every other
dashboard page to worker 0, whose overview and live-actors table must still
cover every worker. ``Peers`` gives the dashboard what it reads from its own
runtime on a single daemon, for the whole daemon:

- ``stats`` and ``live_page``: the parent's admin socket (``DATA_DIR/admin.sock``),
  which asks every worker and merges (runtime/daemon/_admin_fanout.py);
- ``metric_totals``: steps, error answers and the step-latency buckets of every
  worker's ``/metrics``, read over the workers' Unix sockets and added up.

It also holds the key the workers' login cookies are signed with
(runtime/daemon/ui/_logins.py). A worker that does not answer is a 503
``worker-unavailable``, never figures missing a shard. Runs on the worker's event
loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import msgspec
from prometheus_client.parser import text_string_to_metric_families

from runtime._live_page import LivePage
from runtime._shard_map import shard_dir
from runtime._views import LiveSessionInfo, RuntimeStats
from runtime.admin._client import MAX_REPLY_BYTES
from runtime.admin._protocol import encode_line
from runtime.daemon._problems import WORKER_UNAVAILABLE, Problem
from runtime.daemon._sharding import RECORD_NAME, read_ui_key

__all__ = ["Peers"]

TIMEOUT = 10.0
STEPS = "actorflow_steps_total"
ERRORS = "actorflow_errors_total"
BUCKETS = "actorflow_step_duration_seconds_bucket"


class Peers:
    """Every worker of this worker's daemon, as its dashboard reads them."""

    def __init__(self, admin_socket: Path, http_sockets: Sequence[Path], key: bytes) -> None:
        self.admin_socket = admin_socket
        self.http_sockets = tuple(http_sockets)
        self.key = key
        self._clients: list[httpx.AsyncClient] | None = None

    @classmethod
    def of_worker(cls, shard_data_dir: Path) -> Peers:
        """The peers of the worker keeping its data in ``shard_data_dir`` (``DATA_DIR/shard-K``)."""
        data_dir = shard_data_dir.parent
        n = int((data_dir / RECORD_NAME).read_text().strip())
        sockets = [shard_dir(data_dir, k) / "http.sock" for k in range(n)]
        return cls(data_dir / "admin.sock", sockets, read_ui_key(data_dir))

    async def aclose(self) -> None:
        if self._clients is not None:
            await asyncio.gather(*(client.aclose() for client in self._clients))
            self._clients = None

    async def _admin(self, op: str, **args: Any) -> Any:
        """The parent's merged answer to one admin op."""
        try:
            async with asyncio.timeout(TIMEOUT):
                reader, writer = await asyncio.open_unix_connection(
                    self.admin_socket, limit=MAX_REPLY_BYTES
                )
                try:
                    writer.write(encode_line({"op": op, **args}))
                    line = await reader.readline()
                finally:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
            reply = json.loads(line)
        except (OSError, TimeoutError, ValueError) as exc:
            raise Problem(WORKER_UNAVAILABLE, f"the workers' admin socket: {exc}") from None
        if not isinstance(reply, dict) or not reply.get("ok"):
            error = reply.get("error") if isinstance(reply, dict) else None
            raise Problem(WORKER_UNAVAILABLE, f"the workers did not answer: {error}")
        return reply["result"]

    async def stats(self) -> RuntimeStats:
        """Every worker's ``RuntimeStats`` added up (without the timers' figures, which the
        dashboard does not show)."""
        return msgspec.convert({**await self._admin("stats"), "timers": None}, RuntimeStats)

    async def live_page(
        self,
        *,
        sort: str = "mailbox_depth",
        descending: bool = True,
        graph: str | None = None,
        owner: str | None = None,
        status: str | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> LivePage:
        """One page of every worker's live actors (``Runtime.live_page``'s arguments)."""
        args = {"graph": graph, "owner": owner, "status": status}
        result = await self._admin(
            "ls",
            sort=sort,
            order="desc" if descending else "asc",
            offset=offset,
            limit=limit,
            **{name: value for name, value in args.items() if value is not None},
        )
        return LivePage(
            total=int(result["total"]),
            items=[msgspec.convert(row, LiveSessionInfo) for row in result["sessions"]],
            offset=int(result["offset"]),
            graphs=dict(result["graphs"]),
            versions={(g, v): int(n) for g, v, n in result["versions"]},
        )

    async def metric_totals(self) -> tuple[float, float, tuple[tuple[float, float], ...]]:
        """Steps, error answers and the step-latency buckets, summed over every worker."""
        if self._clients is None:
            self._clients = [
                httpx.AsyncClient(
                    transport=httpx.AsyncHTTPTransport(uds=str(path)),
                    base_url="http://localhost",
                    timeout=TIMEOUT,
                )
                for path in self.http_sockets
            ]
        try:
            answers = await asyncio.gather(*(c.get("/metrics") for c in self._clients))
        except httpx.TransportError as exc:
            raise Problem(WORKER_UNAVAILABLE, f"a worker's /metrics: {exc}") from None
        steps = errors = 0.0
        buckets: dict[float, float] = {}
        for answer in answers:
            for family in text_string_to_metric_families(answer.text):
                for sample in family.samples:
                    if sample.name == STEPS:
                        steps += sample.value
                    elif sample.name == ERRORS:
                        errors += sample.value
                    elif sample.name == BUCKETS:
                        bound = float(sample.labels["le"])
                        buckets[bound] = buckets.get(bound, 0.0) + sample.value
        return steps, errors, tuple(sorted(buckets.items()))
