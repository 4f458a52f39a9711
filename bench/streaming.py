"""Streaming benchmark: tokens over SSE, idle ``/events`` subscribers, LangGraph's custom stream.

Usage: ``.venv-dev/bin/python bench/streaming.py [--quick]``.

Prints one line per figure and writes ``bench/out/streaming.png``:

- 64 concurrent streamed steps over HTTP (``Accept: text/event-stream``), each
  task emitting 200 tokens 1 ms apart (``ctx.emit_token``, ``asyncio.sleep``),
  read by a raw-socket SSE client (the target's line) and again by httpx (its
  line reader adds latency of its own): tokens/s delivered in total; the
  added latency per token, the client's receive time minus the task's emit
  time (both ``CLOCK_MONOTONIC``, which one machine's processes share; the
  emit time travels in the token's text), p50 and p99; the time from the last
  token to ``committed`` (the commit, fsynced). The measuring client is an
  instrument: its own garbage collector is paused during each round (a pause
  there would count as the daemon's latency), and it runs on uvloop.
- 1,000 idle ``GET /v1/sessions/{id}/events`` subscribers held open: the
  daemon's RSS per subscriber, and plain step throughput (16 clients, echo)
  with them connected against without (the mean of a run before they connect
  and one after they left), and the ratio.
- The same 64 streams in process, ``AsyncRuntime.stream`` (async tasks on the
  runtime's own loop thread, then with ``task_loop="caller"``, as the daemon runs
  them), against LangGraph's
  ``astream(stream_mode="custom")`` (a one-node graph writing 200 chunks 1 ms
  apart through ``get_stream_writer``, no checkpointer): tokens/s and latency.

The daemon serves this module's ``GRAPHS`` (``--graphs streaming:GRAPHS`` with
``bench/`` on its ``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from flow import Context, FunctionTask, GraphBuilder, NextAction, TaskResult

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).resolve().parent / "out" / "streaming.png"
TOKENS = 200
GAP = 0.001


async def _tokens(ctx: Context) -> TaskResult:
    """Emit ``TOKENS`` tokens ``GAP`` apart, each carrying its emit time."""
    count = int(ctx.get("tokens", TOKENS))
    for _ in range(count):
        ctx.emit_token(repr(time.monotonic()))
        await asyncio.sleep(GAP)
    return TaskResult(f"{count} tokens", NextAction.WaitForInput)


#: The benchmark's graph: one async task that streams timed tokens.
GRAPHS = [GraphBuilder("tokens").add_task(FunctionTask("tokens", _tokens)).build()]


@dataclass(slots=True)
class StreamFigures:
    """What a set of concurrent streams measured."""

    tokens: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    to_commit: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Tokens delivered per second, all streams together."""
        return self.tokens / self.seconds if self.seconds else 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (nearest rank) of ``values``."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    """actorflowd in a subprocess on a free port, serving the demo graphs and ``GRAPHS``."""

    def __init__(self, data_dir: Path, *extra: str) -> None:
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log = data_dir / "daemon.log"
        command = [
            sys.executable, "-m", "runtime",
            "--port", str(self.port),
            "--data-dir", str(data_dir),
            "--log-format", "json",
            "--graphs", "flow.demo:GRAPHS",
            "--graphs", "streaming:GRAPHS",
            *extra,
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("ACTORFLOW_")}
        env["ACTORFLOW_WORKERS"] = "1"  # one process (the default is one worker per core)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "bench")])
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"actorflowd exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("actorflowd did not become ready in 60 s")
            time.sleep(0.05)  # polling a subprocess's port: no event to wait on

    def rss_bytes(self) -> int:
        """The daemon's resident set size."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> int:
        """SIGTERM and wait; the exit status."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


async def _create(client: object, graph: str, count: int) -> list[str]:
    import httpx

    assert isinstance(client, httpx.AsyncClient)
    ids = []
    for _ in range(count):
        answer = await client.post("/v1/sessions", json={"graph": graph})
        answer.raise_for_status()
        ids.append(str(answer.json()["session_id"]))
    return ids


async def http_streams(url: str, streams: int) -> StreamFigures:
    """``streams`` concurrent streamed steps of the ``tokens`` graph over SSE."""
    import httpx

    figures = StreamFigures()
    limits = httpx.Limits(max_connections=streams + 8)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        sessions = await _create(client, "tokens", streams)

        async def one(sid: str) -> None:
            last_token = 0.0
            async with client.stream(
                "POST",
                f"/v1/sessions/{sid}/step",
                json={},
                headers={"accept": "text/event-stream"},
            ) as response:
                kind = ""
                async for line in response.aiter_lines():
                    if line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: "):
                        now = time.monotonic()
                        data = json.loads(line[6:])
                        if kind == "token":
                            figures.latencies.append(now - float(data["text"]))
                            figures.tokens += 1
                            last_token = now
                        elif kind == "committed":
                            figures.to_commit.append(now - last_token)
                            return

        began = time.monotonic()
        await asyncio.gather(*(one(sid) for sid in sessions))
        figures.seconds = time.monotonic() - began
    return figures


async def _dechunk(reader: asyncio.StreamReader, chunked: bool) -> AsyncIterator[bytes]:
    """The body's bytes as they arrive (HTTP/1.1 chunked framing removed)."""
    if not chunked:
        while data := await reader.read(65536):
            yield data
        return
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
        if size == 0:
            return
        yield await reader.readexactly(size)
        await reader.readexactly(2)


