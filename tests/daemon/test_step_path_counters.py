"""The step path's cheap bookkeeping: step metrics as plain counts, the log writer's
deque, batched answers to an event loop. Each keeps what the locked version gave."""

from __future__ import annotations

import asyncio
import io
import json
import os
import threading
from typing import Any

from actors._live_index import LiveIndex
from runtime._bridge import AsyncReply
from runtime.daemon import _logging
from runtime.daemon._logging import _LineWriter
from runtime.daemon._metrics import STEP_BUCKETS, DaemonMetrics
from runtime.daemon.ui._figures import metric_totals


def _samples(text: str) -> dict[str, float]:
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def test_step_metrics_count_each_step_in_its_le_bucket_and_in_flight_steps() -> None:
    metrics = DaemonMetrics()
    metrics.inflight.inc()
    metrics.inflight.inc()
    metrics.inflight.dec()
    for seconds in (0.0005, 0.003, 0.003, 1000.0):  # on a bound, inside, past the last bound
        metrics.record_step(seconds)
    samples = _samples(metrics.render(None).decode())
    assert samples["actorflow_steps_total"] == 4
    assert samples["actorflow_steps_in_flight"] == 1
    bucket = 'actorflow_step_duration_seconds_bucket{le="%s"}'
    assert samples[bucket % "0.0005"] == 1  # le: a step on a bound counts in it
    assert samples[bucket % "0.005"] == 3
    assert samples[bucket % repr(STEP_BUCKETS[-1])] == 3
    assert samples[bucket % "+Inf"] == samples["actorflow_step_duration_seconds_count"] == 4
    assert samples["actorflow_step_duration_seconds_sum"] == 1000.0065
    steps, _, buckets = metric_totals(metrics)  # what the dashboard reads
    assert steps == 4
    assert dict(buckets)[0.005] == 3


def _pipe_writer(capacity: int) -> tuple[_LineWriter, int]:
    read_fd, write_fd = os.pipe()
    return _LineWriter(os.fdopen(write_fd, "w"), capacity), read_fd


def test_log_writer_writes_every_line_in_order_and_flush_waits_for_them() -> None:
    writer, read_fd = _pipe_writer(capacity=100_000)
    sent = [f"line {i}" for i in range(5_000)]

    def write(lines: list[str]) -> None:
        for line in lines:
            writer.write(line)

    threads = [threading.Thread(target=write, args=(sent[i::2],)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.flush(timeout=10)
    os.set_blocking(read_fd, False)
    got = os.read(read_fd, 10_000_000).decode().splitlines()
    assert sorted(got) == sorted(sent)  # none lost, none twice
    evens = [line for line in got if int(line.split()[1]) % 2 == 0]
    assert evens == sent[0::2]  # one thread's lines keep their order
    writer.write("after a pause")  # the writer slept on an empty queue: it is woken
    writer.flush(timeout=10)
    assert os.read(read_fd, 1000) == b"after a pause\n"


def test_log_writer_drops_past_its_capacity_and_says_how_many() -> None:
    entered, blocked = threading.Event(), threading.Event()
    stream = io.StringIO()
    writer = _LineWriter(stream, capacity=3)

    def stall(data: bytes) -> None:
        entered.set()
        blocked.wait(10)
        stream.write(data.decode())

    writer._emit = stall  # type: ignore[method-assign]  # stdout that stopped reading
    writer.write("first")  # taken by the writer, which then stalls on it
    assert entered.wait(10)
    for i in range(5):
        writer.write(f"queued {i}")
    blocked.set()
    writer.flush(timeout=10)
    lines = stream.getvalue().splitlines()
    assert lines[:4] == ["first", "queued 0", "queued 1", "queued 2"]
    assert json.loads(lines[4]) == {"event": "log_lines_dropped", "dropped": 2}
    assert writer.dropped == 2


def test_access_lines_are_structlogs_json_shape(monkeypatch: Any) -> None:
    lines: list[str] = []

    class Writer:
        def write(self, line: str) -> None:
            lines.append(line)

    monkeypatch.setattr(_logging, "_access_writer", Writer())
    assert _logging.log_access({"request_id": "r1", "status": 200, "duration_ms": 1.5})
    line = json.loads(lines[0])
    assert line.pop("timestamp").endswith("Z")
    assert line == {
        "request_id": "r1",
        "status": 200,
        "duration_ms": 1.5,
        "event": "request",
        "level": "info",
    }
    monkeypatch.setattr(_logging, "_access_writer", None)
    assert not _logging.log_access({"request_id": "r2"})  # structlog logs it then


def test_answers_from_many_threads_each_reach_their_own_future() -> None:
    async def main() -> list[Any]:
        index = LiveIndex()
        replies = [AsyncReply(index, counted=False) for _ in range(400)]

        def answer(part: list[tuple[int, AsyncReply]]) -> None:
            for n, reply in part:
                reply(ValueError(n) if n % 7 == 0 else n)
                reply("second answer: ignored")

        numbered = list(enumerate(replies))
        threads = [threading.Thread(target=answer, args=(numbered[i::4],)) for i in range(4)]
        for thread in threads:
            thread.start()
        outcomes = await asyncio.gather(*(r.wait() for r in replies), return_exceptions=True)
        for thread in threads:
            thread.join()
        return outcomes

    outcomes = asyncio.run(main())
    for n, outcome in enumerate(outcomes):
        if n % 7 == 0:
            assert isinstance(outcome, ValueError)
            assert outcome.args == (n,)
        else:
            assert outcome == n