_TEXT = b'"text":"'


async def raw_streams(url: str, streams: int) -> StreamFigures:
    """The same streamed steps read by a raw-socket SSE client.

    httpx's line iterator adds its own scheduling latency to every token (its
    decoders and the ``aiter_lines`` generator chain run once per read); this
    client reads the socket with asyncio streams, removes the chunked framing,
    splits frames on the blank line and timestamps each frame when its bytes
    arrive: what a browser's ``EventSource`` or a C client would see. It finds
    the token's text without decoding the JSON, to take as little of the
    machine's CPU (shared with the daemon) as it can.
    """
    import httpx

    host, port = url.rsplit("//", 1)[1].split(":")
    figures = StreamFigures()
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        sessions = await _create(client, "tokens", streams)

    async def one(sid: str) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(
                f"POST /v1/sessions/{sid}/step HTTP/1.1\r\nHost: {host}\r\n"
                "Accept: text/event-stream\r\nContent-Type: application/json\r\n"
                "Content-Length: 2\r\n\r\n{}".encode("ascii")
            )
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise SystemExit(f"streamed step answered {head[:80]!r}")
            chunked = b"transfer-encoding: chunked" in head.lower()
            pending, last_token = b"", 0.0
            async for data in _dechunk(reader, chunked):
                now = time.monotonic()
                *frames, pending = (pending + data).split(b"\n\n")
                for frame in frames:
                    if b"\nevent: token\n" in frame:
                        # the text is the emit time: {"...","text":"123.456",...}
                        start = frame.index(_TEXT) + len(_TEXT)
                        figures.latencies.append(
                            now - float(frame[start : frame.index(b'"', start)])
                        )
                        figures.tokens += 1
                        last_token = now
                    elif b"\nevent: committed\n" in frame:
                        figures.to_commit.append(now - last_token)
                        return
        finally:
            writer.close()

    gc.collect()
    gc.disable()  # the instrument's own pauses are not the daemon's latency
    try:
        began = time.monotonic()
        await asyncio.gather(*(one(sid) for sid in sessions))
        figures.seconds = time.monotonic() - began
    finally:
        gc.enable()
    return figures


async def _idle_subscriber(port: str, sid: str) -> asyncio.StreamWriter:
    """One open ``GET /events`` whose response head has arrived (raw socket: cheap)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", int(port))
    writer.write(
        f"GET /v1/sessions/{sid}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode("ascii")
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"/events answered {head[:80]!r}")
    return writer


async def plain_steps(url: str, sessions: list[str], seconds: float) -> float:
    """Closed-loop plain steps of ``sessions`` (one client each) for ``seconds``; steps/s."""
    import httpx

    done = 0
    limits = httpx.Limits(max_connections=len(sessions) + 8)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        end = time.monotonic() + seconds

        async def loop(sid: str) -> None:
            nonlocal done
            while time.monotonic() < end:
                answer = await client.post(f"/v1/sessions/{sid}/step", json={"input": "x"})
                if answer.status_code == 200:
                    done += 1

        began = time.monotonic()
        await asyncio.gather(*(loop(sid) for sid in sessions))
        return done / (time.monotonic() - began)


async def idle_subscribers(daemon: Daemon, count: int, seconds: float) -> None:
    """RSS per idle subscriber, and step throughput with them connected against without."""
    import httpx

    async with httpx.AsyncClient(base_url=daemon.url, timeout=60) as client:
        hot = await _create(client, "echo", 16)
        watched = await _create(client, "echo", 100)
    await plain_steps(daemon.url, hot, 1.0)  # warm up
    without = await plain_steps(daemon.url, hot, seconds)
    rss_before = daemon.rss_bytes()
    port = daemon.url.rsplit(":", 1)[1]
    writers = []
    for i in range(count):  # opened a few at a time: the daemon's accept queue is finite
        writers.append(await _idle_subscriber(port, watched[i % len(watched)]))
    rss_after = daemon.rss_bytes()
    with_them = await plain_steps(daemon.url, hot, seconds)
    print(
        f"{count:,} idle /events subscribers: daemon RSS {rss_before / 2**20:.1f} -> "
        f"{rss_after / 2**20:.1f} MiB, {(rss_after - rss_before) / count / 1024:.1f} KiB "
        "per subscriber",
        flush=True,
    )
    for writer in writers:
        writer.close()
    # without them again: the ratio is against both runs without (the machine drifts)
    after = await plain_steps(daemon.url, hot, seconds)
    baseline = (without + after) / 2
    print(
        f"plain steps/s (16 clients, echo): {without:,.0f} and {after:,.0f} without them "
        f"(before and after), {with_them:,.0f} with {count:,} idle subscribers connected: "
        f"{with_them / max(baseline, 1e-9):.2f}x (target >= 0.9x)",
        flush=True,
    )


async def in_process_streams(
    streams: int, task_loop: Literal["own", "caller"] = "own"
) -> StreamFigures:
    """The same streams through ``AsyncRuntime.stream`` in this process."""
    from runtime import AsyncRuntime
    from runtime.events import Committed, Token

    figures = StreamFigures()
    with tempfile.TemporaryDirectory(prefix="actorflow-stream-bench-") as tmp:
        async with AsyncRuntime.open(data_dir=tmp, graphs=GRAPHS, task_loop=task_loop) as art:
            sessions = [await art.create_session("tokens", owner="bench") for _ in range(streams)]

            async def one(sid: str) -> None:
                last = 0.0
                async for event in art.stream(sid):
                    now = time.monotonic()
                    if isinstance(event, Token):
                        figures.latencies.append(now - float(event.text))
                        figures.tokens += 1
                        last = now
                    elif isinstance(event, Committed):
                        figures.to_commit.append(now - last)

            began = time.monotonic()
            await asyncio.gather(*(one(sid) for sid in sessions))
            figures.seconds = time.monotonic() - began
    return figures


async def langgraph_streams(streams: int) -> StreamFigures | None:
    """The same streams through LangGraph's ``astream(stream_mode="custom")``."""
    try:
        from langgraph.config import get_stream_writer
        from langgraph.graph import END, START, StateGraph
    except ImportError as exc:
        print(f"LangGraph custom stream: skipped ({exc}; pip install -e '.[bench]')", flush=True)
        return None
    from typing import TypedDict

    class State(TypedDict, total=False):
        done: int

    async def node(state: State) -> State:
        write = get_stream_writer()
        for _ in range(TOKENS):
            write({"text": repr(time.monotonic())})
            await asyncio.sleep(GAP)
        return {"done": TOKENS}

    builder = StateGraph(State)
    builder.add_node("tokens", node)
    builder.add_edge(START, "tokens")
    builder.add_edge("tokens", END)
    graph = builder.compile()
    figures = StreamFigures()

    async def one() -> None:
        async for chunk in graph.astream({}, stream_mode="custom"):
            figures.latencies.append(time.monotonic() - float(chunk["text"]))
            figures.tokens += 1

    began = time.monotonic()
    await asyncio.gather(*(one() for _ in range(streams)))
    figures.seconds = time.monotonic() - began
    return figures


def report(label: str, figures: StreamFigures, streams: int) -> None:
    """One line per figure of a set of streams."""
    lat = figures.latencies
    print(
        f"{label}, {streams} streams x {TOKENS} tokens 1 ms apart: "
        f"{figures.rate:,.0f} tokens/s delivered ({figures.tokens:,} in {figures.seconds:.2f} s)",
        flush=True,
    )
    print(
        f"{label}: added latency per token (receive - emit) p50 "
        f"{percentile(lat, 0.5) * 1000:.2f} ms, p99 {percentile(lat, 0.99) * 1000:.2f} ms"
        + (" (target p99 <= 5 ms over HTTP at 64 streams)" if label == "HTTP SSE" else ""),
        flush=True,
    )
    if figures.to_commit:
        print(
            f"{label}: last token -> committed p50 {percentile(figures.to_commit, 0.5) * 1000:.2f}"
            f" ms, p99 {percentile(figures.to_commit, 0.99) * 1000:.2f} ms",
            flush=True,
        )


def report_rounds(label: str, p99s: Sequence[float], target: str = "") -> None:
    """One line: the p99 of each round, and their median."""
    print(
        f"{label}: p99 of each of {len(p99s)} rounds "
        + ", ".join(f"{p * 1000:.2f}" for p in p99s)
        + f" ms; median {statistics.median(p99s) * 1000:.2f} ms{target}",
        flush=True,
    )


def plot(series: dict[str, StreamFigures], path: Path) -> None:
    """Latency CDFs of each series, and their token rates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (cdf, rates) = plt.subplots(1, 2, figsize=(11, 4))
    for label, figures in series.items():
        ordered = sorted(x * 1000 for x in figures.latencies)
        if ordered:
            ys = [(i + 1) / len(ordered) for i in range(len(ordered))]
            cdf.plot(ordered, ys, label=label)
    cdf.set(
        title="added latency per token",
        xlabel="receive - emit (ms)",
        ylabel="fraction of tokens",
        xscale="log",
    )
    cdf.legend()
    rates.barh(list(series), [f.rate for f in series.values()])
    rates.set(title=f"tokens/s, 64 streams x {TOKENS} tokens", xlabel="tokens/s")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"plot: {path}", flush=True)


async def _own_loop_rounds(data_dir: Path, streams: int, rounds: int) -> None:
    """The same rounds on a daemon running async tasks on a loop thread of their own
    (``--task-loop own``, the default before 2026-11-28): what the server loop saves."""
    daemon = Daemon(data_dir, "--task-loop", "own")
    try:
        await raw_streams(daemon.url, streams)  # warm up
        p99s = []
        for _ in range(rounds):
            p99s.append(percentile((await raw_streams(daemon.url, streams)).latencies, 0.99))
        report_rounds("HTTP SSE, --task-loop own", p99s)
    finally:
        daemon.stop()


async def run(quick: bool, out: Path, rounds: int) -> None:
    streams = 64
    subscribers = 1000
    seconds = 2.0 if quick else 5.0
    series: dict[str, StreamFigures] = {}
    with tempfile.TemporaryDirectory(prefix="actorflow-stream-bench-") as tmp:
        daemon = Daemon(Path(tmp) / "daemon")
        try:
            await http_streams(daemon.url, 8)  # warm up: imports, first collections
            await raw_streams(daemon.url, streams)  # the same load once, not shown
            p99s = []
            for _ in range(rounds):  # the machine's noise moves a p99: several rounds
                series["HTTP SSE"] = await raw_streams(daemon.url, streams)
                report("HTTP SSE", series["HTTP SSE"], streams)
                p99s.append(percentile(series["HTTP SSE"].latencies, 0.99))
            if rounds > 1:
                report_rounds("HTTP SSE", p99s, " (target <= 5 ms)")
            await _own_loop_rounds(Path(tmp) / "own-loop", streams, rounds)
            series["HTTP SSE, httpx"] = await http_streams(daemon.url, streams)
            report("HTTP SSE, httpx client", series["HTTP SSE, httpx"], streams)
            await idle_subscribers(daemon, subscribers, seconds)
        finally:
            daemon.stop()
    series["in process"] = await in_process_streams(streams)
    report("in process (AsyncRuntime.stream)", series["in process"], streams)
    series["in process, caller loop"] = await in_process_streams(streams, "caller")
    report(
        "in process (AsyncRuntime.stream, task_loop='caller')",
        series["in process, caller loop"],
        streams,
    )
    lang = await langgraph_streams(streams)
    if lang is not None:
        series["LangGraph custom"] = lang
        report("LangGraph astream(stream_mode='custom')", lang, streams)
        ratio = series["in process"].rate / max(lang.rate, 1e-9)
        print(f"in process, actorflow vs LangGraph tokens/s: {ratio:.2f}x", flush=True)
    plot(series, out)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments and run every part."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="shorter throughput runs")
    parser.add_argument("--out", type=Path, default=OUT, help="where to write the PNG")
    parser.add_argument(
        "--rounds", type=int, default=5, help="rounds of the 64 HTTP streams (raw client)"
    )
    args = parser.parse_args(argv)
    import structlog

    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        cache_logger_on_first_use=True,
    )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"actorflow streaming bench: python {sys.version.split()[0]}, {os.cpu_count()} cores, "
        f"load average {load}",
        flush=True,
    )
    import uvloop  # the daemon's loop too (uvicorn's): the client takes less CPU from it

    uvloop.run(run(args.quick, args.out, max(1, args.rounds)))


if __name__ == "__main__":
    main()
